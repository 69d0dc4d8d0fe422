"""GPU samples: spool ingest (incremental, half-written lines, duplicates) and the views on them."""

from __future__ import annotations

import json
import os
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Engine, Lab

T0 = 1_793_610_000  # 2026-11-02T09:00:00Z


def sample(t: float, gpu: int = 0, **values: Any) -> dict[str, Any]:
    return {"ts": T0 + t, "host": "node-01", "job_id": "j", "gpu_index": gpu, **values}


def lines(*samples: dict[str, Any]) -> str:
    return "".join(json.dumps(s) + "\n" for s in samples)


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    """A lab ingesting into its file, or publishing to PostgreSQL (``ingest --db``): the samples'
    views (job_gpus, job_resources, step_gpu_alignment) are then PostgreSQL's, over its packed rows."""
    return Lab(tmp_path, ingest_engine)


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


def test_each_sample_weighs_the_same_and_non_finite_ones_are_left_out(lab: Lab, spool: Path) -> None:
    nan, inf = float("nan"), float("inf")
    (spool / "node-01-2026110209.jsonl").write_text(
        lines(
            sample(0, utilization_percent=90.0, memory_used_mb=3000.0, temperature_c=80.0),  # the peaks come first
            sample(1, utilization_percent=80.0, memory_used_mb=2000.0, temperature_c=70.0),
            sample(2, utilization_percent=70.0, memory_used_mb=1000.0, temperature_c=60.0),
            sample(3, utilization_percent=nan, memory_used_mb=nan, temperature_c=inf),
            sample(4, gpu=1, utilization_percent=10.0, memory_used_mb=500.0, temperature_c=40.0),  # latest finite
            sample(5, gpu=1, utilization_percent=inf, memory_used_mb=inf, temperature_c=nan),  # latest of all
        )
    )
    lab.ingest(lab.root, spool_root=spool)
    job = lab.analytics("j")
    assert job is not None
    # four finite samples, each weighing the same: GPU 0 three times, GPU 1 once
    assert job["resource_utilization"] == {
        "average_gpu_utilization": pytest.approx(62.5),  # (90 + 80 + 70 + 10) / 4, not (80 + 10) / 2 per GPU
        "average_gpu_memory_mb": pytest.approx(1625.0),  # (3000 + 2000 + 1000 + 500) / 4, not (2000 + 500) / 2
        "peak_gpu_memory_mb": pytest.approx(3000.0),  # the first sample's, not the latest's 500
        "average_gpu_temp_celsius": pytest.approx(62.5),  # (80 + 70 + 60 + 40) / 4, not (70 + 40) / 2
        "peak_gpu_temp_celsius": pytest.approx(80.0),  # the first sample's, not the latest's 40
    }
    assert "2 GPU reading(s) with non-finite values left out" in job["warnings"]


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
    rows = lab.query("SELECT ts, utilization_percent FROM gpu_samples ORDER BY ts")
    seconds = [(ts.replace(tzinfo=UTC).timestamp() - T0, u) for ts, u in rows]
    assert seconds == [(0.0, 90.0), (1.0, 80.0), (2.0, 70.0), (3.0, 60.0)]  # stored once each
    again = lab.ingest(lab.root, spool_root=spool)
    assert again.ingested == 0 and lab.query("SELECT count(*) FROM gpu_samples") == [(4,)]


def test_a_spool_file_replaced_by_a_longer_one_is_read_from_its_start(lab: Lab, spool: Path) -> None:
    # rotation: the file read so far is renamed away (out of the spool's *.jsonl) and a new file
    # of the same name, longer than the old offset, takes its place: none of its lines is lost
    path = spool / "gpu.jsonl"
    path.write_text(lines(sample(0, utilization_percent=10.0), sample(1, utilization_percent=10.0)))
    lab.ingest(lab.root, spool_root=spool)
    path.rename(spool / "gpu.jsonl.1")
    path.write_text(lines(*(sample(t, utilization_percent=90.0) for t in range(100, 104))))
    lab.ingest(lab.root, spool_root=spool)
    rows = lab.query("SELECT ts, utilization_percent FROM gpu_samples ORDER BY ts")
    assert [(ts.replace(tzinfo=UTC).timestamp() - T0, u) for ts, u in rows] == [
        (0.0, 10.0), (1.0, 10.0), (100.0, 90.0), (101.0, 90.0), (102.0, 90.0), (103.0, 90.0)
    ]  # fmt: skip
    # appended to afterwards, it is read on from where this run stopped (a line shorter than the digest's bytes)
    with path.open("a") as f:
        f.write('{"ts": 1793610200, "job_id": "j", "gpu_index": 0}\n')
    lab.ingest(lab.root, spool_root=spool)
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(7,)]
    # the rotated copy holds the old file, read to its end: nothing more of it is read (session 19:
    # tests/test_spool_rotation_s19.py); another file not named *.jsonl is not read, and the run says so
    (spool / "other.ndjson").write_text(lines(sample(500)))
    again = lab.ingest(lab.root, spool_root=spool)
    assert again.ingested == 0
    skipped = [p["reason"] for p in again.problems if p["outcome"] == "skipped"]
    assert skipped == ["1 spool file(s) not named *.jsonl not read: other.ndjson"]
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(7,)]


