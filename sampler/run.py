"""The sampling loop of ``runlytics sample``.

One thread per GPU, each on the same drift-free schedule (ticks at start + k * interval; ticks
missed because a reading was slow are skipped, not caught up), so that a GPU whose NVML calls
hang or fail holds up no other GPU, and the main thread stays free to handle signals and the
training command. Per GPU:

- a field the GPU does not support is null (sampler/nvml.py);
- a transient NVML error skips that reading only; after TRANSIENT_LIMIT in a row the GPU is
  backed off like a lost one;
- a lost GPU (GpuIsLost, Unknown, …) has its handle dropped and looked up again later, after a
  back-off that doubles from 2 intervals up to MAX_BACKOFF seconds;
- a reading slower than the interval (at least MIN_SLOW seconds) is skipped: its fields were
  read too far apart to be one sample; a call that does not return at all is reported.

Everything is logged to stderr through ``logging`` ("runlytics.sampler"); nothing stops the loop
but a signal (SIGINT, SIGTERM, SIGHUP), the ``stop`` event, or the end of the command.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from runlytics.sampler.nvml import FIELDS, Nvml, NvmlUnavailable, Sample
from runlytics.sampler.spool import Spool

log = logging.getLogger("runlytics.sampler")

__all__ = ["NvmlUnavailable", "Options", "SamplerError", "run", "parse_devices", "select_gpus"]

DEFAULT_SPOOL_MAX_MB = 512
MIN_INTERVAL = 0.01
TRANSIENT_LIMIT = 3
MAX_BACKOFF = 60.0
MIN_SLOW = 0.5
# A call still running after this many intervals (at least HUNG_MIN seconds) is reported.
HUNG_INTERVALS = 10
HUNG_MIN = 10.0
# How long to wait for the GPU threads to finish their current line once told to stop.
JOIN_SECONDS = 2.0
# Signals that stop the sampler, or that are passed on to the training command.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A command that can't be run: the shell's exit codes.
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

Key = int | str


class SamplerError(Exception):
    """A usage problem: a bad --gpus list, no GPU to sample, a bad interval."""


@dataclass
class Options:
    job_id: str
    spool: Path
    interval: float = 1.0
    gpus: str | None = None  # "0,1" or UUIDs; None: $CUDA_VISIBLE_DEVICES, else every GPU
    spool_max_bytes: int | None = DEFAULT_SPOOL_MAX_MB * 2**20
    command: list[str] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)


def run(
    options: Options,
    nvml_module: ModuleType | Any | None = None,
    stop: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Sample until stopped (or until the command ends); 0, or the command's exit code.

    Raises NvmlUnavailable when NVML can't be initialised (no driver), SamplerError on bad
    options. ``stop`` ends sampling as SIGTERM does; ``env`` stands for os.environ.
    """
    if not options.interval >= MIN_INTERVAL:
        raise SamplerError(f"the interval must be at least {MIN_INTERVAL} s, not {options.interval}")
    nvml = Nvml(nvml_module)
    nvml.init()
    stop = stop or threading.Event()
    samplers: list[GpuSampler] = []
    try:
        keys = select_gpus(options.gpus, os.environ if env is None else env)
        try:
            gpus = resolve(nvml, keys)
        except nvml.error as error:  # nvmlDeviceGetCount failed: NVML is there but unusable
            raise NvmlUnavailable(f"NVML could not list the GPUs ({type(error).__name__}: {error})") from error
        if not gpus and not options.command:
            raise SamplerError("no GPU to sample")
        try:
            spool = Spool(options.spool, options.host, options.spool_max_bytes)
        except OSError as error:
            raise SamplerError(f"can't use the spool folder {options.spool}: {error}") from error
        try:
            return _sample(options, nvml, spool, gpus, stop, samplers)
        finally:
            spool.close()
    finally:
        if any(s.is_alive() for s in samplers):
            log.warning("an NVML call has not returned; leaving NVML as it is")
        else:
            nvml.shutdown()


def _sample(
    options: Options, nvml: Nvml, spool: Spool, gpus: list[Gpu], stop: threading.Event, samplers: list[GpuSampler]
) -> int:
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []  # signals that came before the command started

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not options.command:
            stop.set()
        elif child is None:
            pending.append(signum)
        else:
            # The command decides what a signal means (a trainer may save a checkpoint first);
            # sampling goes on until it exits. Popen.send_signal skips an already reaped child.
            log.info("passing signal %d on to the command (pid %d)", signum, child.pid)
            child.send_signal(signum)

    with _signals_handled(on_signal):
        if options.command:
            try:
                child = _start(options.command)
            except OSError as error:
                log.error("can't run %s: %s", options.command[0], error)
                return EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_NOT_EXECUTABLE
            for signum in pending:
                child.send_signal(signum)
            threading.Thread(target=_wait_child, args=(child, stop), name="sampler-child", daemon=True).start()
        schedule = Schedule(options.interval)
        samplers.extend(GpuSampler(gpu, nvml, spool, options, schedule, stop) for gpu in gpus)
        for sampler in samplers:
            sampler.start()
        log.info(
            "sampling %s every %g s for job %s into %s",
            ", ".join(s.label for s in samplers) or "no GPU",
            options.interval,
            options.job_id,
            options.spool,
        )
        _supervise(samplers, stop, options.interval)
        _join(samplers)
        # Still handling signals: ``stop`` may have ended the sampling before the command.
        code = 0 if child is None else child.wait()
    # A command killed by signal N ends with 128 + N, as in a shell.
    return code if code >= 0 else 128 - code


