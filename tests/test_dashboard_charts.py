"""The dashboard's chart controls and insights in a real browser (issues #16, #17, #19).

A warehouse ingested from files written here (progress.json jobs with a loss spike, a stall and a
throttled GPU; two jobs whose configs differ; jobs whose throughputs make a histogram whose
rounded bin edges repeat; a Lightning metrics.csv) and a real Hugging Face trainer_state.json
from shared/realdata, served by `runlytics serve` and driven in headless Chromium.

What a chart plots is read from ``window.runlyticsCharts[<data-chart>]`` (api/static/common.js
keeps the series labels, the plotted columns and the insight bands there) and checked against
the API's answers and against values computed here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from runlytics.ingest.pipeline import ingest
from tests.browser import CHROMIUM, REPO, Page, coloured_pixels, launch, serve

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

HF_JOB = REPO.parent / "shared" / "realdata" / "hf_trainer_state" / "distilbert-imdb-lora"
T0 = 1_767_236_400  # 2026-01-01T03:00:00Z
SPIKE_STEP = 100
STALL = (120, 121)  # 600 s between these two steps, 2 s between every other pair
STEPS = 200
THROUGHPUTS = [2.0, 2.35, 2.6, 2.95, 3.3, 4.1, 5.0, 6.2, 6.45, 8.0]  # bins 0.3 wide from 2 to 8
OPTIMIZER = {"name": "adamw", "betas": [0.9, 0.999]}
CONFIG_A = {"model_name": "tiny", "learning_rate": 3e-4, "batch_size": 16, "optimizer": OPTIMIZER}
CONFIG_B = {"model_name": "tiny", "learning_rate": 1e-4, "batch_size": 32, "optimizer": OPTIMIZER, "warmup_steps": 100}
DIFFERING = ["batch_size", "learning_rate", "warmup_steps"]  # by hand: optimizer.* and model_name are the same


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _write(root: Path, doc: dict[str, Any]) -> None:
    path = root / doc["job_id"] / "progress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _job(job_id: str, config: dict[str, Any], throughput: float, steps: int = 60, start: float = T0) -> dict[str, Any]:
    """A clean job: loss falling smoothly, a constant throughput, one GPU logged with each step."""
    history = []
    t = start
    for step in range(1, steps + 1):
        t += 2
        history.append({
            "step": step, "timestamp": _iso(t), "loss": round(3 * math.exp(-step / 40) + 0.5, 6),
            "learning_rate": round(1e-3 * (1 - step / (steps + 1)), 9), "samples_per_second": throughput,
            "iteration_time": 2.0,
            "gpus": [{"index": 0, "utilization_percent": 80.0 + step % 5, "memory_used_mb": 1000.0 + step}],
        })  # fmt: skip
    return {"job_id": job_id, "status": "completed", "started_at": _iso(start), "ended_at": _iso(t + 1),
            "config": config, "history": history,
            "checkpoints": [{"step": steps // 2}, {"step": steps}]}  # fmt: skip


def _spiky() -> dict[str, Any]:
    doc = _job("spiky", {"model_name": "tiny", "gpu_count": 2}, 4.0, steps=STEPS)
    t = T0
    for row in doc["history"]:
        t += 600 if row["step"] == STALL[1] else 2
        row["timestamp"] = _iso(t)
        row.pop("gpus")
    doc["history"][SPIKE_STEP - 1]["loss"] = 9.0
    doc["ended_at"] = _iso(t + 1)
    return doc


def _samples(job_id: str, start: float, seconds: int) -> list[dict[str, Any]]:
    """Two GPUs sampled every second, more than a chart asks for: GPU 0 at 90 %, GPU 1 at 80 % and
    always throttled (clocks_event_reasons & 236); their memory moves in opposite directions, so
    the downsampled readings of the two keep their extremes at different times."""
    return [
        {"ts": start + s, "host": "node-01", "job_id": job_id, "gpu_index": g, "utilization_percent": 90.0 - 10 * g,
         "memory_used_mb": 3000.0 - s if g else 2000.0 + s, "memory_total_mb": 8000.0,
         "clocks_event_reasons": 32 if g else 0}
        for s in range(seconds) for g in range(2)
    ]  # fmt: skip


def _lightning(root: Path) -> None:
    run = root / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    lines = ["epoch,step,train_loss,val_acc"]
    for step in range(10):
        lines.append(f"0,{step},{2.0 - step / 10:.2f},")
        if step % 3 == 2:
            lines.append(f"0,{step},,{0.5 + step / 100:.2f}")
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run / "hparams.yaml").write_text("lr: 0.01\nbatch_size: 4\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("charts")
    root, spool = tmp / "jobs", tmp / "spool"
    spool.mkdir()
    spiky = _spiky()
    _write(root, spiky)
    _write(root, _job("cmp-a", CONFIG_A, 3.1, start=T0 + 3600))
    _write(root, _job("cmp-b", CONFIG_B, 6.9, start=T0 + 7200))
    for i, tp in enumerate(THROUGHPUTS):
        _write(root, _job(f"tp-{i}", {"model_name": "bins"}, tp, steps=25, start=T0 + 10_000 + 100 * i))
    shutil.copytree(HF_JOB, root / "hf-distilbert")
    _lightning(root)
    samples = _samples("spiky", T0, STEPS * 2 + 600)
    (spool / "node-01-2026010103.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    db = tmp / "warehouse.duckdb"
    summary = ingest(db, [root], spools=[spool])
    assert summary.failed == 0
    with serve(db) as base:
        yield {"base": base, "api": httpx.Client(base_url=base, timeout=30), "spiky": spiky}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    page = Page(browser)
    yield page
    page.close()


def _chart(tab: Page, name: str) -> dict[str, Any]:
    return tab.page.evaluate(f"() => JSON.parse(JSON.stringify(window.runlyticsCharts[{name!r}] ?? null))")


def _wait_chart(tab: Page, name: str, condition: str) -> dict[str, Any]:
    """Wait until the chart's record satisfies a JS condition on `c`, then return it."""
    js = f"() => {{ const c = (window.runlyticsCharts || {{}})[{name!r}]; return c && ({condition}); }}"
    tab.page.wait_for_function(js)
    return _chart(tab, name)


