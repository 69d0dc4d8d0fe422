"""runlytics.writer: what ProgressWriter, the Trainer callback and the Lightning logger write is
what the warehouse holds after `runlytics ingest` (docs/progress-json.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest

from runlytics import writer
from runlytics.ingest.pipeline import ingest

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The writer's clock (the integrations build their writers with the default one)."""
    fake = Clock()
    monkeypatch.setattr(writer, "time", SimpleNamespace(time=fake))
    return fake


def tiny_model(steps: int) -> list[float]:
    """Losses of y = 2x fitted by gradient descent on four points: a real, falling curve."""
    xs, w, losses = [1.0, 2.0, 3.0, 4.0], 0.0, []
    for _ in range(steps):
        errors = [w * x - 2 * x for x in xs]
        losses.append(sum(e * e for e in errors) / len(xs))
        w -= 0.02 * sum(2 * e * x for e, x in zip(errors, xs, strict=True)) / len(xs)
    return losses


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql).fetchall()
    finally:
        con.close()


def ts(seconds: float) -> datetime:
    """The warehouse's timestamps: UTC, without a zone."""
    return datetime.fromtimestamp(START + seconds, UTC).replace(tzinfo=None)


def test_what_the_writer_writes_is_what_the_warehouse_holds(tmp_path: Path, clock: Clock) -> None:
    job = tmp_path / "jobs" / "tiny-001"
    gpu = {"index": 0, "uuid": "GPU-1", "utilization_percent": 97.0, "memory_used_mb": 1200.0, "temperature_c": 61.0}
    w = writer.ProgressWriter(
        job, config={"model_name": "tiny", "batch_size": 8}, total_steps=30, samples_per_step=8, gpus=lambda: [gpu]
    )
    w.start()
    losses = tiny_model(30)
    for step in range(1, 31):
        clock.now += 0.5  # each step takes half a second
        if step % 10 == 0:
            w.log(step, loss=losses[step - 1], learning_rate=0.02)
        if step == 20:
            w.log(step, eval_loss=0.25)  # the evaluation after the training log: the same entry
            w.checkpoint(step, path="checkpoint-20")
    clock.now += 1
    w.finish()
    assert not [p.name for p in job.iterdir() if p.name != "progress.json"]  # no temporary file left

    db = tmp_path / "w.duckdb"
    summary = ingest(db, [tmp_path / "jobs"], wait=10)
    assert not summary.warnings
    assert query(db, "SELECT job_id, status, current_step, total_steps, model_name, batch_size FROM jobs") == [
        ("tiny-001", "completed", 30, 30, "tiny", 8)
    ]
    assert query(db, "SELECT started_at, ended_at FROM jobs") == [(ts(0), ts(16))]
    # 10 steps of 8 samples in 5 s: 80 samples, 16 samples/s, 0.5 s an iteration
    assert query(
        db,
        "SELECT step, ts, loss, eval_loss, learning_rate, samples, samples_per_second, iteration_time"
        " FROM steps ORDER BY step",
    ) == [
        (10, ts(5), losses[9], None, 0.02, 80, 16.0, 0.5),
        (20, ts(10), losses[19], 0.25, 0.02, 80, 16.0, 0.5),
        (30, ts(15), losses[29], None, 0.02, 80, 16.0, 0.5),
    ]
    assert losses[9] > losses[19] > losses[29]
    assert query(db, "SELECT step, path, saved_at, eval_loss FROM checkpoints") == [(20, "checkpoint-20", ts(10), 0.25)]
    assert query(db, "SELECT step, gpu_index, gpu_uuid, utilization_percent, memory_used_mb FROM step_gpus") == [
        (10, 0, "GPU-1", 97.0, 1200.0),
        (20, 0, "GPU-1", 97.0, 1200.0),
        (30, 0, "GPU-1", 97.0, 1200.0),
    ]


def test_each_write_replaces_the_file_whole_by_a_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = writer.ProgressWriter(tmp_path / "job")
    w.start()
    before = (w.path.stat().st_ino, w.path.read_text())
    w.log(1, loss=float("nan"))
    assert w.path.stat().st_ino != before[0]  # a new file renamed over the old one, not rewritten in place
    assert json.loads(w.path.read_text())["history"][0]["loss"] != 0  # NaN written as Python's json does

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.os, "replace", refuse)
    kept = w.path.read_text()
    with pytest.raises(OSError):
        w.log(2, loss=1.0)
    assert w.path.read_text() == kept  # the old document stays whole
    assert sorted(p.name for p in w.path.parent.iterdir()) == ["progress.json"]


