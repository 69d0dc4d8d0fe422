"""Session 17: no GPU chart leaves out a GPU's extreme reading without saying so.

- `/gpus?max_points=N`: a GPU's share under 2 + 2 per figure (12 for samples: five figures; 10 for
  readings logged with steps: four) used to keep only each GPU's first and last reading, so a
  100 % spike of one GPU among 8 was lost without a word. Samples now chart at minute resolution
  there (buckets of one minute: fewer than the share; each holds its figures' minimum and
  maximum); readings logged with steps, which have no minutes, keep their first and last reading
  and say `extremes_kept: false`. `downsampled` says whether readings were left out.
- The compare page draws a long job's bucket maxima beside their means.

Expected values are computed here from the readings written. On both engines (PostgreSQL: what
``ingest --db`` published)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from tests.conftest import Engine, Lab

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a whole minute
FIGURES = ("utilization_percent", "memory_used_mb", "temperature_c", "power_w", "sm_clock_mhz")
LOGGED = FIGURES[:4]  # the figures of readings logged with steps
Json = dict[str, Any]


def _sample(job: str, t: int, g: int, **figures: float) -> Json:
    return {"ts": T0 + t, "host": "h", "job_id": job, "gpu_index": g, "gpu_uuid": f"GPU-{job}-{g}", **figures}


def _gspike8() -> list[Json]:
    """8 GPUs over 3 minutes at 1 s: GPU 5 at 100 % once, GPU 2 at 99 °C once, GPU 6's clock down once."""
    out = []
    for t in range(180):
        for g in range(8):
            figures = {
                "utilization_percent": 100.0 if (g, t) == (5, 101) else 0.0,
                "memory_used_mb": 500.0 + (t * 7 + g) % 13,
                "temperature_c": 99.0 if (g, t) == (2, 77) else 40.0 + (t * 3 + g) % 11,
                "power_w": 50.0 + (t * 5 + g) % 17,
                "sm_clock_mhz": 100.0 if (g, t) == (6, 150) else 1400.0 + (t * 11 + g) % 19,
            }
            out.append(_sample("gspike8", t, g, **figures))
    return out


def _gspike2() -> list[Json]:
    """2 GPUs over 4 minutes at 1 s, GPU 1 at 100 % once."""
    return [
        _sample("gspike2", t, g, utilization_percent=100.0 if (g, t) == (1, 133) else 0.0, memory_used_mb=500.0,
                temperature_c=40.0)
        for t in range(240) for g in range(2)
    ]  # fmt: skip


def _perminute() -> list[Json]:
    """1 GPU, one sample a minute for 20 minutes."""
    return [_sample("perminute", 60 * m, 0, utilization_percent=float(m)) for m in range(20)]


def _later() -> list[Json]:
    """1 GPU an hour on, every 10 s for 30 minutes: 40 %, 77 % once, a NaN once (left out)."""
    out = []
    for t in range(3600, 3600 + 1800, 10):
        util = 77.0 if t == 4200 else math.nan if t == 4210 else 40.0
        out.append(_sample("later", t, 0, utilization_percent=util))
    return out


def _spike8_history() -> list[Json]:
    """8 GPUs logged with 500 steps (1 s apart), GPU 3 at 100 % at step 311."""
    return [
        {"step": s, "timestamp": T0 + s, "loss": 1.0, "iteration_time": 1.0,
         "gpus": [{"index": g, "utilization_percent": 100.0 if (g, s) == (3, 311) else 0.0,
                   "memory_used_mb": 1000.0 + (s * 3 + g) % 7, "memory_total_mb": 8000.0,
                   "temperature_c": 60.0 + (s + g) % 5, "power_w": 100.0 + (s * 2 + g) % 9} for g in range(8)]}
        for s in range(1, 501)
    ]  # fmt: skip


SAMPLES = {"gspike8": _gspike8(), "gspike2": _gspike2(), "perminute": _perminute(), "later": _later()}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> TestClient:
    lab = Lab(tmp_path_factory.mktemp("spikes"), module_ingest_engine)
    spool = lab.root.parent / "spool"
    spool.mkdir()
    lines = [s for samples in SAMPLES.values() for s in samples]
    (spool / "h.jsonl").write_text("".join(json.dumps(s) + "\n" for s in lines))
    for job in SAMPLES:
        doc = {"job_id": job, "status": "running", "started_at": T0, "history": [{"step": 1, "loss": 1.0}]}
        lab.write_job(job, doc)
    lab.write_job("spike8", {"job_id": "spike8", "status": "running", "started_at": T0, "history": _spike8_history()})
    assert lab.ingest(lab.root, spool_root=spool).failed == 0
    return TestClient(create_app(lab.warehouse()))


