"""Audit 27: what independent readers of the contracts found.

1. A trainer state's save_steps (the Trainer writes its default, 500, under save_strategy="epoch"
   too) was the checkpoint frequency of a job with one checkpoint: revision 0045 let the last
   checkpoint off as the Trainer's save at its end, and with one checkpoint nothing was left to
   check. A run saved once an epoch that failed after its first save had a frequency of 500, and
   work_at_risk, which reads it, did not fire (revision 0046).
2. Tools' logs: two tools writing one name into one folder (Lightning's TensorBoard and CSV
   loggers both write train_loss under lightning_logs/version_N): each (job, name, step) is kept
   by its last writer, and step_facts read only the points of the tool that ranks the name
   better. A killed run whose event file (steps 49-199) was ahead of its CSV (49, 99) lost its
   last two steps: final loss 2.0 for 1.0 (revision 0046). The CSV's points, which have no
   time, replaced the event file's timed ones: the run had no training time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import Lab
from test_audit_s26 import epoch_state
from test_tool_logs import header, records, scalar_event

WALL = 1_767_225_600.0


def lightning_run(run: Path, losses: dict[int, float], csv: str) -> None:
    """A Lightning run's folder with its TensorBoard and CSV loggers: ``losses`` in the event file
    (wall time WALL + step), ``csv`` as metrics.csv; written an hour ago (settled)."""
    run.mkdir(parents=True, exist_ok=True)
    events = [scalar_event("train_loss", step, loss, WALL) for step, loss in losses.items()]
    (run / f"events.out.tfevents.{int(WALL)}.host.1.0").write_bytes(header() + records(*events))
    (run / "metrics.csv").write_text(csv)
    then = time.time() - 3600
    for path in run.iterdir():
        os.utime(path, (then, then))


def test_one_checkpoint_before_the_trainers_end_gives_no_frequency_of_the_trainers(lab: Lab) -> None:
    history = [{"step": s, "timestamp": 1_767_225_600 + s * 10, "loss": 2 - s / 200, "iteration_time": 10.0}
               for s in range(10, 131, 10)]  # fmt: skip
    # a run saved once an epoch (30 steps of 150) that failed at 130, after its first save
    lab.write_job("failed", {"job_id": "failed", "status": "failed", "config": {"model_name": "m"}, "history": history})
    (lab.root / "failed" / "checkpoint-30").mkdir()
    (lab.root / "failed" / "checkpoint-30" / "trainer_state.json").write_text(epoch_state(30))
    # a state without max_steps: nothing says its one checkpoint is the Trainer's last save
    for job, max_steps in (("unknown-end", None), ("at-the-end", 30), ("past-the-end", 20)):
        (lab.root / job / "checkpoint-30").mkdir(parents=True)
        state = epoch_state(30, max_steps=max_steps, save_steps=20)
        (lab.root / job / "checkpoint-30" / "trainer_state.json").write_text(state)
    # no checkpoint yet: the trainer's save_steps, as analytics.md takes a configured one
    (lab.root / "none-yet").mkdir()
    (lab.root / "none-yet" / "trainer_state.json").write_text(epoch_state(40, max_steps=1000, save_steps=25))
    lab.ingest(lab.root)
    frequency = dict(lab.query("SELECT job_id, checkpoint_frequency_steps FROM job_analytics"))
    # failed: the gap from 0 to its one checkpoint; at or past the end: the Trainer's own 20
    assert frequency == {
        "failed": 30.0,
        "unknown-end": 30.0,
        "at-the-end": 20.0,
        "past-the-end": 20.0,
        "none-yet": 25.0,
    }
    # 130 - 30 = 100 steps since its checkpoint, more than 2 x 30
    assert lab.query("SELECT job_id, value, reference FROM job_insights WHERE kind = 'work_at_risk'") == [
        ("failed", 100.0, 30.0)
    ]


def test_a_name_two_tools_logged_gives_every_point_of_both(lab: Lab) -> None:
    losses = {49: 3.0, 99: 2.0, 149: 1.5, 199: 1.0}
    # the CSV logger flushes every 100 steps: a killed run's CSV is behind its event file
    lightning_run(lab.root / "lightning_logs" / "version_0", losses, "epoch,step,train_loss\n0,49,3.0\n0,99,2.0\n")
    lab.ingest(lab.root)
    # the steps both logged keep the event file's times (the CSV has none, and is read after it)
    rows = lab.query("SELECT step, loss, epoch_ms(ts) / 1000 FROM step_facts ORDER BY step")
    assert rows == [(step, loss, WALL + step) for step, loss in losses.items()]
    assert lab.query("SELECT initial_loss, final_loss, best_loss, total_iterations FROM job_analytics") == [
        (3.0, 1.0, 1.0, 199)
    ]


def test_the_csv_read_again_keeps_the_times_it_took(lab: Lab, tmp_path: Path) -> None:
    """Lightning's CSV logger rewrites metrics.csv under a wider header when a metric is first
    logged (val_loss after the first validation): the CSV, read again whole, kept no time."""
    losses = {49: 3.0, 99: 2.0}
    rewritten = "epoch,step,train_loss,val_loss\n0,49,3.0,\n0,99,2.0,\n0,99,,2.5\n"
    run = lab.root / "lightning_logs" / "version_0"
    lightning_run(run, losses, "epoch,step,train_loss\n0,49,3.0\n0,99,2.0\n")
    lab.ingest(lab.root)
    lightning_run(run, losses, rewritten)
    lab.ingest(lab.root)
    (tmp_path / "fresh").mkdir()
    fresh = Lab(tmp_path / "fresh")
    lightning_run(fresh.root / "lightning_logs" / "version_0", losses, rewritten)
    fresh.ingest(fresh.root)
    times = "SELECT step, loss, eval_loss, epoch_ms(ts) / 1000 FROM step_facts ORDER BY step"
    assert lab.query(times) == fresh.query(times) == [(49, 3.0, None, WALL + 49), (99, 2.0, 2.5, WALL + 99)]
