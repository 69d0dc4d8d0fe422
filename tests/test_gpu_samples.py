"""GPU samples: spool ingest (incremental, half-written lines, duplicates) and the views on them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Lab

T0 = 1_793_610_000  # 2026-11-02T09:00:00Z


def sample(t: float, gpu: int = 0, **values: Any) -> dict[str, Any]:
    return {"ts": T0 + t, "host": "node-01", "job_id": "j", "gpu_index": gpu, **values}


def lines(*samples: dict[str, Any]) -> str:
    return "".join(json.dumps(s) + "\n" for s in samples)


@pytest.fixture
def spool(lab: Lab) -> Path:
    folder = lab.root.parent / "spool"
    folder.mkdir()
    # the job itself: two steps of 10 iterations, 4 samples each -> 80 samples over 20 s
    progress = lab.write_job(
        "j",
        {
            "job_id": "j",
            "status": "completed",
            "started_at": T0,
            "ended_at": T0 + 20,
            "config": {"batch_size": 4},
            "history": [
                {"step": 10, "timestamp": T0 + 10, "loss": 2.0, "iteration_time": 1.0,
                 "gpus": [{"index": 0, "utilization_percent": 10.0, "memory_used_mb": 1.0, "temperature_c": 1.0}]},
                {"step": 20, "timestamp": T0 + 20, "loss": 1.0, "iteration_time": 1.0},
            ],
        },
    )  # fmt: skip
    os.utime(progress, (T0, T0))  # settled: re-runs don't read it again
    return folder


def test_resource_utilization_comes_from_the_samples(lab: Lab, spool: Path) -> None:
    (spool / "node-01-2026110209.jsonl").write_text(
        lines(
            sample(0, utilization_percent=90.0, memory_used_mb=1000.0, temperature_c=60.0, power_w=300.0),
            sample(4, utilization_percent=80.0, memory_used_mb=3000.0, temperature_c=70.0, power_w=100.0),
            sample(0, gpu=1, utilization_percent=5.0, memory_used_mb=500.0, temperature_c=40.0, power_w=50.0),
            sample(4, gpu=1, utilization_percent=5.0, memory_used_mb=500.0, temperature_c=40.0, power_w=50.0),
        )
    )
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.failed == 0
    job = lab.analytics("j")
    assert job is not None
    # over all 4 samples, not the embedded reading (util 10): (90 + 80 + 5 + 5) / 4 = 45
    assert job["resource_utilization"] == {
        "average_gpu_utilization": 45.0,
        "average_gpu_memory_mb": 1250.0,  # (1000 + 3000 + 500 + 500) / 4
        "peak_gpu_memory_mb": 3000.0,
        "average_gpu_temp_celsius": 52.5,  # (60 + 70 + 40 + 40) / 4
        "peak_gpu_temp_celsius": 70.0,
    }
    # energy: GPU 0 (300 + 100) / 2 W x 4 s = 800 J; GPU 1 50 W x 4 s = 200 J; 1000 J = 0.2778 Wh
    assert job["energy"]["total_energy_wh"] == pytest.approx(1000 / 3600)
    # per 1,000 samples trained: 80 samples -> 0.2778 Wh / 0.08
    assert job["energy"]["energy_per_1000_samples_wh"] == pytest.approx(1000 / 3600 / 0.08)
    assert job["energy"]["idle_gpus"] == 1  # GPU 1 below 10 % the whole time
    gpus = {g["gpu_index"]: g for g in job["gpus"]}
    assert gpus[0]["average_utilization"] == 85.0 and gpus[0]["idle"] is False
    assert gpus[1]["idle_share"] == 1.0 and gpus[1]["energy_wh"] == pytest.approx(200 / 3600)


def test_throttle_share_is_time_weighted(lab: Lab, spool: Path) -> None:
    (spool / "a.jsonl").write_text(
        lines(
            sample(0, clocks_event_reasons=0),  # 1 s not throttled
            sample(1, clocks_event_reasons=0x4),  # 3 s SW power cap: throttled
            sample(4, clocks_event_reasons=0x1),  # 6 s idle: not throttling
            sample(10, clocks_event_reasons=0x40),  # last sample: stands for no time
        )
    )
    lab.ingest(lab.root, spool_root=spool)
    (share,) = lab.query("SELECT throttled_share FROM job_gpus WHERE job_id = 'j'")[0]
    assert share == pytest.approx(3 / 10)


def test_spool_is_read_incrementally_and_a_half_line_waits(lab: Lab, spool: Path) -> None:
    path = spool / "node-01-2026110209.jsonl"
    half = json.dumps(sample(2, utilization_percent=70.0))[:25]
    path.write_text(lines(sample(0, utilization_percent=90.0), sample(1, utilization_percent=80.0)) + half)
    first = lab.ingest(lab.root, spool_root=spool)
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(2,)]
    assert first.warnings == 0  # a line still being written is not a bad line
    # the writer finishes the line and appends one more, plus a duplicate of the first sample
    rest = json.dumps(sample(2, utilization_percent=70.0))[25:] + "\n"
    with path.open("a") as f:
        f.write(rest + lines(sample(3, utilization_percent=60.0), sample(0, utilization_percent=90.0)))
    lab.ingest(lab.root, spool_root=spool)
    rows = lab.query("SELECT epoch(ts) - $t0, utilization_percent FROM gpu_samples ORDER BY ts", {"t0": T0})
    assert rows == [(0.0, 90.0), (1.0, 80.0), (2.0, 70.0), (3.0, 60.0)]  # stored once each
    again = lab.ingest(lab.root, spool_root=spool)
    assert again.ingested == 0 and lab.query("SELECT count(*) FROM gpu_samples") == [(4,)]


def test_bad_lines_are_skipped_with_their_number(lab: Lab, spool: Path) -> None:
    (spool / "a.jsonl").write_text(
        lines(sample(0, utilization_percent=90.0))
        + "not json\n"
        + json.dumps({"ts": T0 + 1, "gpu_index": 0}) + "\n"  # no job_id
        + lines(sample(2, utilization_percent="busy", power_w=120.0))
    )  # fmt: skip
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.warnings == 3
    (warnings,) = lab.query("SELECT warnings FROM ingest_files WHERE kind = 'spool'")[0]
    assert json.loads(warnings) == [
        "line 2: not JSON (Expecting value: line 1 column 1 (char 0)), skipped",
        "line 3: no job_id, skipped",
        "line 4: utilization_percent 'busy' is not a number in range, dropped",
    ]
    assert lab.query("SELECT utilization_percent, power_w FROM gpu_samples ORDER BY ts") == [
        (90.0, None),
        (None, 120.0),
    ]


def test_step_alignment_takes_the_latest_sample_at_or_before_each_step(lab: Lab, spool: Path) -> None:
    (spool / "a.jsonl").write_text(
        lines(sample(9, utilization_percent=50.0), sample(10, utilization_percent=60.0),
              sample(15, utilization_percent=70.0))
    )  # fmt: skip
    lab.ingest(lab.root, spool_root=spool)
    rows = lab.query("SELECT step, utilization_percent FROM step_gpu_alignment WHERE job_id = 'j' ORDER BY step")
    assert rows == [(10, 60.0), (20, 70.0)]


def test_nvidia_smi_logs_import_once_and_feed_the_job(lab: Lab, spool: Path) -> None:
    from runlytics.ingest.pipeline import CsvImport, ingest
    from tests.conftest import REALDATA

    log = REALDATA / "nvidia_smi_csv" / "a6000x2-looped.csv"
    first = ingest(lab.db, [lab.root], csv_imports=[CsvImport(log, "j", "UTC", "ws-1")])
    assert first.failed == 0
    assert lab.query("SELECT gpu_index, count(*) FROM gpu_samples GROUP BY 1 ORDER BY 1") == [(0, 473), (1, 473)]
    again = ingest(lab.db, [lab.root], csv_imports=[CsvImport(log, "j", "UTC", "ws-1")])
    assert again.unchanged == 2 and again.ingested == 0  # the progress file and the log
    job = lab.analytics("j")
    assert job is not None
    (expected,) = lab.query("SELECT avg(utilization_percent) FROM gpu_samples WHERE job_id = 'j'")[0]
    assert job["resource_utilization"]["average_gpu_utilization"] == pytest.approx(expected)
    assert job["energy"]["total_energy_wh"] is None  # the log has no power.draw column
    assert {g["gpu_index"]: g["idle"] for g in job["gpus"]} == {0: False, 1: True}
