"""GPU charts (`/gpus?max_points=`): long ranges read the per-minute rollups (`gpu_minutes`), a
bucket of minutes keeping each figure's mean, minimum and maximum; short ranges downsample the
raw samples. Expected values are computed here in Python from the samples written to the spool.
On both engines: on PostgreSQL the samples and minutes ``ingest --db`` published (pg_telemetry)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from tests.conftest import Engine, Lab

T0 = 1_793_610_000  # 2026-11-02T09:00:00Z, a whole minute
STEP = 5  # seconds between samples
HOURS = 3  # 180 minutes of samples
SPIKE = (1, 5_005)  # (GPU, second): the one sample at 100 % utilization and 99 °C
NAN_AT = (0, 600)  # a sample whose utilization and temperature are not finite
FIGURES = ("utilization_percent", "memory_used_mb", "temperature_c", "power_w", "sm_clock_mhz")
Json = dict[str, Any]


def _value(gpu: int, t: int, figure: int) -> float:
    """A deterministic wobble below the spike's values."""
    return 20.0 + figure * 10 + ((t * 37 + gpu * 11 + figure * 5) % 53) / 2


def _samples() -> list[Json]:
    out = []
    for t in range(0, HOURS * 3600, STEP):
        for g in (0, 1):
            util, mem, temp, power, clock = (_value(g, t, f) for f in range(5))
            if (g, t) == SPIKE:
                util, temp = 100.0, 99.0
            if (g, t) == NAN_AT:
                util, temp = math.nan, math.inf
            out.append({
                "ts": T0 + t, "host": "node-01", "job_id": "long", "gpu_index": g, "gpu_uuid": f"GPU-{g}000",
                "utilization_percent": util, "memory_used_mb": 1000 * mem, "memory_total_mb": 80_000.0,
                "temperature_c": temp, "power_w": 10 * power, "sm_clock_mhz": 30 * clock,
            })  # fmt: skip
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> tuple[TestClient, list[Json]]:
    lab = Lab(tmp_path_factory.mktemp("charts"), module_ingest_engine)
    spool = lab.root.parent / "spool"
    spool.mkdir()
    samples = _samples()
    (spool / "node-01.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    lab.write_job("long", {"job_id": "long", "status": "completed", "started_at": T0, "ended_at": T0 + HOURS * 3600,
                           "history": [{"step": 1, "timestamp": T0 + 1, "loss": 1.0}]})  # fmt: skip
    # a short job of 11 GPUs sampled each minute for half an hour
    few = [
        {"ts": T0 + 60 * m, "host": "node-02", "job_id": "wide", "gpu_index": g, "utilization_percent": float(m)}
        for m in range(31) for g in range(11)
    ]  # fmt: skip
    (spool / "node-02.jsonl").write_text("".join(json.dumps(s) + "\n" for s in few))
    lab.write_job("wide", {"job_id": "wide", "status": "completed", "history": [{"step": 1, "loss": 1.0}]})
    assert lab.ingest(lab.root, spool_root=spool).failed == 0
    if not lab.query("SELECT count(*) FROM information_schema.tables WHERE table_name = 'gpu_minutes'")[0][0]:
        pytest.skip("gpu_minutes (revision 0015) is not in this warehouse yet")
    return TestClient(create_app(lab.warehouse())), samples