# --- choosing the GPUs ------------------------------------------------------------------------


def select_gpus(gpus: str | None, env: Mapping[str, str]) -> list[Key] | None:
    """The GPUs asked for: --gpus, else $CUDA_VISIBLE_DEVICES; None (every GPU) when neither."""
    if gpus is not None:
        return parse_devices(gpus, strict=True)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    return None if visible is None else parse_devices(visible)


def parse_devices(text: str, strict: bool = False) -> list[Key]:
    """NVML indexes (int) and UUIDs ("GPU-…", "MIG-…") of a CUDA_VISIBLE_DEVICES-style list.

    Like CUDA, the list ends at its first entry that is neither (``-1`` hides every GPU); with
    ``strict`` (a list the user typed) such an entry is an error instead. An index is taken as
    NVML's (PCI bus order), which is CUDA's when CUDA_DEVICE_ORDER=PCI_BUS_ID or the GPUs are
    all alike; a UUID is unambiguous.
    """
    keys: list[Key] = []
    for entry in (e.strip() for e in text.split(",")):
        if entry.isdigit():
            keys.append(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            keys.append(entry)
        elif strict:
            raise SamplerError(f"{entry!r} is neither a GPU index nor a UUID (GPU-…)")
        else:
            if entry:
                log.warning("CUDA_VISIBLE_DEVICES=%s: GPUs from %r on are not sampled (CUDA ignores them)", text, entry)
            break
    return keys


@dataclass
class Gpu:
    key: Key  # as asked for
    index: int | None = None  # NVML's (physical) index, once known
    uuid: str | None = None
    handle: Any = None


def resolve(nvml: Nvml, keys: list[Key] | None) -> list[Gpu]:
    """A Gpu per key (every GPU when None). A GPU that does not exist is left out; one that
    exists but can't be asked now (lost) is kept, to be tried again with back-off."""
    if keys is None:
        keys = list(range(nvml.device_count()))
    gpus: list[Gpu] = []
    seen: set[int | str] = set()
    for key in keys:
        gpu = _attach_first(nvml, key)
        if gpu is None:
            continue
        ident = gpu.index if gpu.index is not None else gpu.key
        if ident not in seen:
            seen.add(ident)
            gpus.append(gpu)
    return gpus


def _attach_first(nvml: Nvml, key: Key) -> Gpu | None:
    gpu = Gpu(key)
    try:
        attach(nvml, gpu)
    except nvml.error as error:
        if isinstance(key, str) and not key.startswith("MIG-"):
            full = _uuid_by_prefix(nvml, key)
            if full is not None:
                return _attach_first(nvml, full)
        if type(error).__name__ in ("NVMLError_InvalidArgument", "NVMLError_NotFound"):
            log.warning("GPU %s: no such GPU (%s); not sampled", key, error)
            return None
        log.warning("GPU %s: can't be read now (%s); trying again later", key, error)
    return gpu


def _uuid_by_prefix(nvml: Nvml, prefix: str) -> str | None:
    # CUDA accepts a unique prefix of a UUID; NVML wants the whole of it.
    try:
        matches = [u for u in nvml.uuids() if u.startswith(prefix)]
    except nvml.error:
        return None
    return matches[0] if len(matches) == 1 and matches[0] != prefix else None


def attach(nvml: Nvml, gpu: Gpu) -> None:
    """Look the GPU's handle up (by UUID once known: an index can change after a reset)."""
    handle = nvml.handle(gpu.uuid or gpu.key)
    gpu.index, gpu.uuid = nvml.identity(handle)
    gpu.handle = handle


# --- the loop ---------------------------------------------------------------------------------


class Schedule:
    """Ticks at start + k * interval on the monotonic clock: sleeping never adds up to drift."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.start = time.monotonic()

    def next(self, after: int) -> tuple[int, float]:
        """The tick to take after tick ``after``, and its monotonic time.

        The next one, unless a slow reading overran it: then the latest tick that is due (taken
        at once, late), the ones before it skipped, so that a slow reading causes no burst.
        """
        due = math.floor((time.monotonic() - self.start) / self.interval)
        tick = max(after + 1, due)
        return tick, self.start + tick * self.interval


class GpuSampler(threading.Thread):
    """Samples one GPU on the schedule until ``stop``; survives every NVML error."""

    def __init__(
        self, gpu: Gpu, nvml: Nvml, spool: Spool, options: Options, schedule: Schedule, stop: threading.Event
    ) -> None:
        super().__init__(name=f"sampler-gpu-{gpu.key}", daemon=True)
        self.gpu, self.nvml, self.spool, self.schedule, self.stop = gpu, nvml, spool, schedule, stop
        self.job_id, self.host, self.interval = options.job_id, options.host, options.interval
        self.slow_after = max(options.interval, MIN_SLOW)
        self.failures = 0  # back-offs in a row
        self.transient = 0  # transient errors in a row
        self.retry_at = 0.0
        self.busy_since: float | None = None
        self.hung_reported = False
        self.written = 0

    @property
    def label(self) -> str:
        gpu = self.gpu
        return f"GPU {gpu.index if gpu.index is not None else gpu.key}" + (f" ({gpu.uuid})" if gpu.uuid else "")

    def run(self) -> None:
        tick = -1
        while True:
            tick, due = self.schedule.next(tick)
            if self.stop.wait(max(0.0, due - time.monotonic())):
                return
            self.sample_once()

    def sample_once(self) -> None:
        """One reading, written to the spool unless it failed or was too slow."""
        if time.monotonic() < self.retry_at:
            return
        if self.gpu.handle is None and not self._reattach():
            return
        ts = time.time()
        fields = self._read()
        if fields is None:
            return
        self._recovered()
        if self.spool.write(self._line(ts, fields)):
            self.written += 1

    def _read(self) -> Sample | None:
        self.busy_since = started = time.monotonic()
        try:
            fields = self.nvml.read(self.gpu.handle)
        except self.nvml.error as error:
            self._failed(error)
            return None
        except Exception as error:  # a bug or a broken binding must not end the sampling
            log.exception("%s: reading failed", self.label)
            self._failed(error)
            return None
        finally:
            self.busy_since = None
            self.hung_reported = False
        took = time.monotonic() - started
        if took > self.slow_after:
            log.warning("%s: a reading took %.2f s (interval %g s); skipped", self.label, took, self.interval)
            return None
        return fields

    def _line(self, ts: float, fields: Sample) -> dict[str, Any]:
        line: dict[str, Any] = {
            "ts": round(ts, 3),
            "host": self.host,
            "job_id": self.job_id,
            "gpu_index": self.gpu.index,
            "gpu_uuid": self.gpu.uuid,
        }
        line.update((name, fields[name]) for name in FIELDS)
        return line

    def _failed(self, error: Exception) -> None:
        if self.nvml.is_lost(error):
            self.gpu.handle = None
            self._back_off(f"lost ({type(error).__name__}: {error})")
            return
        self.transient += 1
        if self.transient < TRANSIENT_LIMIT:
            log.warning("%s: reading skipped (%s: %s)", self.label, type(error).__name__, error)
        else:
            self._back_off(f"{self.transient} readings in a row failed ({type(error).__name__}: {error})")

    def _back_off(self, reason: str) -> None:
        self.failures += 1
        delay = min(self.interval * 2**self.failures, MAX_BACKOFF)
        self.retry_at = time.monotonic() + delay
        log.warning("%s: %s; trying again in %.3g s", self.label, reason, delay)

    def _reattach(self) -> bool:
        try:
            attach(self.nvml, self.gpu)
        except self.nvml.error as error:
            self._back_off(f"still unavailable ({type(error).__name__}: {error})")
            return False
        return True

    def _recovered(self) -> None:
        if self.failures:
            log.warning("%s: readings are back", self.label)
        self.failures = self.transient = 0

    def check_hung(self, now: float) -> None:
        """Report, once, a call that has not returned for a long time."""
        since = self.busy_since
        limit = max(HUNG_INTERVALS * self.interval, HUNG_MIN)
        if since is not None and now - since > limit and not self.hung_reported:
            self.hung_reported = True
            log.error("%s: an NVML call has not returned for %.0f s; the other GPUs go on", self.label, now - since)


def _supervise(samplers: list[GpuSampler], stop: threading.Event, interval: float) -> None:
    # The main thread waits here (signal handlers run in it) and watches for hung calls.
    period = max(interval, 1.0)
    while not stop.wait(period):
        now = time.monotonic()
        for sampler in samplers:
            sampler.check_hung(now)


def _join(samplers: list[GpuSampler]) -> None:
    # Each thread finishes the reading (and line) it is in; a hung NVML call is not waited for.
    deadline = time.monotonic() + JOIN_SECONDS
    for sampler in samplers:
        sampler.join(max(0.0, deadline - time.monotonic()))
        if sampler.is_alive():
            log.warning("%s: still in an NVML call; not waited for", sampler.label)


# --- signals and the command ------------------------------------------------------------------


@contextlib.contextmanager
def _signals_handled(handler: Any) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can handle signals; the caller stops us through ``stop``
        return
    previous = {}
    for sig in SIGNALS:
        # A signal ignored when we started (nohup, a background job's SIGINT) stays ignored.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    # Its own process group: a Ctrl-C at the terminal reaches the sampler only, which passes it
    # on once; in the terminal's group the command would get it twice.
    return subprocess.Popen(command, process_group=0)


def _wait_child(child: subprocess.Popen[bytes], stop: threading.Event) -> None:
    child.wait()
    log.info("the command exited (code %s); stopping", child.returncode)
    stop.set()
