"""Audit 23: what independent readers of analytics.md, insights.md and the real files found (revision 0042).

1. A figure summed or divided from finite values could overflow to Infinity (samples of 1e308
   over 10 s). The API printed it as null, but the job list ranked it as the highest throughput,
   so a keyset page after it skipped the next job; the throughput score was least(100, Infinity)
   = 100 and the summary's mean throughput null. Such a figure is now NULL, with a warning.
2. idle_gpus was 0 for GPUs sampled without a utilization (nvidia-smi's power alone): NULL.
3. loss_spike, overfitting, throughput_drop and stall printed figure and reference alike at
   thresholds other than the defaults ("spiked to 1 ... against a median of 1").
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DEEP_ONLY, REALDATA, Engine, Lab
from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from runlytics.ingest.formats.nvidia_smi import CsvImport
from runlytics.warehouse import db, insights

OVERFLOW = "null where a sum or ratio of finite values exceeds the largest double (about 1.8e308): "


def analytics(lab: Lab, job_id: str, *columns: str) -> dict[str, Any]:
    rows = lab.query(f"SELECT {', '.join(columns)}, warnings FROM job_results WHERE job_id = $j", {"j": job_id})
    assert len(rows) == 1, rows
    return dict(zip([*columns, "warnings"], rows[0], strict=True))


def overflowing_jobs(lab: Lab) -> None:
    # U: 1e308 samples/s over 10 s is 1e309 samples, beyond a double; T: 4 x 10 samples in 10 s
    history = [{"step": 10, "iteration_time": 1.0, "samples_per_second": 1e308}]
    lab.write_job("U", {"job_id": "U", "status": "completed", "history": history})
    config = {"batch_size": 4, "target_samples_per_second": 8}
    timed = [{"step": 10, "iteration_time": 1.0}]
    lab.write_job("T", {"job_id": "T", "status": "completed", "config": config, "history": timed})
    lab.ingest()


def test_a_throughput_that_overflows_is_null_with_a_warning_and_no_score(lab: Lab, engine: Engine) -> None:
    lab.engine = engine  # the figures read on DuckDB, then on PostgreSQL's views (a db copy)
    overflowing_jobs(lab)
    u = analytics(lab, "U", "total_samples", "average_samples_per_second", "peak_samples_per_second",
                  "throughput_score", "overall_score", "training_seconds")  # fmt: skip
    assert (u["total_samples"], u["average_samples_per_second"], u["throughput_score"], u["overall_score"]) == (
        None, None, None, None,
    )  # fmt: skip
    assert (u["peak_samples_per_second"], u["training_seconds"]) == (1e308, 10.0)
    assert OVERFLOW + "total_samples, average_samples_per_second" in u["warnings"]
    assert "throughput_score is null: average_samples_per_second is null" in u["warnings"]
    assert not any("no positive target" in w or "total_samples is null" in w for w in u["warnings"])
    t = analytics(lab, "T", "total_samples", "average_samples_per_second", "throughput_score")
    assert (t["total_samples"], t["average_samples_per_second"], t["throughput_score"]) == (40.0, 4.0, 50.0)
    assert not any(w.startswith(OVERFLOW) for w in t["warnings"])


def test_the_job_list_and_the_summary_rank_an_overflowed_throughput_as_unknown(lab: Lab) -> None:
    overflowing_jobs(lab)
    with TestClient(create_app(lab.db, token=None)) as client:
        summary = client.get("/api/training/analytics/summary").json()
        assert summary["average_throughput_samples_per_sec"] == 4.0
        assert [j["job_id"] for j in summary["top_performing_jobs"]] == ["T"]
        seen, url = [], "/api/training/jobs?sort=-average_samples_per_second&limit=1"
        while url:
            page = client.get(url).json()
            seen += [j["job_id"] for j in page["jobs"]]
            url = page.get("next")
        assert seen == ["T", "U"]  # a job without the figure last; none skipped


@DEEP_ONLY  # an audit's edge case (docs/testing.md, "Deep runs", session 24)
def test_training_seconds_and_loss_reduction_that_overflow_are_null(lab: Lab, engine: Engine) -> None:
    lab.engine = engine  # the figures read on DuckDB, then on PostgreSQL's views (a db copy)
    history = [
        {"step": 10, "iteration_time": 1e308, "loss": 1e-300, "timestamp": "2026-03-01T10:00:00Z"},
        {"step": 20, "iteration_time": 1e308, "loss": 1e300, "timestamp": "2026-03-01T10:10:00Z"},
    ]
    lab.write_job("o", {"job_id": "o", "status": "completed", "started_at": "2026-03-01T09:00:00Z", "history": history})
    lab.ingest()
    o = analytics(lab, "o", "total_seconds", "training_seconds", "overhead_seconds", "average_iteration_time",
                  "loss_reduction_percent", "initial_loss", "final_loss")  # fmt: skip
    assert o["total_seconds"] == 4200.0  # 09:00 to 10:10
    assert (o["training_seconds"], o["overhead_seconds"], o["average_iteration_time"]) == (None, None, None)
    assert (o["loss_reduction_percent"], o["initial_loss"], o["final_loss"]) == (None, 1e-300, 1e300)
    assert (OVERFLOW + "training_seconds, overhead_seconds, average_iteration_time, loss_reduction_percent") in o[
        "warnings"
    ]


def test_idle_gpus_is_unknown_where_no_gpu_has_a_utilization(lab: Lab, engine: Engine) -> None:
    lab.engine = engine  # the figures read on DuckDB, then on PostgreSQL's views (a db copy)
    log = REALDATA / "nvidia_smi_csv" / "power-only-50ms.csv"
    lab.write_job("p", {"job_id": "p", "status": "completed"})
    assert lab.ingest(csv_imports=[CsvImport(log, "p", "UTC", "ws-1")]).failed == 0
    p = analytics(lab, "p", "idle_gpus", "gpus_with_power")
    assert (p["idle_gpus"], p["gpus_with_power"]) == (None, 1)
    assert "idle_gpus is null: no GPU has time with a finite utilization (between two of its samples)" in p["warnings"]


@DEEP_ONLY  # an audit's edge case (docs/testing.md, "Deep runs", session 24)
def test_the_step_kinds_messages_tell_figure_and_reference_apart_at_any_threshold(lab: Lab) -> None:
    base = 1_772_355_600  # 2026-03-01T09:00:00Z
    history = [{"step": s, "timestamp": base + 10 * s, "loss": 1.0} for s in range(1, 22)]
    history[-1] = {"step": 21, "timestamp": base + 210.000001, "loss": 1.0000001}
    lab.write_job("k", {"job_id": "k", "status": "completed", "history": history})
    lab.ingest()
    with db.connection(lab.db) as con:  # each setting recomputes every job's insights
        for name, value in (("loss_spike.relative", 0), ("loss_spike.mad_factor", 0), ("stall.factor", 1),
                            ("stall.min_seconds", 0)):  # fmt: skip
            insights.set_threshold(con, name, value)
    kinds = "SELECT kind, message FROM insight_results WHERE job_id = 'k' AND kind IN ('loss_spike', 'stall')"
    messages = dict(lab.query(kinds))
    assert messages == {
        "loss_spike": "The loss spiked to 1.0000001 at step 21, against a median of 1 over the 20 losses just before.",
        "stall": "No row was logged for 10.000001 s between steps 20 and 21, against a median gap of 10 s.",
    }


@DEEP_ONLY  # an audit's edge case (docs/testing.md, "Deep runs", session 24)
def test_a_refused_updated_at_is_said_once_and_stands_in_for_no_entry(lab: Lab) -> None:
    legacy = {"job_id": "b", "status": "running", "updated_at": "bad", "step": 3, "loss": 1.0}
    lab.write_job("b", legacy)
    latest = {"job_id": "c", "status": "running", "updated_at": "bad", "history": [{"step": 2}], "latest": {"step": 2}}
    lab.write_job("c", latest)
    lab.ingest()
    warnings = lab.query("SELECT job_id, warning_count, warnings FROM ingest_files ORDER BY job_id")
    said = '["updated_at \\"bad\\" is not a timestamp, dropped"]'
    assert warnings == [("b", 1, said), ("c", 1, said)]
    assert lab.query("SELECT job_id, step, ts, ts_stand_in FROM steps ORDER BY job_id") == [
        ("b", 3, None, False),
        ("c", 2, None, False),
    ]


def sample(ts: str, utilization: float) -> str:
    return json.dumps({"ts": ts, "host": "n1", "job_id": "j1", "gpu_index": 0, "gpu_uuid": "GPU-1",
                       "utilization_percent": utilization, "power_w": 100.0})  # fmt: skip


GPU_FIGURES = "SELECT samples, first_sample, average_utilization, energy_wh FROM job_gpus"


def pruned_first_day(lab: Lab, tmp_path: Path) -> Path:
    """A job's GPU sampled three times at 2025-06-10 12:00 and once two days later, ingested with
    --keep-raw-days 1 (2025-06-10 pruned); the folder for a later spool."""
    progress = {"job_id": "j1", "status": "completed", "started_at": "2025-06-10T11:59:00Z",
                "ended_at": "2025-06-12T12:01:00Z", "history": [{"step": 10, "loss": 1.0}]}  # fmt: skip
    lab.write_job("j1", progress)
    first, late = tmp_path / "first", tmp_path / "late"
    first.mkdir(), late.mkdir()
    lines = [("2025-06-10T12:00:00Z", 10), ("2025-06-10T12:00:20Z", 20), ("2025-06-10T12:00:40Z", 30),
             ("2025-06-12T12:00:00Z", 40)]  # fmt: skip
    (first / "a.jsonl").write_text("".join(sample(ts, u) + "\n" for ts, u in lines))
    lab.ingest(spool_root=first, keep_raw_days=1)
    assert lab.query(GPU_FIGURES) == [(4, datetime(2025, 6, 10, 12), 25.0, 4800.0)]  # 100 W over 48 h
    return late


@pytest.mark.parametrize("later_keep_days", [30, 0])
@DEEP_ONLY  # an audit's edge case (docs/testing.md, "Deep runs", session 24)
def test_a_run_keeping_more_days_never_rebuilds_a_pruned_minute_from_a_late_sample(
    lab: Lab, tmp_path: Path, later_keep_days: int
) -> None:
    """A later run with a wider window (the default 30, or 0: everything) got a late sample of a
    pruned minute and rebuilt that minute from it alone (2 samples, mean 65): it is skipped with a
    warning, as under the first run's window."""
    late = pruned_first_day(lab, tmp_path)
    (late / "b.jsonl").write_text(sample("2025-06-10T12:00:30Z", 90) + "\n")
    summary = lab.ingest(spool_root=late, keep_raw_days=later_keep_days)
    assert lab.query(GPU_FIGURES) == [(4, datetime(2025, 6, 10, 12), 25.0, 4800.0)]
    assert [m for _, m in summary.listed_warnings if "already rolled up" in m], summary.listed_warnings


