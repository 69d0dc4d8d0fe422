"""A warehouse fed on a schedule while a run's folders appear equals one that read them at once (audit G9).

A Hugging Face run logs to TensorBoard under ``out/runs/<date>_<host>/`` from its first step; until
``out/`` holds a checkpoint (or a progress.json) that folder is a tool-log run, a job named for its
path. Once ``out/`` is a job, its event files are that job's: read again for it, and the early job
(its points, its row, its derived rows) is gone, with a warning on the file saying so. Likewise a
LLaMA-Factory folder below the root (job ``team-a/qwen-sft``) that later holds a checkpoint (job
``qwen-sft``). Every test compares with a fresh warehouse of the final files, on both engines
(``ingest_engine``: on PostgreSQL through ``ingest --db URL``, the rows read are PostgreSQL's)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from runlytics.ingest.formats.nvidia_smi import CsvImport
from tests.conftest import REPO, Engine, Lab

RUN = "out/runs/Dec05_10-00-00_host"
T0 = 1793606400.0  # 2026-11-02 10:00:00 UTC
# every table that holds rows per job, derived ones included
PER_JOB_TABLES = (
    "jobs", "steps", "checkpoints", "trainer_steps", "trainer_runs", "metric_values",
    "job_results", "insight_results", "insight_jobs",
)  # fmt: skip
POINTS = "SELECT job_id, name, step, value FROM metric_values ORDER BY job_id, name, step"
FIGURES = "SELECT job_id, total_iterations, final_loss, step_rows FROM job_analytics ORDER BY job_id"
SAMPLES = "SELECT job_id, utilization_percent FROM gpu_samples ORDER BY 1, 2"
GPU_LOG = "timestamp, index, utilization.gpu [%]\n2024/07/01 12:00:00.000, 0, 50 %\n2024/07/01 12:00:01.000, 0, 70 %\n"
WARNINGS = "SELECT warnings FROM ingest_files WHERE path = $path"
# the entry point, killed with SIGKILL right after the tool-log merge deleted the early job (before
# its transaction commits)
KILL_AFTER_RETIRE = """
import os, signal, sys
from runlytics.ingest.formats import tool_log
original = tool_log._retire_former
def hooked(*args, **kwargs):
    moved = original(*args, **kwargs)
    if moved:
        os.kill(os.getpid(), signal.SIGKILL)
    return moved
