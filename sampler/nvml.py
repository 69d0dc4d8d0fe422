"""The only module that calls NVML, through ``pynvml`` (package ``nvidia-ml-py``, 12.535 to 13.x).

Thin on purpose: initialise and shut down, get a device handle by index (never by UUID: NVML's
UUID look-up fails for every GPU while any GPU of the node is lost), walk a GPU's MIG instances,
and read one GPU's or MIG instance's sample into a dict. Each query has its own policy:

- A query that fails makes its fields None, never 0, and its error is reported to the caller
  (who logs it once); the rest of the sample stands. "Not supported", "no permission" and
  "function not found" are the GPU's answer to that query (a MIG-enabled GPU answers "no
  permission" to its memory query when the caller is not root); any other error (unknown, no
  data, timeout, …) is that query's failure, which says nothing of the others.
- Whether the GPU is lost is not decided by one query: a query answering "GPU is lost" (or
  "reset required", "GPU not found", "uninitialized", which no single query causes) fails the
  reading, and so does a reading in which no query answered. That error reaches the caller, who
  tells a lost handle (``is_lost``) from a transient failure (sampler/loop.py).

Memory is NVML's v2 figure (``used`` without the driver's reserved memory, as nvidia-smi's
``memory.used``), the v1 one only where v2 can't be had: on every GPU when the driver's library
lacks the call, on one GPU when that GPU says so (MemoryQuery). The ``pynvml`` module is a
constructor argument so that tests can hand in a fake.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

log = logging.getLogger("runlytics.sampler")

MIB = 2**20
# The measured fields of a sample, in the order they are written.
FIELDS = (
    "utilization_percent",
    "memory_used_mb",
    "memory_total_mb",
    "memory_reserved_mb",
    "temperature_c",
    "power_w",
    "sm_clock_mhz",
    "clocks_event_reasons",
)
# The NVML queries of a reading and the fields each fills.
QUERIES = {
    "memory": ("memory_used_mb", "memory_total_mb", "memory_reserved_mb"),
    "utilization": ("utilization_percent",),
    "temperature": ("temperature_c",),
    "power": ("power_w",),
    "sm_clock": ("sm_clock_mhz",),
    "clocks_event_reasons": ("clocks_event_reasons",),
}
# Errors that make one query's fields None: the GPU can't or won't answer that query, which
# says nothing about the others.
FIELD_ERRORS = ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_FunctionNotFound")
# Errors that fail a whole reading when any one query answers them: the GPU itself is gone (or
# NVML is), whichever query asked.
GONE_ERRORS = (
    "NVMLError_GpuIsLost",
    "NVMLError_ResetRequired",
    "NVMLError_GpuNotFound",
    "NVMLError_Uninitialized",
)
# Errors that mean the handle itself is no good (the GPU fell off the bus, was reset, or NVML
# lost track of it) when a look-up, or every query of a reading, fails with them: the handle is
# dropped and looked up again later, with back-off. From one query among others that answered,
# Unknown, InvalidArgument and NotFound are that query's failure only.
LOST_ERRORS = (
    "NVMLError_GpuIsLost",
    "NVMLError_Unknown",
    "NVMLError_ResetRequired",
    "NVMLError_GpuNotFound",
    "NVMLError_InvalidArgument",
    "NVMLError_NotFound",
    "NVMLError_Uninitialized",
)
# A versioned call the driver's library does not know: every GPU falls back to the older call.
OLDER_CALL_ERRORS = ("NVMLError_FunctionNotFound", "NVMLError_ArgumentVersionMismatch")
# How many v2 memory calls in a row may fail with Unknown ("any unexpected error") on one GPU
# whose v1 call answers each time before that GPU gives v2 up: WSL's driver has the v2 call but
# fails it every time, while one Unknown says nothing of the call. At most the loop's
# TRANSIENT_LIMIT, so that such a GPU reads v1 before it is backed off.
MEMORY_V2_UNKNOWN_LIMIT = 3
# Errors of nvmlInit that mean there is no usable NVIDIA driver on this machine.
NO_DRIVER_ERRORS = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")
# nvmlInit's error when the driver's library and its loaded kernel module differ in version: a
# driver upgraded without a reboot (nvidia-smi fails the same way).
VERSION_MISMATCH_ERROR = "NVMLError_LibRmVersionMismatch"
MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE

Sample = dict[str, float | int | None]


class NvmlUnavailable(Exception):
    """NVML can't be used: no pynvml, no driver, or nvmlInit failed."""


