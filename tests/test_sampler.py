"""The NVML sampler (``runlytics sample``) against a fake NVML that fails like real GPUs do."""

from __future__ import annotations

import ctypes.util
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fake_nvml import FakeNvml, gpus

from runlytics import cli
from runlytics.sampler import loop as sampler
from runlytics.sampler.nvml import Nvml
from runlytics.sampler.spool import Spool, file_name

KEYS = {
    "ts",
    "host",
    "job_id",
    "gpu_index",
    "gpu_uuid",
    "utilization_percent",
    "memory_used_mb",
    "memory_total_mb",
    "temperature_c",
    "power_w",
    "sm_clock_mhz",
    "clocks_event_reasons",
    "memory_reserved_mb",
    "mig_parent_uuid",
    "mig_gi_id",
    "mig_ci_id",
}
INTERVAL = 0.05


def options(tmp_path: Path, **overrides: Any) -> sampler.Options:
    values: dict[str, Any] = {"job_id": "job-1", "spool": tmp_path / "spool", "interval": INTERVAL, "host": "node-01"}
    values.update(overrides)
    return sampler.Options(**values)


def sample_for(
    seconds: float, opts: sampler.Options, fake: FakeNvml, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Run the sampler until-stopped mode for ``seconds``, and on until its first line is in the
    spool (at most 10 s more: a loaded machine may not reach a line in ``seconds``); its exit
    code and spool lines."""
    stop, done = threading.Event(), threading.Event()

    def stopper() -> None:
        if done.wait(seconds):
            return
        deadline = time.monotonic() + 10
        while not done.is_set() and time.monotonic() < deadline and not _has_line(opts.spool):
            done.wait(0.02)
        stop.set()

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    try:
        code = sampler.run(opts, nvml_module=fake, stop=stop, env=env or {})
    finally:
        done.set()
        thread.join()
    return code, spool_lines(opts.spool)


def _has_line(spool: Path) -> bool:
    return any(b"\n" in path.read_bytes() for path in spool.glob("*.jsonl"))


def spool_lines(spool: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(spool.glob("*.jsonl")):
        assert path.read_text().endswith("\n")
        lines.extend(spool_lines_of(path))
    return lines


def spool_lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lines_written(spool: Path) -> int:
    """Complete lines in the spool so far (read while the sampler writes)."""
    return sum(p.read_bytes().count(b"\n") for p in spool.glob("*.jsonl"))


def lines_per_gpu(spool: Path) -> dict[int, int]:
    """Complete lines of each GPU index in the spool so far."""
    counts: dict[int, int] = {}
    for path in spool.glob("*.jsonl"):
        for line in path.read_bytes().split(b"\n")[:-1]:
            index = json.loads(line)["gpu_index"]
            counts[index] = counts.get(index, 0) + 1
    return counts


def when_written(spool: Path, lines: int, then: Any, *, gpus: int = 0, per_gpu: int = 0) -> threading.Thread:
    """A thread that calls ``then`` once the spool holds ``lines`` lines (and ``per_gpu`` lines of
    each of ``gpus`` GPUs): by what was written, not by a wall-clock guess that a loaded machine
    would miss."""

    def written() -> bool:
        if lines_written(spool) < lines:
            return False
        counts = lines_per_gpu(spool)
        return len(counts) >= gpus and min(counts.values(), default=0) >= per_gpu

    def wait() -> None:
        deadline = time.monotonic() + 120  # a hung sampler fails the test instead of hanging it
        while not written() and time.monotonic() < deadline:
            time.sleep(0.01)
        then()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def by_gpu(lines: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        out.setdefault(line["gpu_index"], []).append(line)
    return out


# --- the lines --------------------------------------------------------------------------------


def test_lines_follow_the_contract(tmp_path: Path) -> None:
    fleet = gpus(3)
    fleet[1].power_mw = None  # a board without power readings
    fleet[2].mig = True  # MIG mode: no utilization; memory for root only; the card's reasons
    code, lines = sample_for(0.4, options(tmp_path), FakeNvml(fleet))

    assert code == 0
    assert set(by_gpu(lines)) == {0, 1, 2}
    for line in lines:
        assert set(line) == KEYS
        assert isinstance(line["ts"], float) and abs(line["ts"] - time.time()) < 60
        assert (line["host"], line["job_id"]) == ("node-01", "job-1")
        assert line["gpu_uuid"] == fleet[line["gpu_index"]].uuid
        assert line["mig_parent_uuid"] is None and line["mig_gi_id"] is None and line["mig_ci_id"] is None
        memory = (line["memory_used_mb"], line["memory_total_mb"], line["memory_reserved_mb"])
        assert memory == ((None, None, None) if line["gpu_index"] == 2 else (17200.0, 81559.0, 523.0))
        assert line["temperature_c"] == 68.0 and line["sm_clock_mhz"] == 1980.0
    first = {i: rows[0] for i, rows in by_gpu(lines).items()}
    assert first[0]["power_w"] == pytest.approx(301.2) and first[0]["utilization_percent"] == 97.0
    assert first[0]["clocks_event_reasons"] == 4
    assert first[1]["power_w"] is None and first[1]["utilization_percent"] == 97.0
    assert first[2]["utilization_percent"] is None and first[2]["clocks_event_reasons"] == 4
    assert first[2]["power_w"] == pytest.approx(301.2)


def test_one_file_per_host_and_utc_hour(tmp_path: Path) -> None:
    assert file_name("node-01", 1762423200.5) == "node-01-2025110610.jsonl"  # 2025-11-06 10:00:00.5 UTC
    assert file_name("node-01", 1762423199.9) == "node-01-2025110609.jsonl"
    assert file_name("a/b c", 0) == "a_b_c-1970010100.jsonl"
    spool = Spool(tmp_path, "node-01", None)
    for ts in (1762423199.0, 1762423200.5, 1762426799.0, 1762426800.0):
        assert spool.write({"ts": ts, "gpu_index": 0})
    spool.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "node-01-2025110609.jsonl",
        "node-01-2025110610.jsonl",
        "node-01-2025110611.jsonl",
    ]
    assert len((tmp_path / "node-01-2025110610.jsonl").read_text().splitlines()) == 2


def test_each_line_is_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr("runlytics.sampler.spool.os.write", recording_write)
    code, lines = sample_for(0.3, options(tmp_path), FakeNvml(gpus(2)))
    assert code == 0 and lines
    assert len(writes) == len(lines)
    for data in writes:
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        assert set(json.loads(data)) == KEYS


def test_a_short_write_spoils_no_other_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = iter([True, False, True, True])  # the second write stops half-way (disk full)

    def flaky_write(fd: int, data: bytes) -> int:
        return real_write(fd, data if next(calls) else data[: len(data) // 2])

    monkeypatch.setattr("runlytics.sampler.spool.os.write", flaky_write)
    spool = Spool(tmp_path, "h", None)
    results = [spool.write({"ts": 1.0, "n": n}) for n in range(4)]
    spool.close()
    assert results == [True, False, True, True]
    text = next(tmp_path.iterdir()).read_text().splitlines()
    good = []
    for line in text:
        try:
            good.append(json.loads(line)["n"])
        except json.JSONDecodeError:
            continue
    assert good == [0, 2, 3] and len(text) == 4


def test_a_full_disk_loses_samples_not_the_sampler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_write = os.write
    full = [True, True, True]

    def enospc_write(fd: int, data: bytes) -> int:
        if full and full.pop():
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("runlytics.sampler.spool.os.write", enospc_write)
    spool = Spool(tmp_path, "h", None)
    with caplog.at_level(logging.ERROR, "runlytics.sampler"):
        results = [spool.write({"ts": 1.0, "n": n}) for n in range(5)]
    spool.close()
    assert results == [False, False, False, True, True]
    assert len(caplog.records) == 1 and "No space left" in caplog.records[0].message  # once a minute
    assert [json.loads(line)["n"] for line in next(tmp_path.iterdir()).read_text().splitlines()] == [3, 4]


def test_the_spool_bound_deletes_the_oldest_files(tmp_path: Path) -> None:
    now = time.time()
    for age, name in enumerate(["c-2025110612.jsonl", "a-2025110611.jsonl", "b-2025110610.jsonl"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 1000)
        os.utime(path, (now - 3600 * (age + 1), now - 3600 * (age + 1)))
    (tmp_path / "notes.txt").write_bytes(b"y" * 5000)  # not a spool file: neither counted nor deleted

    spool = Spool(tmp_path, "node-01", max_bytes=2500)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-2025110611.jsonl", "c-2025110612.jsonl", "notes.txt"]

    # Writing on: the oldest go first; the file being written never does.
    for i in range(40):
        spool.write({"ts": now, "n": i, "pad": "z" * 40})
    current = spool.path
    spool.close()
    assert current is not None and current.exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "a-2025110611.jsonl" not in names and current.name in names
    total = sum(p.stat().st_size for p in tmp_path.glob("*.jsonl"))
    assert total <= 2500 or names == sorted([current.name, "notes.txt"])


def test_the_spool_bound_holds_while_sampling(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    old = spool_dir / "node-01-2020010100.jsonl"
    old.write_bytes(b"{}\n" * 400)
    os.utime(old, (0, 0))
    code, lines = sample_for(0.4, options(tmp_path, spool_max_bytes=2000), FakeNvml(gpus(2)))
    assert code == 0 and lines
    assert not old.exists()


def test_clocks_event_reasons_fall_back_to_throttle_reasons() -> None:
    fake = FakeNvml(gpus(1), old_driver=True)
    nvml = Nvml(fake)
    nvml.init()
    handle = nvml.handle(0)
    assert nvml.read(handle)["clocks_event_reasons"] == 4
    assert nvml.read(handle)["clocks_event_reasons"] == 4
    assert nvml.identity(handle) == (0, fake.gpus[0].uuid)


# --- the two modes ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_until_stopped_ends_on_a_signal_with_0(tmp_path: Path, signum: int) -> None:
    premature: list[int] = []

    def guard(sig: int, _frame: object) -> None:  # a signal before run() took over, or after
        premature.append(sig)

    previous = signal.signal(signum, guard)
    try:
        timer = when_written(tmp_path / "spool", 6, lambda: os.kill(os.getpid(), signum), gpus=2, per_gpu=3)
        code = sampler.run(options(tmp_path), nvml_module=FakeNvml(gpus(2)), env={})
        timer.join()
        restored = signal.getsignal(signum)
    finally:
        signal.signal(signum, previous)
    assert code == 0 and not premature
    assert restored is guard  # put back
    lines = spool_lines(tmp_path / "spool")
    assert len(by_gpu(lines)[0]) >= 3 and len(by_gpu(lines)[1]) >= 3


def test_command_mode_returns_the_commands_exit_code(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # the command ends once the sampler has written three lines of each GPU, however slow the
    # machine (six lines in all could be four of one GPU and two of the other)
    script = (
        "import json, pathlib, sys, time\n"
        "end = time.monotonic() + 120\n"
        "def enough():\n"
        "    counts = {}\n"
        f"    for p in pathlib.Path({str(spool)!r}).glob('*.jsonl'):\n"
        "        for line in p.read_bytes().split(b'\\n')[:-1]:\n"
        "            i = json.loads(line)['gpu_index']\n"
        "            counts[i] = counts.get(i, 0) + 1\n"
        "    return len(counts) == 2 and min(counts.values()) >= 3\n"
        "while not enough() and time.monotonic() < end:\n"
        "    time.sleep(0.01)\n"
        "sys.exit(7)\n"
    )
    fake = FakeNvml(gpus(2))
    code = sampler.run(options(tmp_path, command=[sys.executable, "-c", script]), nvml_module=fake, env={})
    assert code == 7
    per_gpu = by_gpu(spool_lines(tmp_path / "spool"))
    assert set(per_gpu) == {0, 1} and all(len(rows) >= 3 for rows in per_gpu.values())
    assert not fake.initialized  # nvmlShutdown at the end


def test_command_mode_passes_signals_on(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(5))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(30)\n"
    )

    def kill_when_ready() -> None:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=kill_when_ready)
    killer.start()
    code = sampler.run(options(tmp_path, command=[sys.executable, "-c", script]), nvml_module=FakeNvml(gpus(1)), env={})
    killer.join()
    assert code == 5
    assert signal.getsignal(signal.SIGTERM) is previous


def test_command_killed_by_a_signal_exits_128_plus_n(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    assert sampler.run(options(tmp_path, command=command), nvml_module=FakeNvml(gpus(1)), env={}) == 128 + 9


def test_a_command_that_does_not_exist_exits_127(tmp_path: Path) -> None:
    command = [str(tmp_path / "no-such-program")]
    assert sampler.run(options(tmp_path, command=command), nvml_module=FakeNvml(gpus(1)), env={}) == 127


# --- GPUs that misbehave ----------------------------------------------------------------------


def test_a_lost_gpu_is_skipped_and_the_others_go_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(3)
    fleet[1].lose_after = 3  # falls off the bus at its 4th reading, for good
    fake = FakeNvml(fleet)
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        code, lines = sample_for(1.0, options(tmp_path), fake)
    per_gpu = by_gpu(lines)
    assert code == 0
    assert len(per_gpu[1]) == 3
    assert len(per_gpu[0]) >= 10 and len(per_gpu[2]) >= 10
    assert max(r["ts"] for r in per_gpu[0]) > max(r["ts"] for r in per_gpu[1]) + 0.5
    assert any("lost (NVMLError_GpuIsLost" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    # Looked up again, with back-off: 0.1, 0.2, 0.4 s … not at every tick.
    retries = [r for r in caplog.records if "still unavailable" in r.message]
    assert 1 <= len(retries) <= 4


def test_a_lost_gpu_that_comes_back_is_sampled_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(2)
    fleet[0].lose_after = 2
    fleet[0].recover_after = 0.3
    fleet[1].lost, fleet[1].lost_since, fleet[1].recover_after = True, time.monotonic(), 0.3  # lost at start
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        code, lines = sample_for(1.5, options(tmp_path), FakeNvml(fleet))
    per_gpu = by_gpu(lines)
    assert code == 0 and len(per_gpu[0]) > 4 and len(per_gpu[1]) > 2
    assert sum("readings are back" in r.message for r in caplog.records) == 2


def test_a_transient_error_skips_one_reading_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = gpus(1)
    fleet[0].transient_at = {2}
    worker, spool = one_gpu_sampler(tmp_path, FakeNvml(fleet))
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        for _ in range(6):
            worker.sample_once()
    spool.close()
    assert worker.written == 5 and fleet[0].readings == 6
    assert worker.failures == 0 and worker.retry_at == 0.0  # no back-off
    assert [r.message for r in caplog.records if "skipped" in r.message] == [
        f"GPU 0 ({fleet[0].uuid}): reading skipped (NVMLError_Timeout: Timeout)"
    ]


def test_transient_errors_in_a_row_back_off(tmp_path: Path) -> None:
    fleet = gpus(1)
    fleet[0].transient_at = {0, 1, 2, 3}
    worker, spool = one_gpu_sampler(tmp_path, FakeNvml(fleet))
    for _ in range(5):
        worker.sample_once()
    spool.close()
    assert fleet[0].readings == 3 and worker.written == 0  # the 4th and 5th waited for the back-off
    assert worker.retry_at > time.monotonic()


def test_a_slow_call_skips_that_reading_and_holds_up_no_other_gpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = gpus(2)
    fleet[1].slow_at = {2: 1.0}  # its power call takes 1 s at the 3rd reading
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        code, lines = sample_for(1.8, options(tmp_path), FakeNvml(fleet))
    per_gpu = by_gpu(lines)
    assert code == 0
    ts0 = [r["ts"] for r in per_gpu[0]]
    assert len(ts0) >= 20 and max(b - a for a, b in zip(ts0, ts0[1:], strict=False)) < 0.5
    ts1 = [r["ts"] for r in per_gpu[1]]
    gaps = [b - a for a, b in zip(ts1, ts1[1:], strict=False)]
    assert max(gaps) >= 1.0  # the slow reading is not in the spool …
    assert len(ts1) >= 5 and ts1[-1] > ts1[1] + 1.0  # … and sampling went on after it
    assert any("a reading took 1.0" in r.message for r in caplog.records)


def test_a_hung_call_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    worker, spool = one_gpu_sampler(tmp_path, FakeNvml(gpus(1)))
    spool.close()
    worker.busy_since = time.monotonic() - 100
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        worker.check_hung(time.monotonic())
        worker.check_hung(time.monotonic())
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "has not returned for 100 s" in caplog.records[0].message


def one_gpu_sampler(tmp_path: Path, fake: FakeNvml) -> tuple[sampler.GpuSampler, Spool]:
    nvml = Nvml(fake)
    nvml.init()
    opts = options(tmp_path)
    spool = Spool(opts.spool, opts.host, None)
    [gpu] = sampler.resolve(nvml, [0])
    return sampler.GpuSampler(gpu, nvml, spool, opts, sampler.Schedule(INTERVAL), threading.Event()), spool


def test_the_schedule_does_not_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("runlytics.sampler.loop.time.monotonic", lambda: clock[0])
    schedule = sampler.Schedule(1.0)
    clock[0] = 100.001  # the thread starts a little after the schedule: tick 0 is still taken
    assert schedule.next(-1) == (0, 100.0)
    clock[0] = 100.3  # a reading that took 0.3 s: the next tick is still on the grid
    assert schedule.next(0) == (1, 101.0)
    clock[0] = 103.4  # a reading that overran 2 ticks: tick 3 is taken late, ticks 1-2 skipped
    assert schedule.next(0) == (3, 103.0)
    assert schedule.next(3) == (4, 104.0)


# --- which GPUs -------------------------------------------------------------------------------


def test_parse_devices() -> None:
    assert sampler.parse_devices("0,1") == [0, 1]
    assert sampler.parse_devices(" 2 , GPU-abc,MIG-def") == [2, "GPU-abc", "MIG-def"]
    assert sampler.parse_devices("0,1,-1,2") == [0, 1]  # CUDA stops at an invalid entry
    assert sampler.parse_devices("") == []
    assert sampler.parse_devices("-1") == []
    with pytest.raises(sampler.SamplerError):
        sampler.parse_devices("0,x", strict=True)
    assert sampler.select_gpus(None, {}) is None
    assert sampler.select_gpus("3", {"CUDA_VISIBLE_DEVICES": "0"}) == [3]  # --gpus wins
    assert sampler.select_gpus(None, {"CUDA_VISIBLE_DEVICES": "1"}) == [1]


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("2,0", {0, 2}),
        ("GPU-00000003-fake-4000-8000-000000000003", {3}),
        ("GPU-00000001-fake,1", {1}),  # a unique UUID prefix, and the same GPU twice
        ("GPU-00000002-fake-4000-8000-000000000002,0", {0, 2}),
        ("MIG-7e57-0001", {1}),  # a MIG instance: its GPU is sampled
        ("", set()),
    ],
)
def test_cuda_visible_devices_picks_the_gpus(tmp_path: Path, visible: str, expected: set[int]) -> None:
    fleet = gpus(4)
    fleet[1].mig, fleet[1].mig_uuids = True, ("MIG-7e57-0001",)
    command = [sys.executable, "-c", "import time; time.sleep(0.3)"]
    code = sampler.run(
        options(tmp_path, command=command), nvml_module=FakeNvml(fleet), env={"CUDA_VISIBLE_DEVICES": visible}
    )
    assert code == 0
    lines = spool_lines(tmp_path / "spool") if (tmp_path / "spool").exists() else []
    assert set(by_gpu(lines)) == expected
    for line in lines:
        gpu = fleet[line["gpu_index"]]
        if visible.startswith("MIG-"):  # the instance, under its own UUID
            assert (line["gpu_uuid"], line["mig_parent_uuid"]) == ("MIG-7e57-0001", gpu.uuid)
        else:
            assert line["gpu_uuid"] == gpu.uuid


def test_every_gpu_when_nothing_is_said(tmp_path: Path) -> None:
    code, lines = sample_for(0.3, options(tmp_path), FakeNvml(gpus(4)), env={})
    assert code == 0 and set(by_gpu(lines)) == {0, 1, 2, 3}


def test_a_gpu_that_does_not_exist_is_left_out(tmp_path: Path) -> None:
    code, lines = sample_for(0.3, options(tmp_path, gpus="1,7"), FakeNvml(gpus(2)))
    assert code == 0 and set(by_gpu(lines)) == {1}
    with pytest.raises(sampler.SamplerError, match="no GPU"):
        sample_for(0.3, options(tmp_path, gpus="7"), FakeNvml(gpus(2)))


# --- the command line -------------------------------------------------------------------------


def run_cli(monkeypatch: pytest.MonkeyPatch, fake: FakeNvml, argv: list[str]) -> int:
    # ``import pynvml`` inside the sampler then finds the fake.
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return cli.main(argv)


@pytest.mark.parametrize("error", [pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded])
def test_no_nvml_exits_3_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: type[Exception]
) -> None:
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    for extra in ([], ["--", *command]):
        fake = FakeNvml(gpus(1), init_error=error)
        code = run_cli(monkeypatch, fake, ["sample", "--job-id", "j", "--spool", str(tmp_path / "s"), *extra])
        assert code == 3
        message = capsys.readouterr().err
        assert message.startswith("runlytics sample: NVML is not available on this machine")
        assert "NVIDIA driver is not installed or not loaded" in message
    assert not marker.exists()  # the command is not started without NVML


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this machine has an NVIDIA driver")
def test_the_real_pynvml_without_a_driver_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sample", "--job-id", "j", "--spool", str(tmp_path)]) == 3
    assert "NVML is not available on this machine (NVML Shared Library Not Found)" in capsys.readouterr().err


def test_an_unusable_spool_folder_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a folder")
    argv = ["sample", "--job-id", "j", "--spool", str(tmp_path / "file" / "spool")]
    assert run_cli(monkeypatch, FakeNvml(gpus(1)), argv) == 2
    assert "can't use the spool folder" in capsys.readouterr().err


def test_no_pynvml_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert cli.main(["sample", "--job-id", "j", "--spool", str(tmp_path)]) == 3
    assert "nvidia-ml-py" in capsys.readouterr().err


def test_cli_command_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "s"
    argv = ["sample", "--job-id", "j-7", "--spool", str(spool), "--interval", "0.05", "--gpus", "1", "--host", "n1"]
    command = [sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(7)"]
    assert run_cli(monkeypatch, FakeNvml(gpus(2)), [*argv, "--", *command]) == 7
    lines = spool_lines(spool)
    assert len(lines) >= 3 and {(r["job_id"], r["host"], r["gpu_index"]) for r in lines} == {("j-7", "n1", 1)}
    for path in spool.iterdir():  # two files if an hour began meanwhile
        assert {file_name("n1", r["ts"]) for r in spool_lines_of(path)} == {path.name}


def test_cli_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    spool = str(tmp_path / "s")
    base = ["sample", "--job-id", "j", "--spool", spool]
    assert run_cli(monkeypatch, FakeNvml(gpus(1)), [*base, "--gpus", "x"]) == 2
    assert "neither a GPU index nor a UUID" in capsys.readouterr().err
    assert run_cli(monkeypatch, FakeNvml(gpus(1)), [*base, "--interval", "0"]) == 2
    assert "interval must be at least" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sample"])  # --job-id is required