def _chart(client: TestClient, job: str = "long", **params: Any) -> Json:
    response = client.get(f"/api/training/{job}/gpus", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat() + "Z"


def _expected(samples: list[Json], width: int) -> dict[tuple[int, str], Json]:
    """Per (GPU, bucket start): the buckets of ``width`` seconds from the first sample's minute."""
    buckets: dict[tuple[int, int], list[Json]] = defaultdict(list)
    first_minute = min(s["ts"] for s in samples) // 60 * 60
    for s in samples:
        minute = s["ts"] // 60 * 60
        buckets[(s["gpu_index"], (minute - first_minute) // width)].append(s)
    out = {}
    for (gpu, _), rows in buckets.items():
        row: Json = {"samples": len(rows), "last_ts": _iso(max(r["ts"] for r in rows)), "minimum": {}, "maximum": {}}
        for f in FIGURES:
            finite = [r[f] for r in rows if math.isfinite(r[f])]
            row[f] = math.fsum(finite) / len(finite)
            row["minimum"][f], row["maximum"][f] = min(finite), max(finite)
        out[(gpu, _iso(min(r["ts"] for r in rows)))] = row
    return out


def test_minute_buckets_hold_the_mean_min_and_max_of_the_samples(served: tuple[TestClient, list[Json]]) -> None:
    client, samples = served
    chart = _chart(client, max_points=100)  # 2 GPUs: 50 each, over 180 minutes -> buckets of 4 minutes
    assert (chart["source"], chart["resolution"], chart["bucket_seconds"]) == ("gpu_samples", "minute", 240)
    assert chart["next_cursor"] is None and chart["next"] is None
    expected = _expected(samples, 240)
    assert len(chart["readings"]) == len(expected) == 2 * 45
    for r in chart["readings"]:
        want = expected[(r["gpu_index"], r["ts"])]
        assert r["host"] == "node-01" and r["gpu_uuid"] == f"GPU-{r['gpu_index']}000" and r["step"] is None
        assert (r["samples"], r["last_ts"], r["memory_total_mb"]) == (want["samples"], want["last_ts"], 80_000.0)
        assert r["clocks_event_reasons"] is None
        for f in FIGURES:
            assert r[f] == pytest.approx(want[f], rel=1e-12), f
            assert r["minimum"][f] == want["minimum"][f] and r["maximum"][f] == want["maximum"][f], f
    # by GPU, then time
    assert [(r["gpu_index"], r["ts"]) for r in chart["readings"]] == sorted((g, t) for g, t in expected)


def test_a_one_sample_spike_survives_at_both_resolutions(served: tuple[TestClient, list[Json]]) -> None:
    client, _ = served
    gpu, second = SPIKE
    for max_points, resolution in ((100, "minute"), (360, "minute"), (2_000, "sample")):
        chart = _chart(client, max_points=max_points)
        assert chart["resolution"] == resolution
        mine = [r for r in chart["readings"] if r["gpu_index"] == gpu]
        if resolution == "minute":
            (hot,) = [r for r in mine if r["maximum"]["utilization_percent"] == 100.0]
            assert hot["ts"] <= _iso(T0 + second) <= hot["last_ts"] and hot["maximum"]["temperature_c"] == 99.0
            assert hot["utilization_percent"] < 100.0  # the mean alone would have hidden it
        else:
            assert any(r["ts"] == _iso(T0 + second) and r["utilization_percent"] == 100.0 for r in mine)
    # the non-finite sample is left out of the means and extremes, not a null bucket
    gpu, second = NAN_AT
    (odd,) = [
        r for r in _chart(client, max_points=100)["readings"]
        if r["gpu_index"] == gpu and r["ts"] <= _iso(T0 + second) <= r["last_ts"]
    ]  # fmt: skip
    assert odd["samples"] == 48 and odd["utilization_percent"] is not None and odd["maximum"]["temperature_c"] < 99.0


@pytest.mark.parametrize(
    ("max_points", "resolution", "bucket_seconds"),
    [(360, "minute", 60), (361, "minute", 60), (362, "sample", None), (359, "minute", 120), (10, "minute", 2_160)],
)
def test_minutes_when_the_span_covers_each_gpus_share(
    served: tuple[TestClient, list[Json]], max_points: int, resolution: str, bucket_seconds: int | None
) -> None:
    """180 minutes of 2 GPUs: a share of 180 points or fewer per GPU reads whole minutes."""
    client, samples = served
    chart = _chart(client, max_points=max_points)
    assert (chart["resolution"], chart["bucket_seconds"]) == (resolution, bucket_seconds)
    readings = chart["readings"]
    assert len(readings) <= max_points
    for g in (0, 1):
        mine = [r for r in readings if r["gpu_index"] == g]
        assert len(mine) <= max_points // 2
        times = [r["ts"] for r in mine]
        assert times == sorted(times) and times[0] == _iso(T0)  # each GPU from its first sample
        last = max(s["ts"] for s in samples if s["gpu_index"] == g)
        assert (mine[-1]["last_ts"] if resolution == "minute" else mine[-1]["ts"]) == _iso(last)  # to its last


def test_one_gpu_at_minute_resolution(served: tuple[TestClient, list[Json]]) -> None:
    client, samples = served
    chart = _chart(client, max_points=45, gpu=1)  # 45 points for one GPU over 180 minutes: 4-minute buckets
    assert (chart["resolution"], chart["bucket_seconds"]) == ("minute", 240)
    assert {r["gpu_index"] for r in chart["readings"]} == {1} and len(chart["readings"]) == 45
    assert sum(r["samples"] for r in chart["readings"]) == sum(1 for s in samples if s["gpu_index"] == 1)


def test_raw_pages_still_read_the_samples(served: tuple[TestClient, list[Json]]) -> None:
    client, samples = served
    page = _chart(client, limit=3, gpu=1)
    assert page["resolution"] == "sample" and page["bucket_seconds"] is None and page["next_cursor"]
    assert [(r["ts"], r["utilization_percent"]) for r in page["readings"]] == [
        (_iso(s["ts"]), s["utilization_percent"]) for s in samples if s["gpu_index"] == 1
    ][:3]
    assert all(r["samples"] is None and r["minimum"] is None for r in page["readings"])


def test_errors_stay_json_4xx(served: tuple[TestClient, list[Json]]) -> None:
    client, _ = served
    # 11 GPUs over 31 minutes: 10 points cannot hold a first and last reading of each
    response = client.get("/api/training/wide/gpus", params={"max_points": 10})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "max_points must be at least 22 for 11 GPU(s): the first and last reading of each"
    }
    wide = _chart(client, "wide", max_points=22)  # a share of 2 points over 31 minutes: 16-minute buckets
    assert (wide["resolution"], wide["bucket_seconds"], len(wide["readings"])) == ("minute", 960, 22)
    assert [r["utilization_percent"] for r in wide["readings"] if r["gpu_index"] == 4] == [7.5, 23.0]  # 0..15, 16..30
    for params in ({"max_points": 9}, {"max_points": 10_001}, {"max_points": "x"}, {"gpu": -1, "max_points": 100}):
        response = client.get("/api/training/long/gpus", params=params)
        assert response.status_code == 422 and "detail" in response.json(), params
    response = client.get("/api/training/nobody/gpus", params={"max_points": 100})
    assert response.status_code == 404 and response.json() == {"detail": "no job 'nobody'"}
