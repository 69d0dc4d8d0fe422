"""A job's timing figures come from its progress.json rows (revision 0038; audit findings P4, P2,
A1), on both engines (``ingest_engine``: docs/testing.md, "Both engines").

P4: a checkpoint's trainer_state.json or a trainer's own log in a progress.json job's folder logs
at other steps; its rows join the job's rows for their losses, but the timing figures (Δ, the
previous timestamp, seconds, samples, start and end) run over the progress.json rows only, so
adding such a log changes no duration, samples or throughput. A job without progress.json rows
keeps the rules over all its rows. P2: an end before the start is no duration (null, with a
warning). A1: seconds between two times are the correctly rounded exact difference."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DEEP_ONLY, Engine, Lab
from migration_steps import alembic

from runlytics.warehouse import health


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def _row(step: int, second: int, loss: float) -> dict[str, Any]:
    return {"step": step, "timestamp": f"2026-11-01T00:00:{second:02d}Z", "loss": loss,
            "iteration_time": 1.0, "samples_per_second": 8}  # fmt: skip


# three progress rows 10 s apart, each 10 iterations of 1 s at 8 samples/s: 80 samples a row
PROGRESS = {"status": "running", "updated_at": "2026-11-01T00:00:30Z",
            "history": [_row(10, 10, 2.0), _row(20, 20, 1.5), _row(30, 30, 1.2)]}  # fmt: skip
TRAINER_STATE = {"global_step": 30, "log_history": [{"step": 5, "loss": 3.0}, {"step": 15, "loss": 1.8},
                                                     {"step": 25, "loss": 1.3}]}  # fmt: skip
FIGURES = (
    "SELECT start_time, total_seconds, training_seconds, overhead_seconds, total_samples, average_samples_per_second"
)
EXPECTED = (datetime(2026, 11, 1), 30.0, 30.0, 0.0, 240.0, 8.0)


def _figures(lab: Lab, job: str, relation: str = "job_analytics") -> tuple[Any, ...]:
    [row] = lab.query(f"{FIGURES} FROM {relation} WHERE job_id = $job", {"job": job})
    return row


def _write_logged_jobs(lab: Lab) -> None:
    """m2: progress.json alone; m1 with a checkpoint's trainer state (steps 5, 15, 25), m3 with a
    Lightning metrics.csv (steps 4, 14, 24), m4 with a LLaMA-Factory trainer_log.jsonl (5, 15, 25)."""
    for job in ("m1", "m2", "m3", "m4"):
        lab.write_job(job, PROGRESS)
    state = lab.root / "m1" / "checkpoint-30" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps(TRAINER_STATE))
    (lab.root / "m3" / "metrics.csv").write_text("epoch,step,train_loss\n0,4,3.0\n0,14,1.8\n0,24,1.3\n")
    (lab.root / "m4" / "trainer_log.jsonl").write_text(
        "".join(
            json.dumps({"current_steps": s, "total_steps": 30, "loss": v}) + "\n"
            for s, v in ((5, 3.0), (15, 1.8), (25, 1.3))
        )  # fmt: skip
    )


def test_a_trainer_state_or_tool_log_between_progress_rows_changes_no_timing(lab: Lab) -> None:
    _write_logged_jobs(lab)
    assert lab.ingest().failed == 0
    # before revision 0038: m1 and m4 start null, 15 s training, 120 samples; m3 18 s and 144
    for job in ("m1", "m2", "m3", "m4"):
        assert _figures(lab, job) == EXPECTED, job
        assert _figures(lab, job, "job_results") == EXPECTED, job
    # the logs' rows still count for the losses: the first loss is the trainer's at step 5 (4)
    losses = "SELECT job_id, initial_loss, final_loss FROM job_analytics ORDER BY job_id"
    assert lab.query(losses) == [("m1", 3.0, 1.2), ("m2", 2.0, 1.2), ("m3", 3.0, 1.2), ("m4", 3.0, 1.2)]
    rows = "SELECT step, delta, seconds, samples, timing_no FROM step_metrics WHERE job_id = 'm1' ORDER BY step"
    assert lab.query(rows) == [
        (5, None, None, None, None),
        (10, 10, 10.0, 80.0, 1),
        (15, None, None, None, None),
        (20, 10, 10.0, 80.0, 2),
        (25, None, None, None, None),
        (30, 10, 10.0, 80.0, 3),
    ]
    # the insight rows read the same sequence: the previous progress row, no gap of the trainer's
    insight = (
        "SELECT step, prev_step, seconds, samples, last_timing_row FROM insight_rows WHERE job_id = 'm1' ORDER BY step"
    )
    assert lab.query(insight) == [
        (5, None, None, None, False),
        (10, None, 10.0, 80.0, False),
        (15, None, None, None, False),
        (20, 10, 10.0, 80.0, False),
        (25, None, None, None, False),
        (30, 20, 10.0, 80.0, True),
    ]
    warnings = "SELECT warnings FROM job_analytics WHERE job_id = 'm1'"
    assert not any("training time" in w for w in lab.query(warnings)[0][0])


def test_progress_rows_without_timing_and_a_shared_step(lab: Lab) -> None:
    # progress rows at 10 and 20 with neither timestamp nor iteration_time; the trainer logs 5, 10
    # (the same step: a progress row), 15 and 25 (after the last progress row)
    doc = {"status": "running", "config": {"batch_size": 4}, "updated_at": "2026-11-01T01:00:00Z",
           "history": [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.5}]}  # fmt: skip
    lab.write_job("p", doc)
    state = lab.root / "p" / "checkpoint-25" / "trainer_state.json"
    state.parent.mkdir()
    log = [{"step": 5, "loss": 3.0}, {"step": 10, "loss": 2.5, "eval_loss": 2.2}, {"step": 15, "loss": 1.8},
           {"step": 25, "loss": 1.2}]  # fmt: skip
    state.write_text(json.dumps({"global_step": 25, "log_history": log}))
    assert lab.ingest().failed == 0
    rows = "SELECT step, delta, seconds, samples, source FROM step_metrics WHERE job_id = 'p' ORDER BY step"
    assert lab.query(rows) == [
        (5, None, None, None, "trainer_state"),
        (10, 10, None, 40.0, "both"),
        (15, None, None, None, "trainer_state"),
        (20, 10, None, 40.0, "progress"),
        (25, None, None, None, "trainer_state"),
    ]
    [job] = lab.query(
        "SELECT start_time, end_time, total_seconds, training_seconds, total_samples, total_iterations,"
        " initial_loss, final_loss, final_eval_loss, warnings FROM job_analytics WHERE job_id = 'p'"
    )
    # before revision 0038: 100 samples (batch 4 x 25 iterations over every row)
    assert job[:9] == (None, datetime(2026, 11, 1, 1), None, None, 80.0, 25, 3.0, 1.2, 2.2)
    assert "training time partly unknown: 2 of 2 progress.json step rows have no seconds (neither an" \
           " iteration_time nor timestamps on them and on the row before, not going backwards)" in job[9]  # fmt: skip


def test_a_job_without_progress_rows_keeps_its_rules(lab: Lab) -> None:
    state = lab.root / "t" / "checkpoint-20" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text(
        json.dumps({"global_step": 20, "log_history": [{"step": 5, "loss": 3.0}, {"step": 20, "loss": 2.0}]})
    )
    assert lab.ingest().failed == 0
    rows = "SELECT step, delta, seconds, samples, timing_no, timing_count FROM step_metrics ORDER BY step"
    assert lab.query(rows) == [(5, 5, None, None, 1, 2), (20, 15, None, None, 2, 2)]


def test_an_end_before_the_start_is_no_duration(lab: Lab) -> None:
    doc = {"status": "completed", "started_at": "2026-11-01T00:00:00Z", "ended_at": "2026-10-31T23:00:00Z",
           "history": [{"step": 10, "timestamp": "2026-11-01T00:00:10Z", "iteration_time": 1.0}]}  # fmt: skip
    lab.write_job("p2", doc)
    assert lab.ingest().failed == 0
    [(total, training, overhead, warnings)] = lab.query(
        "SELECT total_seconds, training_seconds, overhead_seconds, warnings FROM job_analytics"
    )
    assert (total, training, overhead) == (None, 10.0, None)  # before revision 0038: -3600, 10, 0
    assert (
        "total_seconds and overhead_seconds are null: the end (end_time) is before the start (start_time)" in warnings
    )


def test_seconds_between_times_are_exact(lab: Lab) -> None:
    # epochs near 1.77e9 subtracted as doubles gave 1.2690000534057617 and 18.842000007629395
    doc = {"status": "completed", "started_at": "2026-02-28T23:00:00Z", "ended_at": "2026-02-28T23:00:18.842Z",
           "history": [{"step": 1, "timestamp": "2026-02-28T23:00:01.497000Z"},
                       {"step": 2, "timestamp": "2026-02-28T23:00:02.766000Z"}]}  # fmt: skip
    lab.write_job("a1", doc)
    assert lab.ingest().failed == 0
    assert lab.query("SELECT step, seconds FROM step_metrics ORDER BY step") == [(1, None), (2, 1.269)]
    assert lab.query("SELECT total_seconds, training_seconds FROM job_analytics") == [(18.842, 1.269)]
    # without started_at: the exact span from the first row's time, plus that row's seconds
    doc2 = {"status": "completed", "ended_at": "2026-02-28T23:00:03.985Z",
            "history": [{"step": 1, "timestamp": "2026-02-28T23:00:00Z", "iteration_time": 0.5}]}  # fmt: skip
    lab.write_job("a2", doc2)
    assert lab.ingest().failed == 0
    assert lab.query("SELECT total_seconds FROM job_analytics WHERE job_id = 'a2'") == [(3.985 + 0.5,)]


@DEEP_ONLY  # every revision's down and up, without data, in every run: test_migrations.py
def test_revision_0038_down_and_up(lab: Lab) -> None:
    _write_logged_jobs(lab)
    assert lab.ingest().failed == 0
    alembic(lab.warehouse(), "downgrade", "0037")
    # the earlier figures: the trainer's rows cut the progress rows' intervals
    assert _figures(lab, "m1", "job_results") == (None, None, 15.0, None, 120.0, 8.0)
    assert _figures(lab, "m2", "job_results") == EXPECTED
    alembic(lab.warehouse(), "upgrade", "0038")
    for job in ("m1", "m2", "m3", "m4"):
        assert _figures(lab, job, "job_results") == EXPECTED, job
    assert lab.query("SELECT version_num FROM alembic_version") == [("0038",)]


def test_a_stall_is_read_between_progress_rows(lab: Lab) -> None:
    # progress rows 10 s apart but one gap of 1,200 s; the trainer logs between them, untimed
    times = {10: "00:00:10", 20: "00:00:20", 30: "00:00:30", 40: "00:00:40", 50: "00:20:40"}
    history = [{"step": s, "timestamp": f"2026-11-01T{t}Z", "loss": 1.0} for s, t in times.items()]
    lab.write_job("s", {"status": "completed", "ended_at": "2026-11-01T00:20:40Z", "history": history})
    state = lab.root / "s" / "checkpoint-50" / "trainer_state.json"
    state.parent.mkdir()
    log = [{"step": s, "loss": 1.0} for s in (15, 25, 35, 45)]
    state.write_text(json.dumps({"global_step": 50, "log_history": log}))
    assert lab.ingest().failed == 0
    stalls = "SELECT first_step, last_step, value, reference FROM insight_results WHERE kind = 'stall'"
    assert lab.query(stalls) == [(40, 50, 1200.0, 10.0)]  # before revision 0038: none (no gap at all)


def _tool_log(lab: Lab, job: str, elapsed: dict[int, int], last_write: datetime) -> None:
    """A LLaMA-Factory trainer_log.jsonl: step -> elapsed seconds; its points are placed at the
    file's modification time less the highest elapsed_time plus their own (docs/ingest.md)."""
    path = lab.root / job / "trainer_log.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "current_steps": s,
                    "total_steps": 1000,
                    "loss": 1.0,
                    "elapsed_time": f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}",
                }
            )
            + "\n"
            for s, t in elapsed.items()
        )  # fmt: skip
    )
    epoch = last_write.replace(tzinfo=UTC).timestamp()
    os.utime(path, (epoch, epoch))


