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

DuckDB only; each case's folders share their ingests (an ingest costs most of a test)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import Lab
from file_times import aged, write

from runlytics.ingest import quick
from runlytics.ingest.formats import lightning_csv, mlflow_store

START_MS = 1_780_000_000_000  # 2026-05-28 20:26:40 UTC
START = datetime(2026, 5, 28, 20, 26, 40)
END = datetime(2026, 5, 28, 20, 28, 20)
JOB = "SELECT status, started_at, ended_at, config->>'$.mlflow.experiment_name' FROM jobs WHERE job_id = $j"


def problems(summary: object, lab: Lab) -> dict[str, tuple[str, str]]:
    root = lab.root.resolve()
    return {
        Path(p["path"]).relative_to(root).as_posix(): (p["outcome"], p["reason"])
        for p in summary.problems  # type: ignore[attr-defined]
    }


# --- finding 3: an MLflow meta.yaml caught mid-rewrite; finding 6: the experiment's meta.yaml -----


def meta(status: int, end: str) -> str:
    return (
        f"run_id: abc\nexperiment_id: '1'\nstatus: {status}\nstart_time: {START_MS}\nend_time: {end}\n"
        "lifecycle_stage: active\nrun_name: r\n"
    )


FINISHED = meta(3, str(START_MS + 100_000))
CUT = FINISHED.split(f"start_time: {START_MS}")[0] + "start_time: 17800\n"  # valid YAML: a start in 1970


def mlflow_run(lab: Lab, experiment: str, run: str, text: str, age: float) -> Path:
    write(lab.root / "mlruns" / experiment / "meta.yaml", f"experiment_id: '{experiment}'\nname: exp\n", 60)
    write(lab.root / "mlruns" / experiment / run / "metrics" / "loss", f"{START_MS + 1000} 1.5 1\n", 60)
    return write(lab.root / "mlruns" / experiment / run / "meta.yaml", text, age)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (CUT.encode(), "no end_time"),
        (FINISHED[:40].encode(), "no newline at its end"),
        (b"", "empty"),
        (b"status: 3\nstart_time: 1\n", "no end_time"),
        (FINISHED.encode(), None),
        (b"- not a mapping\n", None),  # its read says so
    ],
    ids=["cut-at-a-line", "cut-mid-line", "empty", "hand-written-fresh", "whole", "not-a-mapping"],
)
def test_a_meta_yaml_cut_short(data: bytes, reason: str | None) -> None:
    assert mlflow_store.cut_short(data) == reason


def test_mlflow_meta_mid_rewrite_and_the_experiments_meta(lab: Lab) -> None:
    """Run 1/abc: its meta.yaml read while MLflow rewrote it (RUNNING -> FINISHED) as the valid
    YAML ``start_time: 17800``, which least() kept for good (a start in 1970). It is now pending,
    nothing of it applied, and the whole file gives what one read of it gives. Run 2/old: its
    meta.yaml cut so for good (settled: read as it is), completed later: the later start replaces
    the 1970 one; run 2/again, resumed in MLflow (RUNNING, end_time null), has no end any more.
    Run 3/def: its experiment renamed and deleted in MLflow after the run was read: the run is read
    again (the name, the "experiment was deleted" warning), and the no-op shortcut sees the change."""
    abc = mlflow_run(lab, "1", "abc", meta(1, "null"), 60)
    old = mlflow_run(lab, "2", "old", CUT, 600)
    again = mlflow_run(lab, "2", "again", FINISHED, 60)
    mlflow_run(lab, "3", "def", FINISHED, 60)
    lab.ingest()
    assert lab.query(JOB, {"j": "mlruns/2/old"})[0][1] == datetime(1970, 1, 1, 0, 0, 17, 800000)
    running = [("running", START, None, "exp")]
    assert lab.query(JOB, {"j": "mlruns/1/abc"}) == running
    assert quick.nothing_to_do(lab.db, [lab.root]) is not None
    write(lab.root / "mlruns" / "3" / "meta.yaml", "experiment_id: '3'\nname: renamed\nlifecycle_stage: deleted\n", 50)
    assert quick.nothing_to_do(lab.db, [lab.root]) is None  # the shortcut sees the experiment's file

    write(abc, CUT, 15)  # caught mid-rewrite
    write(old, FINISHED, 500)
    write(again, meta(1, "null"), 500)
    summary = lab.ingest()
    assert problems(summary, lab) == {
        "mlruns/1/abc/meta.yaml": ("pending", "no end_time: taken for a file being rewritten, read again next run")
    }
    assert lab.query(JOB, {"j": "mlruns/1/abc"}) == running
    assert lab.query(JOB, {"j": "mlruns/2/old"}) == [("completed", START, END, "exp")]
    assert lab.query(JOB, {"j": "mlruns/2/again"}) == running
    assert lab.query(JOB, {"j": "mlruns/3/def"}) == [("completed", START, END, "renamed")]
    deleted = "the experiment's meta.yaml: lifecycle_stage deleted (the experiment was deleted in MLflow; its files"
    warned = [deleted + " stay until `mlflow gc`): kept as a job"]
    assert [m for _, m in summary.listed_warnings] == warned
    ledger = "SELECT path, warnings FROM ingest_files WHERE warning_count > 0"
    assert lab.query(ledger) == [(str(lab.root.resolve() / "mlruns/3/def/meta.yaml"), json.dumps(warned))]

    write(abc, FINISHED, 10)  # the write completes
    summary = lab.ingest()
    assert (summary.ingested, summary.pending) == (1, 0)  # abc's meta.yaml alone: def's was read once
    assert lab.query(JOB, {"j": "mlruns/1/abc"}) == [("completed", START, END, "exp")]


