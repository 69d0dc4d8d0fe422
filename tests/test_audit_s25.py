"""Audit 25: what independent readers of the contracts, the real bindings and the API found.

1. Sampler: a reading in which every query got a field error ("not supported", "no permission")
   was written as a line of nulls, which then hid the job's step readings in job_resources
   (docs/sampler.md: a reading in which not one query answered is skipped).
2. Sampler: a non-ASCII digit in --gpus or CUDA_VISIBLE_DEVICES ('²') was a traceback; CUDA reads
   ASCII digits only.
3. Sampler: one MIG slot refused ("no permission": another container's instance) hid every
   instance of its GPU; it hides only itself now.
4. The fake NVML answers as nvml.h says where it did not: the MIG slot count of a GPU not in MIG
   mode (0), a MIG handle's index (its slot), the instance ids of a whole GPU (not supported).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pynvml
import pytest
from fake_nvml import MIB, FakeMig, FakeNvml, gpus
from test_sampler import run_cli
from test_sampler_nvml import Rig, messages

from runlytics.sampler import devices
from runlytics.sampler.nvml import Nvml

READING_CALLS = (
    "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetTemperatureV",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
)


# --- 1. a reading of no answer is skipped, whatever the errors --------------------------------


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION])
def test_a_reading_where_every_query_is_unanswerable_writes_no_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    fleet = gpus(2)
    fleet[0].fail = dict.fromkeys(READING_CALLS, code)
    rig = Rig(tmp_path, FakeNvml(fleet))
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        lines = rig.readings(3)
    assert [line["gpu_index"] for line in lines] == [1, 1, 1]  # no line of nulls for GPU 0
    worker = rig.workers[0]
    assert worker.transient == 3 and worker.failures == 1  # skipped twice, then backed off
    name = type(pynvml.NVMLError(code)).__name__
    warned = messages(caplog, logging.WARNING)
    assert warned[0] == f"GPU 0 ({fleet[0].uuid}): reading skipped (TransientError: no query answered ({name}))"
    assert not any("null" in message for message in warned)  # no field reported as null


def test_a_reading_with_one_answer_is_still_written(tmp_path: Path) -> None:
    fleet = gpus(1)
    fleet[0].fail = dict.fromkeys(READING_CALLS, pynvml.NVML_ERROR_NOT_SUPPORTED)
    del fleet[0].fail["nvmlDeviceGetTemperatureV"]  # one query answers: the line stands
    lines = Rig(tmp_path, FakeNvml(fleet)).readings(1)
    assert len(lines) == 1 and lines[0]["temperature_c"] == 68.0 and lines[0]["utilization_percent"] is None


# --- 2. only ASCII digits are GPU indexes ------------------------------------------------------


def test_a_non_ascii_digit_in_gpus_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", "--job-id", "j", "--gpus", "\u00b2", "--spool", str(tmp_path / "s")]
    assert run_cli(monkeypatch, FakeNvml(gpus(3)), argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'\u00b2' is neither a GPU index nor a UUID" in err[0]


def test_a_non_ascii_digit_ends_cuda_visible_devices(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        assert devices.parse_devices("1,\u0663,0") == [1]  # Arabic-Indic three is not CUDA's 3
    assert messages(caplog, logging.WARNING) == [
        "CUDA_VISIBLE_DEVICES=1,\u0663,0: GPUs from '\u0663' on are not sampled (CUDA ignores them)"
    ]


# --- 3. a refused MIG slot hides only itself ---------------------------------------------------


def refused_slot_fleet() -> list:
    fleet = gpus(1, mig=True)
    fleet[0].migs = [
        FakeMig(uuid="MIG-0the0r-0000-5000-8000-000000000001", gi_id=1, refused=True),
        FakeMig(uuid="MIG-00000ur-0000-5000-8000-000000000002", gi_id=2, memory_used=4000 * MIB),
    ]
    return fleet


def test_a_refused_mig_slot_leaves_the_other_instances_sampled(tmp_path: Path) -> None:
    fleet = refused_slot_fleet()
    rig = Rig(tmp_path, FakeNvml(fleet), keys=[fleet[0].migs[1].uuid])
    lines = rig.readings(2)
    assert [(line["gpu_uuid"], line["memory_used_mb"], line["mig_gi_id"]) for line in lines] == [
        (fleet[0].migs[1].uuid, 4000.0, 2)
    ] * 2


def test_the_instance_in_a_refused_slot_is_looked_up_again_later(caplog: pytest.LogCaptureFixture) -> None:
    fleet = refused_slot_fleet()
    nvml = Nvml(FakeNvml(fleet))
    nvml.init()
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        found = devices.resolve(nvml, [fleet[0].migs[0].uuid])
    assert [gpu.device for gpu in found] == [None]
    assert messages(caplog, logging.WARNING) == [
        f"GPU {fleet[0].migs[0].uuid}: can't be read now (NVMLError_NoPermission: Insufficient Permissions);"
        " trying again later"
    ]
    fleet[0].migs[0].refused = False  # its container gone, say
    devices.attach(nvml, found[0])
    assert found[0].uuid == fleet[0].migs[0].uuid


# --- 4. the fake as nvml.h says ----------------------------------------------------------------


def test_the_fake_mig_queries_answer_as_nvml_h_says() -> None:
    fleet = gpus(2)
    fleet[1].mig, fleet[1].mig_uuids = True, ("MIG-7e57-0001", "MIG-7e57-0002")
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    whole, card = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(1)
    assert fake.nvmlDeviceGetMaxMigDeviceCount(whole) == 0  # "zero if MIG is not supported or enabled"
    assert fake.nvmlDeviceGetMaxMigDeviceCount(card) == 7
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(whole, 0)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(card, 7)
    second = fake.nvmlDeviceGetMigDeviceHandleByIndex(card, 1)
    assert fake.nvmlDeviceGetIndex(second) == 1  # a MIG handle's index is its slot
    assert fake.nvmlDeviceGetIndex(card) == 1
    for call in (fake.nvmlDeviceGetGpuInstanceId, fake.nvmlDeviceGetComputeInstanceId):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            call(whole)
