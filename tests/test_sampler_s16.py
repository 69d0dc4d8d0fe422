"""The sampler's session-16 audit: one GPU's failed v2 memory call, and GPUs NVML refuses.

- NVML answers "unknown error" (any unexpected error) to a call now and then: one such answer
  of one GPU's v2 memory call skips that GPU's reading, and every GPU stays on v2's figures. Only
  a GPU whose v2 call keeps failing while v1 answers (WSL's driver) reads v1, alone.
- Under a cgroup device limit (Slurm's ConstrainDevices), NVML counts every GPU of the node and
  refuses the handles of those the process may not use ("no permission", nvml.h): such a GPU is
  not the process's, left out in one line and never tried again; CUDA numbers only the others,
  so CUDA_VISIBLE_DEVICES=0 is the first GPU the process may use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fake_nvml import FakeNvml, gpus, nvml_error
from test_sampler import by_gpu, options, sample_for
from test_sampler_nvml import Rig, messages

from runlytics.sampler import devices
from runlytics.sampler import loop as sampler
from runlytics.sampler.nvml import Nvml

MIB = 2**20
V2 = (17200.0, 523.0)  # the fake's (memory_used_mb, memory_reserved_mb) by v2
V1 = (17723.0, None)  # by v1: used counts the reserved memory; reserved unknown


def memory(line: dict[str, Any]) -> tuple[float, float | None]:
    return line["memory_used_mb"], line["memory_reserved_mb"]


# --- one Unknown of one GPU's v2 memory call --------------------------------------------------


def test_one_unknown_v2_answer_leaves_every_gpu_on_v2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(2)
    fleet[0].v2_unknown_at = {1}  # its second reading's v2 call; v1, asked next, answers
    rig = Rig(tmp_path, FakeNvml(fleet))
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        lines = by_gpu(rig.readings(4))
    # GPU 0's failed reading is skipped (its v1 figures would mean something else); the others,
    # before and after, and GPU 1's, are v2's.
    assert [memory(line) for line in lines[0]] == [V2] * 3
    assert [memory(line) for line in lines[1]] == [V2] * 4
    assert not any("v2 memory query fails" in m or "can't answer" in m for m in messages(caplog, logging.WARNING))
    skipped = [m for m in messages(caplog, logging.WARNING) if "reading skipped" in m]
    assert len(skipped) == 1 and "NVMLError_Unknown" in skipped[0]
    assert rig.workers[0].gpu.device is not None and rig.workers[0].failures == 0  # kept, not backed off


def test_a_gpu_whose_v2_call_always_fails_reads_v1_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # WSL's driver has the v2 call and fails it every time, while v1 answers.
    fleet = gpus(2)
    fleet[0].v2_unknown_at = set(range(1000))
    fake = FakeNvml(fleet)
    rig = Rig(tmp_path, fake)
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        lines = by_gpu(rig.readings(6))
    limit = 3  # nvml.MEMORY_V2_UNKNOWN_LIMIT: the readings before it are skipped
    assert [memory(line) for line in lines[0]] == [V1] * (6 - limit + 1)
    assert [memory(line) for line in lines[1]] == [V2] * 6
    given_up = [m for m in messages(caplog, logging.WARNING) if "v2 memory query fails" in m]
    assert given_up == [
        f"GPU 0 ({fleet[0].uuid}): NVML's v2 memory query fails on this GPU (NVMLError_Unknown: Unknown Error): "
        "its memory_used_mb includes the driver's reserved memory from now on, as nvidia-smi's memory.used then "
        "does, and its memory_reserved_mb is null"
    ]
    assert fake.counts["nvmlDeviceGetMemoryInfo_v2"] == limit + 6  # GPU 0's tries, and GPU 1's readings
    assert rig.workers[0].failures == 0  # never backed off


def test_an_unknown_v2_answer_and_a_v1_not_supported_give_null_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # v1 saying "not supported" is a field error, as it would be alone: memory is null and the
    # rest of the line is written, on every reading; the GPU is not lost.
    fleet = gpus(2)
    fleet[0].v2_unknown_at, fleet[0].v1_memory_not_supported = set(range(1000)), True
    fake = FakeNvml(fleet)
    rig = Rig(tmp_path, fake)
    with caplog.at_level(logging.INFO, "runlytics.sampler"):
        lines = by_gpu(rig.readings(5))
    nulled = ("memory_used_mb", "memory_total_mb", "memory_reserved_mb")
    assert len(lines[0]) == len(lines[1]) == 5
    for line, other in zip(lines[0], lines[1], strict=True):
        assert [line[f] for f in nulled] == [None, None, None]
        rest = [f for f in line if f not in nulled and f not in ("ts", "gpu_uuid", "gpu_index")]
        assert {f: line[f] for f in rest} == {f: other[f] for f in rest}  # utilization, temperature, power, …
        assert memory(other) == V2
    assert all(w.failures == 0 and w.transient == 0 for w in rig.workers)  # no back-off
    assert fake.counts["nvmlDeviceGetMemoryInfo_v2"] == 3 + 5  # GPU 0 gave v2 up after its limit
    said = f"GPU 0 ({fleet[0].uuid}): memory_used_mb, memory_total_mb, memory_reserved_mb null"
    assert f"{said} (NVMLError_NotSupported: Not Supported)" in messages(caplog, logging.INFO)  # once


# --- GPUs NVML refuses to this process ------------------------------------------------------------


def refused_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in messages(caplog, logging.WARNING) if "not this process's" in m]


def test_every_gpu_mode_leaves_a_refused_gpu_out_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(2)
    fleet[0].refused = True
    fake = FakeNvml(fleet)
    with caplog.at_level(logging.INFO, "runlytics.sampler"):
        rig = Rig(tmp_path, fake)  # keys None: every GPU, as the sampler's default
        lines = rig.readings(6)  # back-offs ignored: a refused GPU would be tried at each
    assert set(by_gpu(lines)) == {1} and len(lines) == 6
    assert messages(caplog, logging.WARNING) == [
        "NVML GPU 0: not this process's (NVML refuses its handle with NVMLError_NoPermission, as under a "
        "cgroup device limit such as Slurm's ConstrainDevices); not sampled"
    ]
    assert fake.counts["nvmlDeviceGetHandleByIndex"] == 2  # each GPU once, at set-up: GPU 0 not tried again


def test_readings_of_a_refused_gpu_are_never_tried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(3)
    fleet[0].refused = fleet[2].refused = True
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        rig = Rig(tmp_path, FakeNvml(fleet))
        lookups = rig.fake.lookups
        lines = rig.readings(8)
    assert [w.gpu.index for w in rig.workers] == [1] and len(lines) == 8
    assert rig.fake.lookups == lookups
    assert len(refused_warnings(caplog)) == 1 and "NVML GPUs 0, 2:" in refused_warnings(caplog)[0]


def test_cuda_visible_devices_0_is_the_first_gpu_the_process_may_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = gpus(2)
    fleet[0].refused = True  # the node's NVML GPU 0 is another job's
    fleet[1].memory_used, fleet[1].temperature, fleet[1].power_mw = 30_000 * MIB, 55, 250_000
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        code, lines = sample_for(0.3, options(tmp_path), FakeNvml(fleet), env={"CUDA_VISIBLE_DEVICES": "0"})
    assert code == 0 and lines
    for line in lines:
        # The job's CUDA device 0, under NVML's index (gpu_index is NVML's, docs/sampler.md) and its UUID.
        assert (line["gpu_uuid"], line["gpu_index"]) == (fleet[1].uuid, 1)
        assert (line["memory_used_mb"], line["temperature_c"], line["power_w"]) == (30_000.0, 55.0, 250.0)
    # said once (a loaded machine may add a slow reading's warning: not counted here)
    assert len(refused_warnings(caplog)) == 1


def test_cuda_indexes_count_only_the_gpus_the_process_may_use(tmp_path: Path) -> None:
    fleet = gpus(4)
    fleet[0].refused = fleet[2].refused = True
    nvml = Nvml(FakeNvml(fleet))
    nvml.init()
    found = devices.resolve(nvml, [1, 0, 7], cuda_indexes=True)  # CUDA 7: none
    assert [(g.index, g.uuid) for g in found] == [(3, fleet[3].uuid), (1, fleet[1].uuid)]
    # --gpus indexes are NVML's: a refused one is left out, the others are as given.
    assert [g.index for g in devices.resolve(nvml, [1, 0, 3])] == [1, 3]


@pytest.mark.parametrize("env", [{}, {"CUDA_VISIBLE_DEVICES": "0"}])
def test_when_every_gpu_is_refused_the_sampler_says_so_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, env: dict[str, str]
) -> None:
    fake = FakeNvml(gpus(2, refused=True))
    # runlytics sample prints the error as its one line on stderr, and exits 2.
    with caplog.at_level(logging.WARNING, "runlytics.sampler"), pytest.raises(sampler.SamplerError) as caught:
        sample_for(0.3, options(tmp_path), fake, env=env)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("no GPU to sample: ")
    assert message.endswith(
        "NVML GPUs 0, 1: not this process's (NVML refuses their handles with NVMLError_NoPermission, as under a "
        "cgroup device limit such as Slurm's ConstrainDevices)"
    )
    assert messages(caplog, logging.WARNING) == []  # the one line is the error's


def test_no_permission_from_mig_enumeration_is_not_a_refused_gpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the GPU's handle look-up says whether the GPU is this process's; its MIG instances
    # failing to be listed is a GPU that can't be asked now: kept, and found later.
    fleet = gpus(2)
    fleet[1].mig, fleet[1].mig_uuids = True, ("MIG-7e57-0001",)
    fake = FakeNvml(fleet)
    nvml = Nvml(fake)
    nvml.init()

    def refuse(device: Any, index: int) -> Any:
        raise nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, "runlytics.sampler"):
        patch.setattr(fake, "nvmlDeviceGetMigDeviceHandleByIndex", refuse)
        found = devices.resolve(nvml, ["MIG-7e57-0001"])
    assert [(gpu.key, gpu.device) for gpu in found] == [("MIG-7e57-0001", None)]
    assert messages(caplog, logging.WARNING) == [
        "GPU MIG-7e57-0001: can't be read now (NVMLError_NoPermission: Insufficient Permissions); trying again later"
    ]
    devices.attach(nvml, found[0])  # the instances can be listed again
    assert found[0].uuid == "MIG-7e57-0001" and found[0].index == 1


# --- the fake raises what pynvml raises ------------------------------------------------------


def raised(call: Any, *args: Any, **kwargs: Any) -> pynvml.NVMLError:
    with pytest.raises(pynvml.NVMLError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_the_fake_raises_errors_as_pynvml_does() -> None:
    fleet = gpus(3)
    fleet[1].refused, fleet[2].v2_unknown_at, fleet[2].transient_at = True, {0}, {1}
    fake = FakeNvml(fleet, missing={"nvmlDeviceGetPowerUsage"})
    errors = [raised(fake.nvmlDeviceGetCount)]  # before nvmlInit
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(2)
    errors += [
        raised(fake.nvmlDeviceGetHandleByIndex, 1),
        raised(fake.nvmlDeviceGetHandleByIndex, 3),
        raised(fake.nvmlDeviceGetMemoryInfo, handle, version=pynvml.nvmlMemory_v2),
        raised(fake.nvmlDeviceGetMemoryInfo, handle),
        raised(fake.nvmlDeviceGetPowerUsage, handle),
    ]
    codes = [
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_INVALID_ARGUMENT,
        pynvml.NVML_ERROR_UNKNOWN,
        pynvml.NVML_ERROR_TIMEOUT,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
    ]
    for error, code in zip(errors, codes, strict=True):
        real = raised(pynvml._nvmlCheckReturn, code)  # how pynvml turns a return code into an error
        assert (type(error), error.args, error.value, str(error)) == (type(real), real.args, real.value, str(real))
    assert type(errors[1]) is pynvml.NVMLError_NoPermission and errors[1].args == (pynvml.NVML_ERROR_NO_PERMISSION,)