def test_history_window_and_a_resumed_job(tmp_path: Path) -> None:
    w = writer.ProgressWriter(tmp_path / "job", max_history=3)
    for step in range(1, 6):
        w.log(step, loss=float(step))
    assert [e["step"] for e in json.loads(w.path.read_text())["history"]] == [3, 4, 5]
    w.log(4, loss=0.5)  # resumed from the checkpoint at 3: step 4 is being redone, 5 is gone
    assert [(e["step"], e["loss"]) for e in w.history] == [(3, 3.0), (4, 0.5)]
    with pytest.raises(ValueError):
        w.finish("done")
    with pytest.raises(TypeError, match="loss must be a number"):
        w.log(6, loss="low")  # type: ignore[arg-type]

    class Scalar:  # a 0-d tensor or NumPy scalar: converts with float()
        def __float__(self) -> float:
            return 0.25

    assert w.log(6, loss=Scalar(), samples=Scalar())["loss"] == 0.25  # type: ignore[arg-type]
    assert json.loads(w.path.read_text())["history"][-1]["samples"] == 0


def test_a_restarted_job_carries_on_its_file(tmp_path: Path, clock: Clock) -> None:
    first = writer.ProgressWriter(tmp_path / "job", config={"model_name": "tiny"})
    first.start()
    for step in (10, 20, 30):
        first.log(step, loss=1.0 / step)
    first.checkpoint(20, path="checkpoint-20")
    # the process died; a new one resumes from checkpoint-20 and redoes step 30
    clock.now += 60
    second = writer.ProgressWriter(tmp_path / "job", config={"gpu_count": 2})
    second.start(20)
    second.log(30, loss=0.02)
    doc = json.loads(second.path.read_text())
    assert [(e["step"], e["loss"]) for e in doc["history"]] == [(10, 0.1), (20, 0.05), (30, 0.02)]
    assert doc["checkpoints"][0]["step"] == 20
    assert doc["config"] == {"model_name": "tiny", "gpu_count": 2}
    assert doc["started_at"] == "2026-11-02T09:00:00Z"
    assert doc["history"][-1]["timestamp"] == "2026-11-02T09:01:00Z"


def trainer_args(output_dir: Path) -> SimpleNamespace:
    """The TrainingArguments attributes the callback reads."""
    return SimpleNamespace(
        output_dir=str(output_dir),
        train_batch_size=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        world_size=1,
        save_steps=2,
        logging_steps=1,
    )


def test_the_trainer_callback_driven_as_the_trainer_drives_it(tmp_path: Path, clock: Clock) -> None:
    output = tmp_path / "jobs" / "hf-tiny"
    callback = writer.ProgressCallback(config={"gpu_count": 1})
    assert all(callable(getattr(callback, event)) for event in writer.TRAINER_EVENTS)
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        assert isinstance(callback, transformers.TrainerCallback)
    args = trainer_args(output)
    state = SimpleNamespace(global_step=0, max_steps=4, epoch=0.0, is_world_process_zero=True, log_history=[])
    control = SimpleNamespace(should_log=False, should_save=False, should_evaluate=False)
    model = SimpleNamespace(config=SimpleNamespace(_name_or_path="tiny-linear"))
    losses = tiny_model(4)

    callback.on_init_end(args, state, control)
    callback.on_train_begin(args, state, control, model=model)
    for step in range(1, 5):
        callback.on_step_begin(args, state, control)
        clock.now += 2.0
        state.global_step = step
        callback.on_step_end(args, state, control)
        logs = {"loss": losses[step - 1], "grad_norm": 1.0, "learning_rate": 1e-3 * (5 - step), "epoch": step / 4}
        callback.on_log(args, state, control, logs=logs)
        if step % args.save_steps == 0:
            callback.on_log(args, state, control, logs={"eval_loss": losses[step - 1] + 0.1, "eval_runtime": 0.1})
            callback.on_evaluate(args, state, control, metrics={"eval_loss": losses[step - 1] + 0.1})
            callback.on_save(args, state, control)
    callback.on_log(args, state, control, logs={"train_runtime": 8.0, "train_loss": sum(losses) / 4})
    clock.now += 1.0
    callback.on_train_end(args, state, control)

    db = tmp_path / "w.duckdb"
    assert not ingest(db, [tmp_path / "jobs"], wait=10).warnings
    assert query(
        db, "SELECT job_id, status, current_step, total_steps, model_name, batch_size, gpu_count FROM jobs"
    ) == [("hf-tiny", "completed", 4, 4, "tiny-linear", 8, 1)]
    # a step each 2 s, 4 × 2 samples a step: 8 samples, 4 samples/s
    assert query(
        db, "SELECT step, ts, loss, eval_loss, learning_rate, samples, samples_per_second FROM steps ORDER BY 1"
    ) == [
        (1, ts(2), losses[0], None, 4e-3, 8, 4.0),
        (2, ts(4), losses[1], losses[1] + 0.1, 3e-3, 8, 4.0),
        (3, ts(6), losses[2], None, 2e-3, 8, 4.0),
        (4, ts(8), losses[3], losses[3] + 0.1, 1e-3, 8, 4.0),
    ]
    assert query(db, "SELECT step, path, eval_loss FROM checkpoints ORDER BY step") == [
        (2, "checkpoint-2", losses[1] + 0.1),
        (4, "checkpoint-4", losses[3] + 0.1),
    ]