class TransientError(Exception):
    """A reading failed in a way that says nothing about the handle: the reading is skipped, the
    handle kept (an NVML error's own class would have it dropped, as Unknown is)."""


@dataclass
class MemoryQuery:
    """One GPU's memory query, kept by its caller from reading to reading (a handle can't key it:
    pynvml's handles are unhashable ctypes pointers, and a new one comes with each look-up)."""

    v2: bool = True  # False once this GPU showed it can't answer the v2 call
    unknowns: int = 0  # v2 calls in a row that failed with Unknown while v1 answered, or gave a field error
    gave_up: Exception | None = None  # why this GPU reads v1: for the caller to log, once

    def give_up(self, error: Exception) -> None:
        self.v2, self.gave_up = False, error


@dataclass(frozen=True)
class Device:
    """A GPU, or one MIG instance of a GPU, as NVML shows it now."""

    index: int  # NVML's index of the physical GPU (the parent's, for a MIG instance)
    uuid: str  # its own UUID: GPU-… or, for a MIG instance, MIG-…
    handle: Any
    parent: Any = None  # a MIG instance's GPU handle; None for a whole GPU
    parent_uuid: str | None = None
    mig_index: int | None = None  # among the parent's MIG devices
    gi_id: int | None = None  # GPU instance and compute instance IDs (nvidia-smi's "GI", "CI")
    ci_id: int | None = None