def test_the_end_and_the_silence_read_every_rows_time(lab: Lab) -> None:
    # a: progress rows 10, 20 (ts 0:10, 0:20, 1 s an iteration) and a trainer log (steps 5 and
    # 25 at 0:05 and 0:25) ahead of them; u: the same without the progress rows' timing; b: a's
    # progress.json alone. The end is a time, no interval: the latest of all rows' timestamps.
    history = [_row(10, 10, 2.0), _row(20, 20, 1.5)]
    lab.write_job("a", {"status": "running", "history": history})
    lab.write_job("b", {"status": "running", "history": history})
    lab.write_job("u", {"status": "running", "history": [{"step": 10, "loss": 2}, {"step": 20, "loss": 1.5}]})
    for job in ("a", "u"):
        _tool_log(lab, job, {5: 5, 25: 25}, datetime(2026, 11, 1, 0, 0, 25))
    assert lab.ingest().failed == 0
    duration = (
        "SELECT job_id, start_time, end_time, total_seconds, training_seconds, overhead_seconds"
        " FROM job_analytics ORDER BY job_id"
    )
    end = datetime(2026, 11, 1, 0, 0, 25)
    assert lab.query(duration) == [
        ("a", datetime(2026, 11, 1), end, 25.0, 20.0, 5.0),  # before: end 0:20, total 20, overhead 0
        ("b", datetime(2026, 11, 1), datetime(2026, 11, 1, 0, 0, 20), 20.0, 20.0, 0.0),
        ("u", None, end, None, None, None),  # before: no end
    ]
    [(warnings,)] = lab.query("SELECT warnings FROM job_analytics WHERE job_id = 'u'")
    start = "start unknown: no started_at, and the first progress.json step row has no timestamp, or no seconds"
    assert start + " to go back from it" in warnings
    assert not any(w.startswith("end unknown") for w in warnings)
    # silent_running: as_of less the latest row time; a's is 0:25 (its trainer log), b's 0:20
    silent = "SELECT job_id, value FROM insight_results WHERE kind = 'silent_running' ORDER BY job_id"
    values = dict(lab.query(silent))
    assert sorted(values) == ["a", "b", "u"]  # before: u silent for no known time, so not reported
    assert values["b"] - values["a"] == 5.0 and values["u"] == values["a"]  # before: 0


