"""The sampler against what the real NVML does (and the fake held to the real pynvml).

One test (or a few) per way the sampler failed or mis-measured on real machines: a query a GPU
won't answer, v1 memory, UUID look-ups on a degraded node, the deprecated temperature call,
indexes that are not physical, MIG instances, a slow or hung set-up. Readings are taken one at
a time (GpuSampler.sample_once) where timing does not matter, so that no test depends on the
machine's load.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import threading
import time
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fake_nvml import FakeGpu, FakeMig, FakeNvml, gpus
from packaging.requirements import Requirement

from runlytics.sampler import devices
from runlytics.sampler import loop as sampler
from runlytics.sampler.nvml import Nvml
from runlytics.sampler.spool import Spool

REPO = Path(__file__).resolve().parent.parent
INTERVAL = 0.05
MIB = 2**20


class Rig:
    """An initialised Nvml on a fake, a spool, and a GpuSampler per GPU asked for."""

    def __init__(self, tmp_path: Path, fake: FakeNvml, keys: list[Any] | None = None, host: str = "node-01") -> None:
        self.fake = fake
        self.nvml = Nvml(fake)
        self.nvml.init()
        self.folder = tmp_path / "spool"
        self.options = sampler.Options(job_id="job-1", spool=self.folder, interval=INTERVAL, host=host)
        self.spool = Spool(self.folder, host, None)
        schedule = sampler.Schedule(INTERVAL)
        self.workers = [
            sampler.GpuSampler(gpu, self.nvml, self.spool, self.options, schedule, threading.Event())
            for gpu in sampler.resolve(self.nvml, keys)
        ]

    def readings(self, n: int) -> list[dict[str, Any]]:
        """n readings of every GPU, back-offs ignored; the spool's lines."""
        for _ in range(n):
            for worker in self.workers:
                worker.retry_at = 0.0
                worker.sample_once()
        self.spool.close()
        return lines_of(self.folder)


def lines_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# --- 1. one field that can't be read nulls that field, not the sample ---------------------------


def test_a_mig_gpu_without_root_writes_every_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(2)
    fleet[1].mig = True  # its memory query answers "no permission" to a non-root caller
    rig = Rig(tmp_path, FakeNvml(fleet))
    with caplog.at_level(logging.INFO, "runlytics.sampler"):
        lines = rig.readings(5)
    mig_gpu = [line for line in lines if line["gpu_index"] == 1]
    assert len(mig_gpu) == 5 and len(lines) == 10
    for line in mig_gpu:
        assert (line["memory_used_mb"], line["memory_total_mb"], line["memory_reserved_mb"]) == (None, None, None)
        assert line["utilization_percent"] is None and line["clocks_event_reasons"] == 4  # the card's
        assert (line["temperature_c"], line["power_w"], line["sm_clock_mhz"]) == (68.0, 301.2, 1980.0)
    assert all(w.failures == 0 and w.transient == 0 for w in rig.workers)  # no back-off
    label = f"GPU 1 ({fleet[1].uuid})"
    # Once per GPU and query, however many readings.
    assert messages(caplog, logging.WARNING) == [
        f"{label}: memory_used_mb, memory_total_mb, memory_reserved_mb null "
        "(NVMLError_NoPermission: Insufficient Permissions)"
    ]
    assert messages(caplog, logging.INFO) == [
        f"{label}: utilization_percent null (NVMLError_NotSupported: Not Supported)",
    ]


def test_as_root_a_mig_gpu_reports_its_memory(tmp_path: Path) -> None:
    fleet = gpus(1, mig=True)
    lines = Rig(tmp_path, FakeNvml(fleet, root=True)).readings(2)
    assert [line["memory_used_mb"] for line in lines] == [17200.0, 17200.0]


