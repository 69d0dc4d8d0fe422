"""Which job a trainer state belongs to (audit F20, F21; docs/ingest.md, "One folder per job id").

A folder of trainer states without a progress.json takes its folder's name as its job id, and
holds it as a progress.json's folder does: a second folder claiming the id fails as a conflict
naming the folder that holds it, every run, and adds nothing through any of its files. A run
folder holding only a checkpoint copy such as ``last-checkpoint/`` is one job named for the run
folder. The ingest tests run on both engines (``ingest_engine``: on PostgreSQL through ``ingest
--db URL``, the rows read are PostgreSQL's)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from runlytics.ingest import discover
from tests.conftest import REALDATA, Engine, Lab

WHISPER = REALDATA / "hf_trainer_state" / "whisper-ja-last-checkpoint" / "last-checkpoint"


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def settled(path: Path) -> None:
    """Date a file's last change an hour ago (a file changed within seconds is read again)."""
    past = path.stat().st_mtime - 3600
    os.utime(path, (past, past))


def state(global_step: int, loss: float, *, max_steps: int | None = None) -> dict[str, Any]:
    """A trainer state logging ``loss`` every 10 steps up to ``global_step``."""
    return {
        "global_step": global_step,
        "max_steps": max_steps or global_step,
        "log_history": [{"step": s, "loss": loss} for s in range(10, global_step + 1, 10)],
    }


