"""A fake ``pynvml`` module for the sampler's tests and benchmark, held to the real one.

Every function it offers exists in the installed ``pynvml`` with the same parameters, every
error class it raises is pynvml's own, and its structures are pynvml's (test_sampler_nvml.py
checks this). It behaves as the real NVML does where the sampler has been caught out:

- every call but nvmlInit raises ``NVMLError_Uninitialized`` before nvmlInit (and after
  nvmlShutdown);
- the memory call takes ``version=``: v2 (``nvmlMemory_v2``) reports the allocated memory as
  ``used`` and the driver's own as ``reserved``, as nvidia-smi's memory.used does; v1 counts
  both in ``used``;
- a GPU in MIG mode answers "no permission" to its own memory query unless the caller is root,
  and "not supported" to utilization (nvml.h: "On MIG-enabled GPUs, querying device utilization
  rates is not currently supported"); it answers its temperature, power, SM clock and
  clocks-event reasons (nvml.h notes no MIG limit for those; nvidia-smi -q of an A100 in MIG mode
  shows its "Clocks Throttle Reasons" beside "Utilization: N/A", NVIDIA/nvidia-docker#1473; not
  yet checked on a real GPU through NVML). A MIG instance's handle answers "not supported" to
  those card-wide queries; the instances have their own handles, UUIDs (MIG-…), GPU/compute
  instance IDs and memory;
- the look-up by UUID fails with "GPU is lost" for every GPU while any GPU is lost;
- a GPU kept from the process by a cgroup device limit (``refused``, as under Slurm's
  ConstrainDevices) is counted by nvmlDeviceGetCount (nvmlDeviceGetCount_v2) and its handle
  refused with "no permission" (nvml.h);
- errors are raised as pynvml raises them: ``NVMLError(code)``, an instance of the code's class
  whose ``args`` are ``(code,)``;
- ``missing``: NVML functions the driver's library lacks (``NVMLError_FunctionNotFound``, as
  pynvml raises when it can't find the symbol); ``old_driver``: one without the v2 memory call,
  the versioned temperature call and the clocks-event reasons name; ``old_binding``: a pynvml
  without ``nvmlDeviceGetTemperatureV`` (12.535).

Faults on demand, per GPU: unsupported fields, falling off the bus after some readings (and
coming back later, or not), readings whose every call times out (``transient_at``), a function
that always answers a given NVML error (``fail``: "unknown error" from the power query, as some
boards give), v2 memory calls failing with "unknown error", v1 memory calls answering "not
supported", slow calls; per function (``hang``): calls that
block until the test sets the event, as a hung driver call does (``hanging`` is set when one
starts). ``cost`` makes every call burn that much CPU time, like the ioctl of a real NVML call,
for the benchmark.

A "reading" is counted at nvmlDeviceGetMemoryInfo, the first call of Nvml.read; faults are
placed by reading number (0-based).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from ctypes import c_uint
from dataclasses import dataclass, field
from typing import Any

import pynvml

MIB = 2**20
MAX_MIG_DEVICES = 7
HANG_LIMIT = 120.0  # a hung call gives up after this long, should a test forget to release it
OLD_DRIVER = frozenset(
    {"nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetTemperatureV", "nvmlDeviceGetCurrentClocksEventReasons"}
)
TEMPERATURE_V1 = getattr(pynvml, "nvmlTemperature_v1", 0x100000C)  # not in 12.535


@dataclass
class FakeMig:
    """A MIG instance: its own UUID, IDs and memory; the rest is its GPU's."""

    uuid: str
    gi_id: int
    ci_id: int = 0
    memory_used: int = 9000 * MIB
    memory_reserved: int = 14 * MIB
    memory_total: int = 19968 * MIB
    readings: int = 0
    refused: bool = False  # another container's instance: its slot's look-up answers NoPermission


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    utilization: int = 97
    memory_used: int = 17200 * MIB  # allocated: v2's "used", nvidia-smi's memory.used
    memory_reserved: int = 523 * MIB  # the driver's: v1's "used" counts it too
    memory_total: int = 81559 * MIB
    temperature: int = 68
    power_mw: int | None = 301_200  # None: not supported
    sm_clock: int = 1980
    reasons: int = 0x4  # SW power cap
    mig_capable: bool = True
    mig: bool = False  # MIG mode on: utilization and clocks-event reasons not supported
    mig_uuids: tuple[str, ...] = ()  # shorthand for migs: GPU instances 1, 2, …, compute instance 0
    migs: list[FakeMig] = field(default_factory=list)
    lost: bool = False
    lose_after: int | None = None  # falls off the bus when this reading starts
    recover_after: float | None = None  # seconds lost before it answers again (None: never)
    transient_at: set[int] = field(default_factory=set)  # readings whose every call times out
    fail: dict[str, int] = field(default_factory=dict)  # NVML function -> the error code it always answers
    v2_unknown_at: set[int] = field(default_factory=set)  # readings whose v2 memory call fails: Unknown
    v1_memory_not_supported: bool = False  # its v1 memory call answers "not supported"
    refused: bool = False  # kept from the process by a cgroup device limit: its handle is refused
    slow_at: dict[int, float] = field(default_factory=dict)  # readings whose power call is slow
    readings: int = 0
    lost_since: float | None = None

    def check(self) -> None:
        if self.lost and self.recover_after is not None and time.monotonic() - self.lost_since >= self.recover_after:
            self.lost = False
        if self.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)

    def instances(self) -> list[FakeMig]:
        if not self.migs and self.mig_uuids:
            self.migs = [FakeMig(uuid=u, gi_id=i + 1) for i, u in enumerate(self.mig_uuids)]
        return self.migs if self.mig else []