class Nvml:
    """NVML through a ``pynvml``-like module (the real one unless ``module`` is given)."""

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        if module is None:
            module = _import_pynvml()
        self.module = module
        self.error: type[Exception] = module.NVMLError
        self._field_errors = _classes(module, FIELD_ERRORS)
        self._gone = _classes(module, GONE_ERRORS)
        self._lost = _classes(module, LOST_ERRORS)
        self._older_call = _classes(module, OLDER_CALL_ERRORS)
        self._not_supported: type[Exception] = module.NVMLError_NotSupported
        self._no_permission: type[Exception] = module.NVMLError_NoPermission
        self._unknown = _classes(module, ("NVMLError_Unknown",))
        # Each versioned call is tried first and given up, once, on a driver without it.
        self._memory_v2 = hasattr(module, "nvmlMemory_v2")
        self._temperature_v = hasattr(module, "nvmlDeviceGetTemperatureV")
        self._events_api = hasattr(module, "nvmlDeviceGetCurrentClocksEventReasons")
        # Why a fallback is in use, for its log line (once): the binding lacks the newer call, or
        # (set when it fails so) the driver's library does.
        self._binding = _binding(module)
        self._temperature_why = "this binding has no nvmlDeviceGetTemperatureV"
        self._events_why = "this binding has no nvmlDeviceGetCurrentClocksEventReasons"
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def init(self) -> None:
        """nvmlInit, turning its failure into NvmlUnavailable with a message a user can act on."""
        try:
            self.module.nvmlInit()
        except self.error as error:
            raise NvmlUnavailable(_init_message(error)) from error

    def shutdown(self) -> None:
        # A failed shutdown leaves nothing to release: the process is ending anyway.
        with contextlib.suppress(self.error):
            self.module.nvmlShutdown()

    def device_count(self) -> int:
        return int(self.module.nvmlDeviceGetCount())

    def handle(self, index: int) -> Any:
        """The handle of the GPU at this NVML index."""
        return self.module.nvmlDeviceGetHandleByIndex(index)

    def identity(self, handle: Any) -> tuple[int, str]:
        """(NVML index, UUID) of a GPU's handle."""
        return int(self.module.nvmlDeviceGetIndex(handle)), _text(self.module.nvmlDeviceGetUUID(handle))

    def gpu(self, index: int) -> Device:
        """The whole GPU at this NVML index."""
        handle = self.handle(index)
        return Device(index=index, uuid=_text(self.module.nvmlDeviceGetUUID(handle)), handle=handle)

    def name(self, handle: Any) -> str:
        return _text(self.module.nvmlDeviceGetName(handle))

    def mig_enabled(self, gpu: Device) -> bool:
        """Whether the GPU is in MIG mode now (a GPU without MIG is not)."""
        try:
            current, _pending = self.module.nvmlDeviceGetMigMode(gpu.handle)
        except self._not_supported:
            return False
        return int(current) == MIG_ENABLED

    def mig_count(self, gpu: Device) -> int:
        """How many MIG device slots the GPU has (not all of them hold an instance)."""
        return int(self.module.nvmlDeviceGetMaxMigDeviceCount(gpu.handle))

    def mig(self, gpu: Device, mig_index: int) -> Device:
        """The MIG instance in slot ``mig_index`` of the GPU; NotFound if the slot is empty."""
        m = self.module
        handle = m.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, mig_index)
        return Device(
            index=gpu.index,
            uuid=_text(m.nvmlDeviceGetUUID(handle)),
            handle=handle,
            parent=gpu.handle,
            parent_uuid=gpu.uuid,
            mig_index=mig_index,
            gi_id=int(m.nvmlDeviceGetGpuInstanceId(handle)),
            ci_id=int(m.nvmlDeviceGetComputeInstanceId(handle)),
        )

    def is_lost(self, error: BaseException) -> bool:
        return isinstance(error, self._lost)

    def is_refused(self, error: BaseException) -> bool:
        """An error of a GPU's look-up that means the GPU is not this process's: NVML counts every
        GPU of the node but refuses the handle of one that a cgroup device limit (Slurm's
        ConstrainDevices) keeps from the process ("no permission", nvml.h's nvmlDeviceGetCount_v2)."""
        return isinstance(error, self._no_permission)

    def is_absent(self, error: BaseException) -> bool:
        """An error of a look-up that means there is nothing there (an empty MIG slot)."""
        return type(error).__name__ in ("NVMLError_NotFound", "NVMLError_InvalidArgument")

    def read(
        self,
        handle: Any,
        parent: Any = None,
        unavailable: dict[str, Exception] | None = None,
        memory_query: MemoryQuery | None = None,
    ) -> Sample:
        """One reading: the FIELDS, in MiB, W, °C, MHz; None where a query can't be answered.

        ``parent``: the GPU of the MIG instance ``handle`` is. Memory and utilization are then the
        instance's; temperature, SM clock and clocks-event reasons the card's (not additive);
        power None, as the card's power is shared with the other instances. The queries that
        gave None, and why, go into ``unavailable``. ``memory_query``: this GPU's, kept by the
        caller across readings. Raises an NVML error (a query answered that the GPU is gone, or
        no query answered), or TransientError.
        """
        m = self.module
        missing: dict[str, Exception] = {}
        card = handle if parent is None else parent
        # Memory first: the tests' fake counts a reading there.
        memory, v2 = self._memory_query(handle, missing, memory_query or MemoryQuery())
        util = self._query(missing, "utilization", m.nvmlDeviceGetUtilizationRates, handle)
        temperature = self._query(missing, "temperature", self._temperature, card)
        power_mw = None if parent is not None else self._query(missing, "power", m.nvmlDeviceGetPowerUsage, handle)
        sm_clock = self._query(missing, "sm_clock", m.nvmlDeviceGetClockInfo, card, m.NVML_CLOCK_SM)
        reasons = self._query(missing, "clocks_event_reasons", self._clocks_event_reasons, card)
        asked = len(QUERIES) - (parent is not None)  # a MIG instance's power is not asked
        failed = [error for error in missing.values() if not isinstance(error, self._field_errors)]
        if len(missing) == asked:
            # Not one query answered: the GPU's trouble, not a query's (lost if any error says so).
            # A line of nulls would only hide the job's step readings (job_resources prefers samples).
            if failed:
                raise next((error for error in failed if self.is_lost(error)), failed[0])
            answers = ", ".join(sorted({type(error).__name__ for error in missing.values()}))
            raise TransientError(f"no query answered ({answers})")
        if unavailable is not None:
            unavailable.update(missing)
        return {
            "utilization_percent": None if util is None else float(util.gpu),
            "memory_used_mb": None if memory is None else memory.used / MIB,
            "memory_total_mb": None if memory is None else memory.total / MIB,
            "memory_reserved_mb": None if memory is None or not v2 else memory.reserved / MIB,
            "temperature_c": None if temperature is None else float(temperature),
            "power_w": None if power_mw is None else power_mw / 1000,
            "sm_clock_mhz": None if sm_clock is None else float(sm_clock),
            "clocks_event_reasons": None if reasons is None else int(reasons),
        }

    def _query(self, missing: dict[str, Exception], query: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except self._gone:
            raise
        except self.error as error:
            missing[query] = error
            return None

    def _memory_query(self, handle: Any, missing: dict[str, Exception], query: MemoryQuery) -> tuple[Any, bool]:
        try:
            return self._memory(handle, missing, query)
        except self._gone:
            raise
        except self.error as error:  # of the v2 call (v1's are _query's): memory null, as v1's are
            missing["memory"] = error
            return None, True

    def _memory(self, handle: Any, missing: dict[str, Exception], query: MemoryQuery) -> tuple[Any, bool]:
        """The memory structure, and whether it is v2's."""
        m = self.module
        if self._memory_v2 and query.v2:
            try:
                memory = m.nvmlDeviceGetMemoryInfo(handle, version=m.nvmlMemory_v2)
            except self._older_call as error:
                self._give_up_memory_v2(error)
            except self._not_supported as error:
                query.give_up(error)  # on this GPU only: its v1 answer may still come
            except self._field_errors as error:
                missing["memory"] = error
                return None, True
            except self._unknown as error:
                return self._memory_after_unknown(handle, missing, query, error)
            else:
                query.unknowns = 0
                return memory, True
        return self._query(missing, "memory", m.nvmlDeviceGetMemoryInfo, handle), False

    def _memory_after_unknown(
        self, handle: Any, missing: dict[str, Exception], query: MemoryQuery, error: Exception
    ) -> tuple[Any, bool]:
        # v1 tells a GPU in trouble from a failed v2 call: a lost GPU fails v1 too, and that
        # error goes to the caller (the GPU is backed off, and v2 tried again when it is back).
        # A field error of v1 (not supported, no permission) says nothing of the GPU's health:
        # memory is null, as when v1 alone says so, and the rest of the line is written. Should
        # v1 fail too (unknown, …), the memory query failed: null, and nothing said of v2.
        memory = self._query(missing, "memory", self.module.nvmlDeviceGetMemoryInfo, handle)
        if memory is None and not isinstance(missing["memory"], self._field_errors):
            return None, True
        query.unknowns += 1
        if query.unknowns >= MEMORY_V2_UNKNOWN_LIMIT:
            query.give_up(error)
        elif memory is not None:
            # One failed v2 call skips the reading: v1's figures would change what
            # memory_used_mb means for it. A null changes nothing: that line is written.
            raise TransientError(f"the v2 memory query failed ({type(error).__name__}: {error}); v1 answered")
        return memory, False

    def _give_up_memory_v2(self, error: Exception) -> None:
        if self._memory_v2:
            self._memory_v2 = False
            log.warning(
                "the driver can't answer NVML's v2 memory query (%s): memory_used_mb includes the "
                "driver's reserved memory on this machine, as nvidia-smi's memory.used does",
                type(error).__name__,
            )

    def _temperature(self, handle: Any) -> Any:
        m = self.module
        if self._temperature_v:
            try:
                value = m.nvmlDeviceGetTemperatureV(handle, m.NVML_TEMPERATURE_GPU)
                # 13.x returns the temperature; a binding that returns the structure is read too.
                return getattr(value, "temperature", value)
            except self._older_call as error:
                self._temperature_v = False
                self._temperature_why = (
                    f"the driver's NVML can't answer nvmlDeviceGetTemperatureV ({type(error).__name__})"
                )
        self._log_once(
            "temperature",
            "%s; %s: temperature_c comes from the deprecated nvmlDeviceGetTemperature",
            self._binding,
            self._temperature_why,
        )
        # Deprecated in NVML 13, still there in every driver this binding range supports.
        return m.nvmlDeviceGetTemperature(handle, m.NVML_TEMPERATURE_GPU)

    def _clocks_event_reasons(self, handle: Any) -> int:
        # Drivers before R535 (and pynvml before 12.535) only know the older name of the call.
        m = self.module
        if self._events_api:
            try:
                return m.nvmlDeviceGetCurrentClocksEventReasons(handle)
            except m.NVMLError_FunctionNotFound as error:
                self._events_api = False
                self._events_why = (
                    f"the driver's NVML has no nvmlDeviceGetCurrentClocksEventReasons ({type(error).__name__})"
                )
        self._log_once(
            "clocks_event_reasons",
            "%s; %s: clocks_event_reasons come from nvmlDeviceGetCurrentClocksThrottleReasons (its name before R535)",
            self._binding,
            self._events_why,
        )
        return m.nvmlDeviceGetCurrentClocksThrottleReasons(handle)

    def _log_once(self, key: str, message: str, *args: Any) -> None:
        # Once per process: every GPU's thread comes through here.
        with self._lock:
            if key in self._logged:
                return
            self._logged.add(key)
        log.info(message, *args)


def _classes(module: Any, names: tuple[str, ...]) -> tuple[type[Exception], ...]:
    # A binding may lack the newer classes (GpuNotFound, ArgumentVersionMismatch).
    return tuple(getattr(module, name) for name in names if hasattr(module, name))


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as error:
        raise NvmlUnavailable(
            "the pynvml module is missing: install the nvidia-ml-py package (pip install nvidia-ml-py)"
        ) from error
    return pynvml


def _binding(module: Any) -> str:
    """The binding in use, for log lines: "pynvml (nvidia-ml-py 13.580.65)" for the real one."""
    name = getattr(module, "__name__", type(module).__name__)
    if name != "pynvml":
        return name
    try:
        return f"pynvml (nvidia-ml-py {metadata.version('nvidia-ml-py')})"
    except metadata.PackageNotFoundError:
        return "pynvml"


def _init_message(error: Exception) -> str:
    name = type(error).__name__
    if name == VERSION_MISMATCH_ERROR:
        return (
            f"NVML can't be used on this machine ({error}): the NVIDIA driver's library and its loaded "
            "kernel module are different versions, as after a driver upgrade without a reboot (nvidia-smi "
            "fails the same way): reboot, or reload the NVIDIA kernel modules; until then there are no "
            "GPUs to sample"
        )
    if name in NO_DRIVER_ERRORS:
        return (
            f"NVML is not available on this machine ({error}): the NVIDIA driver is not installed "
            "or not loaded (does nvidia-smi work?), so there are no GPUs to sample"
        )
    return f"NVML could not be initialised ({name}: {error})"


def _text(value: str | bytes) -> str:
    # pynvml returns str on Python 3, but older releases returned bytes.
    return value.decode() if isinstance(value, bytes) else str(value)
