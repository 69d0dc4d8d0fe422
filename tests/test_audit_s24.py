"""Audit 24: what independent readers of the contracts, the tools' logs, the GPU figures and the API
found (revision 0043).

1. A checkpoint entry's NaN or infinite eval_loss was left out of the best checkpoint but counted
   nowhere (inputs.md: a non-finite value is kept out ... and counted).
2. An HF Trainer run logged to MLflow took the run's average `train_loss`, logged once at the end,
   as its whole loss series (initial = final, reduction 0): `loss` ranks first now.
3. Lightning's `train/loss_step` gave a loss from TensorBoard but none from its CSV logger.
4. Three warnings gave a false reason; `/gpus` ignored a cursor beside `max_points`.
5. A file whose JSON broke at its last character (a document and one stray `}`, or a value
   missing before the last brace) was "cut short" and pending for ever, with exit 0: it is a
   torn tail (pending 5 minutes, then failed) or not JSON (failed), as docs/ingest.md says.
6. A thread the system refused (`ulimit -v` reached at `runlytics sql`'s start) was a traceback.
7. A job of checkpoint-<step>/ states left another subfolder's state (final_model/) unread, and
   a state read as a job of its own folder stayed that job once its parent folder became one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab
from fastapi.testclient import TestClient
from file_times import write
from hypothesis import assume, given
from hypothesis import strategies as st

from runlytics.api.app import create_app
from runlytics.cli import errors
from runlytics.ingest import progress

T0 = 1796083200  # 2026-12-01 00:00:00 UTC


def analytics(lab: Lab, job_id: str, *columns: str) -> dict[str, Any]:
    rows = lab.query(f"SELECT {', '.join(columns)}, warnings FROM job_analytics WHERE job_id = $j", {"j": job_id})
    assert len(rows) == 1, rows
    return dict(zip([*columns, "warnings"], rows[0], strict=True))


def test_a_checkpoint_entrys_nonfinite_eval_loss_is_left_out_and_counted(lab: Lab, engine: Engine) -> None:
    lab.engine = engine  # on DuckDB, then PostgreSQL's views (a db copy)
    checkpoints = (
        '[{"step": 10, "eval_loss": NaN}, {"step": 20, "eval_loss": -Infinity}, {"step": 30, "eval_loss": 2.0}]'
    )
    lab.write_job("ck", None, raw=(
        '{"job_id": "ck", "status": "completed", "checkpoints": ' + checkpoints + ', '
        '"history": [{"step": 10, "loss": 1.0, "eval_loss": 3.0}, {"step": 30, "loss": 0.5}]}'
    ))  # fmt: skip
    lab.write_job("fine", {"job_id": "fine", "status": "completed", "checkpoints": [{"step": 5, "eval_loss": 1.0}],
                           "history": [{"step": 5, "loss": 1.0}]})  # fmt: skip
    lab.ingest()
    # checkpoint 10's NaN falls back to its step row's 3.0 (views.md); 20 has none; 30's 2.0 is the lowest
    ck = analytics(lab, "ck", "best_checkpoint", "total_checkpoints")
    assert (ck["best_checkpoint"], ck["total_checkpoints"]) == ("checkpoint-30", 3)
    assert "2 non-finite eval_loss value(s) of checkpoint entries left out" in ck["warnings"]
    scores = lab.query("SELECT step, eval_loss, nonfinite_eval_loss FROM checkpoint_scores WHERE job_id = 'ck' "
                       "ORDER BY step")  # fmt: skip
    assert scores == [(10, 3.0, True), (20, None, True), (30, 2.0, False)]
    assert lab.query("SELECT job_id, nonfinite_eval_losses FROM job_checkpoints ORDER BY job_id") == [
        ("ck", 2), ("fine", 0),
    ]  # fmt: skip
    assert not any("checkpoint entries" in w for w in analytics(lab, "fine", "job_id")["warnings"])


def _mlflow_run(root: Path, metrics: dict[str, list[tuple[int, float, int]]]) -> None:
    """A finished MLflow run (status 3) in a file store: one file per metric of `ms value step` lines."""
    run = root / "mlruns" / "1" / "abc"
    (run / "metrics").mkdir(parents=True)
    (root / "mlruns" / "1" / "meta.yaml").write_text("experiment_id: '1'\nlifecycle_stage: active\nname: hf\n")
    (run / "meta.yaml").write_text(
        "end_time: 1700000040000\nexperiment_id: '1'\nlifecycle_stage: active\nrun_id: abc\n"
        "run_name: hf-run\nstart_time: 1700000000000\nstatus: 3\n"
    )
    for name, points in metrics.items():
        (run / "metrics" / name).write_text("".join(f"{ms} {value} {step}\n" for ms, value, step in points))


def test_an_hf_runs_mlflow_loss_is_its_per_step_loss_not_the_run_average(lab: Lab) -> None:
    # what the HF Trainer's MLflowCallback logs: `loss` at each logging step, and at the end the
    # summary, `train_loss` being the run's average loss
    _mlflow_run(lab.root, {
        "loss": [(1700000010000, 2.0, 10), (1700000020000, 1.5, 20), (1700000030000, 1.0, 30)],
        "train_loss": [(1700000035000, 1.5, 30)],
        "eval_loss": [(1700000030000, 1.2, 30)],
    })  # fmt: skip
    lab.ingest()
    job = analytics(lab, "mlruns/1/abc", "initial_loss", "final_loss", "best_loss", "loss_reduction_percent")
    # 100 x (2.0 - 1.0) / 2.0
    assert (job["initial_loss"], job["final_loss"], job["best_loss"], job["loss_reduction_percent"]) == (
        2.0, 1.0, 1.0, 50.0,
    )  # fmt: skip
    assert lab.query("SELECT step, loss, eval_loss FROM step_facts ORDER BY step") == [
        (10, 2.0, None), (20, 1.5, None), (30, 1.0, 1.2),
    ]  # fmt: skip
    # the run's average stays a metric of its own
    assert lab.query("SELECT step, value FROM metric_points WHERE name = 'train_loss'") == [(30, 1.5)]


def test_lightnings_step_and_epoch_names_give_the_loss_from_its_csv_logger(lab: Lab) -> None:
    # self.log("train/loss", on_step=True, on_epoch=True) and self.log("val/loss") in metrics.csv
    run = lab.root / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "epoch,step,train/loss_step,val/loss,train/loss_epoch\n0,9,2.0,,\n0,19,1.5,,\n0,19,,1.6,\n0,19,,,1.75\n"
    )
    lab.ingest()
    job = analytics(lab, "lightning_logs/version_0", "initial_loss", "final_loss", "loss_reduction_percent",
                    "final_eval_loss")  # fmt: skip
    # the step series (train/loss_step ranks above train/loss_epoch): 100 x (2.0 - 1.5) / 2.0
    assert (job["initial_loss"], job["final_loss"], job["loss_reduction_percent"], job["final_eval_loss"]) == (
        2.0, 1.5, 25.0, 1.6,
    )  # fmt: skip


def test_warnings_give_their_true_reason_and_gpus_refuses_a_cursor_beside_max_points(lab: Lab) -> None:
    # backwards: 2 rows, the second's timestamp before the first's (no seconds for either)
    lab.write_job("backwards", {"job_id": "backwards", "status": "running", "started_at": T0, "history": [
        {"step": 1, "timestamp": T0 + 100}, {"step": 2, "timestamp": T0 + 50}]})  # fmt: skip
    # unplaced: its first row has a timestamp but no seconds, and no started_at
    lab.write_job("unplaced", {"job_id": "unplaced", "status": "completed", "history": [
        {"step": 1, "timestamp": T0 + 10, "loss": 1.0}, {"step": 2, "timestamp": T0 + 20, "loss": 0.5}]})  # fmt: skip
    # O: both GPUs' samples carry throttle reasons, but each is its GPU's only one: no interval
    row = {"step": 100, "timestamp": T0 + 600, "iteration_time": 6.0, "loss": 1.0}
    lab.write_job("O", {"job_id": "O", "status": "completed", "started_at": T0, "ended_at": T0 + 600, "history": [row]})
    spool = lab.root.parent / "spool"
    spool.mkdir()
    lines = [
        {"ts": T0, "host": "n1", "job_id": "O", "gpu_index": 0, "gpu_uuid": "G0", "utilization_percent": 50.0,
         "power_w": 100.0, "clocks_event_reasons": 4},
        {"ts": T0 + 5, "host": "n1", "job_id": "O", "gpu_index": 1, "gpu_uuid": "G1", "utilization_percent": 50.0,
         "power_w": 100.0, "clocks_event_reasons": 0},
    ]  # fmt: skip
    (spool / "n1-2026120100.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    lab.ingest(spool_root=spool)

    backwards = analytics(lab, "backwards", "training_seconds", "total_seconds")
    assert (backwards["training_seconds"], backwards["total_seconds"]) == (None, 50.0)
    assert (
        "training time partly unknown: 2 of 2 step rows have no seconds (neither an iteration_time nor timestamps"
        " on them and on the row before, not going backwards)" in backwards["warnings"]
    )
    unplaced = analytics(lab, "unplaced", "total_seconds", "training_seconds")
    assert (unplaced["total_seconds"], unplaced["training_seconds"]) == (None, 10.0)
    assert (
        "start unknown: no started_at, and the first step row has no timestamp, or no seconds to go back from it"
        in unplaced["warnings"]
    )
    o = analytics(lab, "O", "average_throttled_share")
    assert o["average_throttled_share"] is None
    assert (
        "average_throttled_share is null: no GPU has time with known throttle reasons (a sample carrying them,"
        " followed by another of its GPU)" in o["warnings"]
    )

    with TestClient(create_app(lab.db, token=None)) as client:
        page = client.get("/api/training/O/gpus?limit=1").json()
        assert page["next_cursor"]
        for cursor in ("x", page["next_cursor"]):
            answer = client.get("/api/training/O/gpus", params={"max_points": 10, "cursor": cursor})
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"].startswith("cursor and max_points can't be given together")


# --- a file is "cut short" only where a document can go on (docs/ingest.md, "Outcomes") --------

DOCUMENT = json.dumps({
    "job_id": "j", "status": "running", "started_at": "2026-03-01T10:00:00Z",
    "config": {"batch_size": 8, "lr": 1e-4, "tags": ["a", "b"], "on": True, "off": False, "none": None},
    "history": [{"step": 1, "loss": -1.5e-3, "timestamp": 1772359200.25}, {"step": 2, "loss": 2}],
})  # fmt: skip


@given(st.integers(1, len(DOCUMENT) - 1))
def test_every_start_of_a_document_is_cut_short_and_pending_however_old(cut: int) -> None:
    text = DOCUMENT[:cut]
    assume(text.strip())
    outcome, reason = progress.diagnose(text.encode(), age_seconds=3600.0)
    assert (outcome, reason.startswith("JSON ends early")) == ("pending", True), text


def test_a_document_and_one_more_character_or_a_missing_value_is_no_cut() -> None:
    settled = progress.TORN_TAIL_SECONDS + 60
    # a whole document, then one character of an older one's tail: torn while fresh, then failed
    for tail in ("}", "\n}", "]"):
        assert progress.diagnose((DOCUMENT + tail).encode(), age_seconds=1.0)[0] == "pending"
        assert progress.diagnose((DOCUMENT + tail).encode(), age_seconds=settled) == (
            "failed", f"invalid JSON at line {1 + tail.count(chr(10))} column "
            f"{len(DOCUMENT) + 1 if tail[0] != chr(10) else 1}: Extra data",
        )  # fmt: skip
    # a value missing before the last brace cannot be a document's start: failed at once
    assert progress.diagnose(b'{"job_id": "x", "status": }', age_seconds=1.0) == (
        "failed", "invalid JSON at line 1 column 27: Expecting value",
    )  # fmt: skip


def test_a_stray_brace_after_a_document_fails_the_run_once_settled(lab: Lab) -> None:
    path = lab.write_job("t1", None, raw='{"job_id": "t1", "history": []}}')
    old = time.time() - progress.TORN_TAIL_SECONDS - 60
    os.utime(path, (old, old))
    lab.write_job("fine", {"job_id": "fine", "history": [{"step": 1}]})
    summary = lab.ingest()
    assert (summary.ingested, summary.pending, summary.failed) == (1, 0, 1)
    assert [(p["outcome"], p["reason"]) for p in summary.problems] == [
        ("failed", "invalid JSON at line 1 column 32: Extra data")  # 31 characters, then the brace
    ]


def test_a_thread_the_system_refuses_is_out_of_memory_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # `ulimit -v` reached when `runlytics sql` starts its timeout's thread: exit 71, not a traceback
    def run(args: argparse.Namespace) -> int:
        raise RuntimeError("can't start new thread")

    assert errors._guarded(run, argparse.Namespace(command_name="sql")) == errors.EXIT_NO_MEMORY == 71
    assert capsys.readouterr().err == (
        "runlytics sql: out of memory (can't start new thread): stopped; nothing stored was lost"
        " (every write is a transaction)\n"
    )


def _state(global_step: int) -> str:
    """A trainer state logging a loss of 3 - step / 100 every 10 steps up to ``global_step``."""
    history = [{"step": s, "loss": round(3 - s / 100, 2)} for s in range(10, global_step + 1, 10)]
    return json.dumps({"global_step": global_step, "max_steps": 200, "log_history": history})


def test_a_checkpoint_jobs_other_subfolders_trainer_state_is_read_as_a_copy(lab: Lab) -> None:
    # a job by its checkpoint-100/ state alone; final_model/ holds the state at step 200 (docs/ingest.md:
    # in a folder that is a job anyway, any subfolder's trainer_state.json is a checkpoint copy)
    for folder, step in (("checkpoint-100", 100), ("final_model", 200)):
        (lab.root / "run" / folder).mkdir(parents=True)
        (lab.root / "run" / folder / "trainer_state.json").write_text(_state(step))
    summary = lab.ingest()
    assert (summary.files_seen, summary.ingested, summary.problems) == (2, 2, [])
    job = analytics(lab, "run", "total_iterations", "final_loss", "total_checkpoints", "final_checkpoint")
    # 3 - 200 / 100 = 1.0 at step 200; checkpoints at 100 (its folder) and 200 (the copy's global_step)
    assert (job["total_iterations"], job["final_loss"], job["total_checkpoints"], job["final_checkpoint"]) == (
        200, 1.0, 2, "checkpoint-200",
    )  # fmt: skip
    assert lab.query("SELECT job_id FROM jobs") == [("run",)]


def test_a_state_read_as_its_own_job_moves_to_the_folder_that_became_a_job(lab: Lab) -> None:
    # run 1: run/export/ alone holds a state: job `export`; run 2: run/ gets its own state (the
    # Trainer's end), so run/ is the job and export/ a copy of it: as one ingest of both files
    write(lab.root / "run" / "export" / "trainer_state.json", _state(150))
    lab.ingest()
    assert lab.query("SELECT job_id FROM jobs") == [("export",)]
    write(lab.root / "run" / "trainer_state.json", _state(200))
    lab.ingest()
    assert lab.query("SELECT job_id, current_step FROM jobs") == [("run", 200)]
    assert lab.query("SELECT job_id, count(*) FROM trainer_steps GROUP BY job_id") == [("run", 20)]
    assert lab.query("SELECT job_id, step FROM checkpoints") == [("run", 150)]  # the copy's global_step
    assert lab.query("SELECT job_id FROM job_results UNION ALL SELECT job_id FROM insight_jobs") == [("run",)] * 2
    assert lab.query("SELECT DISTINCT job_id FROM ingest_files WHERE kind = 'trainer_state'") == [("run",)]


# --- answers that PostgreSQL's float8 turned into a 500 (it raises on overflow) ----------------


def test_the_fleet_histogram_bounds_every_bin_of_a_huge_throughput(lab: Lab, engine: Engine) -> None:
    # 1e307 samples/s in 20 bins: lo + (hi - lo) x 20 / 20 went beyond a double (PostgreSQL: a 500;
    # DuckDB: bins without bounds)
    for job_id, sps in (("j1", 1.0), ("j2", 1e307)):
        lab.write_job(
            job_id, {"job_id": job_id, "status": "completed", "latest": {"step": 1, "samples_per_second": sps}}
        )
    lab.ingest()
    with TestClient(create_app(engine.warehouse(lab.db), token=None)) as client:
        answer = client.get("/api/training/analytics/fleet")
        assert answer.status_code == 200, answer.text
        bins = answer.json()["throughput_histogram"]
    assert len(bins) == 20 and [b["jobs"] for b in bins] == [1] + [0] * 18 + [1]
    assert all(b["low"] is not None and b["high"] is not None for b in bins)
    # each bin 5e305 wide (1e307 / 20); bounds below 1.8e308 / 1e307 = 17 bins computed as before
    assert (bins[0]["low"], bins[1]["low"], bins[19]["high"]) == (1.0, 1 + 1e307 / 20, 1 + 1e307 / 20 * 20)


def test_metrics_of_a_running_job_whose_timings_overflow(lab: Lab, engine: Engine) -> None:
    # iteration times of 1e308 (their sum is beyond a double) and samples over 1e-320 s
    big = [{"step": s, "iteration_time": 1e308} for s in (1, 2)]
    lab.write_job("r_big", {"job_id": "r_big", "status": "running", "history": big})
    tiny = [{"step": 1, "samples": 1000, "iteration_time": 1e-320}]
    lab.write_job("r_tiny", {"job_id": "r_tiny", "status": "running", "history": tiny})
    lab.ingest()
    with TestClient(create_app(engine.warehouse(lab.db), token=None)) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert 'runlytics_job_step{job_id="r_big"} 2' in answer.text
