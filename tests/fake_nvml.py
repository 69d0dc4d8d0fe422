"""A fake ``pynvml`` module for the sampler's tests and benchmark.

It answers the calls sampler/nvml.py makes, with pynvml's own structures and error classes
(``pynvml.NVMLError_NotSupported``, ``NVMLError_GpuIsLost``, … raised as the real binding raises
them), and does what real GPUs do, on demand per GPU: fields that are not supported (power on
some boards; utilization and clocks-event reasons of a MIG-enabled GPU), falling off the bus
after some readings (and coming back later, or not), transient errors, slow calls. ``cost``
makes every call burn that much CPU time, like the ioctl of a real NVML call, for the benchmark.

A "reading" is counted at nvmlDeviceGetUtilizationRates, the first call of Nvml.read; faults
are placed by reading number (0-based).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pynvml

MIB = 2**20


@dataclass
class FakeGpu:
    uuid: str
    utilization: int = 97
    memory_used: int = 17200 * MIB
    memory_total: int = 81559 * MIB
    temperature: int = 68
    power_mw: int | None = 301_200  # None: not supported
    sm_clock: int = 1980
    reasons: int = 0x4  # SW power cap
    mig: bool = False  # MIG mode on: utilization and clocks-event reasons not supported
    mig_uuids: tuple[str, ...] = ()
    lost: bool = False
    lose_after: int | None = None  # falls off the bus when this reading starts
    recover_after: float | None = None  # seconds lost before it answers again (None: never)
    transient_at: set[int] = field(default_factory=set)  # readings whose memory call times out
    slow_at: dict[int, float] = field(default_factory=dict)  # readings whose power call is slow
    readings: int = 0
    lost_since: float | None = None

    def check(self) -> None:
        if self.lost and self.recover_after is not None and time.monotonic() - self.lost_since >= self.recover_after:
            self.lost = False
        if self.lost:
            raise pynvml.NVMLError_GpuIsLost()


@dataclass(frozen=True)
class Handle:
    gpu: FakeGpu


@dataclass(frozen=True)
class MigHandle:
    parent: FakeGpu


class FakeNvml:
    """Stands for the pynvml module: pass it where the sampler takes one."""

    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM

    def __init__(
        self,
        gpus: list[FakeGpu],
        init_error: type[pynvml.NVMLError] | None = None,
        old_driver: bool = False,
        cost: float = 0.0,
    ) -> None:
        for name in dir(pynvml):
            if name.startswith("NVMLError"):
                setattr(self, name, getattr(pynvml, name))
        self.gpus = gpus
        self.init_error = init_error
        self.old_driver = old_driver  # no nvmlDeviceGetCurrentClocksEventReasons in the driver
        self.cost = cost
        self.initialized = False
        self.lookups = 0  # handle look-ups, by index or UUID
        self.calls = 0
        self._lock = threading.Lock()

    # --- library -------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error()
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._call()
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self._call()
        return len(self.gpus)

    # --- handles -------------------------------------------------------------------------------

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._call()
        self.lookups += 1
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError_InvalidArgument()
        self.gpus[index].check()
        return Handle(self.gpus[index])

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Handle | MigHandle:
        self._call()
        self.lookups += 1
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                gpu.check()
                return Handle(gpu)
            if uuid in gpu.mig_uuids:
                return MigHandle(gpu)
        raise pynvml.NVMLError_NotFound()

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: MigHandle) -> Handle:
        self._call()
        return Handle(handle.parent)

    def nvmlDeviceGetIndex(self, handle: Handle) -> int:
        return self.gpus.index(self._gpu(handle))

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        return self._gpu(handle).uuid

    # --- readings ------------------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> pynvml.c_nvmlUtilization_t:
        gpu = handle.gpu
        n = gpu.readings
        gpu.readings += 1
        if gpu.lose_after is not None and n >= gpu.lose_after and gpu.lost_since is None:
            gpu.lost, gpu.lost_since = True, time.monotonic()
        gpu = self._gpu(handle)
        if gpu.mig:
            raise pynvml.NVMLError_NotSupported()
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> pynvml.c_nvmlMemory_t:
        gpu = self._gpu(handle)
        if gpu.readings - 1 in gpu.transient_at:
            raise pynvml.NVMLError_Timeout()
        free = gpu.memory_total - gpu.memory_used
        return pynvml.c_nvmlMemory_t(total=gpu.memory_total, free=free, used=gpu.memory_used)

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        gpu = self._gpu(handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError_InvalidArgument()
        return gpu.temperature

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        gpu = self._gpu(handle)
        delay = gpu.slow_at.get(gpu.readings - 1)
        if delay:
            time.sleep(delay)  # a real NVML call blocks in the driver, without the GIL
        if gpu.power_mw is None:
            raise pynvml.NVMLError_NotSupported()
        return gpu.power_mw

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock: int) -> int:
        gpu = self._gpu(handle)
        if clock != pynvml.NVML_CLOCK_SM:
            raise pynvml.NVMLError_InvalidArgument()
        return gpu.sm_clock

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        if self.old_driver:
            self._call()
            raise pynvml.NVMLError_FunctionNotFound()
        return self._reasons(handle)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Handle) -> int:
        return self._reasons(handle)

    # --- helpers -------------------------------------------------------------------------------

    def _reasons(self, handle: Handle) -> int:
        gpu = self._gpu(handle)
        if gpu.mig:
            raise pynvml.NVMLError_NotSupported()
        return gpu.reasons

    def _gpu(self, handle: Any) -> FakeGpu:
        self._call()
        if not self.initialized:
            raise pynvml.NVMLError_Uninitialized()
        gpu = handle.gpu
        gpu.check()
        return gpu

    def _call(self) -> None:
        with self._lock:
            self.calls += 1
        if self.cost:
            # Burn CPU, not wall time: a real NVML call's cost is mostly the driver's ioctl, which
            # counts as this process's (system) CPU time.
            end = time.thread_time() + self.cost
            while time.thread_time() < end:
                pass


def gpus(n: int, **overrides: Any) -> list[FakeGpu]:
    """n healthy GPUs with distinct UUIDs."""
    return [FakeGpu(uuid=f"GPU-{i:08x}-fake-4000-8000-{i:012x}", **overrides) for i in range(n)]
