"""A warehouse fed by runs that saw intermediate files equals one ingest of the final files
(docs/decisions.md, "the warehouse must not depend on when ingest ran"), on both engines.

- A `latest` (or legacy snapshot) without a timestamp takes its snapshot's `updated_at`: a
  stand-in, stored as such (`steps.ts_stand_in`, revision 0039), that a later ingest of the step
  beats as it beats an untimed row (inputs.md s.1: "without timestamps, the later ingest wins");
  before, the step's own history entry (earlier time, samples, GPU readings) lost to it.
- Trainer states read before their folder's progress.json existed (or while it was torn) went to
  a job named for the folder; once the progress.json job is known they move to it, and the
  folder's job goes.
- A trainer-state job's source_file names the state with the highest global_step, as its step
  rows' state_step does, whatever order the states were read in.
- A checkpoint first seen as a bare folder is completed by its trainer_state.json (source).
- A trainer-state job's row, made again at each trainer-state read, keeps the start its folder's
  tool logs gave it (DuckDB only: the row is set by hand).
"""

from __future__ import annotations

import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import Engine, Lab
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    (tmp_path / "incremental").mkdir()
    return Lab(tmp_path / "incremental", ingest_engine)


def fresh(tmp_path: Path, lab: Lab) -> Lab:
    """A new warehouse that ingests ``lab``'s final files once (the same folder, so the same paths)."""
    (tmp_path / "fresh").mkdir()
    once = Lab(tmp_path / "fresh", lab.engine)
    once.root = lab.root
    once.ingest()
    return once


def settled(path: Path, age: int = 3600) -> None:
    """Date a file's last change ``age`` seconds ago (a file changed within seconds is read again)."""
    past = path.stat().st_mtime - age
    os.utime(path, (past, past))


