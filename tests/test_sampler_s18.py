"""The sampler's session-18 audit (against the real pynvml over a stub libnvidia-ml).

- One query failing with an error other than "not supported", "no permission" or "function not
  found" (unknown, invalid argument, deprecated, no data, timeout) nulls that query's fields:
  the rest of the line is written, the error logged once. The GPU is lost only when a query
  says so (GpuIsLost, …) or no query answers.
- A MIG instance's clocks-event reasons are its GPU's, which answers them in MIG mode.
- Fallbacks to older NVML calls are logged once, naming the binding.
- nvmlInit's NVML/RM version mismatch says "reboot", not "no driver"; "no GPU to sample" says
  why, and a command run unsampled is not announced as "sampling no GPU".
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pynvml
import pytest
from fake_nvml import FakeNvml, gpus
from test_sampler import options, run_cli, sample_for
from test_sampler_nvml import Rig, messages

from runlytics.sampler import loop as sampler

# Every NVML function of a reading of a whole GPU (either name of the versioned ones).
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


# --- 1. one query's error nulls its fields, not the GPU's line ----------------------------------


@pytest.mark.parametrize(
    "code",
    [
        pynvml.NVML_ERROR_UNKNOWN,  # nvidia-smi's "power.draw [Unknown Error]"
        pynvml.NVML_ERROR_INVALID_ARGUMENT,
        pynvml.NVML_ERROR_DEPRECATED,
        pynvml.NVML_ERROR_NO_DATA,
        pynvml.NVML_ERROR_TIMEOUT,
    ],
)
def test_one_querys_error_nulls_its_field_and_the_line_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    fleet = gpus(2)
    fleet[1].fail = {"nvmlDeviceGetPowerUsage": code}
    rig = Rig(tmp_path, FakeNvml(fleet))
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        lines = rig.readings(4)
    ones = [line for line in lines if line["gpu_index"] == 1]
    assert len(ones) == 4 and len(lines) == 8  # every reading of GPU 1 written
    for line in ones:
        assert line["power_w"] is None  # null, never 0
        assert (line["memory_used_mb"], line["temperature_c"], line["sm_clock_mhz"]) == (17200.0, 68.0, 1980.0)
        assert (line["utilization_percent"], line["clocks_event_reasons"]) == (97.0, 4)
    worker = rig.workers[1]
    assert worker.gpu.device is not None and worker.failures == 0 and worker.transient == 0  # kept, no back-off
    error = pynvml.NVMLError(code)  # as pynvml raises it
    # One warning naming the GPU, the field and the error, however many readings.
    assert messages(caplog, logging.WARNING) == [
        f"GPU 1 ({fleet[1].uuid}): power_w null ({type(error).__name__}: {error})"
    ]


def test_a_gpu_whose_every_query_fails_is_still_lost(tmp_path: Path) -> None:
    fleet = gpus(2)
    fleet[0].fail = dict.fromkeys(READING_CALLS, pynvml.NVML_ERROR_UNKNOWN)
    rig = Rig(tmp_path, FakeNvml(fleet))
    lines = rig.readings(2)
    assert {line["gpu_index"] for line in lines} == {1}  # no line of all nulls for GPU 0
    worker = rig.workers[0]
    assert worker.gpu.device is None and worker.failures >= 1  # handle dropped, backed off


def test_one_query_saying_the_gpu_is_lost_fails_the_reading(tmp_path: Path) -> None:
    fleet = gpus(1)
    fleet[0].fail = {"nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_GPU_IS_LOST}
    rig = Rig(tmp_path, FakeNvml(fleet))
    assert rig.readings(2) == []
    assert rig.workers[0].gpu.device is None and rig.workers[0].failures >= 1


def test_a_transient_error_of_every_query_skips_the_reading(tmp_path: Path) -> None:
    fleet = gpus(1)
    fleet[0].transient_at = {1}  # every call of its second reading times out
    rig = Rig(tmp_path, FakeNvml(fleet))
    lines = rig.readings(3)
    assert len(lines) == 2 and rig.workers[0].gpu.device is not None and rig.workers[0].failures == 0


def test_a_mig_instance_keeps_its_line_when_a_card_query_fails(tmp_path: Path) -> None:
    fleet = gpus(1, mig=True, mig_uuids=("MIG-7e57-0001",))
    fleet[0].fail = {"nvmlDeviceGetClockInfo": pynvml.NVML_ERROR_UNKNOWN}
    rig = Rig(tmp_path, FakeNvml(fleet), keys=["MIG-7e57-0001"])
    lines = rig.readings(2)
    assert [(line["gpu_uuid"], line["sm_clock_mhz"], line["memory_used_mb"]) for line in lines] == [
        ("MIG-7e57-0001", None, 9000.0)
    ] * 2


def test_the_fakes_fault_is_raised_as_pynvml_raises_it() -> None:
    fleet = gpus(1)
    fleet[0].fail = {"nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_UNKNOWN}
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    with pytest.raises(pynvml.NVMLError) as caught:
        fake.nvmlDeviceGetPowerUsage(fake.nvmlDeviceGetHandleByIndex(0))
    with pytest.raises(pynvml.NVMLError) as real:
        pynvml._nvmlCheckReturn(pynvml.NVML_ERROR_UNKNOWN)
    assert (type(caught.value), caught.value.args, str(caught.value)) == (
        type(real.value),
        real.value.args,
        str(real.value),
    )


def test_a_memory_query_failing_in_v2_and_v1_nulls_memory_and_keeps_v2(tmp_path: Path) -> None:
    fleet = gpus(1)
    fleet[0].fail = dict.fromkeys(("nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetMemoryInfo"), pynvml.NVML_ERROR_UNKNOWN)
    fake = FakeNvml(fleet)
    rig = Rig(tmp_path, fake)
    lines = rig.readings(4)
    assert [(line["memory_used_mb"], line["power_w"]) for line in lines] == [(None, 301.2)] * 4
    # Both calls failing says nothing of v2: it is asked each time, never given up for v1.
    assert rig.workers[0].memory.v2 and fake.counts["nvmlDeviceGetMemoryInfo_v2"] == 4


# --- 3. a MIG instance's clocks-event reasons are its GPU's (docs/sampler.md) -------------------


def test_a_mig_instance_reports_its_cards_clocks_event_reasons(tmp_path: Path) -> None:
    # nvml.h limits only utilization on a MIG-enabled GPU; nvidia-smi -q of an A100 in MIG mode
    # shows its clocks-event ("throttle") reasons. Not yet checked on a real GPU through NVML.
    fleet = gpus(1, mig=True, mig_uuids=("MIG-7e57-0001",))
    fleet[0].reasons = 0x1  # GPU idle
    [line] = Rig(tmp_path, FakeNvml(fleet), keys=["MIG-7e57-0001"]).readings(1)
    assert line["clocks_event_reasons"] == 0x1 and line["temperature_c"] == 68.0 and line["sm_clock_mhz"] == 1980.0
    assert line["utilization_percent"] is None and line["power_w"] is None  # no per-instance figure; shared


def test_the_fakes_mig_handle_does_not_answer_card_wide_queries() -> None:
    fleet = gpus(1, mig=True, mig_uuids=("MIG-7e57-0001",))
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    card = fake.nvmlDeviceGetHandleByIndex(0)
    instance = fake.nvmlDeviceGetMigDeviceHandleByIndex(card, 0)
    assert fake.nvmlDeviceGetCurrentClocksEventReasons(card) == 4  # the card in MIG mode answers
    for call in (fake.nvmlDeviceGetCurrentClocksEventReasons, fake.nvmlDeviceGetPowerUsage):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            call(instance)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetUtilizationRates(card)


# --- 4. a fallback to an older call is logged, once ----------------------------------------------


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in messages(caplog, logging.INFO) if " comes from " in m or " come from " in m]


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("old_binding", "this binding has no nvmlDeviceGetTemperatureV"),
        ("old_driver", "the driver's NVML can't answer nvmlDeviceGetTemperatureV (NVMLError_FunctionNotFound)"),
    ],
)
def test_the_temperature_fallback_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, why: str
) -> None:
    rig = Rig(tmp_path, FakeNvml(gpus(2), **{kind: True}))
    with caplog.at_level(logging.INFO, "runlytics.sampler"):
        lines = rig.readings(3)
    assert [line["temperature_c"] for line in lines] == [68.0] * 6
    temperature = [m for m in fallbacks(caplog) if "temperature_c" in m]
    assert temperature == [f"FakeNvml; {why}: temperature_c comes from the deprecated nvmlDeviceGetTemperature"]


def test_the_clocks_event_reasons_fallback_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path, FakeNvml(gpus(2), old_driver=True))
    with caplog.at_level(logging.INFO, "runlytics.sampler"):
        lines = rig.readings(3)
    assert [line["clocks_event_reasons"] for line in lines] == [4] * 6
    assert [m for m in fallbacks(caplog) if "clocks_event_reasons" in m] == [
        "FakeNvml; the driver's NVML has no nvmlDeviceGetCurrentClocksEventReasons (NVMLError_FunctionNotFound): "
        "clocks_event_reasons come from nvmlDeviceGetCurrentClocksThrottleReasons (its name before R535)"
    ]


def test_no_fallback_is_logged_where_the_newer_calls_answer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if not hasattr(pynvml, "nvmlDeviceGetTemperatureV"):
        pytest.skip("this pynvml (12.535) has no nvmlDeviceGetTemperatureV")
    rig = Rig(tmp_path, FakeNvml(gpus(1)))
    with caplog.at_level(logging.INFO, "runlytics.sampler"):
        rig.readings(2)
    assert fallbacks(caplog) == []


def test_the_log_names_the_real_binding_and_its_version() -> None:
    from importlib.metadata import version

    from runlytics.sampler.nvml import Nvml

    assert Nvml(pynvml)._binding == f"pynvml (nvidia-ml-py {version('nvidia-ml-py')})"


# --- 5. messages that say what is wrong --------------------------------------------------------


def test_a_driver_upgraded_without_a_reboot_is_told_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeNvml(gpus(1), init_error=pynvml.NVMLError_LibRmVersionMismatch)
    code = run_cli(monkeypatch, fake, ["sample", "--job-id", "j", "--spool", str(tmp_path / "s")])
    message = capsys.readouterr().err
    assert code == 3 and "\n" not in message.rstrip()
    assert "different versions, as after a driver upgrade without a reboot" in message
    assert "reboot, or reload the NVIDIA kernel modules" in message
    assert "not installed" not in message


@pytest.mark.parametrize(
    ("fleet", "env", "why"),
    [
        (0, {}, "NVML found no GPU on this machine (nvmlDeviceGetCount: 0)"),
        (2, {"CUDA_VISIBLE_DEVICES": ""}, "CUDA_VISIBLE_DEVICES='' names no GPU"),
        (2, {"CUDA_VISIBLE_DEVICES": "-1"}, "CUDA_VISIBLE_DEVICES='-1' names no GPU"),
        (2, {"CUDA_VISIBLE_DEVICES": "5"}, "CUDA GPU 5: no such GPU (this process may use 2 of the 2 GPUs)"),
    ],
)
def test_no_gpu_to_sample_says_why(tmp_path: Path, fleet: int, env: dict[str, str], why: str) -> None:
    with pytest.raises(sampler.SamplerError) as caught:
        sampler.run(options(tmp_path), nvml_module=FakeNvml(gpus(fleet)), env=env)
    assert str(caught.value) == f"no GPU to sample: {why}"


def test_a_command_run_unsampled_is_not_announced_as_sampling(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    opts = options(tmp_path, command=[sys.executable, "-c", "pass"])
    with caplog.at_level(logging.INFO, "runlytics.sampler"):
        code = sampler.run(opts, nvml_module=FakeNvml(gpus(0)), env={})
    assert code == 0
    said = [r.getMessage() for r in caplog.records]
    assert not any(m.startswith("sampling ") for m in said)
    assert (
        "no GPU to sample: NVML found no GPU on this machine (nvmlDeviceGetCount: 0); the command runs unsampled"
        in said
    )


# --- 2. a container given a MIG instance (NVIDIA_VISIBLE_DEVICES) -------------------------------


@pytest.mark.parametrize(
    ("env", "keys"),
    [
        ({"NVIDIA_VISIBLE_DEVICES": "MIG-7e57-0002"}, ["MIG-7e57-0002"]),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-0000, MIG-7e57-0002"}, ["GPU-0000", "MIG-7e57-0002"]),
        ({"NVIDIA_VISIBLE_DEVICES": "MIG-GPU-0000/1/0"}, ["MIG-GPU-0000/1/0"]),
        ({"NVIDIA_VISIBLE_DEVICES": "MIG-7e57-0002", "CUDA_VISIBLE_DEVICES": "0"}, [0]),  # CUDA's wins
        # Nothing to choose among what NVML sees; indexes are the host's, renumbered in the container.
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": ""}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "1,3"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "0:1"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "1,MIG-7e57-0002"}, None),
    ],
)
def test_nvidia_visible_devices_uuids_are_the_selection(env: dict[str, str], keys: list[object] | None) -> None:
    assert sampler.select_gpus(None, env) == keys


def test_a_container_given_one_mig_instance_samples_that_instance(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # NVIDIA's container toolkit sets NVIDIA_VISIBLE_DEVICES=MIG-…, not CUDA_VISIBLE_DEVICES:
    # the card's power, sampled by each such job, would be counted once per job.
    fleet = gpus(1, mig=True, mig_uuids=("MIG-7e57-0001", "MIG-7e57-0002"))
    env = {"NVIDIA_VISIBLE_DEVICES": "MIG-7e57-0002"}
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        code, lines = sample_for(0.1, options(tmp_path), FakeNvml(fleet), env=env)
    assert code == 0 and lines
    for line in lines:
        assert (line["gpu_uuid"], line["mig_parent_uuid"], line["mig_gi_id"]) == ("MIG-7e57-0002", fleet[0].uuid, 2)
        assert line["power_w"] is None and line["memory_used_mb"] == 9000.0
    assert messages(caplog, logging.WARNING) == []


def test_a_whole_gpu_in_mig_mode_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(2)
    fleet[1].mig, fleet[1].mig_uuids = True, ("MIG-7e57-0001",)
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        code, lines = sample_for(0.1, options(tmp_path), FakeNvml(fleet, root=True), env={})
    assert code == 0 and {line["gpu_uuid"] for line in lines} == {fleet[0].uuid, fleet[1].uuid}
    assert messages(caplog, logging.WARNING) == [
        f"GPU 1 ({fleet[1].uuid}) is in MIG mode and sampled whole: its power_w is the card's, shared by the jobs "
        "of all its MIG instances (each job that samples the card counts it again), and its utilization is null; "
        "to sample a job's own instance, give its MIG-… UUID (--gpus or CUDA_VISIBLE_DEVICES; nvidia-smi -L "
        "lists them)"
    ]


# --- 6. the device check is in the repository, and the docs send a GPU machine to it ------------


def test_the_device_check_script_is_there_and_parses() -> None:
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    script = repo / "bench" / "device_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "pip" not in text and "curl" not in text and "wget" not in text  # installs nothing, no network
    assert "bash bench/device_check.sh" in (repo / "docs" / "sampler.md").read_text()