@DEEP_ONLY  # an audit's edge case (docs/testing.md, "Deep runs", session 24)
def test_a_sample_in_a_new_minute_of_a_pruned_day_is_stored_as_one_ingest_stores_it(lab: Lab, tmp_path: Path) -> None:
    late = pruned_first_day(lab, tmp_path)
    (late / "b.jsonl").write_text(sample("2025-06-10T12:03:00Z", 90) + "\n")
    lab.ingest(spool_root=late, keep_raw_days=30)
    # (10 + 20 + 30 + 90 + 40) / 5; the minutes as one ingest of the five samples gives them
    assert lab.query(GPU_FIGURES) == [(5, datetime(2025, 6, 10, 12), 38.0, 4800.0)]
    assert lab.query("SELECT minute, samples, utilization_percent_sum FROM gpu_minutes ORDER BY minute") == [
        (datetime(2025, 6, 10, 12, 0), 3, 60.0),
        (datetime(2025, 6, 10, 12, 3), 1, 90.0),
        (datetime(2025, 6, 12, 12, 0), 1, 40.0),
    ]


@DEEP_ONLY  # an audit's edge case (docs/testing.md, "Deep runs", session 24)
def test_an_mlflow_runs_checkpoint_folders_are_its_checkpoints(lab: Lab) -> None:
    run = lab.root / "mlruns" / "1" / "run5"
    (run / "metrics").mkdir(parents=True)
    (run.parent / "meta.yaml").write_text("experiment_id: '1'\nname: e\nlifecycle_stage: active\n")
    (run / "meta.yaml").write_text(
        "run_id: run5\nexperiment_id: '1'\nstatus: 3\nstart_time: 1772355600000\nend_time: 1772356200000\n"
        "lifecycle_stage: active\n"
    )
    (run / "metrics" / "train_loss").write_text("1772355660000 2.0 100\n1772355720000 1.5 200\n")
    (run / "checkpoint-200").mkdir()
    lab.ingest()
    rows = lab.query("SELECT total_checkpoints, checkpoint_frequency_steps, final_checkpoint FROM job_results")
    assert rows == [(1, 200.0, "checkpoint-200")]