# --- finding 5: a Lightning CSVLogger run's start ------------------------------------------------


def lightning_run(lab: Lab, version: str, first_flush: float) -> Path:
    folder = lab.root / "lightning_logs" / version
    folder.mkdir(parents=True)
    (folder / "hparams.yaml").write_text("model_name: m\n")
    (folder / "metrics.csv").write_text("epoch,step,train_loss_step\n0,1,2.0\n0,2,1.9\n")
    for path in (folder / "hparams.yaml", folder / "metrics.csv", folder):
        os.utime(path, (first_flush, first_flush))
    return folder


def first_checkpoint(folder: Path, when: float) -> None:
    """Rows appended, hparams.yaml rewritten (CSVLogger.save), and ModelCheckpoint's first save
    making version_N/checkpoints/ (the folder's modification time moves)."""
    with (folder / "metrics.csv").open("a") as f:
        f.write("0,3,1.8\n0,4,1.7\n")
    (folder / "hparams.yaml").write_text("model_name: m\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "epoch=0-step=4.ckpt").touch()
    for path in ("hparams.yaml", "metrics.csv", "checkpoints/epoch=0-step=4.ckpt", "checkpoints", "."):
        os.utime(folder / path, (when, when))


QUERY = "SELECT started_at, updated_at, total_seconds FROM job_analytics WHERE job_id = $j"


def test_lightning_start_does_not_depend_on_when_ingest_ran(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """version_0 (its files dated before the folder was made here, as a copy's are): read before
    and after its first checkpoint it kept the earlier start (least()), read once after it its start
    was the checkpoint's time (total_seconds 0); both now agree. version_1 (made now, first flushed
    30 s later): where the file system records when the folder was made (statx's birth time), that
    is the start, which the checkpoint does not move. version_2 on a file system that records no
    birth time (NFS; ``birth_time`` None): its files' times are all there is and the checkpoint moves
    them, so the earliest seen stays (least()): it took the checkpoint's time (total_seconds 0)."""
    now = time.time()
    copied = lightning_run(lab, "version_0", now - 200)
    made = lightning_run(lab, "version_1", now + 30)
    nfs = lightning_run(lab, "version_2", now - 200)
    born = lightning_csv.birth_time(made)
    recorded = lightning_csv.birth_time
    monkeypatch.setattr(lightning_csv, "birth_time", lambda path: None if path.name == nfs.name else recorded(path))
    lab.ingest()
    first_checkpoint(copied, now - 100)
    first_checkpoint(made, now + 100)
    first_checkpoint(nfs, now - 100)
    lab.ingest()
    (started, updated, total) = lab.query(QUERY, {"j": "lightning_logs/version_2"})[0]
    assert abs((started - datetime.utcfromtimestamp(now - 200)).total_seconds()) < 1e-3
    assert abs((updated - datetime.utcfromtimestamp(now - 100)).total_seconds()) < 1e-3
    assert abs(total - 100) < 1e-3
    if born is None:
        pytest.skip("this file system records no birth time")
    # version_0: the earliest time its files still show, as one read of them gives (least() kept now - 200)
    (started, updated, total) = lab.query(QUERY, {"j": "lightning_logs/version_0"})[0]
    assert abs((started - datetime.utcfromtimestamp(now - 100)).total_seconds()) < 1e-3
    assert (updated, total) == (started, 0)
    (started,) = lab.query("SELECT started_at FROM jobs WHERE job_id = 'lightning_logs/version_1'")[0]
    assert abs((started - datetime.utcfromtimestamp(born)).total_seconds()) < 1e-3
    assert started < datetime.utcfromtimestamp(now + 30)


def test_no_ctypes_means_no_birth_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Python built without _ctypes, lightning_csv (and mlflow_store, which imports from it,
    and so the whole ingest) failed to import: the statx lookup imports ctypes when first needed,
    and its ImportError means no birth time, as a file system that records none."""
    monkeypatch.setitem(sys.modules, "ctypes", None)  # ``import ctypes`` raises ImportError
    monkeypatch.setitem(sys.modules, "_ctypes", None)
    name = "runlytics.ingest.formats._lightning_csv_without_ctypes"  # a fresh copy, not registered
    spec = importlib.util.spec_from_file_location(name, lightning_csv.__file__)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    if hasattr(os.stat(tmp_path), "st_birthtime"):
        pytest.skip("os.stat gives the birth time here: no statx needed")
    assert fresh.birth_time(tmp_path) is None


# --- finding 4: the final trainer_state.json and its checkpoint copy at one global_step -----------


def hf_states() -> tuple[str, str]:
    train = [{"step": s, "loss": round(2 / (1 + s / 10), 4), "learning_rate": 1e-4} for s in range(1, 21)]
    checkpoint = {"global_step": 20, "max_steps": 20, "save_steps": 20, "log_history": train}
    final = {**checkpoint, "log_history": [
        *train,
        {"step": 20, "epoch": 1.0, "eval_loss": 0.9, "eval_runtime": 1.0},
        {"step": 20, "epoch": 1.0, "train_runtime": 100.0, "train_samples_per_second": 3.2, "train_loss": 1.3},
    ]}  # fmt: skip
    return json.dumps(checkpoint), json.dumps(final)


def test_final_state_wins_its_steps_over_the_checkpoint_copy(lab: Lab) -> None:
    """checkpoint-20/trainer_state.json and the final trainer_state.json (save_state after
    evaluate), both global_step 20; the final one also holds the closing eval at step 20. Read
    together (``together``), the copy's step 20 won (eval_loss NULL: the later in the batch); read in
    two runs, the later read won (``final-first``: the copy copied over once more after the final
    state was read). The final state's entries win, as its trainer_runs row does, in any order.
    A copy in a subfolder whose name sorts after ``trainer_state.json`` (``zz/``, read together or
    after the final state) won as "the path that sorts last": the job folder's own state wins."""
    checkpoint, final = hf_states()
    for job in ("together", "checkpoint-first", "final-first"):
        write(lab.root / job / "checkpoint-20" / "trainer_state.json", checkpoint, 60)
        if job != "checkpoint-first":
            write(lab.root / job / "trainer_state.json", final, 60)
    for job in ("zz-together", "zz-after"):
        write(lab.root / job / "trainer_state.json", final, 60)
    write(lab.root / "zz-together" / "zz" / "trainer_state.json", checkpoint, 60)
    lab.ingest()
    write(lab.root / "checkpoint-first" / "trainer_state.json", final, 50)
    aged(lab.root / "final-first" / "checkpoint-20" / "trainer_state.json", 30)
    write(lab.root / "zz-after" / "zz" / "trainer_state.json", checkpoint, 30)
    assert lab.ingest().ingested == 3
    jobs = ("checkpoint-first", "final-first", "together", "zz-after", "zz-together")
    rows = "SELECT job_id, eval_loss, metrics FROM trainer_steps WHERE step = 20 ORDER BY job_id"
    assert lab.query(rows) == [(job, 0.9, '{"eval_runtime": 1.0}') for job in jobs]
    assert set(lab.query("SELECT final_eval_loss, best_eval_loss FROM job_analytics")) == {(0.9, 0.9)}
    runs = "SELECT job_id, source_file FROM trainer_runs ORDER BY job_id"
    assert lab.query(runs) == [(job, str(lab.root.resolve() / job / "trainer_state.json")) for job in jobs]


# --- minor: a peer's as_of -------------------------------------------------------------------------


def test_a_peer_whose_insights_did_not_change_keeps_its_as_of(lab: Lab) -> None:
    """A completed job changes: the completed jobs of its model have their slow_vs_peers computed
    again, and every one of them took the run's as_of (all its rows, insight_jobs) though its
    insights were the same. Only a peer whose rows changed takes it now; the others keep the as_of
    of the run that last changed them (docs/insights.md)."""

    def job(name: str, model: str, samples_per_second: float) -> None:
        rows = [{"step": s, "samples": samples_per_second * 10, "iteration_time": 1.0, "loss": 1.0} for s in (10, 20)]
        doc = {"status": "completed", "config": {"model_name": model, "gpu_count": 1}, "history": rows}
        aged(lab.write_job(name, doc), 60)

    for name, speed in (("m1", 100), ("m2", 100), ("m3", 100), ("m-slow", 60), ("m-slower", 50)):
        job(name, "m", speed)
    for name, speed in (("n1", 100), ("n2", 100), ("n3", 100), ("n-slow", 60)):
        job(name, "n", speed)
    lab.ingest()
    first = dict(lab.query("SELECT job_id, as_of FROM insight_jobs"))
    slow = [("m-slow",), ("m-slower",), ("n-slow",)]
    assert lab.query("SELECT job_id FROM insight_results ORDER BY 1") == slow
    job("m3", "m", 120)  # m's peers' medians stay 100: m-slow's and m-slower's rows are the same
    job("n2", "n", 130)
    job("n3", "n", 130)  # n-slow's peers' median goes from 100 to 130 (its reference); n1 is not slow
    lab.ingest()
    (run,) = lab.query("SELECT max(started_at) FROM ingest_runs")[0]
    changed = {"m3": run, "n2": run, "n3": run, "n-slow": run}
    assert dict(lab.query("SELECT job_id, as_of FROM insight_jobs")) == {**first, **changed}
    stamps = "SELECT DISTINCT job_id, as_of FROM insight_results ORDER BY 1"
    assert lab.query(stamps) == [("m-slow", first["m-slow"]), ("m-slower", first["m-slower"]), ("n-slow", run)]
