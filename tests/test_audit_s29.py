"""Audit 29: what independent readers of the contracts found, and what earlier sessions left.

1. A legacy snapshot (inputs.md: ``gpu_utilization``, ``gpu_memory_mb``, ``gpu_temperature``, one GPU,
   index 0) whose GPU values were all refused still stored a GPU reading of index 0 with no value:
   a GPU seen where the file gave none.
2. Two machines' nvidia-smi logs of one job imported without --host: a sample is keyed by (job,
   host, GPU, time) and the later read wins, so the second log's samples replaced the first's
   without a word (90 % became 0 %). The import now says so; and a log imported again with its
   --host removed what its first import stored, the other log's samples at the same keys too.
3. A PostgreSQL URL's password given as libpq's parameter (``?password=``) showed in every message
   and in ``status`` (the ``user:password@`` form was hidden).
4. After ``db copy``, the copied ledger row of a failed file (one of no job) stayed on PostgreSQL for
   good: listed beside the stage's own row of the same file, and after the file was fixed.
5. A threshold set on an empty PostgreSQL warehouse before ``db copy`` was replaced by the source's
   without a word.
6. PostgreSQL, three users at once: a completed job published again lost its slow_vs_peers row from
   its batch's commit until its model's recompute committed (readers saw 1, 0, then 1 warnings; a
   run killed between left it out until the next run), and the publish's job and model locks
   waited without limit, whatever --wait said, behind a session holding them. So did an upgrade
   behind an analyst's open transaction (every new reader of the views it replaces queued behind
   it), and a reader arriving meanwhile failed it with "deadlock detected".
7. Hostile inputs: a tool-log run folder whose name is not UTF-8 stopped every run with a
   traceback (its files failed cleanly, then its id was looked up with the name).
   So did an ingest root that is a symbolic link looping on itself.
   An MLflow meta.yaml of a few lines of YAML aliases (10^9 values once expanded) held the run for
   hours: only its top-level scalars are read (the run's facts).
8. The API on PostgreSQL: a NUL asked for is U+FFFD there (as published), so /api/training/%00-x
   found a job `\ufffd-x`, and its analytics failed with a 500 where it had an insight (its counts
   were looked up by the id asked for).
9. A checkpoint's trainer_state.json, and a spool entry named *.jsonl, that is no regular file (a
   FIFO, a link to nothing or to /dev/zero, a loop, a folder) was passed over without a word.
10. A LLaMA-Factory log replaced by a file of no readable line turned a completed job into one of
    status unknown without an end: a log that tells nothing of the run leaves what is stored.
11. A chain of revisions that failed left alembic's ``op`` bound to its connection (alembic removes
    it only when the chain ends well): after a failed PostgreSQL upgrade, test_views_sql found no
    frozen view in the same process (CI failed by the order its worker ran them in).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from pathlib import Path

import duckdb
import psycopg
import pytest
from conftest import REALDATA, Lab
from test_ingest_forms import gpu_rows, ledger_row, legacy

from runlytics import cli
from runlytics.ingest.formats.nvidia_smi import CsvImport
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db

SMI_HEADER = "timestamp, index, utilization.gpu [%], power.draw [W]"


def test_a_legacy_snapshot_whose_gpu_values_are_all_refused_has_no_gpu(lab: Lab) -> None:
    lab.write_job("none", legacy(12, 1.0, 140.0, gpu_memory_mb=-5, gpu_temperature="hot"))
    lab.write_job("one", legacy(12, 1.0, 140.0, gpu_memory_mb=None) | {"job_id": "one"})
    lab.ingest()
    assert gpu_rows(lab, "old-gpt2") == {}
    assert ledger_row(lab, "none")["warnings"] == [
        "snapshot (step 12): gpu_utilization 140.0 is out of range, dropped; gpu_memory_mb -5 is out of range, "
        'dropped; gpu_temperature "hot" is not a number, dropped'
    ]
    # one value left is a GPU of index 0
    assert ledger_row(lab, "one")["warnings"] == [
        "snapshot (step 12): gpu_memory_mb is null, dropped",
        "snapshot (step 12): gpu_utilization 140.0 is out of range, dropped",
    ]
    assert gpu_rows(lab, "one") == {
        (12, 0): {
            "gpu_uuid": None,
            "utilization_percent": None,
            "memory_used_mb": None,
            "memory_total_mb": None,
            "temperature_c": 60.0,
            "power_w": None,
        }
    }
    assert lab.query("SELECT count(*) FROM step_gpus") == [(1,)]


def _smi_log(path: Path, utilization: int, power: int, seconds: range) -> Path:
    lines = [SMI_HEADER] + [f"2025/11/06 10:00:{s:02d}.000, 0, {utilization} %, {power} W" for s in seconds]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_machines_logs_of_one_job_without_their_host_are_said_to_replace_each_other(lab: Lab) -> None:
    node_a = _smi_log(lab.root.parent / "node-a.csv", 90, 300, range(0, 30, 10))
    node_b = _smi_log(lab.root.parent / "node-b.csv", 0, 50, range(10, 40, 10))
    lab.ingest(csv_imports=[CsvImport(node_a, "m")])
    assert lab.ingest(csv_imports=[CsvImport(node_b, "m")]).listed_warnings == [
        (
            str(node_b),
            "2 sample(s) (the first at line 2) replaced stored ones of job 'm', host '' at the same GPU and time "
            "with other values (this log rewritten, another log of the job, or the spool's samples; the later read "
            "wins): two machines' logs need each its own --host",
        )
    ]
    samples = "SELECT host, second(ts), utilization_percent FROM gpu_samples ORDER BY host, ts"
    assert lab.query(samples) == [("", 0, 90.0), ("", 10, 0.0), ("", 20, 0.0), ("", 30, 0.0)]
    # node-a imported again with its host takes away what its first import stored, not node-b's
    lab.ingest(csv_imports=[CsvImport(node_a, "m", host="a")])
    assert lab.query(samples) == [
        ("", 10, 0.0), ("", 20, 0.0), ("", 30, 0.0), ("a", 0, 90.0), ("a", 10, 90.0), ("a", 20, 90.0),
    ]  # fmt: skip
    # the same values again (a log read whole on every change; a copy of it) are no clash
    (node_b.parent / "copy.csv").write_bytes(node_b.read_bytes())
    assert lab.ingest(csv_imports=[CsvImport(node_b.parent / "copy.csv", "m")]).warnings == 0


def test_a_password_given_as_a_url_parameter_never_shows(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://runlytics@127.0.0.1:1/nowhere?sslmode=disable&password=s3cret&connect_timeout=2"
    for argv in (["db", "upgrade", "--db", url], ["status", "--db", url], ["sql", "--db", url, "SELECT 1"]):
        assert cli.main(argv) == cli.EXIT_WAREHOUSE  # port 1: nothing listens
        err = capsys.readouterr().err
        assert "s3cret" not in err and "nowhere?sslmode=disable&password=***&connect_timeout=2" in err
    # libpq decodes a parameter's name: an encoded one is a password too
    assert str(db.PostgresUrl("postgresql://h/d?pa%73sword=s3cret")) == "postgresql://h/d?pa%73sword=***"
    assert str(db.PostgresUrl("postgresql://h/d?passwords=1")) == "postgresql://h/d?passwords=1"
    # a client key's password (a reviewer's repro)
    assert str(db.PostgresUrl("postgres://h/d?sslmode=verify-full&sslpassword=s3cret")) == (
        "postgresql://h/d?sslmode=verify-full&sslpassword=***"
    )


def test_a_copied_failed_file_gives_way_to_the_stages_word_on_it(tmp_path: Path, pg_url: str) -> None:
    runs = tmp_path / "runs"
    (runs / "good").mkdir(parents=True)
    (runs / "good" / "progress.json").write_text(
        '{"status": "completed", "history": [{"step": 1, "loss": 1.0, "timestamp": "2026-12-01T00:00:00Z"}]}'
    )
    state = runs / "lfs" / "checkpoint-500" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    shutil.copy(REALDATA / "hf_trainer_state" / "lfs-pointer" / "checkpoint-500" / "trainer_state.json", state)
    gone = runs / "gone" / "progress.json"  # failed when copied, gone since
    gone.parent.mkdir()
    gone.write_text("{not json")
    elsewhere = tmp_path / "other-host" / "x" / "progress.json"  # a root this stage does not read
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text("{not json")
    warehouse, stage = tmp_path / "w.duckdb", tmp_path / "stage.duckdb"
    both = [str(runs), str(elsewhere.parent.parent)]
    assert cli.main(["ingest", "--quiet", "--db", str(warehouse), *both]) == cli.EXIT_FILES_FAILED
    assert cli.main(["db", "copy", "--db", str(warehouse), "--to", pg_url]) == 0
    problems = "SELECT path, outcome FROM ingest_files WHERE outcome <> 'ingested' ORDER BY path"
    with psycopg.connect(pg_url) as con:
        assert con.execute(problems).fetchall() == [(str(p), "failed") for p in sorted([gone, state, elsewhere])]
    gone.unlink()
    elsewhere.unlink()  # as seen from this host: not here, nor under what it reads
    ingest = ["ingest", "--quiet", "--db", pg_url, "--stage", str(stage), str(runs)]
    assert cli.main(ingest) == cli.EXIT_FILES_FAILED
    with psycopg.connect(pg_url) as con:
        (kept, (prefixed, outcome)) = con.execute(problems).fetchall()
    assert kept == (str(elsewhere), "failed")
    assert prefixed.endswith(f":{stage}:{state}") and outcome == "failed"
    shutil.copy(REALDATA / "hf_trainer_state" / "bart-samsum-old" / "checkpoint-500" / "trainer_state.json", state)
    assert cli.main(ingest) == 0
    with psycopg.connect(pg_url) as con:
        assert con.execute(problems).fetchall() == [(str(elsewhere), "failed")]


def test_a_copy_says_which_thresholds_set_on_the_target_it_replaced(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "w.duckdb"
    assert cli.main(["db", "upgrade", "--db", str(warehouse)]) == 0
    assert cli.main(["insights", "set", "--db", str(warehouse), "stall.factor", "4"]) == 0
    assert cli.main(["db", "upgrade", "--db", pg_url]) == 0
    # one set back to its default, one to the source's value: nothing lost there
    set_ = (("stall.factor", "3"), ("gpu_idle.utilization", "12"), ("gpu_idle.share", "0.7"), ("gpu_idle.share", "0.5"))
    for name, value in (*set_, ("work_at_risk.factor", "4")):
        assert cli.main(["insights", "set", "--db", pg_url, name, value]) == 0
    assert cli.main(["insights", "set", "--db", str(warehouse), "work_at_risk.factor", "4"]) == 0
    capsys.readouterr()
    assert cli.main(["db", "copy", "--db", str(warehouse), "--to", pg_url]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    shown = str(db.PostgresUrl(pg_url))
    assert warnings == [
        f"runlytics db copy: warning: insight threshold gpu_idle.utilization was 12 on {shown}, now the copied "
        "warehouse's 10: set it again with `runlytics insights set`",
        f"runlytics db copy: warning: insight threshold stall.factor was 3 on {shown}, now the copied "
        "warehouse's 4: set it again with `runlytics insights set`",
    ]
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT value FROM insight_settings WHERE name = 'stall.factor'").fetchone() == (4.0,)


def _peer_job(lab: Lab, name: str, samples_per_second: float, steps: int = 3) -> None:
    history = [
        {"step": i, "loss": 1.0 / i, "samples_per_second": samples_per_second, "timestamp": f"2026-12-01T00:0{i}:00Z"}
        for i in range(1, steps + 1)
    ]
    lab.write_job(name, {"job_id": name, "status": "completed", "config": {"model_name": "m0", "gpu_count": 1},
                         "history": history})  # fmt: skip


def test_a_job_published_again_keeps_its_peer_insight_and_locks_wait_no_longer_than_asked(
    tmp_path: Path, pg_url: str
) -> None:
    from runlytics.ingest import postgres as pg_ingest
    from runlytics.warehouse import postgres

    lab = Lab(tmp_path)
    for i in range(3):
        _peer_job(lab, f"fast-{i}", 10.0)
    _peer_job(lab, "slow", 3.0)
    stage, target = tmp_path / "stage.duckdb", db.PostgresUrl(pg_url)
    pg_ingest.ingest(target, [lab.root], stage=stage, wait=5)
    peer_rows = "SELECT job_id FROM insight_results WHERE kind = 'slow_vs_peers'"
    with psycopg.connect(pg_url, autocommit=True) as other:
        assert other.execute(peer_rows).fetchall() == [("slow",)]
        _peer_job(lab, "slow", 3.0, steps=4)  # the job again, still completed and slow
        other.execute("SELECT pg_advisory_lock(%s, hashtext('m0'))", (pg_ingest.MODEL_LOCK,))
        began = time.monotonic()
        with pytest.raises(db.WarehouseBusy, match="waited 1 s"):
            pg_ingest.ingest(target, [lab.root], stage=stage, wait=1)
        assert time.monotonic() - began < 20
        # the batch committed (the job's 4 steps); its model's recompute could not: the row stays
        assert other.execute("SELECT count(*) FROM steps WHERE job_id = 'slow'").fetchone() == (4,)
        assert other.execute(peer_rows).fetchall() == [("slow",)]
        other.execute("SELECT pg_advisory_unlock_all()")
        _peer_job(lab, "fast-0", 10.0, steps=4)
        other.execute("SELECT pg_advisory_lock(%s, hashtext('fast-0'))", (postgres.JOB_LOCK,))
        with pytest.raises(db.WarehouseBusy, match="waited 1 s"):
            pg_ingest.ingest(target, [lab.root], stage=stage, wait=1)
        other.execute("SELECT pg_advisory_unlock_all()")
    pg_ingest.ingest(target, [lab.root], stage=stage, wait=5)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM steps WHERE job_id = 'fast-0'").fetchone() == (4,)
        assert con.execute(peer_rows).fetchall() == [("slow",)]
    # rows another ingester's batch or recompute holds are waited for as before: only the advisory
    # locks, which any session may hold at will, end at --wait (a reviewer's repro)
    _peer_job(lab, "slow", 3.0, steps=5)
    with psycopg.connect(pg_url) as other:
        other.execute("SELECT 1 FROM insight_results WHERE kind = 'slow_vs_peers' FOR UPDATE").fetchall()
        releaser = threading.Timer(3.0, other.commit)
        releaser.start()
        try:
            pg_ingest.ingest(target, [lab.root], stage=stage, wait=1)
        finally:
            releaser.join()
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM steps WHERE job_id = 'slow'").fetchone() == (5,)
        assert con.execute(peer_rows).fetchall() == [("slow",)]
        assert con.execute("SELECT count(*) FROM peer_changes").fetchone() == (0,)


def test_an_upgrade_behind_an_open_read_waits_no_longer_than_asked(pg_url: str) -> None:
    from runlytics.warehouse import migrate

    target = db.PostgresUrl(pg_url)
    migrate.upgrade_postgres(target, "0045")  # 0046 replaces step_facts
    with psycopg.connect(pg_url) as analyst:
        analyst.execute("SELECT count(*) FROM step_facts").fetchone()  # its transaction stays open
        began = time.monotonic()
        with pytest.raises(db.WarehouseBusy, match="waited 1 s, --wait; .*lock timeout.*nothing was changed"):
            migrate.upgrade_postgres(target, wait=1)
        assert time.monotonic() - began < 10
        analyst.rollback()
        assert analyst.execute("SELECT version_num FROM alembic_version").fetchone() == ("0045",)
    assert migrate.upgrade_postgres(target, wait=1) == migrate.HEAD_REVISION


def test_a_tool_log_folder_whose_name_is_not_utf8_fails_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "good").mkdir(parents=True)
    (root / "good" / "progress.json").write_text('{"status": "completed", "history": [{"step": 1, "loss": 1.0}]}')
    bad = root / os.fsdecode(b"run\xff")
    bad.mkdir()
    shutil.copy(REALDATA / "tool_logs2" / "llamafactory" / "qwen25-7b-eval-lines" / "trainer_log.jsonl", bad)
    warehouse = tmp_path / "w.duckdb"
    for _ in range(2):  # said again every run, until renamed
        assert cli.main(["ingest", "--quiet", "--db", str(warehouse), str(root)]) == cli.EXIT_FILES_FAILED
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT job_id FROM jobs").fetchall() == [("good",)]
        assert con.execute("SELECT path, outcome, error FROM ingest_files WHERE outcome = 'failed'").fetchall() == [
            (f"{root}/run\ufffd/trainer_log.jsonl", "failed", "its path is not valid UTF-8: rename the folder")
        ]


def test_an_ingest_root_that_loops_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert cli.main(["ingest", "--db", str(tmp_path / "w.duckdb"), str(tmp_path / "loop")]) == cli.EXIT_USAGE
    (line,) = capsys.readouterr().err.splitlines()  # the loop as Python words it ("Symlink loop from …")
    assert line.startswith(f"runlytics ingest: ingest root {tmp_path}/loop can't be resolved: ")


def test_an_mlflow_meta_yaml_of_aliases_is_read_quickly(tmp_path: Path) -> None:
    from runlytics.ingest.formats import mlflow_store

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    began = time.monotonic()
    meta, warnings = mlflow_store.load_meta("\n".join([*lines, "status: 3", "run_id: r1"]).encode())
    assert time.monotonic() - began < 5
    assert meta is not None and warnings == []
    assert (meta["status"], meta["run_id"]) == (3, "r1")
    assert meta["a8"] == "[" + "[[...], [...], [...], [...], ...], " * 4 + "...]"  # a list is no fact: short text
    assert mlflow_store.load_meta(b"status: 3\nrun_id: r1\nstart_time: 17\n") == (
        {"status": 3, "run_id": "r1", "start_time": 17},
        [],
    )


def test_a_nul_asked_for_on_postgresql_finds_the_u_fffd_job_whole(tmp_path: Path, pg_url: str) -> None:
    from fastapi.testclient import TestClient

    from runlytics.api.app import create_app

    job = tmp_path / "root" / "j"
    job.mkdir(parents=True)
    history = [{"step": 10, "loss": 1.0, "iteration_time": 0.5}, {"step": 20, "loss": math.nan, "iteration_time": 0.5}]
    (job / "progress.json").write_text(json.dumps({"job_id": "\ufffd-x", "status": "completed", "history": history}))
    assert cli.main(["ingest", "--quiet", "--db", pg_url, "--stage", str(tmp_path / "s.duckdb"), str(job.parent)]) == 0
    client = TestClient(create_app(db.PostgresUrl(pg_url)))
    answer = client.get("/api/training/%00-x/analytics")
    assert answer.status_code == 200
    assert (answer.json()["job_id"], answer.json()["insights"]) == (
        "\ufffd-x",
        {"critical": 1, "warning": 0, "info": 0},
    )


def test_entries_that_are_no_regular_files_are_said_wherever_they_are(tmp_path: Path) -> None:
    root, spool = tmp_path / "root", tmp_path / "spool"
    for job in ("a", "b", "c"):
        (root / job / "checkpoint-5").mkdir(parents=True)
        (root / job / "progress.json").write_text('{"status": "completed", "history": [{"step": 1, "loss": 1.0}]}')
    os.mkfifo(root / "a" / "checkpoint-5" / "trainer_state.json")
    (root / "b" / "checkpoint-5" / "trainer_state.json").symlink_to(tmp_path / "nowhere")
    (root / "c" / "last-checkpoint" / "trainer_state.json").mkdir(parents=True)  # a folder: no state, as before
    spool.mkdir()
    (spool / "good.jsonl").write_text('{"ts": 1762423200, "job_id": "a", "gpu_index": 0, "utilization_percent": 50}\n')
    os.mkfifo(spool / "fifo.jsonl")
    (spool / "zero.jsonl").symlink_to("/dev/zero")
    (spool / "loop.jsonl").symlink_to(spool / "loop.jsonl")
    (spool / "archive.jsonl.d").mkdir()  # a folder named so is walked: its files read, no failure (a review)
    (spool / "archive.jsonl.d" / "old.jsonl").write_text(
        '{"ts": 1762423100, "job_id": "a", "gpu_index": 0, "utilization_percent": 40}\n'
    )
    summary = ingest(tmp_path / "w.duckdb", [root], spools=[spool], wait=10)
    assert (summary.rows, summary.gpu_samples) == (3, 2)
    assert sorted((p["path"], p["outcome"], p["reason"]) for p in summary.problems) == [
        (f"{root}/a/checkpoint-5/trainer_state.json", "failed", "not a regular file (a FIFO): not read"),
        (f"{root}/b/checkpoint-5/trainer_state.json", "failed",
         f"a symbolic link to {tmp_path}/nowhere, which does not exist: not read"),
        (f"{spool}/fifo.jsonl", "failed", "not a regular file (a FIFO): not read"),
        (f"{spool}/loop.jsonl", "failed", "cannot stat: Too many levels of symbolic links: not read"),
        (f"{spool}/zero.jsonl", "failed", "not a regular file (a character device): not read"),
    ]  # fmt: skip
    assert summary.to_retry == 5


def test_a_llamafactory_log_replaced_by_garbage_leaves_the_status_stored(lab: Lab) -> None:
    log = lab.root / "lf" / "trainer_log.jsonl"
    log.parent.mkdir(parents=True)
    lines = [{"current_steps": s, "total_steps": 2, "loss": 1.0 / s, "elapsed_time": f"0:00:0{s}"} for s in (1, 2)]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    lab.ingest()
    stored = lab.query("SELECT status, ended_at FROM jobs")
    assert stored[0][0] == "completed" and stored[0][1] is not None
    log.write_text("garbage\n")
    lab.ingest()
    assert lab.query("SELECT status, ended_at FROM jobs") == stored
    assert lab.query("SELECT step, value FROM metric_values ORDER BY step") == [(1, 1.0), (2, 0.5)]
    # a new training's first line is the whole log's word again
    log.write_text(json.dumps({"current_steps": 1, "total_steps": 5, "loss": 3.0, "elapsed_time": "0:00:01"}) + "\n")
    lab.ingest()
    assert lab.query("SELECT status, ended_at FROM jobs") == [("unknown", None)]


def test_a_failed_chain_leaves_no_migration_context_behind(pg_url: str) -> None:
    from alembic import op

    from runlytics.warehouse import migrate

    with psycopg.connect(pg_url) as con:
        con.execute("CREATE TABLE gpu_minutes (n integer)")  # revision 0015's table, taken
    with pytest.raises(db.WarehouseError, match="gpu_minutes"):
        migrate.upgrade_postgres(db.PostgresUrl(pg_url))
    assert getattr(op, "_proxy", None) is None
