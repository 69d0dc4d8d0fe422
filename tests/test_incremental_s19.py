"""Session 19 audit: ingesting files step by step as trainers write them equals one ingest of the
final files (inputs.md section 1: a file caught mid-rewrite is retried, never half-applied;
section 3: reading every checkpoint's trainer state duplicates no step; insights.md: a job's
insights never depend on when they are computed, but silent_running).

- an MLflow run's ``meta.yaml`` caught mid-rewrite waits for the next run, and its start and end
  are the run's own: a later read replaces them (finding 3);
- a change to the experiment's ``meta.yaml`` (renamed, deleted) reads the run again (finding 6);
- a Lightning CSVLogger run's start does not move when its first checkpoint touches the folder
  (finding 5);
- the final ``trainer_state.json`` wins its steps over its ``checkpoint-N/`` copy at the same
  global_step, in one batch or across runs (finding 4);
- a completed job whose peer insights did not change keeps its ``as_of`` (minor).

DuckDB only, each case a few ingests of a few small files."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import Lab
from file_times import aged, write

from runlytics.ingest import quick
from runlytics.ingest.formats import lightning_csv

START_MS = 1_780_000_000_000  # 2026-05-28 20:26:40 UTC
START = datetime(2026, 5, 28, 20, 26, 40)
JOB = "SELECT status, started_at, ended_at, config FROM jobs WHERE job_id = $j"


def problems(summary: object, lab: Lab) -> dict[str, tuple[str, str]]:
    root = lab.root.resolve()
    return {
        Path(p["path"]).relative_to(root).as_posix(): (p["outcome"], p["reason"])
        for p in summary.problems  # type: ignore[attr-defined]
    }


def fresh(tmp_path: Path, lab: Lab) -> Lab:
    """A second warehouse that reads the lab's files once, as they are now."""
    folder = tmp_path / f"fresh{len(list(tmp_path.glob('fresh*')))}"
    folder.mkdir()
    other = Lab(folder)
    other.root.rmdir()
    other.root = lab.root
    other.ingest()
    return other


def facts(lab: Lab, job: str) -> list[tuple[object, ...]]:
    return lab.query(JOB, {"j": job})


# --- finding 3: an MLflow meta.yaml caught mid-rewrite -------------------------------------------


def meta(status: int, end: str) -> str:
    return (
        f"run_id: abc\nexperiment_id: '1'\nstatus: {status}\nstart_time: {START_MS}\nend_time: {end}\n"
        "lifecycle_stage: active\nrun_name: r\n"
    )


def mlflow_run(lab: Lab) -> Path:
    run = lab.root / "mlruns" / "1" / "abc"
    write(lab.root / "mlruns" / "1" / "meta.yaml", "experiment_id: '1'\nname: exp\nlifecycle_stage: active\n", 20)
    write(run / "meta.yaml", meta(1, "null"), 20)
    write(run / "metrics" / "loss", "".join(f"{START_MS + 1000 * s} 1.{s} {s}\n" for s in range(1, 10)), 20)
    return run / "meta.yaml"


@pytest.mark.parametrize(
    "torn",
    [
        meta(3, str(START_MS + 100_000)).split(f"start_time: {START_MS}")[0] + "start_time: 17800\n",  # a line's end
        meta(3, str(START_MS + 100_000))[:40],  # mid-line: no final newline
        "",  # truncated, not yet written
    ],
    ids=["cut-at-a-line", "cut-mid-line", "empty"],
)
def test_mlflow_meta_caught_mid_rewrite_waits(tmp_path: Path, torn: str) -> None:
    """meta.yaml read while MLflow rewrote it (RUNNING -> FINISHED): the valid YAML prefix
    ``start_time: 17800`` made the start 1970 for good (least() kept it). It is now left for the
    next run (pending), nothing of it applied; the whole file then gives what one read of it gives."""
    lab = Lab(tmp_path)
    path = mlflow_run(lab)
    lab.ingest()
    before = facts(lab, "mlruns/1/abc")
    write(path, torn, 15)
    summary = lab.ingest()
    assert problems(summary, lab)["mlruns/1/abc/meta.yaml"][0] == "pending"
    assert facts(lab, "mlruns/1/abc") == before
    write(path, meta(3, str(START_MS + 100_000)), 10)
    lab.ingest()
    (row,) = facts(lab, "mlruns/1/abc")
    assert row[:3] == ("completed", START, datetime(2026, 5, 28, 20, 28, 20))
    assert facts(lab, "mlruns/1/abc") == facts(fresh(tmp_path, lab), "mlruns/1/abc")