def ema(values: list[float | None], weight: float) -> list[float | None]:
    """TensorBoard's debiased EMA, written here from its definition."""
    out: list[float | None] = []
    last, n = 0.0, 0
    for v in values:
        if v is None:
            out.append(None)
            continue
        last = last * weight + (1 - weight) * v
        n += 1
        out.append(last / (1 - weight**n))
    return out


def _close(a: list[float | None], b: list[float | None], tol: float = 1e-9) -> bool:
    def same(x: float | None, y: float | None) -> bool:
        if x is None or y is None:
            return x is None and y is None
        return abs(x - y) <= tol * max(1, abs(y))

    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))


# --- smoothing, x axis, metric picker


def test_smoothing_slider_plots_the_debiased_ema_over_the_raw_series(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=cmp-a")
    steps = site["api"].get("/api/training/cmp-a/steps", params={"fields": "loss"}).json()["steps"]
    raw = [r["loss"] for r in steps]
    plain = _chart(tab, "loss")
    assert plain["labels"] == ["loss", "eval loss"]
    assert plain["data"][1] == raw
    tab.page.locator("#smoothing").fill("0.6")
    chart = _wait_chart(tab, "loss", "c.smoothing === 0.6")
    assert chart["labels"] == ["loss (raw)", "loss", "eval loss"]
    assert chart["data"][1] == raw  # the raw series kept, faint, behind
    assert _close(chart["data"][2], ema(raw, 0.6))
    assert chart["data"][2][0] == raw[0]  # debiased: the first value is not pulled towards 0
    assert chart["data"][2] != raw
    assert tab.page.inner_text("#smoothing-value") == "0.60"
    assert "smooth=0.6" in tab.page.url
    # the throughput curve is smoothed too; a constant series stays itself
    speed = _chart(tab, "speed")
    assert speed["labels"][:2] == ["samples/s (raw)", "samples/s"]
    assert _close(speed["data"][2], [3.1] * len(speed["data"][2]))
    assert tab.errors == []


def test_x_axis_by_elapsed_time(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=spiky")
    assert _chart(tab, "loss")["x"] == "step"
    tab.page.check("#x-time")
    chart = _wait_chart(tab, "loss", "c.x === 'elapsed'")
    steps = site["api"].get("/api/training/spiky/steps", params={"fields": "ts", "max_points": 1600}).json()["steps"]
    start = datetime.fromisoformat(site["spiky"]["started_at"]).timestamp()
    assert chart["data"][0] == [datetime.fromisoformat(r["ts"]).timestamp() - start for r in steps]
    # the stall: 600 s between two steps, a gap in time
    gaps = [b - a for a, b in zip(chart["data"][0], chart["data"][0][1:], strict=False)]
    assert max(gaps) == 600
    assert "x=time" in tab.page.url
    # a drag on the time axis zooms into the steps of the rows in that time range
    over = tab.page.locator("[data-chart=loss] .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None
    before = len(tab.requests)
    tab.page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] / 2)
    tab.page.mouse.down()
    tab.page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] / 2, steps=5)
    tab.page.mouse.up()
    tab.page.wait_for_function("() => document.querySelector('#zoom-state').textContent.startsWith('Steps')")
    asked = [u for u in tab.requests[before:] if "/steps?" in u and "loss" in u]
    query = parse_qs(urlparse(asked[0]).query)
    low, high = int(query["from_step"][0]), int(query["to_step"][0])
    assert 1 < low < high < STALL[0]  # the first fifth of the time axis: before the stall
    zoomed = _chart(tab, "loss")
    times = {r["step"]: datetime.fromisoformat(r["timestamp"]).timestamp() - start for r in site["spiky"]["history"]}
    assert zoomed["data"][0] == [times[s] for s in range(low, high + 1)]
    tab.page.check("#x-step")
    _wait_chart(tab, "loss", "c.x === 'step'")
    assert tab.errors == []