tool_log._retire_former = hooked
from runlytics import cli
cli.entry()
"""

# the entry point, killed with SIGKILL when the publish to PostgreSQL begins (the stage committed)
KILL_AT_PUBLISH = """
import os, signal
from runlytics.ingest import postgres
def hooked(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
postgres.publish = hooked
from runlytics import cli
cli.entry()
"""


class TensorBoardRun:
    """An HF run's event file under ``<root>/out/runs/<date>_<host>/``, appended to as training goes."""

    def __init__(self, root: Path, run: str = RUN) -> None:
        self.folder = root / run
        self.folder.mkdir(parents=True)
        self.writer = EventFileWriter(str(self.folder))

    def log(self, *steps: int) -> None:
        for step in steps:
            values = [
                summary_pb2.Summary.Value(tag="train/loss", simple_value=2.0 - step / 100),
                summary_pb2.Summary.Value(tag="train/samples_per_second", simple_value=10.0),
            ]
            event = event_pb2.Event(wall_time=T0 + step, step=step, summary=summary_pb2.Summary(value=values))
            self.writer.add_event(event)
        self.writer.flush()

    @property
    def path(self) -> Path:
        return next(self.folder.glob("events.out.tfevents.*"))


def checkpoint(folder: Path, step: int) -> None:
    """The Trainer's checkpoint-<step>/trainer_state.json, logging the loss every 10 steps."""
    (folder / f"checkpoint-{step}").mkdir(parents=True)
    history = [{"step": s, "loss": 2.0 - s / 100} for s in range(10, step + 1, 10)]
    doc = {"global_step": step, "max_steps": 40, "log_history": history}
    (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(doc))


def lf_lines(*steps: int) -> str:
    return "".join(
        json.dumps({"current_steps": s, "total_steps": 40, "loss": 2.0 - s / 100, "elapsed_time": f"0:00:{s:02d}"})
        + "\n"
        for s in steps
    )


def facts(lab: Lab) -> dict[str, Any]:
    """What a reader sees of the jobs: the job ids of every per-job table, the points, the figures."""
    found: dict[str, Any] = {
        table: sorted({job_id for (job_id,) in lab.query(f"SELECT job_id FROM {table}")}) for table in PER_JOB_TABLES
    }
    found["points"] = lab.query(POINTS)
    found["figures"] = lab.query(FIGURES)
    return found


def fresh(tmp_path: Path, lab: Lab) -> dict[str, Any]:
    """The facts of a new warehouse that reads the lab's final folders once."""
    (tmp_path / "fresh").mkdir()
    other = Lab(tmp_path / "fresh", lab.engine)
    shutil.copytree(lab.root, other.root, dirs_exist_ok=True)
    summary = other.ingest()
    assert summary.failed == 0 and summary.warnings == 0
    return facts(other)


def warnings_of(lab: Lab, path: Path) -> list[str]:
    (stored,) = lab.query(WARNINGS, {"path": lab.ledger_path(path)})
    return list(json.loads(stored[0]) if isinstance(stored[0], str) else stored[0])


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def test_a_tensorboard_run_ingested_before_the_first_checkpoint_leaves_no_second_job(lab: Lab, tmp_path: Path) -> None:
    run = TensorBoardRun(lab.root)
    run.log(10, 20)
    lab.ingest()
    assert [row[0] for row in lab.query(FIGURES)] == [RUN]
    checkpoint(lab.root / "out", 20)
    run.log(30, 40)
    summary = lab.ingest()
    now = facts(lab)
    assert now["jobs"] == now["job_results"] == ["out"]
    # by hand: the event file's points 10..40 (loss 2 - step/100), all the job's
    assert [(job, step) for job, name, step, _ in now["points"] if name == "train/loss"] == [
        ("out", 10), ("out", 20), ("out", 30), ("out", 40),
    ]  # fmt: skip
    assert now == fresh(tmp_path, lab)
    assert summary.warnings == 1
    assert warnings_of(lab, run.path) == [
        f"read before for job {RUN}, now job out's (its folder became part of a job, or that job's id changed): "
        f"its points moved; job {RUN} is removed (no tool log of it is left)"
    ]
    # the next run changes nothing (a file changed within seconds is read again: the same rows)
    lab.ingest()
    assert facts(lab) == now


def test_a_progress_json_appearing_later_takes_the_run_along(lab: Lab, tmp_path: Path) -> None:
    run = TensorBoardRun(lab.root)
    run.log(10, 20)
    lab.ingest()
    history = [{"step": 10, "loss": 1.9}, {"step": 20, "loss": 1.8}]
    doc = {"job_id": "run-7", "status": "running", "history": history}
    (lab.root / "out" / "progress.json").write_text(json.dumps(doc))
    run.log(30, 40)
    lab.ingest()
    now = facts(lab)
    assert now["jobs"] == now["job_results"] == ["run-7"]
    assert {job for job, *_ in now["points"]} == {"run-7"}
    assert now == fresh(tmp_path, lab)


def test_a_nested_llamafactory_folder_that_gets_a_checkpoint_is_one_job(lab: Lab, tmp_path: Path) -> None:
    out = lab.root / "team-a" / "qwen-sft"
    out.mkdir(parents=True)
    log = out / "trainer_log.jsonl"
    log.write_text(lf_lines(10, 20))
    lab.ingest()
    assert [row[0] for row in lab.query(FIGURES)] == ["team-a/qwen-sft"]
    checkpoint(out, 20)
    with open(log, "a") as f:
        f.write(lf_lines(30, 40))
    lab.ingest()
    now = facts(lab)
    assert now["jobs"] == now["job_results"] == ["qwen-sft"]
    # by hand: 40 iterations, the last loss 2 - 40/100 (the log's line; the trainer state stops at 20)
    assert [(job, iterations, loss) for job, iterations, loss, _ in now["figures"]] == [("qwen-sft", 40, 1.6)]
    assert now == fresh(tmp_path, lab)


def test_two_early_runs_of_one_folder_both_go(lab: Lab, tmp_path: Path) -> None:
    """A resumed Trainer writes a second runs/<date>_<host>/: both early jobs join ``out`` and go."""
    first = TensorBoardRun(lab.root)
    first.log(10, 20)
    second = TensorBoardRun(lab.root, "out/runs/Dec05_11-00-00_host")
    second.log(20, 30)
    lab.ingest()
    assert len(lab.query("SELECT job_id FROM jobs")) == 2
    checkpoint(lab.root / "out", 30)
    lab.ingest()
    now = facts(lab)
    assert now["jobs"] == now["job_results"] == ["out"]
    assert now == fresh(tmp_path, lab)


def test_other_jobs_are_not_touched(lab: Lab, tmp_path: Path) -> None:
    """Only the job the moved files were read for goes: a progress.json job of another folder stays."""
    other = lab.root / "elsewhere"
    other.mkdir()
    doc = {"job_id": "keeper", "status": "completed", "history": [{"step": 1, "loss": 1.0}]}
    (other / "progress.json").write_text(json.dumps(doc))
    run = TensorBoardRun(lab.root)
    run.log(10, 20)
    lab.ingest()
    checkpoint(lab.root / "out", 20)
    lab.ingest()
    now = facts(lab)
    assert now["jobs"] == ["keeper", "out"]
    assert now == fresh(tmp_path, lab)


def test_a_gpu_log_imported_for_the_early_job_keeps_its_samples_not_its_row(lab: Lab, tmp_path: Path) -> None:
    """Samples make no job row: the early job's samples stay under its id, as in a fresh read."""
    log = tmp_path / "gpu.csv"
    log.write_text(GPU_LOG)
    os.utime(log, (1719878400, 1719878400))  # written long ago: not a file being written now
    run = TensorBoardRun(lab.root)
    run.log(10, 20)
    lab.ingest(csv_imports=[CsvImport(log, RUN)])
    checkpoint(lab.root / "out", 20)
    lab.ingest(csv_imports=[CsvImport(log, RUN)])
    now = facts(lab)
    assert now["jobs"] == ["out"]
    assert lab.query(SAMPLES) == [(RUN, 50.0), (RUN, 70.0)]
    (tmp_path / "fresh").mkdir()
    other = Lab(tmp_path / "fresh", lab.engine)
    shutil.copytree(lab.root, other.root, dirs_exist_ok=True)
    other.ingest(csv_imports=[CsvImport(log, RUN)])
    assert facts(other) == now and other.query(SAMPLES) == lab.query(SAMPLES)


def test_kill_9_while_the_early_job_goes_leaves_it_whole_and_the_next_run_finishes(lab: Lab, tmp_path: Path) -> None:
    run = TensorBoardRun(lab.root)
    run.log(10, 20)
    lab.ingest()
    before = lab.query(POINTS)
    checkpoint(lab.root / "out", 20)
    run.log(30, 40)
    command = [sys.executable, "-c", KILL_AFTER_RETIRE, "ingest", str(lab.root), "--db", str(lab.warehouse())]
    if lab.engine.ingests:
        command += ["--stage", str(lab.db)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    # the tool-log transaction did not commit: the early job's points are all there (PostgreSQL
    # publishes after the stage's run: it still has the first run's rows)
    assert [row for row in lab.query(POINTS) if row[0] == RUN] == [row for row in before if row[0] == RUN]
    lab.ingest()
    assert facts(lab) == fresh(tmp_path, lab)


def test_kill_9_between_the_stage_and_postgresql_removes_the_job_on_the_next_run(lab: Lab, tmp_path: Path) -> None:
    """The stage committed the early job's removal; the publish never began: the next run's publish
    (nothing left to read) still deletes it on PostgreSQL."""
    if not lab.engine.ingests:
        pytest.skip("PostgreSQL's publish only (DuckDB has no publish step)")
    run = TensorBoardRun(lab.root)
    run.log(10, 20)
    lab.ingest()
    checkpoint(lab.root / "out", 20)
    command = [sys.executable, "-c", KILL_AT_PUBLISH, "ingest", str(lab.root), "--db", str(lab.warehouse())]
    done = subprocess.run([*command, "--stage", str(lab.db)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert {job for job, *_ in lab.query(POINTS)} == {RUN}  # PostgreSQL as the first run left it
    lab.ingest()
    assert facts(lab) == fresh(tmp_path, lab)


def test_an_early_job_stays_on_postgresql_while_the_job_holding_its_files_is_refused_there(
    tmp_path: Path, ingest_engine: Engine
) -> None:
    """Another host published a job ``out``; this host's early job goes from PostgreSQL only once
    this host's ``out`` is published there (after a handover), never while that one is refused:
    users keep seeing the run's points meanwhile (review finding 4)."""
    if not ingest_engine.ingests:
        pytest.skip("PostgreSQL's publish only (DuckDB has no other ingester)")
    import psycopg

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    here, there = Lab(tmp_path / "a", ingest_engine), Lab(tmp_path / "b", ingest_engine)
    here.ingester, there.ingester = "host-a:/stage", "host-b:/stage"
    there._target = here.target()
    there.write_job("out", {"status": "completed", "history": [{"step": 1, "loss": 9.0}]})
    there.ingest()
    run = TensorBoardRun(here.root)
    run.log(10, 20)
    here.ingest()
    before = here.query(POINTS)
    assert {job for job, *_ in before} == {RUN}
    checkpoint(here.root / "out", 20)
    here.ingest()
    # refused: `out` is host-b's; the early job keeps its rows there and both stay owed
    owners = "SELECT job_id, ingester FROM job_owners ORDER BY job_id"
    assert here.query(owners) == [("out", "host-b:/stage"), (RUN, "host-a:/stage")]
    assert here.query(POINTS) == before
    assert here.query("SELECT job_id FROM job_results ORDER BY 1") == [("out",), (RUN,)]
    assert here.own_query("SELECT job_id FROM publish_queue ORDER BY 1") == [("out",), (RUN,)]
    here.ingest()  # each run the same, nothing lost
    assert here.query(POINTS) == before
    # handed over (docs/postgresql.md): this host's `out` is published and the early job goes
    with psycopg.connect(here.target().libpq_url) as con:
        con.execute("DELETE FROM job_owners WHERE ingester = 'host-b:/stage'")
    here.ingest()
    assert here.query(owners) == [("out", "host-a:/stage")]
    assert here.own_query("SELECT job_id FROM publish_queue") == []
    assert facts(here) == fresh(tmp_path, here)


def test_a_run_folder_keeps_its_id_whichever_root_finds_it(lab: Lab) -> None:
    """A tool-log run's id is its path below the root it was first read under; another root naming
    the same folder otherwise neither renames it nor copies it (review finding 10; docs/ingest.md "A folder
    keeps the ids it once held"): only a folder that became part of a job moves its files."""
    run = TensorBoardRun(lab.root, "team-a/r1")
    run.log(10, 20)
    lab.ingest(lab.root / "team-a")
    first = facts(lab)
    assert first["jobs"] == first["job_results"] == ["r1"]
    # by hand: two steps of two scalars, all job r1's
    assert [(job, name, step) for job, name, step, _ in first["points"]] == [
        ("r1", "train/loss", 10), ("r1", "train/loss", 20),
        ("r1", "train/samples_per_second", 10), ("r1", "train/samples_per_second", 20),
    ]  # fmt: skip
    summary = lab.ingest()  # the parent root would name it team-a/r1
    assert (summary.failed, summary.warnings) == (0, 0)
    assert facts(lab) == first
    run.log(30)
    lab.ingest()
    grown = facts(lab)
    assert grown["jobs"] == ["r1"] and {job for job, *_ in grown["points"]} == {"r1"}
    assert [step for _, name, step, _ in grown["points"] if name == "train/loss"] == [10, 20, 30]
    lab.ingest(lab.root / "team-a")
    assert facts(lab) == grown
