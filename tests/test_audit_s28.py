"""Audit 28: what independent readers of the contracts found, and what earlier sessions left.

1. ``sql``'s plain table (and ``insights``' table) printed a text's line break as it was: a job id
   or a config text holding one split its row over two lines, under the columns of no row.
2. A trainer state rewritten with a lower global_step (a new training of fewer steps into the same
   output folder) kept the first run's values at the steps both logged: the stored rows' rank was
   the global_step of the file's old content. inputs.md: without timestamps, the later ingest wins.
   So did a run resumed from an earlier checkpoint after the later ones were removed.
3. An MLflow run folder holding checkpoint-<step>/ trainer states became a trainer-state job that
   did not own the run's files: read fresh, its MLflow metrics and times were dropped without a
   word; read before its first state, they were kept.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import Lab
from test_audit_s24 import _mlflow_run

from runlytics.cli.output import _write_rows


def test_a_table_row_stays_one_line_whatever_its_text_holds(capsys: pytest.CaptureFixture[str]) -> None:
    _write_rows(["job_id", "n"], [("a\nb", 1), ("tab\there\r", 2), ("esc\x1b\u2028\x85", None)], "table")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "job_id             n   ",
        "-----------------  ----",
        "a\\nb               1   ",
        "tab\\there\\r        2   ",
        "esc\\x1b\\u2028\\x85  NULL",
        "(3 rows)",
    ]

    _write_rows(["a\nb"], [("x",)], "table")
    assert capsys.readouterr().out.splitlines() == ["a\\nb", "----", "x   ", "(1 row)"]


def test_a_trainer_state_rewritten_by_a_shorter_run_gives_the_steps_it_logs_again(lab: Lab) -> None:
    state = lab.root / "run" / "trainer_state.json"
    state.parent.mkdir()
    first = {"global_step": 2, "max_steps": 2, "log_history": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]}
    state.write_text(json.dumps(first))
    os.utime(state, (1_700_000_000, 1_700_000_000))
    lab.ingest(lab.root)
    state.write_text(json.dumps({"global_step": 1, "max_steps": 1, "log_history": [{"step": 1, "loss": 3.0}]}))
    lab.ingest(lab.root)
    # step 2, which the new content does not hold, stays (steps are never deleted: docs/ingest.md)
    assert lab.query("SELECT step, loss FROM trainer_steps ORDER BY step") == [(1, 3.0), (2, 0.5)]
    # the run summary stays the furthest state's (an evaluation's save_state() rewrites it at step 0)
    assert lab.query("SELECT global_step, max_steps FROM trainer_runs") == [(2, 2)]


def test_a_run_resumed_from_an_earlier_checkpoint_gives_the_steps_it_logs_again(lab: Lab) -> None:
    def checkpoint(step: int, losses: dict[int, float]) -> None:
        folder = lab.root / "run" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        history = [{"step": s, "loss": loss} for s, loss in losses.items()]
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))

    checkpoint(1, {1: 1.0})
    checkpoint(3, {1: 1.0, 2: 0.9, 3: 0.8})
    lab.ingest(lab.root)
    shutil.rmtree(lab.root / "run" / "checkpoint-3")  # resumed from checkpoint-1: step 2 logged again
    checkpoint(2, {1: 1.0, 2: 0.4})
    lab.ingest(lab.root)
    assert lab.query("SELECT step, loss FROM trainer_steps ORDER BY step") == [(1, 1.0), (2, 0.4), (3, 0.8)]
    assert lab.query("SELECT best_loss FROM job_analytics") == [(0.4,)]
    # a checkpoint copy read in a later run, its later one still there, changes nothing
    checkpoint(4, {1: 1.0, 2: 0.4, 4: 0.3})
    lab.ingest(lab.root)
    (lab.root / "run" / "checkpoint-2" / "trainer_state.json").write_text(
        json.dumps({"global_step": 2, "log_history": [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 9.0}]})
    )
    lab.ingest(lab.root)
    assert lab.query("SELECT step, loss FROM trainer_steps ORDER BY step") == [(1, 1.0), (2, 0.4), (3, 0.8), (4, 0.3)]


def test_the_run_summary_stays_the_furthest_states_when_its_file_is_gone_or_rewritten_lower(lab: Lab) -> None:
    """The review's cases: the Trainer's cleanup at its end removed the newest checkpoint, then the
    jobs root moved (every stored path gone); an evaluation's save_state() rewrote the final state
    at global_step 0. Both turned a completed job back into one of status unknown at a lower step."""

    def state(global_step: int, **extra: object) -> str:
        history = [{"step": s, "loss": 1 / s} for s in range(1, global_step + 1)]
        return json.dumps({"global_step": global_step, "max_steps": 4, "log_history": history, **extra})

    for step in (2, 4):
        (lab.root / "a" / f"checkpoint-{step}").mkdir(parents=True)
        (lab.root / "a" / f"checkpoint-{step}" / "trainer_state.json").write_text(state(step))
    (lab.root / "b" / "checkpoint-4").mkdir(parents=True)
    (lab.root / "b" / "checkpoint-4" / "trainer_state.json").write_text(state(4))
    summary = {"step": 4, "train_runtime": 8.0, "train_loss": 0.5}
    (lab.root / "b" / "trainer_state.json").write_text(state(4, log_history=[{"step": 4, "loss": 0.25}, summary]))
    lab.ingest(lab.root)
    shutil.rmtree(lab.root / "a" / "checkpoint-4")
    (lab.root / "b" / "trainer_state.json").write_text(
        json.dumps({"global_step": 0, "max_steps": 0, "log_history": [{"step": 0, "eval_loss": 0.7}]})
    )
    moved = lab.root.with_name("archive")
    lab.root.rename(moved)
    lab.ingest(moved)
    furthest = "SELECT job_id, jobs.status, current_step, total_iterations FROM job_analytics JOIN jobs USING (job_id)"
    assert sorted(lab.query(furthest)) == [("a", "completed", 4, 4), ("b", "completed", 4, 4)]
    assert lab.query("SELECT job_id, step, eval_loss FROM trainer_steps WHERE step = 0") == [("b", 0, 0.7)]


@pytest.mark.parametrize("runs", [1, 2])
def test_an_mlflow_run_with_trainer_states_keeps_its_metrics_read_fresh_or_not(lab: Lab, runs: int) -> None:
    _mlflow_run(lab.root, {"loss": [(1700000010000, 2.0, 1), (1700000020000, 1.5, 2)]})
    if runs == 2:
        lab.ingest()
    state = lab.root / "mlruns" / "1" / "abc" / "checkpoint-2" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"global_step": 2, "max_steps": 2, "log_history": [{"step": 2, "loss": 1.5}]}))
    lab.ingest()
    assert lab.query("SELECT source, name, step, value FROM metric_values ORDER BY step") == [
        ("mlflow", "loss", 1, 2.0),
        ("mlflow", "loss", 2, 1.5),
    ]
    # the run's start from its meta.yaml (a trainer state has no time)
    assert lab.query("SELECT epoch(jobs.started_at), total_checkpoints FROM jobs JOIN job_results USING (job_id)") == [
        (1_700_000_000.0, 1)
    ]