def test_the_end_is_the_last_rows_time_not_the_latest(lab: Lab) -> None:
    # timestamps that go backwards (a clock step): analytics.md's end is the last row's timestamp
    # (by step), here 0:45, not the latest one (0:50); silent_running reads the same time
    history = [_row(10, 50, 2.0), _row(20, 45, 1.5)]
    lab.write_job("c", {"status": "running", "started_at": "2026-11-01T00:00:30Z", "history": history})
    lab.write_job("d", {"status": "running", "started_at": "2026-11-01T00:00:30Z",
                        "history": [_row(10, 40, 2.0), _row(20, 45, 1.5)]})  # fmt: skip
    assert lab.ingest().failed == 0
    assert lab.query("SELECT end_time, total_seconds FROM job_analytics WHERE job_id = 'c'") == [
        (datetime(2026, 11, 1, 0, 0, 45), 15.0)  # 0:45 - 0:30
    ]
    silent = dict(lab.query("SELECT job_id, value FROM insight_results WHERE kind = 'silent_running'"))
    assert silent["c"] == silent["d"]  # both last logged at 0:45


def test_the_eta_reads_the_last_timing_rows(lab: Lab) -> None:
    # progress rows 50, 100, 150 at 0:50, 1:40, 3:20 (1 s a step, then 2); a trainer log of every
    # step 1..160 on the same clock runs ahead: the last 20 rows by step are all its own, untimed
    elapsed = {s: s if s <= 100 else 100 + 2 * (s - 100) for s in range(1, 161)}
    history = [{"step": s, "timestamp": f"2026-11-01T00:{elapsed[s] // 60:02d}:{elapsed[s] % 60:02d}Z", "loss": 1.0}
               for s in (50, 100, 150)]  # fmt: skip
    lab.write_job("e", {"status": "running", "total_steps": 1000, "history": history})
    _tool_log(lab, "e", elapsed, datetime(2026, 11, 1, 0, 3, 40))  # step 160 at 220 s
    assert lab.ingest().failed == 0
    with lab._reader() as con:
        [job] = health.running_jobs(con, ["e"])
    # (50 + 100) s over (50 + 50) steps; before: 2.0 (row 150 alone among the last 20 by step)
    assert (job["step"], job["total_steps"], job["seconds_per_step"]) == (160, 1000, 1.5)