def test_a_function_the_driver_lacks_nulls_its_field(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml(gpus(1), missing={"nvmlDeviceGetPowerUsage"})
    rig = Rig(tmp_path, fake)
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        lines = rig.readings(3)
    assert [line["power_w"] for line in lines] == [None, None, None]
    assert [line["memory_used_mb"] for line in lines] == [17200.0, 17200.0, 17200.0]
    assert len(messages(caplog, logging.WARNING)) == 1
    assert "power_w null (NVMLError_FunctionNotFound" in messages(caplog, logging.WARNING)[0]


def test_a_handle_error_fails_the_reading_and_drops_the_handle(tmp_path: Path) -> None:
    fleet = gpus(1, lose_after=2)  # falls off the bus at its third reading
    rig = Rig(tmp_path, FakeNvml(fleet))
    lines = rig.readings(3)
    [worker] = rig.workers
    assert len(lines) == 2 and worker.gpu.device is None and worker.failures >= 1


# --- 2. memory_used_mb is nvidia-smi's memory.used -------------------------------------------


def test_memory_used_is_the_v2_figure_that_nvidia_smi_reports(tmp_path: Path) -> None:
    fake = FakeNvml(gpus(1))
    [line] = Rig(tmp_path, fake).readings(1)
    # nvidia-smi's memory.used is NVML's v2 "used": allocated memory, without the 523 MiB the
    # driver reserves (v1 would say 17723 MiB).
    assert (line["memory_used_mb"], line["memory_reserved_mb"], line["memory_total_mb"]) == (17200.0, 523.0, 81559.0)
    assert fake.counts["nvmlDeviceGetMemoryInfo_v2"] == 1 and fake.counts["nvmlDeviceGetMemoryInfo"] == 0


def test_a_driver_without_v2_memory_falls_back_to_v1(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml(gpus(1), old_driver=True)
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        lines = Rig(tmp_path, fake).readings(3)
    assert [(line["memory_used_mb"], line["memory_reserved_mb"]) for line in lines] == [(17723.0, None)] * 3
    assert fake.counts["nvmlDeviceGetMemoryInfo_v2"] == 1  # given up once, not at every reading
    assert sum("v2 memory query" in m for m in messages(caplog, logging.WARNING)) == 1
    assert fake.gpus[0].readings == 3


# --- 3. no UUID look-ups: a lost GPU hides no other -------------------------------------------


def test_a_lost_gpu_hides_no_other_gpu_asked_for_by_uuid(tmp_path: Path) -> None:
    fleet = gpus(3)
    fleet[1].lost = True  # fallen off the bus for good: NVML's UUID look-up fails for every GPU
    fake = FakeNvml(fleet)
    rig = Rig(tmp_path, fake, [fleet[0].uuid, fleet[2].uuid, fleet[1].uuid])
    lines = rig.readings(2)
    assert sorted({line["gpu_uuid"] for line in lines}) == [fleet[0].uuid, fleet[2].uuid]
    assert [w.gpu.key for w in rig.workers] == [fleet[0].uuid, fleet[2].uuid, fleet[1].uuid]  # the lost one kept
    assert fake.counts["nvmlDeviceGetHandleByUUID"] == 0


def test_a_gpu_back_from_the_bus_is_found_while_another_is_lost(tmp_path: Path) -> None:
    fleet = gpus(3)
    fleet[0].lose_after = 1
    fake = FakeNvml(fleet)
    rig = Rig(tmp_path, fake, [fleet[0].uuid])
    [worker] = rig.workers
    worker.sample_once()
    worker.sample_once()  # finds it lost
    assert worker.written == 1 and worker.gpu.device is None
    fleet[0].lost = False
    fleet[2].lost = True  # meanwhile another GPU fell off the bus
    worker.retry_at = 0.0
    worker.sample_once()
    assert worker.written == 2 and worker.gpu.device is not None
    assert fake.counts["nvmlDeviceGetHandleByUUID"] == 0


def test_a_gpu_found_at_another_index_keeps_its_uuid(tmp_path: Path) -> None:
    fleet = gpus(2)
    rig = Rig(tmp_path, FakeNvml(fleet), [fleet[1].uuid])
    [worker] = rig.workers
    worker.sample_once()
    worker.gpu.lose()
    fleet.reverse()  # after a reset, NVML numbers it 0
    worker.sample_once()
    rig.spool.close()
    assert [(line["gpu_index"], line["gpu_uuid"]) for line in lines_of(rig.folder)] == [
        (1, fleet[0].uuid),
        (0, fleet[0].uuid),
    ]


# --- 4. the versioned temperature call, and the binding's major version ------------------------


@pytest.mark.skipif(not hasattr(pynvml, "nvmlDeviceGetTemperatureV"), reason="a pynvml without it (12.535)")
def test_temperature_comes_from_the_versioned_call(tmp_path: Path) -> None:
    fake = FakeNvml(gpus(1))
    lines = Rig(tmp_path, fake).readings(2)
    assert [line["temperature_c"] for line in lines] == [68.0, 68.0]
    assert fake.counts["nvmlDeviceGetTemperatureV"] == 2 and fake.counts["nvmlDeviceGetTemperature"] == 0


@pytest.mark.parametrize("kind", ["old_driver", "old_binding"])
def test_temperature_falls_back_to_the_deprecated_call(tmp_path: Path, kind: str) -> None:
    fake = FakeNvml(gpus(1), **{kind: True})
    lines = Rig(tmp_path, fake).readings(3)
    assert [line["temperature_c"] for line in lines] == [68.0, 68.0, 68.0]
    assert fake.counts["nvmlDeviceGetTemperature"] == 3
    assert fake.counts["nvmlDeviceGetTemperatureV"] <= 1  # a driver without it: tried once


def test_the_binding_is_bounded_to_the_majors_it_was_checked_against() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [pin] = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "nvidia-ml-py"]
    assert not pin.specifier.contains("14.0") and not pin.specifier.contains("12.470")
    assert pin.specifier.contains("12.535.161") and pin.specifier.contains("13.615.71")
    assert pin.specifier.contains(version("nvidia-ml-py"))


# --- 5. keyed by UUID: indexes are not physical in containers and cgroups ----------------------


def test_two_jobs_gpu_0_stay_two_gpus(tmp_path: Path) -> None:
    # Two containers on one host, each given one GPU: NVML calls each "GPU 0".
    first = FakeGpu(uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001", memory_used=1000 * MIB)
    second = FakeGpu(uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002", memory_used=2000 * MIB)
    Rig(tmp_path, FakeNvml([first])).readings(2)
    lines = Rig(tmp_path, FakeNvml([second])).readings(2)
    assert {(line["job_id"], line["host"], line["gpu_index"]) for line in lines} == {("job-1", "node-01", 0)}
    by_uuid = {line["gpu_uuid"]: line["memory_used_mb"] for line in lines}
    assert by_uuid == {first.uuid: 1000.0, second.uuid: 2000.0}


def test_cuda_visible_devices_forms() -> None:
    text = "0,GPU-5c1a,MIG-9f2b,MIG-GPU-5c1a/1/0"
    assert sampler.parse_devices(text) == [0, "GPU-5c1a", "MIG-9f2b", "MIG-GPU-5c1a/1/0"]


def test_indexes_on_a_mixed_node_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(2)
    fleet[1].name = "NVIDIA L4"
    nvml = Nvml(FakeNvml(fleet))
    nvml.init()
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        devices.warn_if_order_differs(nvml, [1], {"CUDA_VISIBLE_DEVICES": "1"})
        devices.warn_if_order_differs(nvml, [1], {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
        devices.warn_if_order_differs(nvml, [fleet[1].uuid], {"CUDA_VISIBLE_DEVICES": fleet[1].uuid})
    [warning] = messages(caplog, logging.WARNING)
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in warning and "NVIDIA L4" in warning


# --- 6. MIG instances as themselves ------------------------------------------------------------


def mig_fleet() -> list[FakeGpu]:
    fleet = gpus(2)
    fleet[1].mig = True
    fleet[1].migs = [
        FakeMig(uuid="MIG-11111111-0000-5000-8000-000000000001", gi_id=1, memory_used=9000 * MIB),
        FakeMig(uuid="MIG-22222222-0000-5000-8000-000000000002", gi_id=2, memory_used=4000 * MIB),
    ]
    return fleet


@pytest.mark.parametrize("form", ["uuid", "old", "prefix"])
def test_a_mig_instance_is_sampled_as_itself(tmp_path: Path, form: str) -> None:
    fleet = mig_fleet()
    key = {"uuid": fleet[1].migs[1].uuid, "old": f"MIG-{fleet[1].uuid}/2/0", "prefix": "MIG-2222"}[form]
    fake = FakeNvml(fleet)
    lines = Rig(tmp_path, fake, [key]).readings(2)
    assert len(lines) == 2
    for line in lines:
        assert (line["gpu_uuid"], line["gpu_index"]) == (fleet[1].migs[1].uuid, 1)
        assert (line["mig_parent_uuid"], line["mig_gi_id"], line["mig_ci_id"]) == (fleet[1].uuid, 2, 0)
        # Its own memory, from its own handle; the card's temperature and clock; no power.
        assert (line["memory_used_mb"], line["memory_total_mb"], line["memory_reserved_mb"]) == (4000.0, 19968.0, 14.0)
        assert (line["temperature_c"], line["sm_clock_mhz"]) == (68.0, 1980.0)
        assert line["power_w"] is None and line["utilization_percent"] is None
    assert fake.counts["nvmlDeviceGetPowerUsage"] == 0  # the card's power is not the instance's


def test_two_mig_instances_of_one_gpu_are_two_gpus(tmp_path: Path) -> None:
    fleet = mig_fleet()
    visible = ",".join(m.uuid for m in fleet[1].migs)
    keys = sampler.select_gpus(None, {"CUDA_VISIBLE_DEVICES": visible})
    lines = Rig(tmp_path, FakeNvml(fleet), keys).readings(1)
    assert {(line["gpu_index"], line["gpu_uuid"], line["memory_used_mb"]) for line in lines} == {
        (1, fleet[1].migs[0].uuid, 9000.0),
        (1, fleet[1].migs[1].uuid, 4000.0),
    }


def test_a_mig_instance_that_is_gone_is_not_sampled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = "MIG-33333333-0000-5000-8000-000000000003"
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        rig = Rig(tmp_path, FakeNvml(mig_fleet()), [gone, 0])
    assert [worker.gpu.index for worker in rig.workers] == [0]
    assert any("no such GPU" in m for m in messages(caplog, logging.WARNING))
    with pytest.raises(sampler.SamplerError, match=f"no GPU to sample: GPU {gone}: no such GPU"):
        Rig(tmp_path, FakeNvml(mig_fleet()), [gone])  # nothing left: the reason is the error's one line


# --- 7. set-up after the command's start; no hung call keeps the sampler from exiting ----------


def test_the_command_does_not_wait_for_nvml_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # nvmlInit bringing every GPU up with persistence mode off, or hung: it never returns here.
    monkeypatch.setattr(sampler, "STARTUP_GRACE", 0.0)
    gate = threading.Event()
    fake = FakeNvml(gpus(2), hang={"nvmlInit": gate})
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w'); raise SystemExit(4)"]
    opts = sampler.Options(job_id="j", spool=tmp_path / "spool", interval=INTERVAL, host="h", command=command)
    try:
        with caplog.at_level(logging.WARNING, "runlytics.sampler"):
            code = sampler.run(opts, nvml_module=fake, env={})
        assert code == 4 and marker.exists()
        assert not fake.initialized and fake.counts["nvmlShutdown"] == 0
        assert "the command ended before NVML's set-up finished: nothing sampled" in messages(caplog, logging.WARNING)
    finally:
        gate.set()


def test_a_hung_reading_does_not_keep_the_sampler_from_exiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sampler, "JOIN_SECONDS", 0.0)
    gate = threading.Event()
    fake = FakeNvml(gpus(1), hang={"nvmlDeviceGetPowerUsage": gate})
    release = tmp_path / "release"
    # The command ends once the driver call hangs (or after a minute, should it never).
    script = (
        "import pathlib, time\n"
        "end = time.monotonic() + 60\n"
        f"while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < end:\n"
        "    time.sleep(0.01)\n"
    )
    opts = sampler.Options(
        job_id="j", spool=tmp_path / "spool", interval=INTERVAL, host="h", command=[sys.executable, "-c", script]
    )
    toucher = threading.Thread(target=lambda: (fake.hanging.wait(60), release.touch()))
    toucher.start()
    try:
        with caplog.at_level(logging.WARNING, "runlytics.sampler"):
            code = sampler.run(opts, nvml_module=fake, env={})
        assert code == 0 and fake.hanging.is_set()
        assert fake.initialized and fake.counts["nvmlShutdown"] == 0  # not shut down under a running call
        warnings = messages(caplog, logging.WARNING)
        assert any("still in an NVML call; not waited for" in m for m in warnings)
        assert "an NVML call has not returned; leaving NVML as it is" in warnings
    finally:
        gate.set()
        toucher.join()


def test_a_hung_shutdown_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sampler, "SHUTDOWN_SECONDS", 0.0)
    gate = threading.Event()
    fleet = gpus(1)
    fake = FakeNvml(fleet, hang={"nvmlShutdown": gate})
    stop = threading.Event()

    def stop_after_a_reading() -> None:
        end = time.monotonic() + 60
        while fleet[0].readings < 1 and time.monotonic() < end:
            time.sleep(0.01)
        stop.set()

    stopper = threading.Thread(target=stop_after_a_reading)
    stopper.start()
    opts = sampler.Options(job_id="j", spool=tmp_path / "spool", interval=INTERVAL, host="h")
    try:
        with caplog.at_level(logging.WARNING, "runlytics.sampler"):
            assert sampler.run(opts, nvml_module=fake, stop=stop, env={}) == 0
        assert fake.hanging.wait(60) and fake.counts["nvmlShutdown"] == 1
        assert "nvmlShutdown has not returned after 0 s; not waited for" in messages(caplog, logging.WARNING)
    finally:
        gate.set()
        stopper.join()


def test_stopping_during_a_hung_set_up_exits_0(tmp_path: Path) -> None:
    gate = threading.Event()
    stop = threading.Event()
    stop.set()
    opts = sampler.Options(job_id="j", spool=tmp_path / "spool", interval=INTERVAL, host="h")
    try:
        assert sampler.run(opts, nvml_module=FakeNvml(gpus(1), hang={"nvmlInit": gate}), stop=stop, env={}) == 0
    finally:
        gate.set()


# --- 8. the fake is held to the real pynvml ---------------------------------------------------


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_the_fake_offers_only_what_pynvml_has() -> None:
    fake = FakeNvml(gpus(1))
    offered = [name for name in dir(fake) if name.startswith(("nvml", "NVML"))]
    assert len(offered) > 30
    for name in offered:
        ours, theirs = getattr(fake, name), getattr(pynvml, name, None)
        assert theirs is not None, f"pynvml has no {name}"
        if name.startswith("NVMLError"):
            assert ours is theirs, name
        elif callable(theirs):
            assert parameters(ours) == parameters(theirs), name
        else:
            assert ours == theirs, name


def test_the_fake_refuses_calls_before_nvml_init() -> None:
    fake = FakeNvml(gpus(1))
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetHandleByIndex(0)
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetMemoryInfo(handle)


def test_the_fake_memory_call_answers_by_version() -> None:
    fake = FakeNvml(gpus(1))
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    v1 = fake.nvmlDeviceGetMemoryInfo(handle)
    v2 = fake.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    assert isinstance(v1, pynvml.c_nvmlMemory_t) and isinstance(v2, pynvml.c_nvmlMemory_v2_t)
    assert v1.used == v2.used + v2.reserved and v1.total == v2.total and v1.free == v2.free
    assert v2.version == pynvml.nvmlMemory_v2
    with pytest.raises(pynvml.NVMLError_ArgumentVersionMismatch):
        fake.nvmlDeviceGetMemoryInfo(handle, version=2)  # the struct version, not the number


def test_the_fake_fails_uuid_look_ups_while_a_gpu_is_lost() -> None:
    fleet = gpus(2)
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    assert fake.nvmlDeviceGetUUID(fake.nvmlDeviceGetHandleByUUID(fleet[0].uuid)) == fleet[0].uuid
    fleet[1].lost = True
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetHandleByUUID(fleet[0].uuid)
    assert fake.nvmlDeviceGetUUID(fake.nvmlDeviceGetHandleByIndex(0)) == fleet[0].uuid


def test_the_fake_mig_handles() -> None:
    fleet = mig_fleet()
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    parent = fake.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        fake.nvmlDeviceGetMemoryInfo(parent, version=pynvml.nvmlMemory_v2)
    assert fake.nvmlDeviceGetMigMode(parent) == [pynvml.NVML_DEVICE_MIG_ENABLE] * 2
    instance = fake.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    assert fake.nvmlDeviceIsMigDeviceHandle(instance).value == 1
    assert fake.nvmlDeviceIsMigDeviceHandle(parent).value == 0
    assert fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(instance) == parent
    assert fake.nvmlDeviceGetUUID(instance) == fleet[1].migs[0].uuid
    assert fake.nvmlDeviceGetMemoryInfo(instance, version=pynvml.nvmlMemory_v2).used == 9000 * MIB
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(parent, 2)  # an empty slot
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetPowerUsage(instance)
