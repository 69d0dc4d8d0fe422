"""Hugging Face trainer_state.json: every real file in shared/realdata, checkpoints, mixed jobs.

On both engines (``module_ingest_engine``, ``ingest_engine``: on PostgreSQL through ``ingest --db
URL``, the rows read are PostgreSQL's; its analytics are the published job_results, which DuckDB
computed in the stage: docs/testing.md, "Both engines")."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REALDATA, Engine, Lab

HF = REALDATA / "hf_trainer_state"
JOBS = sorted(p.name for p in HF.iterdir() if p.is_dir() and p.name != "lfs-pointer")


def _states(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("trainer_state.json"))]


def _expected(folder: Path) -> dict[str, Any]:
    """What the files themselves say: distinct steps, losses, best checkpoint, status."""
    states = _states(folder)
    entries = [e for s in states for e in s["log_history"]]
    losses = {e["step"]: e["loss"] for e in entries if isinstance(e.get("loss"), float | int)}
    finite = {step: loss for step, loss in losses.items() if math.isfinite(loss)}
    latest = max(states, key=lambda s: s["global_step"])
    best = latest.get("best_model_checkpoint")
    done = any(
        any("train_runtime" in e for e in s["log_history"]) or s["global_step"] >= s["max_steps"] for s in states
    )
    return {
        "rows": len({e["step"] for e in entries}),
        "initial_loss": finite[min(finite)] if finite else None,
        "final_loss": finite[max(finite)] if finite else None,
        "best_loss": min(finite.values()) if finite else None,
        "best_checkpoint": best.rstrip("/").split("/")[-1] if best else None,
        "status": "completed" if done else "unknown",
    }


@pytest.fixture(scope="module")
def realdata(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("hf"), module_ingest_engine)
    shutil.copytree(HF, lab.root, dirs_exist_ok=True)
    summary = lab.ingest()
    assert summary.failed == 1  # the Git LFS pointer, and only it
    assert "Git LFS pointer" in summary.problems[0]["reason"]
    return lab


@pytest.mark.parametrize("job", JOBS)
def test_real_trainer_state(realdata: Lab, job: str) -> None:
    expected = _expected(HF / job)
    (rows,) = realdata.query("SELECT count(*) FROM step_facts WHERE job_id = $job", {"job": job})[0]
    assert rows == expected["rows"]
    (duplicates,) = realdata.query(
        "SELECT count(*) FROM (SELECT step FROM trainer_steps WHERE job_id = $job GROUP BY step HAVING count(*) > 1) d",
        {"job": job},
    )[0]
    assert duplicates == 0
    analytics = realdata.analytics(job)
    assert analytics is not None
    for key in ("initial_loss", "final_loss", "best_loss"):
        assert analytics["losses"][key] == pytest.approx(expected[key])
    if expected["best_checkpoint"]:
        assert analytics["checkpoints"]["best_checkpoint"] == expected["best_checkpoint"]
    assert analytics["status"] == expected["status"]


def test_mistral_checkpoints_and_runtime(realdata: Lab) -> None:
    job = realdata.analytics("mistral-translator")
    assert job is not None
    assert job["checkpoints"]["total_checkpoints"] == 17
    assert job["checkpoints"]["final_checkpoint"] == "checkpoint-8500"
    assert job["checkpoints"]["checkpoint_frequency_steps"] == 500
    # the trainer's summary is its own figure, not the spec's (tests/test_trainer_figures.py)
    assert job["duration"]["training_seconds"] is None
    assert job["performance"]["average_samples_per_second"] is None
    assert any("train_runtime" in w for w in job["warnings"])


def test_grpo_rewards_reduction_from_a_negative_initial_loss(realdata: Lab) -> None:
    # the GRPO trainer logs a loss below zero: the file's first loss (step 5) and last (step 200)
    initial, final = -0.007858997583389283, 4.723668098449707e-05
    job = realdata.analytics("trl-grpo-rewards")
    assert job is not None
    assert job["losses"]["initial_loss"] == pytest.approx(initial)
    assert job["losses"]["final_loss"] == pytest.approx(final)
    # 100 × (−0.0078590 − 0.0000472) / −0.0078590 = 100 × −0.0079062 / −0.0078590 = 100.60 %:
    # divided by the initial loss itself (not its absolute value), and null only for 0
    assert job["losses"]["loss_reduction_percent"] == pytest.approx(100.60, abs=0.005)
    assert job["losses"]["loss_reduction_percent"] == pytest.approx(100 * (initial - final) / initial)
    assert not any("loss_reduction_percent" in w for w in job["warnings"])


def test_whisper_last_checkpoint_folder(realdata: Lab) -> None:
    job = realdata.analytics("whisper-ja-last-checkpoint")
    assert job is not None
    # last-checkpoint/ holds the state at global_step 5000; the trainer's best is checkpoint-3000
    assert realdata.query("SELECT step, source FROM checkpoints WHERE job_id = 'whisper-ja-last-checkpoint'") == [
        (5000, "trainer_state")
    ]
    assert job["checkpoints"]["best_checkpoint"] == "checkpoint-3000"
    (metric,) = realdata.query(
        "SELECT metrics ->> 'eval_wer' FROM step_facts WHERE job_id = 'whisper-ja-last-checkpoint' AND step = 1000"
    )[0]
    assert metric is not None  # eval metrics are kept for analysts


def test_grad_norm_and_epoch_are_kept(realdata: Lab) -> None:
    rows = realdata.query("SELECT grad_norm, epoch FROM step_facts WHERE job_id = 'tinyllama-sft' AND step = 15")
    assert rows == [(pytest.approx(1.0048305988311768), pytest.approx(0.010690423162583519))]


def _trainer_state(steps: list[int], global_step: int, max_steps: int) -> dict[str, Any]:
    history = [{"step": s, "loss": round(3.0 - s / 100, 4), "learning_rate": 1e-4, "epoch": s / 100} for s in steps]
    return {
        "global_step": global_step,
        "max_steps": max_steps,
        "save_steps": 10,
        "train_batch_size": 8,
        "best_model_checkpoint": None,
        "log_history": history,
    }


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def test_ten_checkpoints_store_each_step_once_and_reingest_changes_nothing(lab: Lab) -> None:
    job = lab.root / "run"
    for ckpt in range(10, 101, 10):
        folder = job / f"checkpoint-{ckpt}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps(_trainer_state(list(range(5, ckpt + 1, 5)), ckpt, 100)))
    first = lab.ingest()
    assert (first.ingested, first.failed) == (10, 0)
    assert lab.query("SELECT count(*), count(DISTINCT step) FROM trainer_steps") == [(20, 20)]
    before = lab.facts()
    for path in job.rglob("trainer_state.json"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    lab.ingest()  # reads them again (their mtime changed), must change nothing
    again = lab.ingest()
    assert again.unchanged == 10 and again.ingested == 0
    assert lab.facts() == before
    analytics = lab.analytics("run")
    assert analytics is not None
    assert analytics["status"] == "completed"  # global_step 100 reached max_steps 100
    assert analytics["checkpoints"]["total_checkpoints"] == 10
    # train_batch_size 8 is a per-device batch, not samples per iteration: no samples
    assert analytics["performance"]["total_samples"] is None


def test_mixed_job_merges_without_duplicates_and_progress_wins(lab: Lab) -> None:
    lab.write_job(
        "mixed",
        {
            "job_id": "mixed",
            "status": "running",
            "history": [
                {"step": 5, "timestamp": 100, "loss": 9.0, "iteration_time": 1.0},
                {"step": 10, "timestamp": 105, "loss": 8.0, "iteration_time": 1.0},
            ],
        },
    )
    folder = lab.root / "mixed" / "checkpoint-10"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps(_trainer_state([5, 10, 15], 15, 100)))
    lab.ingest()
    rows = lab.query("SELECT step, loss, epoch, source FROM step_facts WHERE job_id = 'mixed' ORDER BY step")
    assert rows == [(5, 9.0, 0.05, "both"), (10, 8.0, 0.1, "both"), (15, 2.85, 0.15, "trainer_state")]
    job = lab.analytics("mixed")
    assert job is not None
    assert job["status"] == "running"  # the progress file's status wins
    assert job["losses"]["final_loss"] == pytest.approx(2.85)


def test_a_trainer_checkpoint_leaves_a_progress_jobs_samples_alone(lab: Lab) -> None:
    """The trainer's train_batch_size (per device) is never the batch size: a progress.json job
    without a config batch_size counts its samples as samples_per_second x seconds (analytics.md),
    Trainer checkpoint beside it or not."""
    entry = {"iteration_time": 1.0, "samples_per_second": 16.0}
    history = [{"step": s, "timestamp": 100 + s, **entry} for s in (10, 20, 30)]
    lab.write_job("p", {"job_id": "p", "status": "completed", "history": history})
    folder = lab.root / "p" / "checkpoint-30"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps(_trainer_state([10, 20, 30], 30, 30)))
    lab.ingest()
    job = lab.analytics("p")
    assert job is not None
    # each row: 10 iterations x 1.0 s, 16 samples/s -> 160 samples (train_batch_size 8 would give 80)
    assert job["performance"]["total_samples"] == 480
    assert job["performance"]["average_samples_per_second"] == 16.0


def test_trainer_state_without_log_history_fails_clearly(lab: Lab) -> None:
    folder = lab.root / "odd"
    folder.mkdir()
    (folder / "trainer_state.json").write_text('{"global_step": 3}')
    summary = lab.ingest()
    assert summary.failed == 1
    assert "no log_history" in summary.problems[0]["reason"]
    # the ledger's failed row where the lab reads (on PostgreSQL: published, its path prefixed)
    failed = "SELECT outcome FROM ingest_files WHERE path LIKE '%/odd/trainer_state.json'"
    assert lab.query(failed) == [("failed",)]
