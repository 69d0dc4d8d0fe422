"""Writing ``progress.json`` from a training script: the input runlytics ingests (docs/progress-json.md).

``ProgressWriter`` keeps the job's document in memory and rewrites the file after every change
by an atomic rename (a temporary file in the same folder, fsynced, then renamed over the old
one), so that an ingest run reads either the previous document or the new one, never half of
each. ``ProgressCallback`` (Hugging Face ``Trainer``) and ``ProgressLogger`` (Lightning) are
built on it.

This module imports only the standard library: a training job installs runlytics without the
warehouse's or the server's dependencies in mind, and no duckdb, fastapi or torch is imported
here. The two integrations subclass the real base classes when ``transformers`` or
``lightning`` can be imported, and are plain classes with the same method names otherwise;
each is built on first access, so importing this module never imports either framework.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILENAME = "progress.json"
STATUSES = ("queued", "running", "paused", "completed", "failed", "cancelled")
STEP_FIELDS = ("loss", "eval_loss", "learning_rate", "samples_per_second", "iteration_time", "samples")

GpuReadings = Callable[[], list[dict[str, Any]]]


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _number(value: Any) -> float | None:
    """A float from a Python number, a NumPy scalar or a 0-d tensor; None when it is none of them."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _reading(field: str, value: Any) -> float | int:
    """A reading as JSON writes it: a 0-d tensor or NumPy scalar becomes a plain number."""
    number = _number(value)
    if number is None:
        raise TypeError(f"{field} must be a number, got {value!r}")
    return int(number) if field == "samples" else number


