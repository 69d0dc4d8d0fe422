"""The only module that calls NVML, through ``pynvml`` (package ``nvidia-ml-py``).

Thin on purpose: initialise and shut down, get a device handle by index or UUID, and read one
GPU's sample into a dict. A field the GPU does not support (``NVMLError_NotSupported``, e.g. the
utilization of a MIG-enabled GPU) is None, never 0; every other NVML error reaches the caller,
which decides what to do about it (sampler/run.py). The ``pynvml`` module is a constructor
argument so that tests can hand in a fake.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

MIB = 2**20
# The measured fields of a sample, in the order they are written.
FIELDS = (
    "utilization_percent",
    "memory_used_mb",
    "memory_total_mb",
    "temperature_c",
    "power_w",
    "sm_clock_mhz",
    "clocks_event_reasons",
)
# Errors that mean the handle itself is no good (the GPU fell off the bus, was reset, or NVML
# lost track of it): the handle is dropped and looked up again later, with back-off.
LOST_ERRORS = (
    "NVMLError_GpuIsLost",
    "NVMLError_Unknown",
    "NVMLError_ResetRequired",
    "NVMLError_GpuNotFound",
    "NVMLError_InvalidArgument",
    "NVMLError_NotFound",
    "NVMLError_Uninitialized",
)
# Errors of nvmlInit that mean there is no usable NVIDIA driver on this machine.
NO_DRIVER_ERRORS = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded", "NVMLError_LibRmVersionMismatch")

Sample = dict[str, float | int | None]


class NvmlUnavailable(Exception):
    """NVML can't be used: no pynvml, no driver, or nvmlInit failed."""


class Nvml:
    """NVML through a ``pynvml``-like module (the real one unless ``module`` is given)."""

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        if module is None:
            module = _import_pynvml()
        self.module = module
        self.error: type[Exception] = module.NVMLError
        self._not_supported: type[Exception] = module.NVMLError_NotSupported
        self._lost = tuple(getattr(module, name) for name in LOST_ERRORS if hasattr(module, name))
        # Drivers before R535 (and pynvml before 12.535) only know the older name of the
        # clocks-event reasons call; found out on the first reading, then remembered.
        self._throttle_api = not hasattr(module, "nvmlDeviceGetCurrentClocksEventReasons")

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

    def handle(self, key: int | str) -> Any:
        """The handle of a GPU given by NVML index or UUID (a MIG UUID gives its parent GPU)."""
        if isinstance(key, int):
            return self.module.nvmlDeviceGetHandleByIndex(key)
        handle = self.module.nvmlDeviceGetHandleByUUID(key)
        if key.startswith("MIG-"):
            # Samples are per physical GPU; a MIG instance's handle can't answer most queries.
            handle = self.module.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        return handle

    def identity(self, handle: Any) -> tuple[int, str]:
        """(NVML index, UUID) of a handle."""
        return int(self.module.nvmlDeviceGetIndex(handle)), _text(self.module.nvmlDeviceGetUUID(handle))

    def uuids(self) -> list[str]:
        """Every GPU's UUID in NVML index order (GPUs that can't be asked are left out)."""
        found = []
        for index in range(self.device_count()):
            try:
                found.append(self.identity(self.handle(index))[1])
            except self.error:
                continue
        return found

    def is_lost(self, error: BaseException) -> bool:
        return isinstance(error, self._lost)

    def read(self, handle: Any) -> Sample:
        """One reading of one GPU: the FIELDS, converted to MiB, W, °C, MHz; None if unsupported."""
        m = self.module
        util = self._optional(m.nvmlDeviceGetUtilizationRates, handle)
        memory = self._optional(m.nvmlDeviceGetMemoryInfo, handle)
        temperature = self._optional(m.nvmlDeviceGetTemperature, handle, m.NVML_TEMPERATURE_GPU)
        power_mw = self._optional(m.nvmlDeviceGetPowerUsage, handle)
        sm_clock = self._optional(m.nvmlDeviceGetClockInfo, handle, m.NVML_CLOCK_SM)
        reasons = self._optional(self._clocks_event_reasons, handle)
        return {
            "utilization_percent": None if util is None else float(util.gpu),
            "memory_used_mb": None if memory is None else memory.used / MIB,
            "memory_total_mb": None if memory is None else memory.total / MIB,
            "temperature_c": None if temperature is None else float(temperature),
            "power_w": None if power_mw is None else power_mw / 1000,
            "sm_clock_mhz": None if sm_clock is None else float(sm_clock),
            "clocks_event_reasons": None if reasons is None else int(reasons),
        }

    def _optional(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except self._not_supported:
            return None

    def _clocks_event_reasons(self, handle: Any) -> int:
        m = self.module
        if not self._throttle_api:
            try:
                return m.nvmlDeviceGetCurrentClocksEventReasons(handle)
            except m.NVMLError_FunctionNotFound:
                self._throttle_api = True
        return m.nvmlDeviceGetCurrentClocksThrottleReasons(handle)


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as error:
        raise NvmlUnavailable(
            "the pynvml module is missing: install the nvidia-ml-py package (pip install nvidia-ml-py)"
        ) from error
    return pynvml


def _init_message(error: Exception) -> str:
    name = type(error).__name__
    if name in NO_DRIVER_ERRORS:
        return (
            f"NVML is not available on this machine ({error}): the NVIDIA driver is not installed "
            "or not loaded (does nvidia-smi work?), so there are no GPUs to sample"
        )
    return f"NVML could not be initialised ({name}: {error})"


def _text(value: str | bytes) -> str:
    # pynvml returns str on Python 3, but older releases returned bytes.
    return value.decode() if isinstance(value, bytes) else str(value)