def test_mlflow_meta_times_are_the_runs_own(tmp_path: Path) -> None:
    """A meta.yaml left cut short for good (settled: read as it is) and completed later: the later
    read's start replaces the earlier one (MLflow's start_time is the run's own, not the earliest
    seen); a run resumed in MLflow (status RUNNING again, end_time null) has no end any more."""
    lab = Lab(tmp_path)
    path = mlflow_run(lab)
    write(path, meta(3, str(START_MS + 100_000)).split(f"start_time: {START_MS}")[0] + "start_time: 17800\n", 600)
    lab.ingest()
    assert facts(lab, "mlruns/1/abc")[0][1] == datetime(1970, 1, 1, 0, 0, 17, 800000)
    write(path, meta(3, str(START_MS + 100_000)), 500)
    lab.ingest()
    assert facts(lab, "mlruns/1/abc")[0][:3] == ("completed", START, datetime(2026, 5, 28, 20, 28, 20))
    write(path, meta(1, "null"), 400)
    lab.ingest()
    assert facts(lab, "mlruns/1/abc")[0][:3] == ("running", START, None)
    assert facts(lab, "mlruns/1/abc") == facts(fresh(tmp_path, lab), "mlruns/1/abc")


# --- finding 6: the experiment's meta.yaml -------------------------------------------------------


def test_mlflow_experiment_meta_change_reads_the_run_again(tmp_path: Path) -> None:
    """The experiment's meta.yaml renamed and deleted in MLflow after its run was read: the run is
    read again (its experiment_name, the "experiment was deleted" warning), as one read of the final
    files has it; the no-op shortcut's digest sees the change too."""
    lab = Lab(tmp_path)
    mlflow_run(lab)
    lab.ingest()
    assert quick.nothing_to_do(lab.db, [lab.root]) is not None
    write(lab.root / "mlruns" / "1" / "meta.yaml", "experiment_id: '1'\nname: renamed\nlifecycle_stage: deleted\n", 10)
    assert quick.nothing_to_do(lab.db, [lab.root]) is None  # the shortcut sees it
    summary = lab.ingest()
    (config,) = lab.query("SELECT config->>'$.mlflow.experiment_name' FROM jobs")[0]
    assert config == "renamed"
    warned = [m for _, m in summary.listed_warnings]
    assert any("the experiment was deleted in MLflow" in m for m in warned), warned
    ledger = "SELECT path, outcome, warnings FROM ingest_files ORDER BY path"
    assert lab.query(ledger) == fresh(tmp_path, lab).query(ledger)
    assert facts(lab, "mlruns/1/abc") == facts(fresh(tmp_path, lab), "mlruns/1/abc")
    assert lab.ingest().ingested == 0  # read once: the next run finds nothing new


# --- finding 5: a Lightning CSVLogger run's start ------------------------------------------------


def lightning_run(lab: Lab, start: float) -> Path:
    version = lab.root / "lightning_logs" / "version_0"
    version.mkdir(parents=True)
    (version / "hparams.yaml").write_text("model_name: m\n")
    (version / "metrics.csv").write_text("epoch,step,train_loss_step\n0,1,2.0\n0,2,1.9\n")
    for path in (version / "hparams.yaml", version / "metrics.csv", version):
        os.utime(path, (start, start))
    return version


def first_checkpoint(version: Path, when: float) -> None:
    """100 s on: rows appended, hparams.yaml rewritten (CSVLogger.save), ModelCheckpoint's first
    save making version_0/checkpoints/ (the folder's modification time moves)."""
    with (version / "metrics.csv").open("a") as f:
        f.write("0,3,1.8\n0,4,1.7\n")
    (version / "hparams.yaml").write_text("model_name: m\n")
    (version / "checkpoints").mkdir()
    (version / "checkpoints" / "epoch=0-step=4.ckpt").touch()
    for path in ("hparams.yaml", "metrics.csv", "checkpoints/epoch=0-step=4.ckpt", "checkpoints", "."):
        os.utime(version / path, (when, when))


def test_lightning_start_does_not_depend_on_when_ingest_ran(tmp_path: Path) -> None:
    """Read before and after the first checkpoint, the run kept the earlier start (least()); read
    once after it, its start was the checkpoint's time (total_seconds 0). Both now agree."""
    lab = Lab(tmp_path)
    start = time.time() - 200
    version = lightning_run(lab, start)
    lab.ingest()
    first_checkpoint(version, start + 100)
    lab.ingest()
    job = "lightning_logs/version_0"
    query = "SELECT started_at, updated_at, total_seconds FROM job_analytics WHERE job_id = $j"
    assert lab.query(query, {"j": job}) == fresh(tmp_path, lab).query(query, {"j": job})


def test_lightning_start_is_the_folders_birth(tmp_path: Path) -> None:
    """Where the file system records when the version folder was made (statx's birth time), that is
    the run's start: Lightning makes it as the run starts, and nothing changes it later."""
    lab = Lab(tmp_path)
    made = time.time()
    version = lightning_run(lab, made + 30)  # the first flush 30 s after the folder was made
    born = lightning_csv.birth_time(version)
    if born is None:
        pytest.skip("this file system records no birth time")
    lab.ingest()
    first_checkpoint(version, made + 100)
    lab.ingest()
    (started,) = lab.query("SELECT started_at FROM jobs")[0]
    assert abs((started - datetime.utcfromtimestamp(born)).total_seconds()) < 1e-3
    assert started < datetime.utcfromtimestamp(made + 30)
    assert facts(lab, "lightning_logs/version_0") == facts(fresh(tmp_path, lab), "lightning_logs/version_0")