@DEEP_ONLY  # an audit's edge case (docs/testing.md, "Deep runs", session 24)
def test_the_trainer_summary_warning_says_no_row_has_seconds_not_no_timestamp(lab: Lab) -> None:
    """Rows 10 and 30 have timestamps, none has seconds (row 20 between them has none): the warning
    said "none has a timestamp or iteration_time"."""
    history = [
        {"step": 10, "timestamp": "2026-03-01T10:01:00Z", "loss": 2.0},
        {"step": 20, "loss": 1.5},
        {"step": 30, "timestamp": "2026-03-01T10:03:00Z", "loss": 1.2},
    ]
    lab.write_job("p", {"job_id": "p", "status": "running", "history": history})
    state = {"global_step": 30, "max_steps": 30, "log_history": [
        {"step": 30, "loss": 1.2}, {"step": 30, "train_runtime": 180.0, "train_samples_per_second": 3.3}]}  # fmt: skip
    (lab.root / "p" / "trainer_state.json").write_text(json.dumps(state))
    lab.ingest()
    p = analytics(lab, "p", "training_seconds")
    assert p["training_seconds"] is None
    assert (
        "the trainer's train_runtime and train_samples_per_second (trainer_runs) are its summary's own figures,"
        " not used: durations and throughput come from the step rows, and none has seconds (an iteration_time,"
        " or timestamps on it and on the row before)"
    ) in p["warnings"]
