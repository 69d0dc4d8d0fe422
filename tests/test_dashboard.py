"""The dashboard in a real browser: `runlytics serve` on a generated warehouse, headless Chromium.

Every page must load without console errors and draw its charts (pixels of the series colour on
the canvas, bars in the SVG); filters, sorting, paging, the compare picker and zoom must work;
a running job's row must update by itself. Screenshots go to test-artifacts/dashboard/.

Needs Debian's chromium (`apt-get install chromium`; .ci/run installs it). Without it the tests
are skipped, except under CI (CI set), where they fail.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

import httpx
import pytest

from bench import generate
from runlytics.ingest.pipeline import ingest
from tests.browser import CHROMIUM, REPO, Page, coloured_pixels, launch, serve
from tests.conftest import DEEP_ONLY, deep_case

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

ARTIFACTS = Path(os.environ.get("RUNLYTICS_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
T0 = 1_767_236_400  # 2026-01-01T03:00:00Z: among the generated jobs, which start from 2026-01-01T00:00
LONG_STEPS = 6_000
# the first colours of PALETTE in api/static/common.js
PALETTE = [(0x1F, 0x5F, 0xBF), (0xC2, 0x41, 0x0C), (0x15, 0x80, 0x3D), (0x93, 0x33, 0xEA)]


def _write(root: Path, job: dict[str, Any]) -> Path:
    path = root / job["job_id"] / "progress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job))
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A warehouse of 60 generated jobs, a 6,000-step job and a job with GPU samples, served."""
    tmp = tmp_path_factory.mktemp("dashboard")
    root, spool = tmp / "jobs", tmp / "spool"
    spool.mkdir()
    rng = random.Random(7)
    for i in range(60):
        _write(root, generate.make_job(i, 40 + i, 2, rng))
    long_job = generate.make_job(999, LONG_STEPS, 1, rng)
    long_job.update(job_id="long-run", status="completed")
    _write(root, long_job)
    sampled = {
        "job_id": "sampled", "status": "completed", "started_at": T0, "ended_at": T0 + 100,
        "config": {"model_name": "gpt2", "batch_size": 8},
        "history": [{"step": s, "timestamp": T0 + s, "loss": 3 - s / 100, "iteration_time": 1.0}
                    for s in range(1, 101)],
        "checkpoints": [{"step": 50, "eval_loss": 1.2}, {"step": 100, "eval_loss": 1.5}],
    }  # fmt: skip
    _write(root, sampled)
    samples = [
        {"ts": T0 + t, "host": "node-01", "job_id": "sampled", "gpu_index": g,
         "utilization_percent": 50.0 + g * 20 + t % 7, "memory_used_mb": 1000.0 + t + 500 * g,
         "temperature_c": 60.0 + 5 * g, "power_w": 200.0 + t % 11 + 50 * g}
        for t in range(0, 100, 2) for g in range(2)
    ]  # fmt: skip
    (spool / "node-01-2026010103.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    db = tmp / "warehouse.duckdb"
    summary = ingest(db, [root], spools=[spool])
    assert summary.failed == 0
    with serve(db) as base:
        yield {"base": base, "db": db, "root": root, "spool": spool, "api": httpx.Client(base_url=base, timeout=30)}


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


def _shot(tab: Page, name: str) -> None:
    """A screenshot of the page, and the time it took to draw (timings.json beside them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    timings = ARTIFACTS / "timings.json"
    known = json.loads(timings.read_text()) if timings.exists() else {}
    known[name] = round(float(tab.page.evaluate("window.runlyticsReadyMs")))
    timings.write_text(json.dumps(known, indent=1, sort_keys=True))


def _cells(tab: Page, column: str) -> list[str]:
    return tab.page.locator(f"table.jobs tbody td.c-{column}").all_inner_texts()


# --- jobs page


def test_jobs_page_lists_the_first_page_newest_first(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/")
    expected = site["api"].get("/api/training/jobs", params={"limit": 50}).json()
    ids = tab.page.locator("table.jobs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.job)")
    assert ids == [j["job_id"] for j in expected["jobs"]]
    assert tab.page.locator("#count").inner_text() == f"Jobs 1–50 of {expected['total']}"
    first = expected["jobs"][0]
    row = tab.page.locator("table.jobs tbody tr").first
    assert row.locator("td.c-status").inner_text() == first["status"]
    assert row.locator("td.c-total_iterations").inner_text() == f"{first['total_iterations']:,}"
    _shot(tab, "jobs")
    assert tab.errors == []


def test_jobs_page_filters_by_status_and_model(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/")
    tab.page.focus("#f-model")  # suggests the models of the warehouse
    models = [m["model_name"] for m in site["api"].get("/api/training/analytics/fleet").json()["models"]]
    tab.page.wait_for_function(f"() => document.querySelectorAll('#models option').length === {len(models)}")
    assert tab.page.locator("#models option").evaluate_all("os => os.map(o => o.value)") == models
    tab.page.select_option("#f-status", "completed")
    tab.page.fill("#f-model", "gpt2")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url("**/?status=completed&model=gpt2")
    params = {"status": "completed", "model": "gpt2", "limit": 50}
    expected = site["api"].get("/api/training/jobs", params=params).json()
    tab.page.wait_for_function(f"() => document.querySelector('#count').textContent.endsWith('of {expected['total']}')")
    assert set(_cells(tab, "status")) == {"completed"}
    assert set(_cells(tab, "model_name")) == {"gpt2"}
    assert len(_cells(tab, "status")) == expected["total"] > 0
    assert tab.errors == []


def test_jobs_page_sorts_by_a_column_and_pages_without_repeats(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/")
    tab.page.click("button.sort[data-sort=final_loss]")  # numbers sort highest first
    tab.page.wait_for_url("**/?sort=-final_loss")
    tab.page.wait_for_selector("th[aria-sort=descending] button[data-sort=final_loss]")
    first_page = tab.page.locator("table.jobs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.job)")
    expected = site["api"].get("/api/training/jobs", params={"sort": "-final_loss", "limit": 50}).json()
    assert first_page == [j["job_id"] for j in expected["jobs"]]
    tab.page.click("text=Next →")
    tab.page.wait_for_function("() => document.querySelector('#count').textContent.startsWith('Jobs 51–')")
    second_page = tab.page.locator("table.jobs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.job)")
    assert len(first_page) + len(second_page) == expected["total"]
    assert not set(first_page) & set(second_page)
    tab.page.click("text=← Previous")
    tab.page.wait_for_function("() => document.querySelector('#count').textContent.startsWith('Jobs 1–')")
    assert tab.errors == []


def test_jobs_page_picks_jobs_to_compare(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/")
    boxes = tab.page.locator("table.jobs tbody input[type=checkbox]")
    ids = tab.page.locator("table.jobs tbody tr").evaluate_all("rows => rows.slice(0, 3).map(r => r.dataset.job)")
    for i in range(3):
        boxes.nth(i).check()
    assert tab.page.inner_text("#compare-selected") == "Compare selected (3)"
    tab.page.click("#compare-selected")
    tab.page.wait_for_selector("body[data-ready]")
    assert parse_qs(urlparse(tab.page.url).query)["job_ids"] == [",".join(ids)]
    assert tab.page.locator("table.compare tbody tr").evaluate_all("rows => rows.map(r => r.dataset.job)") == ids


# --- job page


def test_job_page_shows_the_analytics_and_draws_every_chart(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=sampled")
    analytics = site["api"].get("/api/training/sampled/analytics").json()
    cards = tab.page.locator(".card h3").all_inner_texts()
    assert cards[:6] == ["Duration", "Performance", "Losses", "GPU use", "Checkpoints", "Efficiency (0–100)"]
    best = tab.page.locator(".card:has(h3:text('Checkpoints')) dd").all_inner_texts()[-1]
    assert best == analytics["checkpoints"]["best_checkpoint"] == "checkpoint-50"
    for chart in ("loss", "gpu-utilization_percent", "gpu-memory_used_mb", "gpu-temperature_c", "gpu-power_w"):
        assert coloured_pixels(tab.page, f"[data-chart={chart}] canvas") > 50, chart
    assert "from GPU samples" in tab.page.inner_text(".gpu-charts")
    assert any("/gpus?max_points=" in url for url in tab.requests)
    assert any("/steps?" in url and "max_points=" in url for url in tab.requests)
    _shot(tab, "job")
    assert tab.errors == []


def test_job_page_draws_the_loss_on_a_log_scale(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=long-run")
    title = "[data-chart=loss] .u-title"
    assert tab.page.inner_text(title) == "Loss"
    tab.page.check("#log-loss")
    tab.page.wait_for_function(f"() => document.querySelector('{title}').textContent === 'Loss (log scale)'")
    assert tab.page.locator("[data-chart=loss] .uplot").count() == 1  # redrawn, not drawn twice
    assert coloured_pixels(tab.page, "[data-chart=loss] canvas") > 50
    tab.page.set_viewport_size({"width": 900, "height": 900})  # the old chart's resize watcher is gone
    tab.page.wait_for_timeout(200)
    assert tab.errors == []


def test_job_page_says_why_figures_are_missing(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=sampled")
    warnings = site["api"].get("/api/training/sampled/analytics").json()["warnings"]
    shown = tab.page.locator(".warnings li").all_inner_texts()
    assert len(shown) == len(warnings) > 0

    # each a sentence: capitalised, unless it starts with a column's name (session 30: "Total_samples")
    def as_shown(w: str) -> str:
        start = w[0].upper() + w[1:] if re.fullmatch("[a-z]+", re.split(r"[ ,:;(]", w)[0]) else w
        return start + ("" if w.endswith(".") else ".")

    assert shown == [as_shown(w) for w in warnings]
    assert any("_" in w.split(" ")[0] for w in warnings)  # a warning that starts with a column's name


def test_a_share_just_below_100_never_reads_100(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=sampled")
    shown = tab.page.evaluate(
        """async () => { const m = await import("/static/common.js");
           return [99.99528, 99.94, 100, 4.72e-5, null, 99.9999999, -99.995].map(m.pct); }"""
    )
    # session 30: 99.99528 read "100 %"
    assert shown == ["99.995 %", "99.9 %", "100 %", "4.72e-5 %", "—", "99.9999999 %", "-99.995 %"]


def test_job_page_zooms_into_a_finer_range(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=long-run")
    over = tab.page.locator("[data-chart=loss] .u-over")
    over.scroll_into_view_if_needed()  # below the insights and the chart controls
    box = over.bounding_box()
    assert box is not None
    before = len(tab.requests)
    tab.page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + box["height"] / 2)
    tab.page.mouse.down()
    tab.page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] / 2, steps=5)
    tab.page.mouse.up()
    tab.page.wait_for_function("() => document.querySelector('#zoom-state').textContent.startsWith('Steps')")
    asked = [u for u in tab.requests[before:] if "/steps?" in u]
    zoomed = [u for u in asked if "loss" in parse_qs(urlparse(u).query)["fields"][0].split(",")]
    assert len(zoomed) == 1
    # the metric chart below asks for the same range of its metric
    first = parse_qs(urlparse(zoomed[0]).query)["from_step"]
    assert [parse_qs(urlparse(u).query)["from_step"] for u in asked] == [first, first]
    query = parse_qs(urlparse(zoomed[0]).query)
    low, high = int(query["from_step"][0]), int(query["to_step"][0])
    assert 0.35 * LONG_STEPS < low < high < 0.5 * LONG_STEPS
    # the finer range holds every step in it: fewer steps than max_points come back whole
    state = tab.page.inner_text("#zoom-state")
    assert state == f"Steps {low}–{high} ({high - low + 1} points)"
    tab.page.click("#reset-zoom")
    tab.page.wait_for_function("() => document.querySelector('#zoom-state').textContent === ''")
    assert tab.errors == []


def test_unknown_job_says_so(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/job?id=no-such-job")
    assert tab.page.inner_text("h1") == "Job not found"
    assert all("404" in e for e in tab.errors)  # the browser logs the API's 404, nothing else


# --- compare page


def test_compare_page_from_a_shared_url_marks_the_winners(site: dict[str, Any], tab: Page) -> None:
    ids = ["job-000041", "job-000042", "job-000043", "sampled"]  # 81 to 100 steps
    tab.open(site["base"] + "/compare?job_ids=" + ",".join(ids))
    comparison = site["api"].get("/api/training/analytics/compare", params={"job_ids": ",".join(ids)}).json()
    rows = tab.page.locator("table.compare tbody tr")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.job)") == ids
    for key in ("best_throughput", "best_loss", "fastest", "most_efficient"):
        assert tab.page.inner_text(f"[data-winner={key}] a") == comparison["winner"][key]
    winner_row = rows.nth(ids.index(comparison["winner"]["best_loss"]))
    assert winner_row.locator("td").nth(2).locator(".winner").count() == 1
    assert tab.page.locator("table.compare .winner").count() == 4
    best = comparison["winner"]["most_efficient"]
    score = next(j["overall_score"] for j in comparison["jobs"] if j["job_id"] == best)
    overall = rows.nth(ids.index(best)).locator("td").nth(4).inner_text()
    assert overall.startswith("★ "), overall  # the score it won by, not just a star
    assert abs(float(overall.removeprefix("★ ").replace(",", "")) - score) <= 0.05, (overall, score)
    for colour in PALETTE[: len(ids)]:  # one curve per job, in the job's colour
        assert coloured_pixels(tab.page, "[data-chart=compare-metric] canvas", colour) > 50, colour
    _shot(tab, "compare")
    assert tab.errors == []


def test_compare_picker_adds_and_removes_jobs(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/compare")
    tab.page.fill("#pick", "job-000005")
    tab.page.click("#picker button[type=submit]")
    tab.page.wait_for_url("**/compare?job_ids=job-000005")
    tab.page.wait_for_selector("body[data-ready]")
    tab.page.fill("#pick", "sampled")
    tab.page.click("#picker button[type=submit]")
    tab.page.wait_for_url("**/compare?job_ids=job-000005,sampled")
    tab.page.wait_for_selector("table.compare")
    tab.page.click("button[aria-label='remove job-000005']")
    tab.page.wait_for_url("**/compare?job_ids=sampled")
    assert tab.errors == []


# --- ids holding a comma (a sweep folder named like Hydra's override_dirname)

COMMA_JOBS = ["bs=8", "lr=1e-4", "bs=8,lr=1e-4", "wd=0,lr=1e-3", 'say "hi", twice', "plain", 'q"uote']


@pytest.fixture(scope="module")
def comma_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Jobs `bs=8`, `lr=1e-4` and `bs=8,lr=1e-4` side by side (the list `bs=8,lr=1e-4` names the two
    first), and ids holding a comma or a quote, served."""
    tmp = tmp_path_factory.mktemp("comma-ids")
    root = tmp / "jobs"
    for n, job_id in enumerate(COMMA_JOBS):
        history = [{"step": s, "timestamp": T0 + s, "loss": 2 + n - s / 10, "iteration_time": 1.0, "samples": 8}
                   for s in range(1, 11)]  # fmt: skip
        doc = {"job_id": job_id, "status": "completed", "started_at": T0, "ended_at": T0 + 10, "history": history}
        path = root / f"job-{n}" / "progress.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(doc))
    db = tmp / "warehouse.duckdb"
    assert ingest(db, [root]).failed == 0
    with serve(db) as base:
        yield {"base": base, "api": httpx.Client(base_url=base, timeout=30)}


def _compared(tab: Page) -> list[str]:
    return tab.page.locator("table.compare tbody tr").evaluate_all("rows => rows.map(r => r.dataset.job)")


def _listed(url: str) -> list[str]:
    """The ids of a compare link's job_ids, as the API's reader takes them (each in quotes if need be)."""
    return [id_ for value in parse_qs(urlparse(url).query).get("job_ids", []) for id_ in next(csv.reader([value]))]


def _asked_records(tab: Page) -> set[str]:
    """The job ids whose records the page asked for (GET /api/training/jobs/<id>)."""
    paths = [urlparse(url).path for url in tab.requests]
    return {unquote(p.removeprefix("/api/training/jobs/")) for p in paths if p.startswith("/api/training/jobs/")}


@DEEP_ONLY  # a regression of one quoting (7 s of its own site); the compare links' every-run test: the picker's
def test_compare_links_quote_an_id_holding_a_comma(comma_site: dict[str, Any], tab: Page) -> None:
    # the job page's link compares that one job, not the jobs `bs=8` and `lr=1e-4`
    tab.open(comma_site["base"] + "/job?id=" + quote("bs=8,lr=1e-4", safe=""))
    tab.requests.clear()
    tab.page.click("text=Compare with other jobs")
    tab.page.wait_for_selector("table.compare")
    assert parse_qs(urlparse(tab.page.url).query)["job_ids"] == ['"bs=8,lr=1e-4"']
    assert _compared(tab) == ["bs=8,lr=1e-4"]
    assert _asked_records(tab) == {"bs=8,lr=1e-4"}
    # the picker adds and removes ids with a comma or a quote
    tab.page.fill("#pick", 'say "hi", twice')
    tab.page.click("#picker button[type=submit]")
    tab.page.wait_for_url(lambda url: len(_listed(url)) == 2)
    tab.page.wait_for_selector("body[data-ready]")
    assert _listed(tab.page.url) == _compared(tab) == ["bs=8,lr=1e-4", 'say "hi", twice']
    tab.page.click("button[aria-label='remove bs=8,lr=1e-4']")
    tab.page.wait_for_url(lambda url: len(_listed(url)) == 1)
    tab.page.wait_for_selector("body[data-ready]")
    assert _compared(tab) == ['say "hi", twice']
    assert tab.errors == []


def test_jobs_page_compares_ids_holding_a_comma(comma_site: dict[str, Any], tab: Page) -> None:
    tab.open(comma_site["base"] + "/")
    chosen = ["bs=8,lr=1e-4", "plain", 'say "hi", twice']
    for job_id in chosen:
        tab.page.get_by_label(f"compare {job_id}", exact=True).check()
    tab.page.click("#compare-selected")
    tab.page.wait_for_selector("table.compare")
    assert _compared(tab) == chosen
    assert tab.errors == []


@pytest.mark.parametrize(
    "values",
    [
        ["bs=8,lr=1e-4"],  # the jobs `bs=8` and `lr=1e-4`, as the API reads it
        deep_case(['"bs=8,lr=1e-4",plain']),  # (quoted ids in every run: the last two)
        ["wd=0,lr=1e-3,plain"],  # typed by hand: the API joins the fields that name no job
        deep_case(["wd=0,lr=1e-3", "bs=8"]),  # repeated
        ['"say ""hi"", twice"', "plain,bs=8"],
        ['"bs=8,lr=1e-4",q"uote'],  # a quote inside an unquoted id is plain text, as in CSV
    ],
)
def test_compare_page_reads_job_ids_as_the_api_does(comma_site: dict[str, Any], tab: Page, values: list[str]) -> None:
    query = urlencode([("job_ids", value) for value in values], quote_via=quote)
    expected = comma_site["api"].get("/api/training/analytics/compare?" + query).json()
    expected_ids = [job["job_id"] for job in expected["jobs"]]
    tab.open(comma_site["base"] + "/compare?" + query)
    assert _compared(tab) == expected_ids
    assert tab.page.locator("#config-diff").count() == 1
    # a list the API joins costs the page its first per-job requests (404s), never the page
    assert [e for e in tab.errors if e.startswith("uncaught")] == []


def test_job_id_lists_round_trip_through_the_page_and_the_api(comma_site: dict[str, Any], tab: Page) -> None:
    tab.open(comma_site["base"] + "/compare")
    written = tab.page.evaluate(
        """async (ids) => { const m = await import("/static/common.js");
           const value = ids.map(m.listField).join(",");
           return { value, read: m.parseJobIds([value]) }; }""",
        COMMA_JOBS,
    )
    assert written["read"] == COMMA_JOBS
    answer = comma_site["api"].get("/api/training/analytics/compare", params={"job_ids": written["value"]}).json()
    assert [job["job_id"] for job in answer["jobs"]] == COMMA_JOBS


# --- summary page


def test_summary_page_shows_the_fleet(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/summary")
    summary = site["api"].get("/api/training/analytics/summary").json()
    trends = site["api"].get("/api/training/analytics/fleet").json()
    counts = dict(
        zip(
            tab.page.locator(".hbars .hbar-label").all_inner_texts(),
            map(int, tab.page.locator(".hbars .hbar-value").all_inner_texts()),
            strict=True,
        )
    )
    assert counts == summary["jobs_by_status"]
    top = tab.page.locator("table.top tbody tr td:nth-child(2)").all_inner_texts()
    assert top == [j["job_id"] for j in summary["top_performing_jobs"]]
    bars = tab.page.locator("[data-chart=throughput] svg rect")
    assert bars.count() == len(trends["throughput_histogram"]) == 20
    shown = tab.page.locator("[data-chart=throughput] svg .bar-value").evaluate_all("ts => ts.map(t => t.textContent)")
    assert [int(n) for n in shown] == [b["jobs"] for b in trends["throughput_histogram"] if b["jobs"]]
    assert sum(b["jobs"] for b in trends["throughput_histogram"]) == summary["total_jobs"]
    _shot(tab, "summary")
    assert coloured_pixels(tab.page, "[data-chart=utilization] canvas") > 50
    assert tab.errors == []


def test_summary_page_ranks_only_jobs_with_a_throughput(site: dict[str, Any], tab: Page) -> None:
    tab.open(site["base"] + "/summary?model=no-such-model")
    assert tab.page.inner_text("[aria-label='top jobs'] p") == "No job has a throughput yet."
    assert tab.page.locator("table.top").count() == 0
    assert tab.errors == []


# --- phone width


@pytest.mark.parametrize(
    "path",
    # the jobs page and a job's in every run; the others share their layout (deep runs)
    ["/", "/job?id=sampled", deep_case("/compare?job_ids=job-000001,job-000002"), deep_case("/summary"),
     deep_case("/insights")],
)  # fmt: skip
def test_pages_fit_a_phone_screen(site: dict[str, Any], browser: Any, path: str) -> None:
    phone = Page(browser, width=390, height=844)
    try:
        phone.open(site["base"] + path)
        # wide tables scroll inside their own box; the page itself never scrolls sideways
        assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
        name = path.strip("/").split("?")[0] or "jobs"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        phone.page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
        assert phone.errors == []
    finally:
        phone.close()


# --- a running job updates by itself (last: it changes the warehouse)


def test_a_running_jobs_row_updates_by_itself(site: dict[str, Any], tab: Page) -> None:
    running = site["api"].get("/api/training/jobs", params={"status": "running", "limit": 1}).json()["jobs"][0]
    tab.open(site["base"] + f"/?status=running&refresh=1&model={running['model_name']}")
    row = tab.page.locator(f"tr[data-job='{running['job_id']}'] td.c-total_iterations")
    assert row.inner_text() == f"{running['total_iterations']:,}"
    path = site["root"] / running["job_id"] / "progress.json"
    doc = json.loads(path.read_text())
    last = doc["history"][-1]
    doc["history"].append({**last, "step": last["step"] + 500})
    doc["current_step"] = last["step"] + 500
    path.write_text(json.dumps(doc))
    assert ingest(site["db"], [site["root"]], spools=[site["spool"]]).failed == 0
    tab.page.wait_for_function(
        f"() => document.querySelector(\"tr[data-job='{running['job_id']}'] td.c-total_iterations\").textContent"
        f" === '{last['step'] + 500:,}'",
        timeout=10_000,
    )
    assert tab.errors == []
