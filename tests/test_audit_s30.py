"""Audit 30: what independent readers of the contracts found.

1. An MLflow metric line of a negative step (``1760000001000 5.0 -1``) was skipped as "not
   '<timestamp ms> <value> <step>'", a line of that very form: the warning names the step now, as
   TensorBoard's does.
2. A chart (``/steps``, ``/metrics/history`` with ``max_points``) of a range that fits left rows
   out all the same: its buckets kept their extremes alone (2,252 of 2,900 steps at
   ``max_points=10000``; a metric of exactly 2,000 points lost 2), and said ``downsampled``. And a
   cursor with a key the API never writes was taken.
3. A progress.json that stops naming its job id (or names another) leaves the job it named as
   stored (docs/ingest.md: a folder keeps the ids it held), and said nothing: a job `running`
   for good beside the folder's new one. The read that finds the change says so. So is a
   snapshot whose updated_at is before the stored job's (a node's clock behind): its status and
   times were not taken, without a word (a job `failed`, ending before its own last step).
4. memory_headroom's message printed 100 x peak / total, not the share compared: 1.2 MiB of 3 is
   0.39999999999999997, below 0.4, and read "40 % of the 3 MiB the GPU has (below 40 %)". Two
   neighbouring shares can be one percent too (100 x 0.39999999999999997 is 40.0): the message
   then gives the fractions. So do gpu_idle's and gpu_throttled's (revision 0047).
5. A job whose timed seconds add up past the largest double had a throughput of 0 (Σ samples /
   inf), a figure where none is known: null now, under the overflow warning (revision 0047).
6. A gpus list holding an item that is no object (``[5, {...}, {}]``, which DuckDB's reader
   refuses, so the file is repaired) stored its empty item as a GPU of no reading (one GPU more),
   and a null item's warning named the place before its own; checkpoint items that are no object
   were said without their place.
7. A number refused as out of range or not whole was echoed whole (a 4,301-digit step: a warning
   of 4.3 KB; other refusals cut the value at 40 characters), and a UTF-16 file failed as
   "invalid JSON at line 1 column 1".
8. A warehouse moved with its `.parts` folder (docs/ingest.md: read again after the next ingest)
   made `status` and `analytics` a traceback, `sql` a "--allow-read" refusal, the API a 500, until
   then; one copied without its parts made `ingest` and `db upgrade` a traceback. One line now,
   exit 3 (a 503 from the API). (And the review's: the job-id warning of 3 for a folder whose job
   moved away with its old folder; an MLflow step of 10^18 + 1 read through a float as 10^18.)
9. An argument a command does not take was said with the top-level usage and `runlytics: error:`
   (README: the command's usage, then `runlytics ingest: error: …`). `ingest --every 1e9` ran once,
   then slept for good: it is bound as --timeout is. `--archive` with `--keep-raw-days 0` was
   taken and ignored (nothing is ever pruned): a usage error now.
10. Files ingested under one --max-file-mb and over a lower one later were "unchanged" while the
    run took the quick road, and "failed" (exit 1) as soon as another file changed: unchanged.
11. A Lightning metrics.csv step of 10^18 + 1 was read through a float as 10^18, a step in range
    (the re-read's: MLflow's lines had the same fault, fixed above); it is refused exactly now.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import REALDATA, Lab
from fastapi.testclient import TestClient

from runlytics import cli
from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.ingest.formats.mlflow_store import parse_metric
from tests.test_insights import Facts, _samples, _trained, facts, template

__all__ = ["facts", "template"]  # fixtures, used by name


def test_an_mlflow_line_of_a_step_that_is_none_is_said_so() -> None:
    data = b"1760000000000 6.0 0\n1760000001000 5.0 -1\n1760000002000 4.0 1.5\n1760000003000 3.0 x\n"
    chunk = parse_metric(data, "loss")
    assert chunk.warnings == [
        "line 2: '1760000001000 5.0 -1': step -1 is negative, skipped",
        "line 3: '1760000002000 4.0 1.5': step 1.5 is not whole, skipped",
        "line 4: '1760000003000 3.0 x' is not '<timestamp ms> <value> <step>', skipped",
    ]
    assert [(p.step, p.value) for p in chunk.points] == [(0, 6.0)]


def test_a_chart_of_a_range_that_fits_keeps_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = Lab(tmp_path)
    history = [{"step": s, "loss": 1.0 + (s % 7) / 10, "eval_loss": 2.0 - s / 1000} for s in range(1, 301)]
    lab.write_job("j", {"job_id": "j", "status": "completed", "history": history})
    mlruns = tmp_path / "runs" / "mlruns" / "1" / "r1"
    (mlruns / "metrics").mkdir(parents=True)
    (mlruns / "meta.yaml").write_text("run_id: r1\nstatus: 3\nstart_time: 1760000000000\nend_time: 1760000100000\n")
    (mlruns / "metrics" / "loss").write_text("".join(f"{1760000000000 + s} {(s * 37) % 11} {s}\n" for s in range(200)))
    assert lab.ingest().failed == 0
    assert lab.ingest(tmp_path / "runs").failed == 0
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    client = TestClient(create_app(lab.db))
    steps = client.get("/api/training/j/steps", params={"fields": "loss,eval_loss", "max_points": 300}).json()
    assert [r["step"] for r in steps["steps"]] == list(range(1, 301)) and steps["downsampled"] is False
    cut = client.get("/api/training/j/steps", params={"fields": "loss,eval_loss", "max_points": 299}).json()
    assert len(cut["steps"]) <= 299 and cut["downsampled"] is True
    points = client.get("/api/training/mlruns/1/r1/metrics/history", params={"name": "loss", "max_points": 200}).json()
    assert [p["value"] for p in points["points"]] == [float((s * 37) % 11) for s in range(200)]
    assert points["downsampled"] is False
    forged = base64.urlsafe_b64encode(json.dumps({"k": "steps", "v": [10], "x": 1}).encode()).decode().rstrip("=")
    answer = client.get("/api/training/j/steps", params={"cursor": forged})
    assert answer.status_code == 422 and "cursor" in answer.json()["detail"]


def test_a_progress_json_naming_another_job_says_the_old_one_stays(lab: Lab) -> None:
    history = [{"step": 10, "timestamp": "2026-01-01T00:00:10Z", "loss": 1.0}]
    lab.write_job("run-v", {"job_id": "V1", "status": "running", "history": history})
    assert lab.ingest().warnings == 0
    history.append({"step": 30, "timestamp": "2026-01-01T00:00:30Z", "loss": 0.5})
    lab.write_job("run-v", {"status": "completed", "history": history})
    summary = lab.ingest()
    assert [message for _, message in summary.listed_warnings] == [
        "job_id 'run-v' is not the 'V1' this file named when last read: job 'V1' stays as stored, "
        "a job of its own (a folder keeps the ids it held)"
    ]
    assert lab.query("SELECT job_id, status FROM jobs ORDER BY job_id") == [("V1", "running"), ("run-v", "completed")]


def test_a_share_and_its_limit_never_read_alike(facts: Facts) -> None:
    _trained(facts, "mem", 600, [90.0], used=1.2, total=3.0)
    ((row,),) = [facts.full("mem", "memory_headroom")]
    assert row["value"] == 1.2 / 3.0 < 0.4
    assert row["message"] == (
        "Peak GPU memory was 1.2 MiB, 0.39999999999999997 of the 3 MiB the GPU has (below 0.40000000000000002)."
    )  # before: "40 % of the 3 MiB the GPU has (below 40 %)"
    _trained(facts, "room", 600, [90.0], used=30.0, total=100.0)
    ((row,),) = [facts.full("room", "memory_headroom")]
    assert row["message"] == "Peak GPU memory was 30 MiB, 30.0 % of the 100 MiB the GPU has (below 40.0 %)."
    facts.job("idle")
    _samples(facts, "idle", 0, [5.0] * 501 + [90.0] * 501)  # 501 of 1001 intervals idle: 0.5005
    ((row,),) = [facts.full("idle", "gpu_idle")]
    assert row["message"] == "GPU 0 on h was below 10 % utilization for 50.05 % of its time (limit 50 %)."


def test_a_snapshot_older_than_the_stored_job_says_its_job_fields_stay(lab: Lab) -> None:
    started = "2026-01-01T00:59:00Z"
    history = [{"step": 10, "timestamp": "2026-01-01T01:00:10Z", "loss": 1.0}]
    doc = {"job_id": "j", "status": "failed", "started_at": started, "updated_at": "2026-01-01T01:00:25Z"}
    lab.write_job("j", {**doc, "history": history})
    assert lab.ingest().warnings == 0
    history.append({"step": 30, "timestamp": "2026-01-01T01:00:30Z", "loss": 0.5})
    lab.write_job("j", {**doc, "status": "running", "updated_at": "2026-01-01T01:00:21Z", "history": history})
    summary = lab.ingest()
    assert [message for _, message in summary.listed_warnings] == [
        "updated_at 2026-01-01 01:00:21 UTC is before the stored job's 2026-01-01 01:00:25 UTC: its status, "
        "times and settings stay as stored (the later updated_at wins); its step entries are read"
    ]
    assert lab.query("SELECT status, max(s.step) FROM jobs JOIN steps s USING (job_id) GROUP BY status") == [
        ("failed", 30)
    ]


def test_a_throughput_over_seconds_that_overflow_is_null_not_0(lab: Lab) -> None:
    rows = [{"step": s, "timestamp": f"2026-01-01T00:00:0{s}Z", "iteration_time": 1e308, "samples": 10} for s in (1, 2)]
    lab.write_job("h", {"job_id": "h", "status": "completed", "history": rows})
    assert lab.ingest().failed == 0
    ((throughput, score, warnings),) = lab.query(
        "SELECT average_samples_per_second, throughput_score, warnings FROM job_analytics"
    )
    assert throughput is None and score is None
    assert (
        "null where a sum or ratio of finite values exceeds the largest double (about 1.8e308): training_seconds, "
        "overhead_seconds, average_samples_per_second, average_iteration_time"
    ) in warnings


def test_items_that_are_no_objects_keep_their_places(lab: Lab) -> None:
    entry = {"step": 1, "loss": 2.0, "gpus": [5, None, {"utilization_percent": 50}, {}]}
    lab.write_job("b", {"job_id": "b", "status": "running", "history": [entry], "checkpoints": [3, {"step": 4}]})
    summary = lab.ingest()
    assert sorted(message for _, message in summary.listed_warnings) == [
        "checkpoints[0]: no step: checkpoint skipped",
        "history[0] (step 1) gpus[0]: no index, uuid or reading: not a GPU, dropped",
        "history[0] (step 1) gpus[1]: null, not a GPU reading: dropped",
        "history[0] (step 1) gpus[3]: no index, uuid or reading: not a GPU, dropped",
    ]
    assert lab.query("SELECT gpu_index, utilization_percent FROM step_gpus") == [(2, 50.0)]
    assert lab.query("SELECT gpus_seen FROM job_resources") == [(1,)]
    assert lab.query("SELECT step FROM checkpoints") == [(4,)]


def test_a_refused_number_is_cut_and_utf16_is_named(lab: Lab) -> None:
    raw = '{"job_id": "j", "status": "running", "history": [{"step": 2, "samples": -' + "9" * 4301 + "}]}"
    lab.write_job("j", None, raw=raw)
    lab.write_job("w", None, raw='{"job_id": "w", "history": []}'.encode("utf-16"))
    summary = lab.ingest()
    assert [message for _, message in summary.listed_warnings] == [
        f"history[0] (step 2): samples -{'9' * 39} is out of range, dropped"
    ]
    assert [p["reason"] for p in summary.problems] == [
        "not UTF-8: UTF-16 (its byte order mark, bytes FF FE or FE FF); JSON is read as UTF-8"
    ]


def test_a_folder_whose_job_moved_away_is_not_told_it_keeps_it(lab: Lab) -> None:
    history = [{"step": 1, "timestamp": "2026-01-01T00:00:01Z", "loss": 1.0}]
    lab.write_job("a", {"job_id": "V1", "status": "running", "history": history})
    lab.ingest()
    (lab.root / "a").rename(lab.root / "a2")
    lab.ingest()
    lab.write_job("a", {"job_id": "V5", "status": "running", "history": history})
    assert lab.ingest().listed_warnings == []


def test_an_mlflow_step_past_10_to_the_18_is_refused_exactly() -> None:
    chunk = parse_metric(b"1760000001000 5.0 1000000000000000001\n1760000002000 4.0 1000000000000000000\n", "loss")
    assert chunk.warnings == [
        "line 1: '1760000001000 5.0 1000000000000000001': step 1000000000000000001 is out of range (above 10^18), "
        "skipped"
    ]
    assert [p.step for p in chunk.points] == [10**18]
    # more digits than int() reads (4,300): out of range too, not a traceback (the review's)
    chunk = parse_metric(b"1760000001000 5.0 " + b"9" * 5000 + b"\n", "loss")
    assert chunk.warnings == [
        f"line 1: '1760000001000 5.0 {'9' * 42}': step {'9' * 40} is out of range (above 10^18), skipped"
    ]


def test_a_warehouse_moved_or_copied_apart_from_its_parts_is_said_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = tmp_path / "old[1]", tmp_path / "new[1]"  # (the views name their parts glob-escaped)
    smi = REALDATA / "nvidia_smi_csv" / "rtx2070-looped.csv"
    (tmp_path / "runs" / "r3").mkdir(parents=True)
    (tmp_path / "runs" / "r3" / "progress.json").write_text('{"job_id": "r3", "status": "completed", "history": []}')
    ingest = ["ingest", "--quiet", str(tmp_path / "runs"), "--nvidia-smi-csv", str(smi), "--job-id", "r3"]
    assert cli.main([*ingest, "--db", str(old / "w.duckdb")]) == 0
    assert list((old / "w.duckdb.parts").rglob("*.parquet"))  # its samples are in parts
    old.rename(new)
    capsys.readouterr()
    for command in (["status"], ["export", str(tmp_path / "out")], ["sql", "SELECT count(*) FROM gpu_samples"]):
        assert cli.main([*command, "--db", str(new / "w.duckdb")]) == cli.EXIT_WAREHOUSE
        said = capsys.readouterr().err
        assert said.count("\n") == 1 and f"views name its GPU parts in another folder ({old}" in said, said
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    answer = TestClient(create_app(new / "w.duckdb")).get("/api/training/r3/gpus")
    assert answer.status_code == 503 and "the warehouse was moved" in answer.json()["detail"]
    assert str(tmp_path) not in answer.json()["detail"]  # no server folder, the old one either
    # a query's own file, missing, in a folder named like a warehouse's parts: its own error (exit 4)
    (tmp_path / "data").mkdir()
    own = f"SELECT * FROM read_csv('{tmp_path}/data/x.parts/gpu_samples/day=2026-01-01/a.csv')"
    argv = ["sql", own, "--allow-read", str(tmp_path / "data"), "--db", str(new / "w.duckdb")]
    assert cli.main(argv) == cli.EXIT_QUERY and "No files found" in capsys.readouterr().err
    shutil.copy(new / "w.duckdb", tmp_path / "copy.duckdb")  # the file alone, without its parts
    assert cli.main([*ingest, "--db", str(tmp_path / "copy.duckdb")]) == cli.EXIT_WAREHOUSE
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "its sealed GPU rows can't be read" in said, said
    assert cli.main([*ingest, "--db", str(new / "w.duckdb")]) == 0  # relinked
    assert cli.main(["status", "--db", str(new / "w.duckdb")]) == 0


def test_an_argument_a_command_does_not_take_is_said_by_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, said in (
        (["status", "extra"], "runlytics status: error: unrecognized arguments: extra"),
        (["db", "upgrade", "--db", "x.duckdb", "zz"], "runlytics db upgrade: error: unrecognized arguments: zz"),
    ):
        with pytest.raises(SystemExit) as stopped:
            cli.main(argv)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and err.splitlines()[-1] == said
        assert err.startswith(f"usage: runlytics {' '.join(argv[: 2 if argv[0] == 'db' else 1])} ")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["ingest", "--every", "1e9", "."])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("--every: at most 2000000 seconds (about 23 days): 1e9")


def test_an_archive_that_would_never_be_written_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ingest", "--db", str(tmp_path / "w.duckdb"), "--keep-raw-days", "0", "--archive", str(tmp_path / "a"), "."]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        "runlytics ingest: --archive with --keep-raw-days 0 archives nothing: every raw sample is kept "
        "(name a window of days)\n"
    )
    assert not (tmp_path / "w.duckdb").exists()


def test_an_unchanged_file_over_a_lowered_limit_stays_unchanged(lab: Lab) -> None:
    hour_ago = time.time() - 3600  # (a file changed within seconds is read again: a writer may be at it)
    for name in ("a", "b"):
        path = lab.write_job(name, {"job_id": name, "status": "completed", "history": [{"step": 1, "loss": 1.0}]})
        os.utime(path, (hour_ago, hour_ago))
    assert lab.ingest().ingested == 2
    path = lab.write_job("b", {"job_id": "b", "status": "completed", "history": [{"step": 1, "loss": 0.5}]})
    os.utime(path, (hour_ago + 60, hour_ago + 60))
    summary = lab.ingest(max_file_mb=0.00001)
    assert (summary.unchanged, summary.failed) == (1, 1)
    assert [p["path"].rsplit("/", 2)[-2] for p in summary.problems] == ["b"]
    # a file that must be read again all the same (a trainer state whose folder's job changed: the
    # review's) is failed over the limit, not passed over as unchanged
    state = lab.root / "f" / "trainer_state.json"
    state.parent.mkdir()
    history = [{"step": step, "loss": 2.0} for step in range(1, 20)]  # ~500 bytes, over the limit below
    state.write_text(json.dumps({"global_step": 19, "log_history": history}))
    os.utime(state, (hour_ago, hour_ago))
    lab.ingest()
    path = lab.write_job("f", {"job_id": "J", "status": "completed"})
    os.utime(path, (hour_ago + 60, hour_ago + 60))
    summary = lab.ingest(max_file_mb=0.0002)  # 209 bytes: the new progress.json is read
    assert [p["path"].rsplit("/", 2)[-1] for p in summary.problems] == ["trainer_state.json"]


def test_a_lightning_step_past_10_to_the_18_is_refused_exactly(lab: Lab) -> None:
    csv = lab.root / "c" / "lightning_logs" / "version_0" / "metrics.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text(f"step,train_loss\n1,2.0\n{10**18 + 1},1.0\n{10**18},0.5\n")
    hour_ago = time.time() - 3600
    os.utime(csv, (hour_ago, hour_ago))  # settled: the last line is read
    summary = lab.ingest()
    assert [m for _, m in summary.listed_warnings] == [f"line 3: step '{10**18 + 1}' is not a step, skipped"]
    assert lab.query("SELECT step FROM metric_values ORDER BY step") == [(1,), (10**18,)]