def _chart(client: TestClient, job: str, **params: Any) -> Json:
    response = client.get(f"/api/training/{job}/gpus", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _logged() -> list[Json]:
    return [{"gpu_index": g["index"], **{f: g[f] for f in LOGGED}} for row in _spike8_history() for g in row["gpus"]]


def _extremes(readings: list[Json], figures: tuple[str, ...]) -> dict[tuple[int, str], tuple[float, float]]:
    """Per (GPU, figure): the lowest and highest value the readings hold (a minute bucket's in its
    `minimum` and `maximum`)."""
    values: dict[tuple[int, str], list[float]] = {}
    for r in readings:
        for f in figures:
            held = [r[f]]
            for extreme in ("minimum", "maximum"):
                if r.get(extreme):
                    held.append(r[extreme][f])
            values.setdefault((r["gpu_index"], f), []).extend(v for v in held if v is not None)
    return {key: (min(v), max(v)) for key, v in values.items() if v}


def _assert_every_extreme(chart: Json, readings: list[Json], figures: tuple[str, ...]) -> None:
    want = _extremes(readings, figures)
    assert _extremes(chart["readings"], figures) == want
    assert len(want) == len({r["gpu_index"] for r in readings}) * len(figures)


# --- samples: a share too small for sample buckets charts whole minutes ----------------------


@pytest.mark.parametrize("max_points", [16, 24, 31, 32, 50, 79, 95, 96, 200, 1_000])
def test_eight_gpus_of_samples_keep_every_extreme(client: TestClient, max_points: int) -> None:
    chart = _chart(client, "gspike8", max_points=max_points)
    share = max_points // 8
    # 3 minutes: a share of 12 or more (5 figures) buckets the samples; under it, whole minutes
    resolution = "sample" if share >= 12 else "minute"
    assert chart["resolution"] == resolution
    if resolution == "minute":
        assert chart["bucket_seconds"] == 60 * -(-3 // share)
    assert len(chart["readings"]) <= max_points
    _assert_every_extreme(chart, SAMPLES["gspike8"], FIGURES)
    spike = [r for r in chart["readings"] if r["gpu_index"] == 5 and (r["maximum"] or r)["utilization_percent"] == 100]
    assert len(spike) == 1
    assert chart["downsampled"] is True and chart["extremes_kept"] is True


@pytest.mark.parametrize("max_points", range(10, 30))
def test_two_gpus_of_samples_keep_the_spike(client: TestClient, max_points: int) -> None:
    chart = _chart(client, "gspike2", max_points=max_points)
    assert chart["resolution"] == ("sample" if max_points // 2 >= 12 else "minute")
    _assert_every_extreme(chart, SAMPLES["gspike2"], ("utilization_percent",))
    assert chart["downsampled"] is True and chart["extremes_kept"] is True


def test_one_minute_buckets_when_the_minutes_fit_the_share(client: TestClient) -> None:
    chart = _chart(client, "gspike8", max_points=32)  # a share of 4 over 3 minutes
    assert (chart["resolution"], chart["bucket_seconds"], len(chart["readings"])) == ("minute", 60, 24)
    (hot,) = [r for r in chart["readings"] if r["maximum"]["utilization_percent"] == 100.0]
    assert (hot["gpu_index"], hot["ts"], hot["samples"]) == (5, "2026-01-01T00:01:00Z", 60)
    assert hot["utilization_percent"] == pytest.approx(100 / 60)


# --- downsampled --------------------------------------------------------------------------


def test_downsampled_says_whether_readings_were_left_out(client: TestClient) -> None:
    # every sample kept: 240 per GPU in 499 buckets of a share of 5,000
    whole = _chart(client, "gspike2", max_points=10_000)
    assert (whole["resolution"], len(whole["readings"]), whole["downsampled"]) == ("sample", 480, False)
    assert _chart(client, "gspike2", max_points=100)["downsampled"] is True
    # one sample a minute: one-minute buckets merge nothing; two-minute buckets do
    per = _chart(client, "perminute", max_points=20)
    assert (per["resolution"], per["bucket_seconds"], len(per["readings"]), per["downsampled"]) == (
        "minute", 60, 20, False
    )  # fmt: skip
    per = _chart(client, "perminute", max_points=10)
    assert (per["resolution"], per["bucket_seconds"], per["downsampled"]) == ("minute", 120, True)
    # pages are never downsampled
    page = _chart(client, "gspike2", limit=5)
    assert (page["downsampled"], page["extremes_kept"]) == (False, True)
    page = _chart(client, "spike8", limit=5)
    assert (page["downsampled"], page["extremes_kept"]) == (False, True)


# --- readings logged with steps: no minutes to fall back on --------------------------------


@pytest.mark.parametrize("max_points", [16, 40, 79])
def test_logged_readings_say_when_a_share_is_too_small_for_the_extremes(client: TestClient, max_points: int) -> None:
    chart = _chart(client, "spike8", max_points=max_points)
    assert (chart["source"], chart["resolution"]) == ("step_readings", "sample")
    assert chart["downsampled"] is True and chart["extremes_kept"] is False
    for g in range(8):  # each GPU's first and last reading
        assert [r["step"] for r in chart["readings"] if r["gpu_index"] == g] == [1, 500]


@pytest.mark.parametrize("max_points", [80, 100, 1_000])
def test_logged_readings_keep_every_extreme_from_ten_a_gpu(client: TestClient, max_points: int) -> None:
    chart = _chart(client, "spike8", max_points=max_points)
    assert chart["downsampled"] is True and chart["extremes_kept"] is True
    _assert_every_extreme(chart, _logged(), LOGGED)
    spike = [r for r in chart["readings"] if r["gpu_index"] == 3 and r["utilization_percent"] == 100.0]
    assert [r["step"] for r in spike] == [311]
    # one GPU has the whole of max_points
    one = _chart(client, "spike8", max_points=10, gpu=3)
    assert one["extremes_kept"] is True and any(r["utilization_percent"] == 100.0 for r in one["readings"])


def test_chart_flags_are_in_the_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"downsampled", "extremes_kept"} <= set(schema["GpuPage"]["required"])


# --- the compare and summary pages draw a long job's spike (a real browser, DuckDB) ----------


def test_compare_draws_the_highest_reading_of_a_long_job(tmp_path: Path) -> None:
    """900 minutes of one GPU, a sample every 30 s at 0 % but one at 100 %: the compare page's
    800 points chart 2-minute buckets, whose mean of 4 samples peaks at 25 %; their maximum, drawn
    as the dotted `long max`, is 100."""
    from tests.browser import CHROMIUM, Page, launch, serve

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from runlytics.ingest.pipeline import ingest

    root, spool = tmp_path / "jobs", tmp_path / "spool"
    spool.mkdir()
    (root / "long").mkdir(parents=True)
    doc = {"job_id": "long", "status": "completed", "started_at": T0, "history": [{"step": 1, "loss": 1.0}]}
    (root / "long" / "progress.json").write_text(json.dumps(doc))
    samples = [_sample("long", 30 * i, 0, utilization_percent=100.0 if i == 901 else 0.0) for i in range(1_800)]
    (spool / "h.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    db = tmp_path / "warehouse.duckdb"
    assert ingest(db, [root], spools=[spool]).failed == 0
    with serve(db) as base, sync_playwright() as playwright:
        chart = httpx.get(f"{base}/api/training/long/gpus", params={"max_points": 800}).json()
        assert (chart["resolution"], chart["bucket_seconds"]) == ("minute", 120)
        browser = launch(playwright)
        try:
            tab = Page(browser)
            tab.open(base + "/compare?job_ids=long")
            name = "compare-gpu-utilization"
            tab.page.wait_for_function(f"() => (window.runlyticsCharts || {{}})[{name!r}]")
            drawn = tab.page.evaluate(f"() => JSON.parse(JSON.stringify(window.runlyticsCharts[{name!r}]))")
            assert drawn["labels"] == ["long", "long max"]
            assert "dotted: the highest reading" in drawn["title"]
            means, maxima = drawn["data"][1], drawn["data"][2]
            assert max(v for v in means if v is not None) == 25.0  # the mean of the spike's bucket
            assert max(v for v in maxima if v is not None) == 100.0
            assert maxima[means.index(25.0)] == 100.0  # at the same time
            assert tab.errors == []
            tab.close()
        finally:
            browser.close()