def test_only_the_first_process_of_the_trainer_writes(tmp_path: Path) -> None:
    callback = writer.ProgressCallback()
    state = SimpleNamespace(global_step=1, max_steps=4, is_world_process_zero=False)
    args = trainer_args(tmp_path / "job")
    callback.on_train_begin(args, state, None)
    callback.on_log(args, state, None, logs={"loss": 1.0})
    callback.on_train_end(args, state, None)
    assert not (tmp_path / "job").exists()


def test_the_lightning_logger(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    logger = writer.ProgressLogger(tmp_path / "jobs" / "pl-tiny", samples_per_step=16)
    assert (logger.name, logger.version) == ("runlytics", "pl-tiny")
    logger.log_hyperparams(SimpleNamespace(model_name="tiny-linear", lr=0.02))
    losses = tiny_model(6)
    for step in range(6):
        clock.now += 1.0
        logger.log_metrics({"train_loss": losses[step], "epoch": 0}, step=step)
    logger.log_metrics({"val_loss": 0.5, "epoch": 0}, step=5)
    logger.after_save_checkpoint(SimpleNamespace(last_model_path=str(tmp_path / "epoch=0-step=5.ckpt")))
    logger.save()
    logger.finalize("success")

    db = tmp_path / "w.duckdb"
    assert not ingest(db, [tmp_path / "jobs"], wait=10).warnings
    assert query(db, "SELECT job_id, status, current_step, model_name, batch_size FROM jobs") == [
        ("pl-tiny", "completed", 5, "tiny-linear", 16)
    ]
    # the first entry starts the run, so it has no interval; then 16 samples a second
    assert query(db, "SELECT step, loss, eval_loss, samples_per_second FROM steps ORDER BY step") == [
        (0, losses[0], None, None),
        *[(s, losses[s], 0.5 if s == 5 else None, 16.0) for s in range(1, 6)],
    ]
    assert query(db, "SELECT step, path FROM checkpoints") == [(5, str(tmp_path / "epoch=0-step=5.ckpt"))]
    assert json.loads((tmp_path / "jobs" / "pl-tiny" / "progress.json").read_text())["config"]["lr"] == 0.02

    logger.finalize("failed")
    assert json.loads(logger.writer.path.read_text())["status"] == "failed"


def test_importable_without_the_server_nor_the_frameworks(tmp_path: Path) -> None:
    """A training job's environment: no duckdb, fastapi, transformers or lightning to import."""
    probe = f"""
import sys
for name in ("duckdb", "fastapi", "transformers", "lightning", "pytorch_lightning", "torch"):
    sys.modules[name] = None  # importing it raises ImportError
from runlytics.writer import ProgressCallback, ProgressLogger, ProgressWriter
callback = ProgressCallback(job_dir={str(tmp_path / "a")!r})
logger = ProgressLogger({str(tmp_path / "b")!r})
logger.log_metrics({{"loss": 1.0}}, step=1)
logger.finalize("success")
print(type(callback).__mro__[1].__name__, type(logger).__mro__[1].__name__)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TrainerCallback", "object"]
    assert json.loads((tmp_path / "b" / "progress.json").read_text())["status"] == "completed"