def write(path: Path, doc: Any, age: int = 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    settled(path, age)
    return path


TABLES = {
    "jobs": "SELECT job_id, status, updated_at, current_step, source_dir, source_file FROM jobs",
    "steps": "SELECT job_id, step, ts, loss, samples, ts_stand_in FROM steps",
    "step_gpus": "SELECT job_id, step, gpu_index, utilization_percent FROM step_gpus",
    "checkpoints": "SELECT job_id, step, path, source FROM checkpoints",
    "trainer_steps": "SELECT job_id, step, loss, state_step FROM trainer_steps",
    "trainer_runs": "SELECT job_id, global_step, source_file FROM trainer_runs",
    "metric_values": "SELECT job_id, name, step, value, source FROM metric_values",
    "job_results": "SELECT job_id, total_iterations, total_samples, training_seconds FROM job_results",
    "insights": "SELECT job_id, kind, first_step, last_step FROM insight_results",
}


def tables(lab: Lab) -> dict[str, list[tuple[Any, ...]]]:
    return {name: sorted(lab.query(sql), key=repr) for name, sql in TABLES.items()}


def at(second: int) -> str:
    return f"2026-11-01T00:{second // 60:02d}:{second % 60:02d}Z"


def ts(second: int) -> datetime:
    return datetime(2026, 11, 1, 0, second // 60, second % 60)


def entry(s: int, *, timed: bool = True) -> dict[str, Any]:
    e: dict[str, Any] = {"step": s, "loss": 1.0 / s, "samples": 8}
    if timed:
        e["timestamp"] = at(s * 10)
        e["gpus"] = [{"index": 0, "utilization_percent": 90.0, "memory_used_mb": 1000.0, "temperature_c": 60.0}]
    return e


# the first snapshot: step 5 untimed (its time the snapshot's updated_at, 100 s); the next one has
# step 5 in its history with its own time (50 s), 8 samples and a GPU reading
FIRST = {
    "latest": {
        "job_id": "j", "status": "running", "updated_at": at(100),
        "history": [entry(s) for s in range(1, 5)], "latest": {"step": 5, "loss": 0.2},
    },
    "legacy": {"job_id": "j", "status": "running", "updated_at": at(100), "step": 5, "loss": 0.2},
}  # fmt: skip
FINAL = {
    "job_id": "j", "status": "running", "updated_at": at(200),
    "history": [entry(s) for s in range(1, 6)], "latest": {"step": 6, "loss": 1 / 6},
}  # fmt: skip


@pytest.mark.parametrize("first", sorted(FIRST))
def test_a_stand_in_time_loses_to_the_steps_own_entry_read_later(tmp_path: Path, lab: Lab, first: str) -> None:
    write(lab.root / "j" / "progress.json", FIRST[first], age=7200)
    lab.ingest()
    assert lab.query("SELECT step, ts, ts_stand_in FROM steps WHERE step = 5") == [(5, ts(100), True)]
    write(lab.root / "j" / "progress.json", FINAL)
    lab.ingest()
    lab.ingest()
    # before revision 0039: step 5 kept the stand-in (100 s, no samples, no reading), 32 samples in all
    assert lab.query("SELECT step, ts, samples, ts_stand_in FROM steps WHERE step >= 5 ORDER BY step") == [
        (5, ts(50), 8, False),
        (6, ts(200), None, True),
    ]
    assert lab.query("SELECT count(*) FROM step_gpus WHERE step = 5") == [(1,)]
    assert lab.query("SELECT total_samples FROM job_results") == [(40,)]
    assert tables(lab) == tables(fresh(tmp_path, lab))


def test_a_timed_entry_then_a_stand_in_of_its_step(tmp_path: Path, lab: Lab) -> None:
    # the history window moved past step 5, which is latest now without a timestamp: the later
    # ingest wins (the stand-in is no timestamp), as one read of the final file has it
    doc = {"job_id": "j", "status": "running", "updated_at": at(100), "history": [entry(s) for s in range(1, 6)]}
    write(lab.root / "j" / "progress.json", doc, age=7200)
    lab.ingest()
    doc = {"job_id": "j", "status": "running", "updated_at": at(40),  # a clock set back: not later than 50 s
           "history": [entry(s) for s in range(1, 5)], "latest": {"step": 5, "loss": 0.5}}  # fmt: skip
    write(lab.root / "j" / "progress.json", doc)
    lab.ingest()
    # before: the history entry (50 s, loss 0.2) stayed, its time compared with the stand-in's 40 s
    assert lab.query("SELECT step, ts, loss, ts_stand_in FROM steps WHERE step = 5") == [(5, ts(40), 0.5, True)]
    # the job row keeps the later updated_at (100 s): the rule of the job row, not of the steps
    steps = "SELECT step, ts, loss, samples, ts_stand_in FROM steps ORDER BY step"
    assert lab.query(steps) == fresh(tmp_path, lab).query(steps)


def state(global_step: int) -> dict[str, Any]:
    return {
        "global_step": global_step,
        "max_steps": 100,
        "log_history": [{"step": s, "loss": 10.0 / s} for s in range(5, global_step + 1, 5)],
    }


PROGRESS = {"job_id": "run-42", "status": "running", "history": [{"step": 10, "timestamp": at(10), "loss": 1.0}]}


@pytest.mark.parametrize("before", ["none", "torn"])
def test_trainer_states_read_before_the_progress_json_move_to_its_job(tmp_path: Path, lab: Lab, before: str) -> None:
    out = lab.root / "out"
    write(out / "checkpoint-10" / "trainer_state.json", state(10))
    if before == "torn":  # caught while being written: pending, the folder went by its name
        write(out / "progress.json", json.dumps(PROGRESS)[:40], age=0)
    lab.ingest()
    assert lab.query("SELECT job_id FROM jobs") == [("out",)]
    write(out / "progress.json", PROGRESS)
    lab.ingest()
    lab.ingest()
    # before: jobs out (its trainer rows, checkpoint, results) and run-42 without trainer rows
    assert lab.query("SELECT job_id, status FROM jobs") == [("run-42", "running")]
    assert lab.query("SELECT job_id, step FROM trainer_steps ORDER BY step") == [("run-42", 5), ("run-42", 10)]
    assert lab.query("SELECT job_id, step FROM checkpoints") == [("run-42", 10)]
    assert lab.query("SELECT DISTINCT job_id FROM metric_values") == [("run-42",)]
    assert lab.query("SELECT job_id FROM job_results") == [("run-42",)]
    assert lab.query("SELECT job_id FROM ingest_files WHERE kind = 'trainer_state'") == [("run-42",)]
    assert tables(lab) == tables(fresh(tmp_path, lab))


def test_a_progress_json_job_keeps_its_row_when_its_trainer_states_move(tmp_path: Path, lab: Lab) -> None:
    # the progress.json's job_id changes: its trainer states follow the new id (one read of the
    # final files has them there); the old id keeps its progress.json row and steps (docs/ingest.md:
    # a folder keeps the ids it once held)
    out = lab.root / "out"
    write(out / "checkpoint-10" / "trainer_state.json", state(10))
    write(out / "progress.json", {**PROGRESS, "job_id": "old"}, age=7200)
    lab.ingest()
    write(out / "progress.json", PROGRESS)
    lab.ingest()
    assert lab.query("SELECT job_id FROM jobs ORDER BY 1") == [("old",), ("run-42",)]
    assert lab.query("SELECT DISTINCT job_id FROM trainer_steps") == [("run-42",)]
    assert lab.query("SELECT job_id FROM trainer_runs") == [("run-42",)]
    assert lab.query("SELECT DISTINCT job_id, source FROM metric_values ORDER BY 1") == [("run-42", "trainer_state")]


def test_a_deleted_progress_json_moves_no_trainer_state(tmp_path: Path, lab: Lab) -> None:
    # a folder keeps the ids it once held (docs/ingest.md): its progress.json deleted, its unchanged
    # trainer states stay with its job (they moved to a new job named after the folder, found by review)
    out = lab.root / "out"
    write(out / "checkpoint-10" / "trainer_state.json", state(10))
    write(out / "progress.json", PROGRESS)
    lab.ingest()
    before = tables(lab)
    (out / "progress.json").unlink()
    lab.ingest()
    assert lab.query("SELECT job_id, warnings FROM ingest_files WHERE kind = 'trainer_state'") == [("run-42", "[]")]
    assert lab.query("SELECT job_id FROM jobs") == [("run-42",)]
    assert lab.query("SELECT DISTINCT job_id FROM trainer_steps") == [("run-42",)]
    assert lab.query("SELECT job_id, step FROM checkpoints") == [("run-42", 10)]
    assert tables(lab) == before


def test_the_source_file_is_the_state_with_the_highest_global_step(tmp_path: Path, lab: Lab) -> None:
    run = lab.root / "run"
    final = write(run / "trainer_state.json", state(30))
    lab.ingest()
    for step in (10, 20):
        write(run / f"checkpoint-{step}" / "trainer_state.json", state(step))
    lab.ingest()
    # before: checkpoint-20's, the last state read
    assert lab.query("SELECT job_id, global_step, source_file FROM trainer_runs") == [("run", 30, str(final))]
    assert lab.query("SELECT job_id, source_file FROM jobs") == [("run", str(final))]
    assert tables(lab) == tables(fresh(tmp_path, lab))


def test_a_checkpoint_folder_is_completed_by_its_trainer_state(tmp_path: Path, lab: Lab) -> None:
    run = lab.root / "run"
    write(run / "checkpoint-10" / "trainer_state.json", state(10))
    (run / "checkpoint-20").mkdir()  # the trainer writes trainer_state.json last
    lab.ingest()
    assert lab.query("SELECT step, source FROM checkpoints ORDER BY step") == [(10, "trainer_state"), (20, "folder")]
    write(run / "checkpoint-20" / "trainer_state.json", state(20))
    lab.ingest()
    # before: checkpoint 20 stayed 'folder'
    sources = "SELECT step, source FROM checkpoints ORDER BY step"
    assert lab.query(sources) == [(10, "trainer_state"), (20, "trainer_state")]
    assert tables(lab) == tables(fresh(tmp_path, lab))


def test_a_trainer_state_job_keeps_its_start_when_its_row_is_made_again(tmp_path: Path) -> None:
    # the start a trainer-state job's tool logs gave its row (set here by hand: ingest/formats/
    # tool_log.py writes it) stays when a new checkpoint makes the row again
    lab = Lab(tmp_path)
    run = lab.root / "run"
    write(run / "checkpoint-10" / "trainer_state.json", state(10))
    lab.ingest()
    with duckdb.connect(str(lab.db)) as con:
        con.execute("UPDATE jobs SET started_at = TIMESTAMP '2026-11-01 00:00:00' WHERE job_id = 'run'")
    write(run / "checkpoint-20" / "trainer_state.json", state(20))
    lab.ingest()
    # before: the row made again had no start
    assert lab.query("SELECT job_id, current_step, started_at FROM jobs") == [("run", 20, ts(0))]


def test_a_log_read_while_the_trainer_state_was_torn_gives_the_start(tmp_path: Path, lab: Lab) -> None:
    # an HF output folder whose TensorBoard run is first read while its only trainer state is caught
    # mid-write (pending: no job row to take the run's start); the next run reads the state and
    # the rest of the log: the job's start is the log's first record, as one read of the final files
    # gives, not the first record of the log's later part
    out = lab.root / "out"
    doc = json.dumps(state(20))
    write(out / "checkpoint-20" / "trainer_state.json", doc[:30], age=0)
    log = out / "runs" / "Dec04_10-00-00_host" / "events.out.tfevents.1.host.1.0"
    events = [scalar_event("train/loss", s, 1.0 / s) for s in range(5, 21, 5)]
    write(log, "")
    log.write_bytes(header() + records(*events[:2]))
    settled(log)
    lab.ingest()
    assert lab.query("SELECT outcome FROM ingest_files WHERE kind = 'trainer_state'") == [("pending",)]
    write(out / "checkpoint-20" / "trainer_state.json", doc)
    log.write_bytes(header() + records(*events))
    settled(log)
    lab.ingest()
    # before: 2023-11-14 22:13:35 (step 15's record, the first of the later part)
    assert lab.query("SELECT job_id, started_at FROM jobs") == [("out", datetime(2023, 11, 14, 22, 13, 20))]
    assert tables(lab) == tables(fresh(tmp_path, lab))


WALL = 1_700_000_000.0  # 2023-11-14 22:13:20


def scalar_event(tag: str, step: int, value: float) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    return event_pb2.Event(wall_time=WALL + step, step=step, summary=summary)


def records(*events: event_pb2.Event) -> bytes:
    """The TFRecord bytes of these events, framed by TensorBoard's RecordWriter."""
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for event in events:
        writer.write(event.SerializeToString())
    return buffer.getvalue()


def header() -> bytes:
    return records(event_pb2.Event(wall_time=WALL, file_version="brain.Event:2"))


def test_a_log_folder_that_gets_a_trainer_state_becomes_a_trainer_state_job(tmp_path: Path, lab: Lab) -> None:
    # a LLaMA-Factory output folder at the top of the root: its log alone makes a run-folder job of the
    # folder's name; its first checkpoint makes it a trainer-state job of the same id, whose row one
    # read of the final files makes from the state (the log gives only the start)
    lines = [
        {
            "current_steps": s,
            "total_steps": 30,
            "loss": 1.0 / s,
            "elapsed_time": f"0:00:{s:02d}",
            "remaining_time": "0:00:10",
        }
        for s in (10, 20, 30)
    ]
    write(lab.root / "out" / "trainer_log.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    lab.ingest()
    assert lab.query("SELECT job_id, status FROM jobs") == [("out", "completed")]
    # no name in common with the log (which of two tools' values of one name and step stays is another matter)
    doc = {"global_step": 20, "max_steps": 30, "log_history": [{"step": 20, "eval_accuracy": 0.5}]}
    state_path = write(lab.root / "out" / "checkpoint-20" / "trainer_state.json", doc)
    lab.ingest()
    # before: the log's row stayed (completed, source_file the folder)
    assert lab.query("SELECT job_id, status, source_file FROM jobs") == [("out", "unknown", str(state_path))]
    assert lab.query("SELECT count(*) FROM jobs WHERE started_at IS NOT NULL") == [(1,)]
    assert tables(lab) == tables(fresh(tmp_path, lab))


@pytest.mark.parametrize("first", ["final", "checkpoint"])
def test_of_two_states_at_one_global_step_the_final_one_names_the_job(tmp_path: Path, lab: Lab, first: str) -> None:
    # the final trainer_state.json and its checkpoint-30/ copy, read in either order in two runs
    run = lab.root / "run"
    paths = {"final": run / "trainer_state.json", "checkpoint": run / "checkpoint-30" / "trainer_state.json"}
    write(paths[first], state(30))
    lab.ingest()
    write(paths["checkpoint" if first == "final" else "final"], state(30))
    lab.ingest()
    # before: the state read last
    assert lab.query("SELECT source_file FROM trainer_runs") == [(str(paths["final"]),)]
    assert tables(lab) == tables(fresh(tmp_path, lab))