class ProgressWriter:
    """One job's ``<job_dir>/progress.json``, rewritten atomically after each change.

    ``samples_per_step`` (samples per optimizer step, all processes together) lets the writer
    derive ``samples``, ``samples_per_second`` and ``iteration_time`` of each step entry from the
    interval since the previous one, when the caller does not give them. ``gpus`` is called at
    each logged step for the GPU readings of that step (see the docs for their fields).
    ``max_history`` keeps only the latest entries in the file (a window, which the ingest
    accepts); by default the whole history is kept.
    """

    def __init__(
        self,
        job_dir: str | os.PathLike[str],
        *,
        job_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        total_steps: int | None = None,
        samples_per_step: float | None = None,
        gpus: GpuReadings | None = None,
        max_history: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_history is not None and max_history < 1:
            raise ValueError("max_history must be at least 1")
        self.job_dir = Path(job_dir)
        self.path = self.job_dir / FILENAME
        self.samples_per_step = samples_per_step
        self.max_history = max_history
        self._gpus = gpus
        self._clock = clock or time.time
        self._start: tuple[int, float] | None = None  # (step, time) the first interval is measured from
        self._last: tuple[int, float] | None = None  # (step, time) of the newest entry
        self.doc: dict[str, Any] = {
            "job_id": job_id or self.job_dir.name,
            "status": "queued",
            "created_at": _timestamp(self._clock()),
            "config": dict(config or {}),
            "history": [],
            "checkpoints": [],
        }
        if total_steps is not None:
            self.doc["total_steps"] = int(total_steps)
        self._resume()

    def _resume(self) -> None:
        """Carry on the file a previous process of the same job wrote (a job restarted from a
        checkpoint): its history, checkpoints and start stay, and a redone step replaces its entry."""
        try:
            previous = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # none yet, or unreadable: start afresh
        if not isinstance(previous, dict) or previous.get("job_id", self.job_dir.name) != self.doc["job_id"]:
            return
        history = previous.get("history")
        if isinstance(history, list):
            self.doc["history"] = [e for e in history if isinstance(e, dict) and isinstance(e.get("step"), int)]
        checkpoints = previous.get("checkpoints")
        if isinstance(checkpoints, list):
            self.doc["checkpoints"] = [c for c in checkpoints if isinstance(c, dict) and isinstance(c.get("step"), int)]
        for key in ("created_at", "started_at"):
            if key in previous:
                self.doc[key] = previous[key]
        if isinstance(previous.get("config"), dict):
            self.doc["config"] = {**previous["config"], **self.doc["config"]}

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.doc["history"]

    @property
    def status(self) -> str:
        return self.doc["status"]

    def update_config(self, values: Mapping[str, Any], *, write: bool = True) -> None:
        """Merge ``values`` into the job's configuration (kept whole by the ingest)."""
        self.doc["config"].update(values)
        if write:
            self.write()

    def start(self, step: int = 0, *, total_steps: int | None = None) -> None:
        """The job is running from ``step`` (0, or the checkpoint's step it resumed from)."""
        now = self._clock()
        self._start = (int(step), now)
        # steps past the one the job resumed from are being redone
        self.doc["history"] = [e for e in self.history if e["step"] <= step]
        self.doc["status"] = "running"
        self.doc.setdefault("started_at", _timestamp(now))
        self.doc.pop("ended_at", None)
        if total_steps is not None:
            self.doc["total_steps"] = int(total_steps)
        self.write()

    def log(
        self,
        step: int,
        *,
        loss: float | None = None,
        eval_loss: float | None = None,
        learning_rate: float | None = None,
        samples: int | None = None,
        samples_per_second: float | None = None,
        iteration_time: float | None = None,
        gpus: list[dict[str, Any]] | None = None,
        write: bool = True,
    ) -> dict[str, Any]:
        """Record the readings of ``step`` and rewrite the file; returns the step entry.

        Readings of a step logged again (the evaluation after the training loss, as both Trainers
        do) are merged into its entry. A step lower than the last one (a job resumed from an
        earlier checkpoint) drops the entries from that step on: they are being redone.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        step = int(step)
        now = self._clock()
        history = self.history
        while history and history[-1]["step"] > step:
            history.pop()
        if self.doc["status"] != "running":
            self.doc["status"] = "running"
            self.doc.setdefault("started_at", _timestamp(now))
        readings = {
            "loss": loss,
            "eval_loss": eval_loss,
            "learning_rate": learning_rate,
            "samples": samples,
            "samples_per_second": samples_per_second,
            "iteration_time": iteration_time,
        }
        readings = {key: _reading(key, value) for key, value in readings.items() if value is not None}
        if history and history[-1]["step"] == step:
            entry = history[-1]
        else:
            entry = {"step": step, "timestamp": _timestamp(now)}
            readings = {**self._interval(step, now), **readings}
            history.append(entry)
            if self._gpus is not None and gpus is None:
                gpus = self._gpus()
        entry.update(readings)
        if gpus:
            entry["gpus"] = list(gpus)
        self._last = (step, now)
        if self.max_history is not None and len(history) > self.max_history:
            del history[: len(history) - self.max_history]
        self.doc["current_step"] = step
        if write:
            self.write()
        return entry

    def _interval(self, step: int, now: float) -> dict[str, Any]:
        """Samples, throughput and seconds per step since the previous entry (or the start)."""
        history = self.history
        since = self._last if history and self._last and self._last[0] == history[-1]["step"] else self._start
        if self.samples_per_step is None or since is None or step <= since[0]:
            return {}
        previous_step, previous_time = since
        steps = step - previous_step
        seconds = now - previous_time
        samples = steps * self.samples_per_step
        derived: dict[str, Any] = {"samples": int(round(samples))}
        if seconds > 0:
            derived["samples_per_second"] = samples / seconds
            derived["iteration_time"] = seconds / steps
        return derived

    def checkpoint(self, step: int, *, path: str | None = None, eval_loss: float | None = None) -> None:
        """A checkpoint saved at ``step`` (``path`` relative to the job folder, or absolute)."""
        entry: dict[str, Any] = {"step": int(step), "saved_at": _timestamp(self._clock())}
        if path is not None:
            entry["path"] = path
        if eval_loss is None:
            eval_loss = next((e.get("eval_loss") for e in reversed(self.history) if e["step"] == step), None)
        if eval_loss is not None:
            entry["eval_loss"] = eval_loss
        checkpoints = [c for c in self.doc["checkpoints"] if c["step"] != entry["step"]]
        self.doc["checkpoints"] = [*checkpoints, entry]
        self.write()

    def finish(self, status: str = "completed") -> None:
        """The job reached a terminal status: ``completed``, ``failed`` or ``cancelled``."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        self.doc["status"] = status
        if status in ("completed", "failed", "cancelled"):
            self.doc["ended_at"] = _timestamp(self._clock())
        self.write()

    def write(self) -> None:
        """Replace the file atomically: readers see the old document or the new one, whole."""
        self.doc["updated_at"] = _timestamp(self._clock())
        # NaN and Infinity stay as Python's json writes them: the ingest accepts and counts them
        text = json.dumps(self.doc, allow_nan=True, default=str, indent=None)
        self.job_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{FILENAME}.", suffix=".tmp", dir=self.job_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from an ingest run as another user
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.job_dir)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a crash right after it could otherwise undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on every platform (Windows); the rename is atomic all the same
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- metric names of the two frameworks, mapped to the step entry's fields ----------------------

