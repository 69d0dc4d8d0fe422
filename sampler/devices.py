"""Which GPUs and MIG instances to sample, and finding them in NVML.

Every look-up goes by NVML index and checks the UUID: NVML's look-up by UUID fails for every
GPU while any GPU of the node has fallen off the bus, so a degraded node would sample nothing.
A UUID asked for is found by walking the indexes (and the MIG instances of MIG-enabled GPUs);
a GPU that can't be asked now is skipped in the walk and found later.

A GPU whose handle NVML refuses with "no permission" is not this process's: under a cgroup
device limit (Slurm's ConstrainDevices) NVML counts every GPU of the node and refuses the others'
handles, so such a GPU is left out, never tried again. CUDA numbers only the GPUs the process
may use, so a CUDA_VISIBLE_DEVICES index k is the k-th of those in NVML's order.

Samples are keyed by UUID: NVML's indexes start at 0 inside a container whatever GPUs it was
given, so two jobs' samplers on one host can both see a "GPU 0".
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from runlytics.sampler.nvml import Device, Nvml

log = logging.getLogger("runlytics.sampler")

Key = int | str
# CUDA 11.0-11.3's MIG names: MIG-<GPU UUID>/<GPU instance ID>/<compute instance ID>.
OLD_MIG = re.compile(r"MIG-(GPU-[^/]+)/(\d+)/(\d+)")


class SamplerError(Exception):
    """A usage problem: a bad --gpus list, no GPU to sample, a bad interval."""


class NoSuchGpu(Exception):
    """Every GPU answered, and none is the one asked for."""


def select_gpus(gpus: str | None, env: Mapping[str, str]) -> list[Key] | None:
    """The GPUs asked for: --gpus, else $CUDA_VISIBLE_DEVICES, else the UUIDs of
    $NVIDIA_VISIBLE_DEVICES; None (every GPU) when none of these."""
    return selection(gpus, env)[0]


def selection(gpus: str | None, env: Mapping[str, str]) -> tuple[list[Key] | None, str]:
    """select_gpus's keys, and where they come from, for messages ("CUDA_VISIBLE_DEVICES='-1'");
    "" for every GPU."""
    if gpus is not None:
        return parse_devices(gpus, strict=True), f"--gpus {gpus!r}"
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return parse_devices(visible), f"CUDA_VISIBLE_DEVICES={visible!r}"
    given = env.get("NVIDIA_VISIBLE_DEVICES")
    uuids = container_uuids(given)
    if uuids:
        log.info(
            "CUDA_VISIBLE_DEVICES is not set: sampling NVIDIA_VISIBLE_DEVICES=%s, what the container was given", given
        )
        return uuids, f"NVIDIA_VISIBLE_DEVICES={given!r}"
    return None, ""


def container_uuids(text: str | None) -> list[Key]:
    """The UUIDs (GPU-…, MIG-…) of an NVIDIA_VISIBLE_DEVICES value, which NVIDIA's container
    toolkit sets in a container it gives GPUs or MIG instances to (and CUDA_VISIBLE_DEVICES not);
    none unless every entry is one. "all", "none", "void", empty: nothing to choose among what
    NVML sees. Indexes ("0", "0:1"): the host's numbers, which NVML inside the container does not
    use (it numbers the container's GPUs from 0), so they are not read either."""
    entries = [entry.strip() for entry in (text or "").split(",") if entry.strip()]
    if not all(entry.startswith(("GPU-", "MIG-")) for entry in entries):
        return []
    return list(entries)


def parse_devices(text: str, strict: bool = False) -> list[Key]:
    """Indexes (int) and UUIDs ("GPU-…", "MIG-…", "MIG-GPU-…/gi/ci") of a CUDA_VISIBLE_DEVICES list.

    Like CUDA, the list ends at its first entry that is neither (``-1`` hides every GPU); with
    ``strict`` (a list the user typed) such an entry is an error instead. What an index means is
    resolve's to say: --gpus gives NVML's, CUDA_VISIBLE_DEVICES CUDA's. A UUID is unambiguous.
    """
    keys: list[Key] = []
    for entry in (e.strip() for e in text.split(",")):
        if entry.isascii() and entry.isdigit():  # CUDA reads ASCII digits only: '²' ends the list
            keys.append(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            keys.append(entry)
        elif strict:
            raise SamplerError(f"{entry!r} is neither a GPU index nor a UUID (GPU-…, MIG-…)")
        else:
            if entry:
                log.warning("CUDA_VISIBLE_DEVICES=%s: GPUs from %r on are not sampled (CUDA ignores them)", text, entry)
            break
    return keys


@dataclass
class Gpu:
    """A GPU or MIG instance being sampled: what was asked for, and what NVML said it is."""

    key: Key  # as asked for
    device: Device | None = None  # None until found, and while lost
    uuid: str | None = None  # kept while lost: the GPU found again must be this one
    index: int | None = None  # NVML index of the physical GPU: where to look first

    def found(self, device: Device) -> None:
        self.device, self.uuid, self.index = device, device.uuid, device.index

    def lose(self) -> None:
        self.device = None


class Listing:
    """What NVML says, asked once per index and GPU during one look-up: a lost GPU's errors
    are kept, so that a UUID not found can be told from a UUID on a GPU that can't answer."""

    def __init__(self, nvml: Nvml) -> None:
        self.nvml = nvml
        self._count: int | None = None
        self._gpus: dict[int, Device | Exception] = {}
        self._migs: dict[int, list[Device]] = {}
        self._mig_errors: dict[int, Exception] = {}

    def count(self) -> int:
        if self._count is None:
            self._count = self.nvml.device_count()
        return self._count

    def gpu(self, index: int) -> Device:
        """The GPU at ``index``; its NVML error if it can't be asked (raised again each time)."""
        if index >= self.count():
            raise NoSuchGpu(f"there are {self.count()} GPUs")
        if index not in self._gpus:
            try:
                self._gpus[index] = self.nvml.gpu(index)
            except self.nvml.error as error:
                self._gpus[index] = error
        found = self._gpus[index]
        if isinstance(found, Exception):
            raise found
        return found

    def migs(self, gpu: Device) -> list[Device]:
        """The MIG instances of a GPU that answer (none unless it is in MIG mode). A slot that
        fails (another container's instance may answer "no permission") hides only itself: its
        error is ``mig_error``'s."""
        if gpu.index not in self._migs:
            found = []
            if self.nvml.mig_enabled(gpu):
                for slot in range(self.nvml.mig_count(gpu)):
                    try:
                        found.append(self.nvml.mig(gpu, slot))
                    except self.nvml.error as error:
                        if not self.nvml.is_absent(error):
                            self._mig_errors.setdefault(gpu.index, error)
            self._migs[gpu.index] = found
        return self._migs[gpu.index]

    def mig_error(self, gpu: Device) -> Exception | None:
        """The error of the first of the GPU's MIG slots that failed in ``migs``, if one did."""
        return self._mig_errors.get(gpu.index)

    def every(self, mig: bool) -> tuple[list[Device], Exception | None]:
        """Every GPU (or every MIG instance) that answers, and the error of one that did not
        (a GPU refused to this process is none of its GPUs: no error)."""
        devices: list[Device] = []
        failed: Exception | None = None
        for index in range(self.count()):
            try:
                gpu = self.gpu(index)
            except self.nvml.error as error:
                if not self.nvml.is_refused(error):
                    failed = error
                continue
            try:
                devices.extend(self.migs(gpu) if mig else [gpu])
            except self.nvml.error as error:
                # The GPU is this process's (its handle was given), whatever the error of its
                # MIG enumeration, "no permission" too: an instance on it may be there later.
                failed = error
            if mig and self.mig_error(gpu) is not None:
                failed = self.mig_error(gpu)  # the instance sought may be in the slot that failed
        return devices, failed

    def is_refusal(self, error: BaseException) -> bool:
        """Whether ``error`` is NVML refusing a GPU's handle in this look-up: the same error class
        raised while listing a GPU's MIG instances does not make the GPU another process's."""
        return self.nvml.is_refused(error) and any(found is error for found in self._gpus.values())

    def refused(self, index: int) -> bool:
        """Whether NVML refuses the GPU at ``index`` to this process."""
        try:
            self.gpu(index)
        except self.nvml.error as error:
            return self.nvml.is_refused(error)
        return False

    def usable(self) -> list[int]:
        """The NVML indexes of the GPUs this process may use, in NVML's order: the ones CUDA
        numbers from 0. A GPU that can't be asked now for another reason (lost) is one of them."""
        return [index for index in range(self.count()) if not self.refused(index)]

    def refused_so_far(self) -> list[int]:
        """The NVML indexes of the GPUs found refused to this process in this look-up."""
        errors = {index: found for index, found in self._gpus.items() if isinstance(found, Exception)}
        return sorted(index for index, error in errors.items() if self.nvml.is_refused(error))


def resolve(nvml: Nvml, keys: list[Key] | None, cuda_indexes: bool = False, source: str = "") -> list[Gpu]:
    """A Gpu per key (every GPU when None). ``cuda_indexes``: the keys' indexes are CUDA's (from
    CUDA_VISIBLE_DEVICES), not NVML's. ``source``: where the keys come from (selection's).

    A GPU that does not exist, or that NVML refuses to this process, is left out, in a warning
    line; one that exists but can't be asked now (lost) is kept, to be tried again with back-off.
    Raises SamplerError, in one line saying why, when nothing is left to sample: every GPU asked
    for left out, none asked for (an empty selection), or none found by NVML.
    """
    listing = Listing(nvml)
    left_out: list[str] = []
    if keys == []:
        raise SamplerError(f"no GPU to sample: {source or 'the selection'} names no GPU")
    if keys is None:
        keys = list(range(listing.count()))
    elif cuda_indexes:
        keys = _cuda_keys(listing, keys, left_out)
    gpus: list[Gpu] = []
    seen: set[Key] = set()
    for key in keys:
        gpu = _find(nvml, key, listing, left_out)
        if gpu is not None and (gpu.uuid or gpu.key) not in seen:
            seen.add(gpu.uuid or gpu.key)
            gpus.append(gpu)
    refused = listing.refused_so_far()
    if refused:
        left_out.append(_refused_reason(refused))
    if not gpus:
        if not left_out:  # every GPU asked for, and there is none
            left_out.append("NVML found no GPU on this machine (nvmlDeviceGetCount: 0)")
        raise SamplerError("no GPU to sample: " + "; ".join(left_out))
    for reason in left_out:
        log.warning("%s; not sampled", reason)
    return gpus


def _cuda_keys(listing: Listing, keys: list[Key], left_out: list[str]) -> list[Key]:
    """CUDA_VISIBLE_DEVICES keys with NVML's indexes: CUDA index k is the k-th GPU this process
    may use, in NVML's (PCI bus) order; CUDA's own order is that one only with
    CUDA_DEVICE_ORDER=PCI_BUS_ID or alike GPUs (warn_if_order_differs). UUIDs stay as they are."""
    # Only an index needs the walk (each GPU's handle is asked for: slow without persistence mode).
    usable = listing.usable() if any(isinstance(key, int) for key in keys) else []
    nvml_keys: list[Key] = []
    for key in keys:
        if not isinstance(key, int):
            nvml_keys.append(key)
        elif key < len(usable):
            nvml_keys.append(usable[key])
        else:
            left_out.append(
                f"CUDA GPU {key}: no such GPU (this process may use {len(usable)} of the {listing.count()} GPUs)"
            )
    return nvml_keys


def _find(nvml: Nvml, key: Key, listing: Listing, left_out: list[str]) -> Gpu | None:
    """The Gpu of a key, None when it is left out (why goes into ``left_out``, but for a GPU
    refused to this process: the listing keeps those, to be said in one line)."""
    gpu = Gpu(key)
    try:
        attach(nvml, gpu, listing)
    except NoSuchGpu as error:
        left_out.append(f"GPU {key}: no such GPU ({error})")
        return None
    except nvml.error as error:
        if listing.is_refusal(error):
            return None
        log.warning("GPU %s: can't be read now (%s: %s); trying again later", key, type(error).__name__, error)
    return gpu


def _refused_reason(indexes: list[int]) -> str:
    one = len(indexes) == 1
    return (
        f"NVML {'GPU' if one else 'GPUs'} {', '.join(map(str, indexes))}: not this process's (NVML refuses "
        f"{'its handle' if one else 'their handles'} with NVMLError_NoPermission, as under a cgroup device "
        "limit such as Slurm's ConstrainDevices)"
    )


def attach(nvml: Nvml, gpu: Gpu, listing: Listing | None = None) -> None:
    """Find the GPU's device: at its known index if its UUID is still there, else by a walk.

    Raises NoSuchGpu when every GPU answered and none is it, an NVML error when it may be on
    a GPU that can't be asked now.
    """
    listing = listing or Listing(nvml)
    key = gpu.key
    if gpu.uuid is None and isinstance(key, int):
        gpu.found(listing.gpu(key))
        return
    want = gpu.uuid or str(key)
    if gpu.index is not None and gpu.index < listing.count():
        try:
            near = listing.gpu(gpu.index)
            candidates = listing.migs(near) if _is_mig(want) else [near]
        except nvml.error:
            candidates = []  # lost, or moved: the walk below says which
        for device in candidates:
            if device.uuid == want:
                gpu.found(device)
                return
    devices, failed = listing.every(mig=_is_mig(want))
    match = _match(want, devices) if gpu.uuid is None else [d for d in devices if d.uuid == want]
    if len(match) == 1:
        gpu.found(match[0])
        return
    if len(match) > 1:
        raise NoSuchGpu(f"{want} is the start of {len(match)} UUIDs")
    if failed is not None:
        raise failed
    raise NoSuchGpu(f"no GPU has the UUID {want}")


def _match(key: str, devices: list[Device]) -> list[Device]:
    """The devices a CUDA_VISIBLE_DEVICES UUID entry names: the whole UUID, the old MIG form,
    or (as CUDA allows) a unique start of a UUID."""
    exact = [d for d in devices if d.uuid == key]
    if exact:
        return exact
    old = OLD_MIG.fullmatch(key)
    if old:
        parent, gi, ci = old.group(1), int(old.group(2)), int(old.group(3))
        return [d for d in devices if (d.parent_uuid, d.gi_id, d.ci_id) == (parent, gi, ci)]
    return [d for d in devices if d.uuid.startswith(key)]


def _is_mig(key: str) -> bool:
    return key.startswith("MIG-")


def warn_if_mig_mode(nvml: Nvml, gpus: list[Gpu]) -> None:
    """A whole GPU in MIG mode, sampled as such, is the card: its power is shared by every MIG
    instance's job, and counted again by each job that samples the card. Only advice: an NVML
    error here never stops the sampling."""
    for gpu in gpus:
        device = gpu.device
        if device is None or device.parent is not None:
            continue
        try:
            mig = nvml.mig_enabled(device)
        except nvml.error:
            continue
        if mig:
            log.warning(
                "GPU %s (%s) is in MIG mode and sampled whole: its power_w is the card's, shared by the jobs "
                "of all its MIG instances (each job that samples the card counts it again), and its "
                "utilization is null; to sample a job's own instance, give its MIG-… UUID (--gpus or "
                "CUDA_VISIBLE_DEVICES; nvidia-smi -L lists them)",
                device.index,
                device.uuid,
            )


def warn_if_order_differs(nvml: Nvml, keys: list[Key] | None, env: Mapping[str, str]) -> None:
    """CUDA numbers the GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID; NVML in PCI bus
    order. Alike GPUs are numbered alike, so only a mixed node's indexes are in doubt."""
    if not keys or not any(isinstance(k, int) for k in keys) or env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return
    listing = Listing(nvml)
    names = set()
    try:
        for index in range(listing.count()):
            with contextlib.suppress(nvml.error):
                names.add(nvml.name(listing.gpu(index).handle))
    except nvml.error:
        return  # only advice: it never stops the sampling
    if len(names) > 1:
        log.warning(
            "CUDA_VISIBLE_DEVICES holds indexes and the GPUs differ (%s): CUDA numbers them fastest first "
            "unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML in PCI bus order, so the GPUs sampled may not be "
            "the job's; set CUDA_DEVICE_ORDER=PCI_BUS_ID or give UUIDs",
            ", ".join(sorted(names)),
        )