def test_metric_picker_changes_the_plotted_series(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=cmp-b")
    options = tab.page.locator("#metric option").evaluate_all("os => os.map(o => o.value)")
    assert {"learning_rate", "loss", "samples_per_second"} <= set(options)
    first = _chart(tab, "metric")
    assert first["labels"] == ["learning_rate"]  # the first metric not charted above
    tab.page.select_option("#metric", "loss")
    chart = _wait_chart(tab, "metric", "c.labels[0] === 'loss'")
    steps = site["api"].get("/api/training/cmp-b/steps", params={"fields": "loss"}).json()["steps"]
    assert chart["data"][1] == [r["loss"] for r in steps]
    assert "metric=loss" in tab.page.url
    tab.page.select_option("#metric", "learning_rate")
    chart = _wait_chart(tab, "metric", "c.labels[0] === 'learning_rate'")
    assert chart["data"][1] == [round(1e-3 * (1 - s / 61), 9) for s in range(1, 61)]
    assert tab.errors == []


def test_metric_picker_offers_any_metric_the_api_serves(site: dict[str, Any], tab: Page) -> None:
    job = "lightning_logs/version_0"
    listed = site["api"].get(f"/api/training/{job}/metrics")
    if listed.status_code != 200 or not listed.json()["metrics"]:
        pytest.skip(f"the metrics API lists nothing for {job} yet ({listed.status_code})")
    names = [m["name"] for m in listed.json()["metrics"]]
    assert "val_acc" in names
    tab.open(site["base"] + f"/job?id={job}&metric=val_acc")
    assert "val_acc" in tab.page.locator("#metric option").evaluate_all("os => os.map(o => o.value)")
    chart = _wait_chart(tab, "metric", "c.labels[0] === 'val_acc'")
    assert chart["data"][0] == [2, 5, 8]  # the rows of metrics.csv written above
    assert chart["data"][1] == [0.52, 0.55, 0.58]
    assert tab.errors == []


def test_a_job_without_per_step_throughput_says_why_and_offers_its_metrics(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=hf-distilbert")
    assert tab.page.locator("[data-chart=speed] canvas").count() == 0  # no empty frame
    note = tab.page.inner_text("[data-chart=speed] .no-throughput")
    assert note.startswith("No throughput curve: no step of this job logged samples per second or an iteration time.")
    offered = tab.page.locator(".no-throughput button[data-metric]").evaluate_all("bs => bs.map(b => b.dataset.metric)")
    assert {"grad_norm", "learning_rate"} <= set(offered)
    assert "samples_per_second" not in offered
    tab.page.click(".no-throughput button[data-metric=grad_norm]")
    chart = _wait_chart(tab, "metric", "c.labels[0] === 'grad_norm'")
    state = json.loads((HF_JOB / "trainer_state.json").read_text())
    expected = [(e["step"], e["grad_norm"]) for e in state["log_history"] if "grad_norm" in e]
    assert list(zip(chart["data"][0], chart["data"][1], strict=True)) == expected
    assert tab.page.is_disabled("#x-time")  # the trainer state has no per-step times
    assert tab.errors == []


# --- compare


def test_compare_shows_throughput_gpu_curves_and_the_config_diff(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/compare?job_ids=cmp-a,cmp-b")
    keys = tab.page.locator("table.config-diff tbody tr").evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert keys == DIFFERING
    cells = tab.page.locator("table.config-diff tr[data-key=warmup_steps] td").all_inner_texts()
    assert cells == ["—", "100"]
    assert tab.page.locator("table.config-diff tr[data-key=batch_size] td").all_inner_texts() == ["16", "32"]
    metric = _chart(tab, "compare-metric")
    assert metric["labels"] == ["cmp-a", "cmp-b"]
    speed = _wait_chart(tab, "compare-throughput", "true")
    assert speed["labels"] == ["cmp-a", "cmp-b"]
    assert {v for v in speed["data"][1] if v is not None} == {3.1}
    assert {v for v in speed["data"][2] if v is not None} == {6.9}
    util = _wait_chart(tab, "compare-gpu-utilization", "true")
    assert util["labels"] == ["cmp-a", "cmp-b"] and util["x"] == "elapsed"
    a = [v for v in util["data"][1] if v is not None]
    assert a == [80.0 + s % 5 for s in range(1, 61)]
    assert coloured_pixels(tab.page, "[data-chart=compare-throughput] canvas") > 50
    assert tab.errors == []


def test_compare_gpu_curve_is_the_mean_over_the_jobs_gpus(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/compare?job_ids=spiky")
    util = _wait_chart(tab, "compare-gpu-utilization", "true")
    # GPU 0 at 90 %, GPU 1 at 80 % in every sample: the mean over the job's GPUs is 85 at every
    # time, whichever readings the downsampling kept for each GPU
    assert util["labels"] == ["spiky"]
    assert set(util["data"][1]) == {85.0}
    assert util["data"][0][0] == 0 and util["data"][0][-1] == STEPS * 2 + 600 - 1
    assert tab.errors == []


def test_compare_picks_a_metric_and_smooths_it(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/compare?job_ids=cmp-a,hf-distilbert")
    tab.page.select_option("#metric", "learning_rate")
    chart = _wait_chart(tab, "compare-metric", "c.title === 'learning_rate' && c.smoothing === 0")
    assert chart["labels"] == ["cmp-a", "hf-distilbert"]
    tab.page.locator("#smoothing").fill("0.9")
    chart = _wait_chart(tab, "compare-metric", "c.smoothing === 0.9")
    assert chart["labels"] == ["cmp-a (raw)", "cmp-a", "hf-distilbert (raw)", "hf-distilbert"]
    # the jobs' steps are joined on one x axis: each job's EMA runs over its own points
    raw_a = [v for v in chart["data"][1] if v is not None]
    assert _close([v for v in chart["data"][2] if v is not None], ema(raw_a, 0.9))
    # the Hugging Face job has no per-step throughput: said beside the other job's curve
    assert "Not logged by hf-distilbert" in tab.page.inner_text("[data-chart=compare-throughput] .missing")
    assert tab.errors == []


def test_compare_plots_a_metric_only_some_jobs_logged(site: dict[str, Any], tab: Page) -> None:
    job = "lightning_logs/version_0"
    tab.open(site["base"] + f"/compare?job_ids={job},cmp-a")
    tab.page.wait_for_selector("#metric[data-complete]", state="attached")  # the jobs' metric lists came in
    assert "val_acc" in tab.page.locator("#metric option").evaluate_all("os => os.map(o => o.value)")
    tab.page.select_option("#metric", "val_acc")
    chart = _wait_chart(tab, "compare-metric", "c.title === 'val_acc'")
    assert "metric=val_acc" in tab.page.url
    assert chart["labels"] == [job]
    assert chart["data"] == [[2, 5, 8], [0.52, 0.55, 0.58]]  # the rows of metrics.csv written above
    assert tab.page.inner_text("[data-chart=compare-metric] .missing").startswith("Not logged by cmp-a.")
    # only the job that has the metric is asked for its history: no 404 for the other
    assert not any("metrics/history" in u and "cmp-a" in u for u in tab.requests)
    assert tab.errors == []


# --- summary histogram


def test_histogram_labels_never_repeat(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/summary?model=bins")
    bins = site["api"].get("/api/training/analytics/fleet", params={"model": "bins"}).json()["throughput_histogram"]
    assert len({round(b["low"]) for b in bins}) < len(bins)  # rounded to whole numbers they would repeat
    labels = tab.page.locator("[data-chart=throughput] svg rect").evaluate_all("rs => rs.map(r => r.dataset.label)")
    assert len(labels) == len(bins) == 20
    assert len(set(labels)) == len(labels)
    assert [float(x) for x in labels] == pytest.approx([b["low"] for b in bins], abs=0.05)
    shown = tab.page.locator("[data-chart=throughput] svg .bar-label").evaluate_all("ts => ts.map(t => t.textContent)")
    assert len(shown) > 1 and len(set(shown)) == len(shown) and set(shown) <= set(labels)
    assert tab.errors == []


# --- insights


def _insights(site: dict[str, Any], job: str) -> list[dict[str, Any]]:
    answer = site["api"].get(f"/api/training/{job}/insights")
    if answer.status_code == 404 and "not found" in answer.text.lower() and "spiky" not in answer.text:
        pytest.skip("the insights API is not there yet")
    assert answer.status_code == 200, answer.text
    return answer.json()["insights"]


def test_job_page_lists_its_insights_and_marks_them_on_the_charts(site: dict[str, Any], tab: Page) -> None:
    insights = _insights(site, "spiky")
    by_kind = {i["kind"]: i for i in insights}
    assert {"loss_spike", "stall", "gpu_throttled"} <= set(by_kind)  # what the generated job holds
    assert (by_kind["loss_spike"]["first_step"], by_kind["loss_spike"]["last_step"]) == (SPIKE_STEP, SPIKE_STEP)
    assert (by_kind["stall"]["first_step"], by_kind["stall"]["last_step"]) == STALL
    tab.open(site["base"] + "/job?id=spiky")
    rows = tab.page.locator("table.insights tbody tr").evaluate_all(
        "rs => rs.map(r => [r.dataset.kind, r.dataset.severity])"
    )
    assert rows == [[i["kind"], i["severity"]] for i in insights]
    messages = tab.page.locator("table.insights tbody td.wrap").all_inner_texts()
    assert messages == [i["message"] for i in insights]
    loss = _chart(tab, "loss")
    bands = {(b["kind"], b["from"], b["to"]) for b in loss["bands"]}
    assert ("loss_spike", SPIKE_STEP, SPIKE_STEP) in bands
    assert ("stall", *STALL) in bands
    speed_bands = {(b["kind"], b["from"], b["to"]) for b in _chart(tab, "speed")["bands"]}
    assert ("stall", *STALL) in speed_bands
    assert not any(k == "loss_spike" for k, _, _ in speed_bands)
    metric_bands = {(b["kind"], b["from"], b["to"]) for b in _chart(tab, "metric")["bands"]}
    assert {("loss_spike", SPIKE_STEP, SPIKE_STEP), ("stall", *STALL)} <= metric_bands  # beside any metric
    # the throttled GPU is named on its GPU chart
    labels = _chart(tab, "gpu-utilization_percent")["labels"]
    throttled = [label for label in labels if "throttled" in label]
    assert len(throttled) == 1 and throttled[0].startswith(f"node-01 GPU {by_kind['gpu_throttled']['gpu_index']}")
    assert tab.page.locator(".gpu-insights li[data-kind=gpu_throttled]").count() == 1
    # on the time axis the bands move to the rows' times
    tab.page.check("#x-time")
    loss = _wait_chart(tab, "loss", "c.x === 'elapsed'")
    stall = next(b for b in loss["bands"] if b["kind"] == "stall")
    start = datetime.fromisoformat(site["spiky"]["started_at"]).timestamp()
    times = {r["step"]: datetime.fromisoformat(r["timestamp"]).timestamp() - start for r in site["spiky"]["history"]}
    assert (stall["from"], stall["to"]) == (times[STALL[0]], times[STALL[1]])
    tab.page.screenshot(path=str(_artifacts() / "job-insights.png"), full_page=True)
    assert tab.errors == []


def test_jobs_list_badges_jobs_with_critical_or_warning_insights(site: dict[str, Any], tab: Page) -> None:
    _insights(site, "spiky")
    tab.open(site["base"] + "/?model=tiny")
    jobs = site["api"].get("/api/training/jobs", params={"model": "tiny"}).json()["jobs"]
    for job in jobs:
        counts = job["insights"]
        badge = tab.page.locator(f"tr[data-job='{job['job_id']}'] .insight-badge")
        if counts["critical"] or counts["warning"]:
            assert badge.count() == 1, job["job_id"]
            assert int(badge.get_attribute("data-critical") or -1) == counts["critical"]
            assert int(badge.get_attribute("data-warning") or -1) == counts["warning"]
            assert badge.inner_text() == f"⚠ {counts['critical'] + counts['warning']}"
        else:
            assert badge.count() == 0, job["job_id"]
    spiky = next(j for j in jobs if j["job_id"] == "spiky")
    assert spiky["insights"]["warning"] >= 3
    tab.page.click("tr[data-job=spiky] .insight-badge")
    tab.page.wait_for_selector("body[data-ready]")
    assert tab.page.url.endswith("/job?id=spiky#insights")
    assert tab.errors == []


ROWS = "table.fleet-insights tbody tr"


def _all_pages(tab: Page) -> list[list[str]]:
    """Click "More" until it hides; the rows shown then, as [job, kind, severity]."""
    while not tab.page.is_hidden("#more"):
        before = tab.page.locator(ROWS).count()
        tab.page.click("#more")
        tab.page.wait_for_function(f"() => document.querySelectorAll('{ROWS}').length > {before}")
        tab.page.wait_for_selector("body:not([data-busy])", state="attached")
    return tab.page.locator(ROWS).evaluate_all("rs => rs.map(r => [r.dataset.job, r.dataset.kind, r.dataset.severity])")


def test_fleet_insights_page_filters_and_pages(site: dict[str, Any], tab: Page) -> None:
    _insights(site, "spiky")
    every = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = site["api"].get("/api/training/insights", params=params).json()
        every += page["insights"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(every) >= 4
    tab.open(site["base"] + "/insights?limit=2")
    assert _all_pages(tab) == [[i["job_id"], i["kind"], i["severity"]] for i in every]  # in order, none twice
    tab.page.select_option("#f-kind", "stall")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url("**/insights?kind=stall&limit=2")
    tab.page.wait_for_selector("body:not([data-busy])", state="attached")
    assert _all_pages(tab) == [[i["job_id"], "stall", i["severity"]] for i in every if i["kind"] == "stall"]
    tab.page.select_option("#f-kind", "")
    tab.page.select_option("#f-severity", "warning")
    tab.page.fill("#f-model", "tiny")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url("**/insights?severity=warning&model=tiny&limit=2")
    tab.page.wait_for_selector("body:not([data-busy])", state="attached")
    params = {"severity": "warning", "model": "tiny", "limit": 1000}
    api = site["api"].get("/api/training/insights", params=params).json()["insights"]
    assert api and {i["severity"] for i in api} == {"warning"}
    assert _all_pages(tab) == [[i["job_id"], i["kind"], "warning"] for i in api]
    tab.page.screenshot(path=str(_artifacts() / "insights.png"), full_page=True)
    assert tab.errors == []


def _artifacts() -> Path:
    path = Path(os.environ.get("RUNLYTICS_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_kind_filter_offers_every_kind_of_the_warehouse() -> None:
    """api/static/common.js lists the kinds for the fleet page's filter: the same as the warehouse's."""
    from runlytics.warehouse import insight_list

    source = (REPO / "api" / "static" / "common.js").read_text()
    listed = source.split("export const INSIGHT_KINDS = [", 1)[1].split("];", 1)[0]
    assert [k.strip().strip('"') for k in listed.split(",") if k.strip()] == list(insight_list.KINDS)
    severities = source.split("export const SEVERITIES = [", 1)[1].split("];", 1)[0]
    assert [k.strip().strip('"') for k in severities.split(",") if k.strip()] == list(insight_list.SEVERITIES)