def write_state(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trainer_state.json"
    path.write_text(json.dumps(doc))
    settled(path)
    return path


def write_progress(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "progress.json"
    path.write_text(json.dumps(doc))
    settled(path)
    return path


def conflict(job_id: str, holder: Path) -> str:
    """The reason a trainer state of a folder named ``job_id`` fails with."""
    return (f"job id {job_id!r} (the folder's name) belongs to the folder {holder}: a second folder can't claim "
            "it (rename one of them, or give this one a progress.json with another job_id)")  # fmt: skip


def jobs(lab: Lab) -> list[tuple[str, str]]:
    return lab.query("SELECT job_id, source_dir FROM jobs ORDER BY job_id")


def losses(lab: Lab, job_id: str) -> list[tuple[int, float]]:
    return lab.query("SELECT step, loss FROM trainer_steps WHERE job_id = $j ORDER BY step", {"j": job_id})


# --- discovery: a run folder holding only a checkpoint copy -------------------------------------


@pytest.mark.parametrize(
    "name",
    ["last-checkpoint", "best_checkpoint", "checkpoint-final", "Final-Checkpoint", "checkpoint", "latestcheckpoint"],
)
def test_a_run_folder_holding_only_a_checkpoint_copy_is_the_job(tmp_path: Path, name: str) -> None:
    run = tmp_path / "whisper-run"
    write_state(run / name, state(20, 1.0))
    (found,) = discover.discover([tmp_path])
    assert found.path == run
    assert found.trainer_states == [run / name / "trainer_state.json"]
    assert found.checkpoints == {}  # a copy, not a checkpoint-<step>/ folder
    (again,) = discover.discover([run])  # the run folder as the root itself
    assert again.path == run


def test_a_folder_of_runs_stays_a_folder_of_runs(tmp_path: Path) -> None:
    """Only a subfolder named as a checkpoint copy makes its parent the job: a jobs root holding
    run folders (one of them named with 'checkpoint' in it) is not one job."""
    folders = ("run1", "whisper-ja-last-checkpoint", "my-checkpoint-tests", "team/checkpoints-old", "team/checkpoint-x")
    for folder in folders:
        write_state(tmp_path / folder, state(20, 1.0))
    (tmp_path / "other" / "last-checkpoint").mkdir(parents=True)  # a copy without a trainer state
    (tmp_path / "other" / "last-checkpoint" / "model.safetensors").write_bytes(b"\0")
    found = discover.discover([tmp_path])
    assert [j.path.relative_to(tmp_path).as_posix() for j in found] == [
        "my-checkpoint-tests", "run1", "team/checkpoint-x", "team/checkpoints-old", "whisper-ja-last-checkpoint",
    ]  # fmt: skip


def test_a_job_folders_copy_and_checkpoints_are_read_together(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_state(run / "checkpoint-10", state(10, 1.0))
    write_state(run / "last-checkpoint", state(20, 1.0))
    (found,) = discover.discover([tmp_path])
    assert found.path == run and found.checkpoints == {10: "checkpoint-10"}
    assert found.trainer_states == [run / "checkpoint-10" / "trainer_state.json",
                                    run / "last-checkpoint" / "trainer_state.json"]  # fmt: skip


def paths(root: Path) -> list[str]:
    return [j.path.relative_to(root).as_posix() for j in discover.discover([root])]


@pytest.mark.parametrize("trial", ["checkpoint-30", "."])  # a trial's checkpoint, or a finished trial's own state
def test_a_copy_beside_job_folders_does_not_swallow_them(tmp_path: Path, trial: str) -> None:
    """A sweep's trials beside its best-checkpoint/ copy stay jobs (review finding 1): the sweep folder
    is no job, and the copy is a job folder of its own, as before copies counted."""
    sweep = tmp_path / "sweep"
    for name in ("trial-1", "trial-2"):
        write_state(sweep / name / trial, state(30, 1.0))
    write_state(sweep / "best-checkpoint", state(30, 1.0))
    assert paths(tmp_path) == ["sweep/best-checkpoint", "sweep/trial-1", "sweep/trial-2"]
    # deeper too, and a folder holding only copies below a sweep is still its run's job
    write_state(tmp_path / "deep" / "trials" / "t1" / "checkpoint-10", state(10, 1.0))
    write_state(tmp_path / "deep" / "best-checkpoint", state(10, 1.0))
    write_state(tmp_path / "nested" / "final_checkpoint", state(10, 1.0))
    write_state(tmp_path / "nested" / "q" / "last-checkpoint", state(10, 1.0))
    assert paths(tmp_path) == [
        "deep/best-checkpoint", "deep/trials/t1", "nested/final_checkpoint", "nested/q",
        "sweep/best-checkpoint", "sweep/trial-1", "sweep/trial-2",
    ]  # fmt: skip


@pytest.mark.parametrize("own", ["progress.json", "checkpoint-20", "runs"])
def test_a_folder_named_like_a_copy_that_is_a_job_folder_of_its_own_is_its_own_job(tmp_path: Path, own: str) -> None:
    """A Trainer output_dir named ``checkpoint/`` (or ``best_checkpoint/``) holds its own
    progress.json, checkpoint-N/ folders or runs/: it is no copy, so its otherwise empty parent is
    no job, and every file in it is read for it (taken for a copy, only its top-level trainer
    state was read, its checkpoints and logs silently not)."""
    out = tmp_path / "outputs" / "best_checkpoint"
    write_state(out, state(20, 1.0))
    if own == "progress.json":
        write_progress(out, {"job_id": "my-run", "history": [{"step": 10, "loss": 1.0}]})
    elif own == "runs":
        (out / "runs" / "Dec05_host").mkdir(parents=True)
        (out / "runs" / "Dec05_host" / "events.out.tfevents.1.host").write_bytes(b"")
    else:
        write_state(out / own, state(20, 1.0))
    (found,) = discover.discover([tmp_path])
    assert found.path == out
    assert (found.progress is not None, sorted(found.checkpoints), len(found.tool_paths())) == {
        "progress.json": (True, [], 0), "checkpoint-20": (False, [20], 0), "runs": (False, [], 1),
    }[own]  # fmt: skip


def test_a_copy_makes_its_run_the_job_only_when_every_file_below_is_read_for_it(tmp_path: Path) -> None:
    """The Trainer's own TensorBoard run (runs/<date>_<host>/) and LLaMA-Factory log are the job's;
    another tool's run below (out/logs/metrics.csv) would go unread in a job folder: not a job then."""
    hf = tmp_path / "hf"
    write_state(hf / "last-checkpoint", state(20, 1.0))
    (hf / "runs" / "Dec05_host").mkdir(parents=True)
    (hf / "runs" / "Dec05_host" / "events.out.tfevents.1.host").write_bytes(b"")
    (hf / "trainer_log.jsonl").write_text("")
    (found,) = discover.discover([tmp_path])
    assert found.path == hf and found.tool_paths() == [
        hf / "runs" / "Dec05_host" / "events.out.tfevents.1.host",
        hf / "trainer_log.jsonl",
    ]
    other = tmp_path / "other"
    write_state(other / "last-checkpoint", state(20, 1.0))
    (other / "logs").mkdir()
    (other / "logs" / "metrics.csv").write_text("step,loss\n")
    assert [(j.path.relative_to(tmp_path).as_posix(), j.tool_job_id) for j in discover.discover([tmp_path])] == [
        ("hf", None), ("other/last-checkpoint", None), ("other/logs", "other/logs"),
    ]  # fmt: skip


def test_a_sweep_with_a_best_checkpoint_copy_ingests_every_trial(lab: Lab) -> None:
    sweep = lab.root / "sweep"
    write_state(sweep / "trial-1" / "checkpoint-30", state(30, 1.0))
    write_state(sweep / "trial-2", state(20, 2.0))
    write_state(sweep / "best-checkpoint", state(30, 1.0))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.problems) == (3, 0, [])
    root = sweep.resolve()
    assert jobs(lab) == [(name, str(root / name)) for name in ("best-checkpoint", "trial-1", "trial-2")]
    assert losses(lab, "trial-1") == [(10, 1.0), (20, 1.0), (30, 1.0)]
    assert losses(lab, "trial-2") == [(10, 2.0), (20, 2.0)]
    assert losses(lab, "best-checkpoint") == [(10, 1.0), (20, 1.0), (30, 1.0)]


# --- ingest: a run folder holding only last-checkpoint/ (F20) ----------------------------------


def test_a_run_with_only_last_checkpoint_is_one_job_named_for_the_run(lab: Lab) -> None:
    run = lab.root / "whisper-run"
    shutil.copytree(WHISPER, run / "last-checkpoint")
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.problems) == (1, 0, [])
    assert jobs(lab) == [("whisper-run", str(run.resolve()))]
    # the copy is the checkpoint at its global_step, 5000 (the file's own field)
    assert lab.query("SELECT step, path, source FROM checkpoints") == [
        (5000, str(run.resolve() / "last-checkpoint"), "trainer_state")
    ]
    # 205 log entries over 200 distinct steps (eval entries share the training steps), 25..5000
    assert lab.query("SELECT count(*), min(step), max(step) FROM trainer_steps") == [(200, 25, 5000)]
    analytics = lab.analytics("whisper-run")
    assert analytics is not None
    assert (analytics["losses"]["initial_loss"], analytics["losses"]["final_loss"]) == (0.3048, 0.0002)
    assert analytics["checkpoints"]["total_checkpoints"] == 1


def test_two_runs_each_with_only_last_checkpoint_are_two_jobs(lab: Lab) -> None:
    write_state(lab.root / "run-a" / "last-checkpoint", state(100, 1.0))
    write_state(lab.root / "run-b" / "last-checkpoint", state(50, 9.0))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (2, 0)
    root = lab.root.resolve()
    assert jobs(lab) == [("run-a", str(root / "run-a")), ("run-b", str(root / "run-b"))]
    assert losses(lab, "run-a") == [(s, 1.0) for s in range(10, 101, 10)]
    assert losses(lab, "run-b") == [(s, 9.0) for s in range(10, 51, 10)]
    assert lab.query("SELECT job_id, step FROM checkpoints ORDER BY job_id") == [("run-a", 100), ("run-b", 50)]


# --- one folder per job id: trainer-state folders (F21) -----------------------------------------


def test_two_trainer_state_folders_of_one_name_the_first_keeps_it(lab: Lab) -> None:
    write_state(lab.root / "team-a" / "run1", state(100, 1.0))
    loser = write_state(lab.root / "team-b" / "run1", state(50, 9.0))
    summary = lab.ingest()
    holder = lab.root.resolve() / "team-a" / "run1"
    assert (summary.ingested, summary.failed, summary.to_retry) == (1, 1, 1)
    assert summary.problems == [{"path": str(loser.resolve()), "outcome": "failed", "reason": conflict("run1", holder)}]
    assert jobs(lab) == [("run1", str(holder))]
    assert losses(lab, "run1") == [(s, 1.0) for s in range(10, 101, 10)]
    # reported every run while both are there, and still nothing of team-b's
    again = lab.ingest()
    assert (again.ingested, again.failed, again.unchanged) == (0, 1, 1)
    assert again.problems == summary.problems
    assert losses(lab, "run1") == [(s, 1.0) for s in range(10, 101, 10)]
    outcome = "SELECT outcome FROM ingest_files WHERE path = $p"
    assert lab.query(outcome, {"p": lab.ledger_path(loser.resolve())}) == [("failed",)]


def test_the_folder_the_warehouse_holds_keeps_its_id(lab: Lab) -> None:
    """A folder that comes later, even first in path order, can't take the id."""
    write_state(lab.root / "team-b" / "run1", state(50, 9.0))
    lab.ingest()
    newcomer = write_state(lab.root / "team-a" / "run1", state(100, 1.0))
    summary = lab.ingest()
    holder = lab.root.resolve() / "team-b" / "run1"
    assert (summary.ingested, summary.failed) == (0, 1)
    assert summary.problems[0]["path"] == str(newcomer.resolve())
    assert summary.problems[0]["reason"] == conflict("run1", holder)
    assert jobs(lab) == [("run1", str(holder))]
    assert losses(lab, "run1") == [(s, 9.0) for s in range(10, 51, 10)]


def test_a_moved_trainer_state_folder_takes_its_job_along(lab: Lab) -> None:
    write_state(lab.root / "team-a" / "run1", state(50, 1.0))
    lab.ingest()
    (lab.root / "team-c").mkdir()
    (lab.root / "team-a" / "run1").rename(lab.root / "team-c" / "run1")
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (1, 0)
    assert jobs(lab) == [("run1", str(lab.root.resolve() / "team-c" / "run1"))]
    assert losses(lab, "run1") == [(s, 1.0) for s in range(10, 51, 10)]


def test_same_named_output_folders_of_checkpoints_only(lab: Lab) -> None:
    """HF's usual output_dir names ("results"): exp2's checkpoints, states and folders, add nothing."""
    for exp, loss in (("exp1", 1.0), ("exp2", 5.0)):
        for step in (100, 200):
            doc = state(step, loss, max_steps=200)
            write_state(lab.root / exp / "results" / f"checkpoint-{step}", doc)
    (lab.root / "exp2" / "results" / "checkpoint-300").mkdir()  # a checkpoint folder without a state
    summary = lab.ingest()
    root = lab.root.resolve()
    holder = root / "exp1" / "results"
    assert (summary.ingested, summary.failed) == (2, 2)
    assert summary.problems == [
        {"path": str(root / "exp2" / "results" / f"checkpoint-{step}" / "trainer_state.json"), "outcome": "failed",
         "reason": conflict("results", holder)}
        for step in (100, 200)
    ]  # fmt: skip
    assert jobs(lab) == [("results", str(holder))]
    assert lab.query("SELECT step, path FROM checkpoints ORDER BY step") == [
        (100, str(holder / "checkpoint-100")),
        (200, str(holder / "checkpoint-200")),
    ]
    assert losses(lab, "results") == [(s, 1.0) for s in range(10, 201, 10)]


def test_a_trainer_state_folder_named_like_a_progress_job(lab: Lab) -> None:
    """team-a/run1 holds a progress.json (no job_id: 'run1'); team-b/run1 holds another run's trainer
    state: before, its steps 60-100 were mixed into run1."""
    history = [{"step": s, "loss": 1.0} for s in range(10, 51, 10)]
    write_progress(lab.root / "team-a" / "run1", {"status": "completed", "history": history})
    loser = write_state(lab.root / "team-b" / "run1", state(100, 9.0))
    summary = lab.ingest()
    holder = lab.root.resolve() / "team-a" / "run1"
    assert (summary.ingested, summary.failed) == (1, 1)
    assert summary.problems == [{"path": str(loser.resolve()), "outcome": "failed", "reason": conflict("run1", holder)}]
    assert jobs(lab) == [("run1", str(holder))]
    assert lab.query("SELECT count(*) FROM trainer_steps") == [(0,)]
    assert lab.query("SELECT step, loss FROM steps ORDER BY step") == [(s, 1.0) for s in range(10, 51, 10)]


def test_a_progress_json_wins_over_a_trainer_state_folder_earlier_in_path_order(lab: Lab) -> None:
    """Progress files are merged first: a progress.json's folder holds the id over a trainer-state
    folder of the same name found in the same run, whatever their path order (decisions.md)."""
    loser = write_state(lab.root / "a-states" / "run1", state(100, 9.0))
    write_progress(lab.root / "b-server" / "run1", {"history": [{"step": 10, "loss": 1.0}]})
    summary = lab.ingest()
    holder = lab.root.resolve() / "b-server" / "run1"
    assert (summary.ingested, summary.failed) == (1, 1)
    assert summary.problems[0]["path"] == str(loser.resolve())
    assert summary.problems[0]["reason"] == conflict("run1", holder)
    assert jobs(lab) == [("run1", str(holder))]


def test_a_folder_named_like_another_folders_job_id(lab: Lab) -> None:
    """jobs/A/progress.json names job_id 'X'; an unrelated folder jobs/X holds a trainer state."""
    write_progress(lab.root / "A", {"job_id": "X", "history": [{"step": s, "loss": 1.0} for s in range(10, 51, 10)]})
    loser = write_state(lab.root / "X", state(100, 9.0))
    summary = lab.ingest()
    holder = lab.root.resolve() / "A"
    assert (summary.ingested, summary.failed) == (1, 1)
    assert summary.problems == [{"path": str(loser.resolve()), "outcome": "failed", "reason": conflict("X", holder)}]
    assert jobs(lab) == [("X", str(holder))]
    assert lab.query("SELECT count(*) FROM trainer_steps") == [(0,)]


def test_a_progress_json_named_like_a_stored_trainer_state_job_is_a_conflict(lab: Lab) -> None:
    """The other way round: the warehouse holds 'run1' from a trainer-state folder."""
    write_state(lab.root / "team-a" / "run1", state(50, 1.0))
    lab.ingest()
    loser = write_progress(lab.root / "team-b" / "run1", {"history": [{"step": 10, "loss": 9.0}]})
    summary = lab.ingest()
    holder = lab.root.resolve() / "team-a" / "run1"
    assert (summary.ingested, summary.failed) == (0, 1)
    assert summary.problems == [
        {"path": str(loser.resolve()), "outcome": "failed",
         "reason": f"job id 'run1' belongs to the folder {holder}: a second folder can't claim it "
                   "(give one of them another job_id)"},
    ]  # fmt: skip
    assert jobs(lab) == [("run1", str(holder))]
    assert lab.query("SELECT count(*) FROM steps") == [(0,)]


def test_a_conflicting_folders_tool_log_is_not_read(lab: Lab) -> None:
    """team-b/run1's LLaMA-Factory log fails with its folder, whether its trainer state lost the id
    or can't be read at all (then the log alone would have claimed the folder's name)."""
    write_state(lab.root / "team-a" / "run1", state(50, 1.0))
    lab.ingest()
    log = "".join(json.dumps({"current_steps": s, "total_steps": 100, "loss": 9.0}) + "\n" for s in range(10, 101, 10))
    holder = lab.root.resolve() / "team-a" / "run1"
    for name, text in (("team-b", json.dumps(state(100, 9.0))), ("team-c", "[1, 2]")):
        folder = lab.root / name / "run1"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(text)
        (folder / "trainer_log.jsonl").write_text(log)
        settled(folder / "trainer_state.json")
        settled(folder / "trainer_log.jsonl")
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (0, 4)
    reasons = {(Path(p["path"]).parent.parent.name, Path(p["path"]).name): p["reason"] for p in summary.problems}
    assert reasons == {
        ("team-b", "trainer_state.json"): conflict("run1", holder),
        ("team-b", "trainer_log.jsonl"): conflict("run1", holder),
        ("team-c", "trainer_state.json"): "top-level JSON value is list, not an object",
        ("team-c", "trainer_log.jsonl"): f"job id run1 belongs to another folder, {holder}: not read",
    }
    assert lab.query("SELECT count(*) FROM metric_values WHERE source <> 'trainer_state'") == [(0,)]
    assert losses(lab, "run1") == [(s, 1.0) for s in range(10, 51, 10)]