def test_bad_lines_are_skipped_with_their_number(lab: Lab, spool: Path) -> None:
    (spool / "a.jsonl").write_text(
        lines(sample(0, utilization_percent=90.0))
        + "not json\n"
        + json.dumps({"ts": T0 + 1, "gpu_index": 0}) + "\n"  # no job_id
        + lines(sample(2, utilization_percent="busy", power_w=120.0))
    )  # fmt: skip
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.warnings == 3
    spooled = "SELECT warnings FROM ingest_files WHERE kind = 'spool'"
    if lab.engine.ingests:  # spool files ingested stay in the stage's ledger (docs/postgresql.md, "Ledger")
        assert lab.query(spooled) == []
    (warnings,) = lab.own_query(spooled)[0]
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
    from runlytics.ingest.pipeline import CsvImport
    from tests.conftest import REALDATA

    log = REALDATA / "nvidia_smi_csv" / "a6000x2-looped.csv"
    first = lab.ingest(csv_imports=[CsvImport(log, "j", "UTC", "ws-1")])
    assert first.failed == 0
    assert lab.query("SELECT gpu_index, count(*) FROM gpu_samples GROUP BY 1 ORDER BY 1") == [(0, 473), (1, 473)]
    again = lab.ingest(csv_imports=[CsvImport(log, "j", "UTC", "ws-1")])
    assert again.unchanged == 2 and again.ingested == 0  # the progress file and the log
    job = lab.analytics("j")
    assert job is not None
    # worked out from the file in a shell, not by the warehouse:
    #   grep -v '^timestamp' a6000x2-looped.csv | awk -F', ' '{sub(/ %/, "", $4); s += $4} END {print s, NR}'
    # gives 43066 % over 946 samples; memory.used ($7) sums to 11866624 MiB, at most 25073
    assert job["resource_utilization"]["average_gpu_utilization"] == pytest.approx(43066 / 946)
    assert job["resource_utilization"]["average_gpu_memory_mb"] == pytest.approx(12544.0)
    assert job["resource_utilization"]["peak_gpu_memory_mb"] == 25073.0
    assert job["energy"]["total_energy_wh"] is None  # the log has no power.draw column
    assert {g["gpu_index"]: g["idle"] for g in job["gpus"]} == {0: False, 1: True}


def test_two_gpus_reported_under_the_same_index_stay_two_gpus(lab: Lab, tmp_path: Path) -> None:
    """Two containers' samplers on one host both call their GPU 0: their UUIDs tell them apart."""
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        {"ts": 1767225600 + t, "host": "node-01", "job_id": "j", "gpu_index": 0, "gpu_uuid": uuid,
         "utilization_percent": util, "memory_used_mb": memory}
        for uuid, util, memory, count in (("GPU-aaaa", 90.0, 1000.0, 3), ("GPU-bbbb", 30.0, 5000.0, 1))
        for t in range(count)
    ]  # fmt: skip
    lines.append({"ts": 1767225600, "host": "node-01", "job_id": "j", "gpu_index": 1, "utilization_percent": 60.0})
    (spool / "node-01-2026010100.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    lab.write_job("j", {"job_id": "j", "status": "running", "history": [{"step": 1, "loss": 1.0}]})
    lab.ingest(lab.root, spool_root=spool)
    gpus = lab.query("SELECT gpu_index, gpu_uuid, samples, average_utilization FROM job_gpus ORDER BY gpu_uuid")
    assert gpus == [(0, "GPU-aaaa", 3, 90.0), (0, "GPU-bbbb", 1, 30.0), (1, None, 1, 60.0)]
    # every sample weighs the same: (3 x 90 + 30 + 60) / 5; peak memory 5000 from the other GPU 0
    (row,) = lab.query(
        "SELECT gpus_seen, average_gpu_utilization, peak_gpu_memory_mb FROM job_resources WHERE job_id = 'j'"
    )
    assert row == (3, 72.0, 5000.0)
    keys = lab.query("SELECT DISTINCT gpu_key FROM gpu_samples ORDER BY gpu_key")
    assert keys == [("#1",), ("GPU-aaaa",), ("GPU-bbbb",)]


def test_the_api_pages_and_charts_two_gpus_that_share_an_index_apart(lab: Lab, tmp_path: Path) -> None:
    """Keyset pages over (index, host, GPU, ts): samples of two GPUs at the same times are all served."""
    from fastapi.testclient import TestClient

    from runlytics.api.app import create_app

    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        {"ts": 1767225600 + t, "host": "node-01", "job_id": "j", "gpu_index": 0, "gpu_uuid": uuid,
         "utilization_percent": float(t)}
        for uuid in ("GPU-aaaa", "GPU-bbbb") for t in range(5)
    ]  # fmt: skip
    (spool / "node-01-2026010100.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    lab.write_job("j", {"job_id": "j", "status": "running", "history": [{"step": 1, "loss": 1.0}]})
    lab.ingest(lab.root, spool_root=spool)
    client = TestClient(create_app(lab.warehouse()))
    served, url = [], "/api/training/j/gpus?limit=3"
    while url:
        body = client.get(url).json()
        served += [(r["gpu_uuid"], r["utilization_percent"]) for r in body["readings"]]
        url = body.get("next")
        if body.get("next_cursor") and not url:
            url = f"/api/training/j/gpus?limit=3&cursor={body['next_cursor']}"
    assert served == [(u, float(t)) for u in ("GPU-aaaa", "GPU-bbbb") for t in range(5)]
    charted = client.get("/api/training/j/gpus?max_points=1000").json()["readings"]
    assert sorted((r["gpu_uuid"], r["utilization_percent"]) for r in charted) == sorted(served)
