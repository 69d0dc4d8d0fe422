"""The sampling loop of ``runlytics sample``.

One thread per GPU, each on the same drift-free schedule (ticks at start + k * interval; ticks
missed because a reading was slow are skipped, not caught up), so that a GPU whose NVML calls
hang or fail holds up no other GPU, and the main thread stays free to handle signals and the
training command. NVML's set-up (nvmlInit and the GPU look-ups) runs on a thread of its own too:
with persistence mode off it takes seconds per GPU, and a driver call that hangs must hold up
neither the command's start nor the sampler's exit. Per GPU:

- a query that fails (the GPU can't answer it: not supported, no permission, no such function in
  this driver; or it failed: unknown error, no data, timeout, …) leaves its fields null, the rest
  of the line written, logged once per GPU, query and error (sampler/nvml.py);
- a reading that fails as a whole (no query answered, or one said the GPU is lost) with a
  transient NVML error is skipped; after TRANSIENT_LIMIT in a row the GPU is backed off like a
  lost one;
- a lost GPU (GpuIsLost, ResetRequired, …) has its handle dropped and looked up again later
  (by index, checking its UUID), after a back-off that doubles from 2 intervals up to
  MAX_BACKOFF seconds;
- a reading slower than the interval (at least MIN_SLOW seconds) is skipped: its fields were
  read too far apart to be one sample; a call that does not return at all is reported, and not
  waited for at exit.

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

from runlytics.sampler.devices import (
    Gpu,
    Key,
    NoSuchGpu,
    SamplerError,
    attach,
    parse_devices,
    resolve,
    select_gpus,
    selection,
    warn_if_mig_mode,
    warn_if_order_differs,
)
from runlytics.sampler.nvml import FIELDS, QUERIES, Device, MemoryQuery, Nvml, NvmlUnavailable, Sample, TransientError
from runlytics.sampler.spool import Spool

log = logging.getLogger("runlytics.sampler")

__all__ = ["NvmlUnavailable", "Options", "SamplerError", "run", "parse_devices", "resolve", "select_gpus"]

DEFAULT_SPOOL_MAX_MB = 512
MIN_INTERVAL = 0.01
# A sample a day at the least: a longer wait overflowed the threads' timed waits (a traceback)
MAX_INTERVAL = 86_400.0
TRANSIENT_LIMIT = 3
MAX_BACKOFF = 60.0
MIN_SLOW = 0.5
# A call still running after this many intervals (at least HUNG_MIN seconds) is reported.
HUNG_INTERVALS = 10
HUNG_MIN = 10.0
# With a command: how long nvmlInit may take, once called, before the command is started
# anyway. Enough for a machine without a driver to say so (exit 3, the command not started);
# not for nvmlInit to bring up every GPU with persistence mode off.
STARTUP_GRACE = 0.5
# How long to wait for the GPU threads to finish their current line once told to stop, and
# for nvmlShutdown: neither a hung reading nor a hung shutdown keeps the sampler from exiting.
JOIN_SECONDS = 2.0
SHUTDOWN_SECONDS = 2.0
# How often waiting threads look at the stop event.
POLL = 0.02
# Signals that stop the sampler, or that are passed on to the training command.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A command that can't be run: the shell's exit codes.
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


@dataclass
class Options:
    job_id: str
    spool: Path
    interval: float = 1.0
    # "0,1" or UUIDs; None: $CUDA_VISIBLE_DEVICES, else $NVIDIA_VISIBLE_DEVICES's UUIDs, else every GPU
    gpus: str | None = None
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
    if not MIN_INTERVAL <= options.interval <= MAX_INTERVAL:
        raise SamplerError(
            f"the interval must be at least {MIN_INTERVAL} s and at most {MAX_INTERVAL:g} s (a day), "
            f"not {options.interval:g}"
        )
    env = os.environ if env is None else env
    keys, source = selection(options.gpus, env)
    nvml = Nvml(nvml_module)
    stop = stop or threading.Event()
    # --gpus indexes are NVML's by definition; CUDA_VISIBLE_DEVICES indexes are CUDA's.
    setup = Setup(nvml, keys, env if options.gpus is None else None, source)
    samplers: list[GpuSampler] = []
    setup.start()
    try:
        return _sample(options, nvml, setup, stop, samplers)
    finally:
        _shutdown(nvml, setup, samplers)


class Setup(threading.Thread):
    """nvmlInit, then the GPUs looked up, off the main thread."""

    def __init__(self, nvml: Nvml, keys: list[Key] | None, env: Mapping[str, str] | None, source: str = "") -> None:
        super().__init__(name="sampler-setup", daemon=True)
        self.nvml, self.keys, self.env, self.source = nvml, keys, env, source
        self.calling = threading.Event()  # nvmlInit called
        self.initialised = threading.Event()  # nvmlInit returned, or failed (init_error)
        self.done = threading.Event()  # the GPUs looked up, or failed (error)
        self.init_error: Exception | None = None
        self.error: Exception | None = None
        self.gpus: list[Gpu] = []

    def run(self) -> None:
        try:
            self.calling.set()
            try:
                self.nvml.init()
            except Exception as error:
                self.init_error = self.error = error
                return
            finally:
                self.initialised.set()
            # CUDA_VISIBLE_DEVICES indexes count only the GPUs this process may use, as CUDA does.
            self.gpus = resolve(self.nvml, self.keys, cuda_indexes=self.env is not None, source=self.source)
            if self.env is not None:
                warn_if_order_differs(self.nvml, self.keys, self.env)
            warn_if_mig_mode(self.nvml, self.gpus)
        except self.nvml.error as error:  # nvmlDeviceGetCount failed: NVML is there but unusable
            self.error = NvmlUnavailable(f"NVML could not list the GPUs ({type(error).__name__}: {error})")
        except Exception as error:  # a bug or a broken binding: reported by the main thread
            self.error = error
        finally:
            self.done.set()

    def wait_init(self, stop: threading.Event, grace: float | None) -> bool:
        """Wait for nvmlInit to return, at most ``grace`` seconds from its call; False if it has not."""
        if not wait(self.calling, stop):
            return False
        return wait(self.initialised, stop, None if grace is None else time.monotonic() + grace)


def wait(event: threading.Event, stop: threading.Event, deadline: float | None = None) -> bool:
    """Wait for ``event`` until ``stop`` or the monotonic ``deadline``; whether it came."""
    while not event.wait(POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))):
        if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
            return event.is_set()
    return True


def _sample(options: Options, nvml: Nvml, setup: Setup, stop: threading.Event, samplers: list[GpuSampler]) -> int:
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
        # A command is started as soon as NVML is known to be there, or after STARTUP_GRACE;
        # sampling alone has nothing to do before NVML has answered.
        if setup.wait_init(stop, STARTUP_GRACE if options.command else None) and setup.init_error:
            raise setup.init_error
        gpus: list[Gpu] = []
        if not options.command:
            if not wait(setup.done, stop):
                log.warning("stopped before NVML's set-up finished: nothing sampled")
                return 0
            if setup.error is not None:
                raise setup.error
            if not setup.gpus:  # resolve says why, in its error
                raise SamplerError("no GPU to sample")
            gpus = setup.gpus
        try:
            spool = Spool(options.spool, options.host, options.spool_max_bytes)
        except OSError as error:
            raise SamplerError(f"can't use the spool folder {options.spool}: {error}") from error
        try:
            if options.command:
                try:
                    child = _start(options.command)
                except OSError as error:
                    log.error("can't run %s: %s", options.command[0], error)
                    return EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_NOT_EXECUTABLE
                for signum in pending:
                    child.send_signal(signum)
                threading.Thread(target=_wait_child, args=(child, stop), name="sampler-child", daemon=True).start()
                gpus = _await_setup(setup, stop)
            schedule = Schedule(options.interval)
            samplers.extend(GpuSampler(gpu, nvml, spool, options, schedule, stop) for gpu in gpus)
            for sampler in samplers:
                sampler.start()
            if samplers:  # else the command runs unsampled, as _await_setup said
                log.info(
                    "sampling %s every %g s for job %s into %s",
                    ", ".join(s.label for s in samplers),
                    options.interval,
                    options.job_id,
                    options.spool,
                )
            _supervise(samplers, stop, options.interval)
            _join(samplers)
            # Still handling signals: ``stop`` may have ended the sampling before the command.
            code = 0 if child is None else child.wait()
        finally:
            spool.close()
    # A command killed by signal N ends with 128 + N, as in a shell.
    return code if code >= 0 else 128 - code


def _await_setup(setup: Setup, stop: threading.Event) -> list[Gpu]:
    """The GPUs to sample once set-up is done; none if it failed or the command ended first."""
    if not wait(setup.done, stop):
        log.warning("the command ended before NVML's set-up finished: nothing sampled")
        return []
    if setup.error is not None:
        log.error("%s; the command runs unsampled", setup.error)
    elif not setup.gpus:  # resolve raises instead: not reached
        log.warning("no GPU to sample; the command runs unsampled")
    return setup.gpus if setup.error is None else []


def _shutdown(nvml: Nvml, setup: Setup, samplers: list[GpuSampler]) -> None:
    if setup.done.is_set():
        setup.join(SHUTDOWN_SECONDS)  # past its last NVML call, the thread is ending
    if not setup.initialised.is_set() or setup.init_error is not None:
        if setup.is_alive():
            log.warning("nvmlInit has not returned; leaving NVML as it is")
        return
    if setup.is_alive() or any(s.is_alive() for s in samplers):
        log.warning("an NVML call has not returned; leaving NVML as it is")
        return
    closer = threading.Thread(target=nvml.shutdown, name="sampler-shutdown", daemon=True)
    closer.start()
    closer.join(SHUTDOWN_SECONDS)
    if closer.is_alive():
        log.warning("nvmlShutdown has not returned after %g s; not waited for", SHUTDOWN_SECONDS)


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
        self.reported: set[str] = set()  # the queries (and errors) whose None was logged
        self.memory = MemoryQuery()  # this GPU's own: kept across readings and re-looks

    @property
    def label(self) -> str:
        gpu, device = self.gpu, self.gpu.device
        where = f"GPU {gpu.index if gpu.index is not None else gpu.key}"
        if device is not None and device.parent is not None:
            where += f" MIG {device.gi_id}/{device.ci_id}"
        return where + (f" ({gpu.uuid})" if gpu.uuid else "")

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
        device = self.gpu.device or self._reattach()
        if device is None:
            return
        ts = time.time()
        fields = self._read(device)
        if fields is None:
            return
        self._recovered()
        if self.spool.write(self._line(ts, device, fields)):
            self.written += 1

    def _read(self, device: Device) -> Sample | None:
        self.busy_since = started = time.monotonic()
        unavailable: dict[str, Exception] = {}
        try:
            fields = self.nvml.read(device.handle, device.parent, unavailable, self.memory)
        except (self.nvml.error, TransientError) as error:
            self._failed(error)
            return None
        except Exception as error:  # a bug or a broken binding must not end the sampling
            log.exception("%s: reading failed", self.label)
            self._failed(error)
            return None
        finally:
            self.busy_since = None
            self.hung_reported = False
        self._report(unavailable)
        self._report_memory_v1()
        took = time.monotonic() - started
        if took > self.slow_after:
            log.warning("%s: a reading took %.2f s (interval %g s); skipped", self.label, took, self.interval)
            return None
        return fields

    def _report(self, unavailable: dict[str, Exception]) -> None:
        # Once per GPU, query and error: a MIG GPU's "no permission" would otherwise fill the log.
        for query, error in unavailable.items():
            key = f"{query}:{type(error).__name__}"
            if key not in self.reported:
                self.reported.add(key)
                quiet = isinstance(error, self.nvml.module.NVMLError_NotSupported)
                log.log(
                    logging.INFO if quiet else logging.WARNING,
                    "%s: %s null (%s: %s)",
                    self.label,
                    ", ".join(QUERIES[query]),
                    type(error).__name__,
                    error,
                )

    def _report_memory_v1(self) -> None:
        error = self.memory.gave_up
        if error is not None and "memory_v1" not in self.reported:
            self.reported.add("memory_v1")
            log.warning(
                "%s: NVML's v2 memory query fails on this GPU (%s: %s): its memory_used_mb includes the "
                "driver's reserved memory from now on, as nvidia-smi's memory.used then does, and its "
                "memory_reserved_mb is null",
                self.label,
                type(error).__name__,
                error,
            )

    def _line(self, ts: float, device: Device, fields: Sample) -> dict[str, Any]:
        line: dict[str, Any] = {
            "ts": round(ts, 3),
            "host": self.host,
            "job_id": self.job_id,
            "gpu_index": device.index,
            "gpu_uuid": device.uuid,
        }
        line.update((name, fields[name]) for name in FIELDS)
        line["mig_parent_uuid"] = device.parent_uuid
        line["mig_gi_id"] = device.gi_id
        line["mig_ci_id"] = device.ci_id
        return line

    def _failed(self, error: Exception) -> None:
        if self.nvml.is_lost(error):
            self.gpu.lose()
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

    def _reattach(self) -> Device | None:
        try:
            attach(self.nvml, self.gpu)
        except (self.nvml.error, NoSuchGpu) as error:
            self._back_off(f"still unavailable ({type(error).__name__}: {error})")
            return None
        return self.gpu.device

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