@dataclass(frozen=True)
class Handle:
    gpu: FakeGpu


@dataclass(frozen=True)
class MigHandle:
    gpu: FakeGpu  # the parent
    mig: FakeMig


AnyHandle = Handle | MigHandle


class FakeNvml:
    """Stands for the pynvml module: pass it where the sampler takes one."""

    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
    nvmlMemory_v2 = pynvml.nvmlMemory_v2

    def __init__(
        self,
        gpus: list[FakeGpu],
        init_error: type[pynvml.NVMLError] | None = None,
        old_driver: bool = False,
        old_binding: bool = False,
        root: bool = False,
        missing: set[str] | frozenset[str] = frozenset(),
        hang: dict[str, threading.Event] | None = None,
        cost: float = 0.0,
    ) -> None:
        for name in dir(pynvml):
            if name.startswith("NVMLError"):
                setattr(self, name, getattr(pynvml, name))
        if hasattr(pynvml, "nvmlDeviceGetTemperatureV") and not old_binding:
            self.nvmlTemperature_v1 = pynvml.nvmlTemperature_v1
            self.nvmlDeviceGetTemperatureV = self._temperature_v
        self.gpus = gpus
        self.init_error = init_error
        self.missing = set(missing) | (OLD_DRIVER if old_driver else set())
        self.root = root
        self.hang = hang or {}
        self.hanging = threading.Event()
        self.cost = cost
        self.initialized = False
        self.lookups = 0  # handle look-ups, by index or UUID
        self.calls = 0
        self.counts: Counter[str] = Counter()  # calls by function name
        self._lock = threading.Lock()

    # --- library -------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._call("nvmlInit", initialized=False)
        if self.init_error is not None:
            raise nvml_error(self.init_error().value)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return len(self.gpus)

    # --- handles -------------------------------------------------------------------------------

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._call("nvmlDeviceGetHandleByIndex")
        self.lookups += 1
        if not 0 <= index < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].refused:
            raise nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
        self.gpus[index].check()
        return Handle(self.gpus[index])

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> AnyHandle:
        self._call("nvmlDeviceGetHandleByUUID")
        self.lookups += 1
        # NVML walks every GPU to find the UUID: one fallen off the bus fails the look-up.
        for gpu in self.gpus:
            gpu.check()
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return Handle(gpu)
            for mig in gpu.instances():
                if mig.uuid == uuid:
                    return MigHandle(gpu, mig)
        raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetIndex(self, handle: AnyHandle) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetIndex")
        if isinstance(handle, MigHandle):  # nvml.h: a MIG handle's index is its slot on the GPU
            return gpu.instances().index(handle.mig)
        return self.gpus.index(gpu)

    def nvmlDeviceGetUUID(self, handle: AnyHandle) -> str:
        gpu = self._gpu(handle, "nvmlDeviceGetUUID")
        return handle.mig.uuid if isinstance(handle, MigHandle) else gpu.uuid

    def nvmlDeviceGetName(self, handle: AnyHandle) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    # --- MIG -----------------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, device: AnyHandle) -> list[int]:
        gpu = self._whole(device, "nvmlDeviceGetMigMode")
        if not gpu.mig_capable:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: AnyHandle) -> int:
        gpu = self._whole(device, "nvmlDeviceGetMaxMigDeviceCount")
        return MAX_MIG_DEVICES if gpu.mig else 0  # nvml.h: zero if MIG is not supported or enabled

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: AnyHandle, index: int) -> MigHandle:
        gpu = self._whole(device, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not gpu.mig:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= index < MAX_MIG_DEVICES:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        instances = gpu.instances()
        if index >= len(instances):
            raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
        if instances[index].refused:
            raise nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
        return MigHandle(gpu, instances[index])

    def nvmlDeviceIsMigDeviceHandle(self, device: AnyHandle) -> c_uint:
        self._gpu(device, "nvmlDeviceIsMigDeviceHandle")
        return c_uint(isinstance(device, MigHandle))

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: AnyHandle) -> Handle:
        return Handle(self._mig(migDevice, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle")[0])

    def nvmlDeviceGetGpuInstanceId(self, device: AnyHandle) -> int:
        return self._mig(device, "nvmlDeviceGetGpuInstanceId", pynvml.NVML_ERROR_NOT_SUPPORTED)[1].gi_id

    def nvmlDeviceGetComputeInstanceId(self, device: AnyHandle) -> int:
        return self._mig(device, "nvmlDeviceGetComputeInstanceId", pynvml.NVML_ERROR_NOT_SUPPORTED)[1].ci_id

    # --- readings ------------------------------------------------------------------------------

    def nvmlDeviceGetMemoryInfo(
        self, handle: AnyHandle, version: int | None = None
    ) -> pynvml.c_nvmlMemory_t | pynvml.c_nvmlMemory_v2_t:
        # pynvml calls the C function nvmlDeviceGetMemoryInfo_v2 when given a version. A call
        # refused before it reaches the GPU is not a reading: the sampler tries v1 next.
        name = "nvmlDeviceGetMemoryInfo_v2" if version else "nvmlDeviceGetMemoryInfo"
        self._call(name)
        if version and version != pynvml.nvmlMemory_v2:
            raise nvml_error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        gpu, n = self._reading(handle)
        self._fail(gpu, name)
        if n in gpu.transient_at:
            raise nvml_error(pynvml.NVML_ERROR_TIMEOUT)
        if version and n in gpu.v2_unknown_at:
            raise nvml_error(pynvml.NVML_ERROR_UNKNOWN)
        if not version and gpu.v1_memory_not_supported:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if isinstance(handle, MigHandle):
            used, reserved, total = handle.mig.memory_used, handle.mig.memory_reserved, handle.mig.memory_total
        elif gpu.mig and not self.root:
            raise nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
        else:
            used, reserved, total = gpu.memory_used, gpu.memory_reserved, gpu.memory_total
        free = total - reserved - used
        if not version:
            return pynvml.c_nvmlMemory_t(total=total, free=free, used=used + reserved)
        return pynvml.c_nvmlMemory_v2_t(version=version, total=total, reserved=reserved, free=free, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: AnyHandle) -> pynvml.c_nvmlUtilization_t:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        self._in_reading(handle)
        if gpu.mig:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization, memory=40)

    def nvmlDeviceGetTemperature(self, handle: AnyHandle, sensor: int) -> int:
        return self._temperature(handle, sensor, "nvmlDeviceGetTemperature")

    def _temperature_v(self, handle: AnyHandle, sensor: int, version: int = TEMPERATURE_V1) -> int:
        # nvmlDeviceGetTemperatureV, where the binding has it (13.x; not 12.535).
        if version != TEMPERATURE_V1:
            raise nvml_error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        return self._temperature(handle, sensor, "nvmlDeviceGetTemperatureV")

    def nvmlDeviceGetPowerUsage(self, handle: AnyHandle) -> int:
        gpu = self._whole(handle, "nvmlDeviceGetPowerUsage")
        self._in_reading(handle)
        delay = gpu.slow_at.get(gpu.readings - 1)
        if delay:
            time.sleep(delay)  # a real NVML call blocks in the driver, without the GIL
        if gpu.power_mw is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.power_mw

    def nvmlDeviceGetClockInfo(self, handle: AnyHandle, type: int) -> int:
        gpu = self._whole(handle, "nvmlDeviceGetClockInfo")
        self._in_reading(handle)
        if type != pynvml.NVML_CLOCK_SM:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.sm_clock

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: AnyHandle) -> int:
        return self._reasons(handle, "nvmlDeviceGetCurrentClocksEventReasons")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: AnyHandle) -> int:
        return self._reasons(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")

    # --- helpers -------------------------------------------------------------------------------

    def _temperature(self, handle: AnyHandle, sensor: int, name: str) -> int:
        gpu = self._whole(handle, name)
        self._in_reading(handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature

    def _reasons(self, handle: AnyHandle, name: str) -> int:
        gpu = self._whole(handle, name)
        self._in_reading(handle)
        return gpu.reasons

    def _in_reading(self, handle: AnyHandle) -> None:
        """A reading's call after its memory call: it times out with the reading's memory call."""
        if handle.gpu.readings - 1 in handle.gpu.transient_at and isinstance(handle, Handle):
            raise nvml_error(pynvml.NVML_ERROR_TIMEOUT)

    def _fail(self, gpu: FakeGpu, name: str) -> None:
        code = gpu.fail.get(name)
        if code is not None:
            raise nvml_error(code)

    def _reading(self, handle: AnyHandle) -> tuple[FakeGpu, int]:
        """Count a reading of the GPU or MIG instance; the GPU and the reading's number."""
        counted: FakeGpu | FakeMig = handle.mig if isinstance(handle, MigHandle) else handle.gpu
        n = counted.readings
        counted.readings += 1
        gpu = handle.gpu
        if gpu.lose_after is not None and n >= gpu.lose_after and gpu.lost_since is None:
            gpu.lost, gpu.lost_since = True, time.monotonic()
        gpu.check()
        return gpu, n

    def _gpu(self, handle: AnyHandle, name: str) -> FakeGpu:
        self._call(name)
        handle.gpu.check()
        self._fail(handle.gpu, name)
        return handle.gpu

    def _whole(self, handle: AnyHandle, name: str) -> FakeGpu:
        """The GPU of a whole-GPU handle: a MIG instance can't answer card-wide queries."""
        gpu = self._gpu(handle, name)
        if isinstance(handle, MigHandle):
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _mig(
        self, handle: AnyHandle, name: str, whole: int = pynvml.NVML_ERROR_INVALID_ARGUMENT
    ) -> tuple[FakeGpu, FakeMig]:
        """The instance of a MIG handle; ``whole``: the error a whole GPU's handle gets."""
        gpu = self._gpu(handle, name)
        if not isinstance(handle, MigHandle):
            raise nvml_error(whole)
        return gpu, handle.mig

    def _call(self, name: str, initialized: bool = True) -> None:
        with self._lock:
            self.calls += 1
            self.counts[name] += 1
        if initialized and not self.initialized:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        if name in self.missing:
            raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        gate = self.hang.get(name)
        if gate is not None:
            self.hanging.set()
            gate.wait(HANG_LIMIT)  # blocks in the driver, without the GIL
        if self.cost:
            # Burn CPU, not wall time: a real NVML call's cost is mostly the driver's ioctl, which
            # counts as this process's (system) CPU time.
            end = time.thread_time() + self.cost
            while time.thread_time() < end:
                pass


def nvml_error(code: int) -> pynvml.NVMLError:
    """The error pynvml raises for an NVML return code: an instance of the code's own class
    (NVMLError_NoPermission for NVML_ERROR_NO_PERMISSION) whose args are (code,)."""
    return pynvml.NVMLError(code)


def gpus(n: int, **overrides: Any) -> list[FakeGpu]:
    """n healthy GPUs with distinct UUIDs."""
    return [FakeGpu(uuid=f"GPU-{i:08x}-fake-4000-8000-{i:012x}", **overrides) for i in range(n)]