# --- finding 4: the final trainer_state.json and its checkpoint copy at one global_step -----------


def hf_states(out: Path) -> tuple[dict[str, object], dict[str, object]]:
    train = [
        {"step": s, "loss": round(2 / (1 + s / 10), 4), "learning_rate": 1e-4, "epoch": s / 20} for s in range(1, 21)
    ]
    checkpoint = {"global_step": 20, "max_steps": 20, "save_steps": 20, "log_history": train}
    final = {**checkpoint, "log_history": [
        *train,
        {"step": 20, "epoch": 1.0, "eval_loss": 0.9, "eval_runtime": 1.0},
        {"step": 20, "epoch": 1.0, "train_runtime": 100.0, "train_samples_per_second": 3.2, "train_loss": 1.3},
    ]}  # fmt: skip
    return checkpoint, final


STEP_20 = "SELECT step, loss, eval_loss, metrics, state_step FROM trainer_steps WHERE step = 20"


@pytest.mark.parametrize("order", ["together", "checkpoint-first", "final-first"])
def test_final_state_wins_its_steps_over_the_checkpoint_copy(tmp_path: Path, order: str) -> None:
    """checkpoint-20/trainer_state.json and the final trainer_state.json (save_state after
    evaluate), both global_step 20; the final one also holds the closing eval at step 20. Read
    together, the checkpoint's step 20 won (eval_loss NULL: the later in the batch); read in two
    runs, the later read won. The final state's entries win, as its trainer_runs row does."""
    lab = Lab(tmp_path)
    checkpoint, final = hf_states(lab.root / "out")
    copy = lab.root / "out" / "checkpoint-20" / "trainer_state.json"
    last = lab.root / "out" / "trainer_state.json"
    if order == "together":
        write(copy, json.dumps(checkpoint), 60)
        write(last, json.dumps(final), 60)
        lab.ingest()
    elif order == "checkpoint-first":
        write(copy, json.dumps(checkpoint), 60)
        lab.ingest()
        write(last, json.dumps(final), 50)
        lab.ingest()
    else:  # the copy read again after the final state (copied over once more)
        write(copy, json.dumps(checkpoint), 60)
        write(last, json.dumps(final), 60)
        lab.ingest()
        aged(copy, 30)
        lab.ingest()
    (row,) = lab.query(STEP_20)
    assert row[2] == 0.9 and json.loads(row[3]) == {"eval_runtime": 1.0}
    assert lab.query("SELECT final_eval_loss, best_eval_loss FROM job_analytics") == [(0.9, 0.9)]
    assert lab.query("SELECT source_file FROM trainer_runs") == [(str(last.resolve()),)]


# --- minor: a peer's as_of -------------------------------------------------------------------------


def test_a_peer_whose_insights_did_not_change_keeps_its_as_of(tmp_path: Path) -> None:
    """A completed job changes: the completed jobs of its model have their slow_vs_peers computed
    again, and every one of them took the run's as_of (all its rows, insight_jobs) though its
    insights were the same. Only a peer whose rows changed takes it now; the others keep the as_of
    of the run that last changed them (docs/insights.md)."""
    lab = Lab(tmp_path)

    def job(name: str, samples_per_second: float) -> None:
        rows = [{"step": s, "samples": samples_per_second * 10, "iteration_time": 1.0, "loss": 1.0} for s in (10, 20)]
        doc = {"status": "completed", "config": {"model_name": "m", "gpu_count": 1}, "history": rows}
        aged(lab.write_job(name, doc), 60)

    def as_of() -> tuple[dict[str, datetime], datetime]:
        (run,) = lab.query("SELECT max(started_at) FROM ingest_runs")[0]
        return dict(lab.query("SELECT job_id, as_of FROM insight_jobs")), run

    for name, speed in (("p1", 100), ("p2", 100), ("p3", 100), ("p4", 100), ("slow", 60), ("slower", 50)):
        job(name, speed)
    lab.ingest()
    first, _ = as_of()
    assert lab.query("SELECT job_id FROM insight_results ORDER BY 1") == [("slow",), ("slower",)]
    job("p4", 120)  # the peers' medians stay 100: slow's and slower's rows are the same
    lab.ingest()
    second, run = as_of()
    assert second == {**first, "p4": run}
    job("p5", 100)  # a sixth peer: slow's and slower's messages count it
    lab.ingest()
    third, run = as_of()
    assert third == {**second, "p5": run, "slow": run, "slower": run}
    assert lab.query("SELECT DISTINCT job_id, as_of FROM insight_results ORDER BY 1") == [
        ("slow", run),
        ("slower", run),
    ]