TRAINER_KEYS = {"loss": "loss", "eval_loss": "eval_loss", "learning_rate": "learning_rate"}
LIGHTNING_KEYS = {
    "loss": "loss",
    "train_loss": "loss",
    "train/loss": "loss",
    "eval_loss": "eval_loss",
    "val_loss": "eval_loss",
    "val/loss": "eval_loss",
    "learning_rate": "learning_rate",
    "lr": "learning_rate",
}


def _readings(metrics: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in metrics.items():
        field = keys.get(name)
        number = _number(value)
        if field is not None and number is not None:
            found[field] = number
    return found


def _is_rank_zero() -> bool:
    """Only the first process of a distributed job writes (the variables Lightning reads)."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name)
        if value is not None:
            return value.strip() == "0"
    return True


# --- Hugging Face Trainer ----------------------------------------------------------------------

# the events CallbackHandler calls by name; a plain base answers each with None (no change)
TRAINER_EVENTS = (
    "on_init_end",
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_step_begin",
    "on_pre_optimizer_step",
    "on_optimizer_step",
    "on_substep_end",
    "on_step_end",
    "on_evaluate",
    "on_predict",
    "on_save",
    "on_log",
    "on_prediction_step",
    "on_push_begin",
)


def _trainer_base() -> type:
    try:
        from transformers import TrainerCallback  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return type("TrainerCallback", (), {name: _no_event for name in TRAINER_EVENTS})
    return TrainerCallback


def _no_event(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
    return None


def _make_callback() -> type:
    base: Any = _trainer_base()

    class ProgressCallback(base):
        """A ``transformers.TrainerCallback`` that writes ``<output_dir>/progress.json``.

        Give ``job_dir`` to write elsewhere; by default the Trainer's ``output_dir`` is the job
        folder, so that its ``checkpoint-<step>/`` folders sit beside the file as the ingest
        expects. Only the world's first process writes. A run that raises leaves the status
        ``running`` (the Trainer has no event for a failure): call ``writer.finish("failed")``
        from your own ``except``.
        """

        def __init__(
            self,
            job_dir: str | os.PathLike[str] | None = None,
            *,
            job_id: str | None = None,
            config: Mapping[str, Any] | None = None,
            gpus: GpuReadings | None = None,
            max_history: int | None = None,
        ) -> None:
            self.job_dir = job_dir
            self.job_id = job_id
            self.config = dict(config or {})
            self.gpus = gpus
            self.max_history = max_history
            self.writer: ProgressWriter | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not getattr(state, "is_world_process_zero", True):
                return
            batch = getattr(args, "train_batch_size", None) or getattr(args, "per_device_train_batch_size", None)
            samples_per_step = None
            if batch:
                accumulation = getattr(args, "gradient_accumulation_steps", 1) or 1
                samples_per_step = batch * accumulation * (getattr(args, "world_size", 1) or 1)
            config: dict[str, Any] = {}
            model = kwargs.get("model")
            name = getattr(getattr(model, "config", None), "_name_or_path", None)
            if name:
                config["model_name"] = name
            if samples_per_step:
                config["batch_size"] = samples_per_step
            max_steps = getattr(state, "max_steps", None)
            if max_steps and max_steps > 0:
                config["max_steps"] = max_steps
            save_steps = getattr(args, "save_steps", None)
            if save_steps:
                config["save_steps"] = save_steps
            config.update(self.config)
            if self.writer is None:
                job_dir = self.job_dir if self.job_dir is not None else getattr(args, "output_dir", None)
                if job_dir is None:
                    raise ValueError("ProgressCallback needs a job_dir when the Trainer has no output_dir")
                self.writer = ProgressWriter(
                    job_dir,
                    job_id=self.job_id,
                    config=config,
                    samples_per_step=samples_per_step,
                    gpus=self.gpus,
                    max_history=self.max_history,
                )
            else:
                self.writer.update_config(config, write=False)
            self.writer.start(getattr(state, "global_step", 0) or 0, total_steps=max_steps if max_steps else None)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any
        ) -> None:
            readings = _readings(logs or {}, TRAINER_KEYS)
            # the summary entry at the end (train_runtime, train_loss, …) carries no step reading
            if self.writer is not None and readings:
                self.writer.log(state.global_step, **readings)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.writer is not None:
                step = state.global_step
                self.writer.checkpoint(step, path=f"checkpoint-{step}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.writer is not None:
                self.writer.finish("completed")

    return ProgressCallback


# --- Lightning ---------------------------------------------------------------------------------

# Lightning's finalize() statuses; any other ends the job as failed
LIGHTNING_STATUS = {"success": "completed", "finished": "completed", "failed": "failed", "interrupted": "cancelled"}


def _lightning_base() -> type:
    for module in ("lightning.pytorch.loggers", "pytorch_lightning.loggers"):
        try:
            loggers = __import__(module, fromlist=["Logger"])
        except ImportError:
            continue
        return loggers.Logger
    return object


def _make_logger() -> type:
    base: Any = _lightning_base()

    class ProgressLogger(base):
        """A Lightning ``Logger`` that writes ``<job_dir>/progress.json``.

        Metric names map to the step entry's fields by ``keys`` (by default ``loss``/``train_loss``
        → loss, ``val_loss`` → eval_loss, ``lr`` → learning_rate; others are not written).
        """

        def __init__(
            self,
            job_dir: str | os.PathLike[str],
            *,
            job_id: str | None = None,
            config: Mapping[str, Any] | None = None,
            samples_per_step: float | None = None,
            gpus: GpuReadings | None = None,
            max_history: int | None = None,
            keys: Mapping[str, str] | None = None,
        ) -> None:
            if base is not object:
                super().__init__()
            self.keys = {**LIGHTNING_KEYS, **(keys or {})}
            self.writer = ProgressWriter(
                job_dir,
                job_id=job_id,
                config=config,
                samples_per_step=samples_per_step,
                gpus=gpus,
                max_history=max_history,
            )
            if samples_per_step:
                self.writer.update_config({"batch_size": samples_per_step}, write=False)

        @property
        def name(self) -> str:
            return "runlytics"

        @property
        def version(self) -> str:
            return str(self.writer.doc["job_id"])

        @property
        def save_dir(self) -> str:
            return str(self.writer.job_dir)

        @property
        def root_dir(self) -> str:
            return str(self.writer.job_dir)

        @property
        def log_dir(self) -> str:
            return str(self.writer.job_dir)

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            if not _is_rank_zero():
                return
            values = params if isinstance(params, Mapping) else vars(params)
            self.writer.update_config(dict(values))

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            if not _is_rank_zero():
                return
            readings = _readings(metrics, self.keys)
            if not readings:
                return
            if step is None:
                step = self.writer.history[-1]["step"] + 1 if self.writer.history else 0
            if self.writer.status != "running":
                self.writer.start(step)
            self.writer.log(step, **readings)

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            if not _is_rank_zero() or not self.writer.history:
                return
            path = getattr(checkpoint_callback, "last_model_path", None) or None
            self.writer.checkpoint(self.writer.history[-1]["step"], path=path)

        def save(self) -> None:
            if _is_rank_zero():
                self.writer.write()

        def finalize(self, status: str) -> None:
            if _is_rank_zero():
                self.writer.finish(LIGHTNING_STATUS.get(status, "failed"))

    return ProgressLogger


_BUILDERS: dict[str, Callable[[], type]] = {"ProgressCallback": _make_callback, "ProgressLogger": _make_logger}


def __getattr__(name: str) -> type:
    """Build an integration on first access, so that importing this module imports no framework."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = builder()
    built.__module__ = __name__
    globals()[name] = built
    return built
