"""Session 17's dashboard fixes, each seen in a real browser (the API's `gpu_uuid` on both engines).

- Job ids `.` and `..`: a browser resolves a URL path segment `.` or `..` away before it asks,
  written `%2E` or not (WHATWG URL, "double-dot path segment"), so no page can reach those jobs'
  per-job answers (/api/training/%2E%2E/analytics is sent as /api/analytics). The job page says
  so, instead of "Job not found" for a job the warehouse has.
- A GPU flagged idle is marked (`⚠ idle` in its legend) on the GPU charts when its samples name no
  host: the insight's host is null, the readings' "".
- Two GPUs of one host under index 0 (containers): only the idle one is marked; the insights carry
  `gpu_uuid` (the GPU's UUID, null without one and for the kinds that are not a GPU's).
- The time axis of the GPU charts and of Summary's utilization chart reads UTC, as labelled,
  whatever the browser's timezone (America/New_York here, through CDP).
- A 195-character job id keeps the Compare page within a 390 px phone screen.
- A loss of 4.72e-05 reads 4.72e-5, never 0; a null figure with a unit reads "—" alone; a job
  without step rows gets a sentence instead of an empty loss chart, which does not contradict
  its Steps card (the TensorFlow Object Detection eval run of shared/realdata: 20,000 steps,
  the highest step of its metrics, and no step row).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import Engine, Lab
from fastapi.testclient import TestClient

from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.ingest.pipeline import ingest
from tests.browser import CHROMIUM, REPO, Page, launch, serve

T0 = 1_767_236_400  # 2026-01-01T03:00:00Z: 22:00 the day before in New York
TF2_EVAL = REPO.parent / "shared" / "realdata" / "tool_logs2" / "tfevents" / "tf2-objdet-eval"
LONG_ID = "L" * 190 + "-tail"  # 195 characters, no place to break
TINY_LOSS = 4.72e-05


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _write(root: Path, folder: str, doc: dict[str, Any]) -> None:
    path = root / folder / "progress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _job(
    job_id: str, steps: int = 100, samples: bool = True, model: str = "m", last_loss: float | None = None
) -> dict[str, Any]:
    history = []
    for step in range(1, steps + 1):
        row: dict[str, Any] = {"step": step, "timestamp": _iso(T0 + 10 * step), "loss": 2 - step / 1000}
        row["iteration_time"] = 10.0
        if samples:
            row["samples"] = 80
        history.append(row)
    if last_loss is not None:
        history[-1]["loss"] = last_loss
    return {"job_id": job_id, "status": "completed", "started_at": _iso(T0), "ended_at": _iso(T0 + 10 * steps),
            "config": {"model_name": model}, "history": history}  # fmt: skip


def _spool_lines() -> list[dict[str, Any]]:
    """idle-nohost: GPU 0 busy, GPU 1 idle, no host (a sampler run without --host); shared-index:
    two GPUs of host n1 both index 0 (two containers), GPU-busy busy, GPU-idle idle."""
    lines: list[dict[str, Any]] = []
    for k in range(0, 1000, 5):
        ts = T0 + k
        lines += [
            {"ts": ts, "job_id": "idle-nohost", "gpu_index": 0, "utilization_percent": 97.0,
             "memory_used_mb": 3000.0, "temperature_c": 70.0, "power_w": 300.0},
            {"ts": ts, "job_id": "idle-nohost", "gpu_index": 1, "utilization_percent": 1.0,
             "memory_used_mb": 30.0, "temperature_c": 30.0, "power_w": 50.0},
            {"ts": ts, "host": "n1", "job_id": "shared-index", "gpu_index": 0, "gpu_uuid": "GPU-busy",
             "utilization_percent": 97.0, "memory_used_mb": 3000.0, "temperature_c": 70.0},
            {"ts": ts, "host": "n1", "job_id": "shared-index", "gpu_index": 0, "gpu_uuid": "GPU-idle",
             "utilization_percent": 1.0, "memory_used_mb": 30.0, "temperature_c": 30.0},
        ]  # fmt: skip
    return lines


def _fill(root: Path, spool: Path, with_tf2: bool) -> None:
    _write(root, "a", _job("idle-nohost", samples=False, model="nosamples"))  # power known, samples not
    _write(root, "b", _job("shared-index"))
    _write(root, "c", _job("..", steps=10))
    _write(root, "d", _job(".", steps=10))
    _write(root, "e", _job("...", steps=10))  # three dots: a plain segment, reachable
    _write(root, "f", _job("tiny-loss", steps=20, last_loss=TINY_LOSS))
    _write(root, "g", _job(LONG_ID, steps=20))
    _write(root, "h", _job("other", steps=20, samples=False))
    _write(root, "i", {"job_id": "no-steps", "status": "queued", "config": {"model_name": "m"}, "history": []})
    # step readings (no host, no UUID): GPU 1 idle
    readings = _job("step-gpus", steps=20)
    for row in readings["history"]:
        row["gpus"] = [{"index": 0, "utilization_percent": 95.0}, {"index": 1, "utilization_percent": 1.0}]
    _write(root, "j", readings)
    nan = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": float("nan")}]
    _write(root, "k", {"job_id": "nan-loss", "status": "failed", "history": nan})
    if with_tf2:
        shutil.copytree(TF2_EVAL, root / "tfevents" / "tf2-objdet-eval")
    spool.mkdir()
    (spool / "node.jsonl").write_text("".join(json.dumps(line) + "\n" for line in _spool_lines()))


# --- the API: gpu_uuid on each insight, both engines


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    tmp = tmp_path_factory.mktemp("s17-api")
    lab = Lab(tmp)
    _fill(lab.root, tmp / "spool", with_tf2=False)
    assert lab.ingest(spool_root=tmp / "spool").failed == 0
    return lab


@pytest.fixture(scope="module")
def client(lab: Lab, module_engine: Engine) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        yield TestClient(create_app(module_engine.warehouse(lab.db)))


def _gpu_fields(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The insights of a GPU kind (a job kind, low_gpu_utilization, has no GPU: null, checked apart)."""
    assert all(i["gpu_uuid"] is None for i in items if i["gpu_index"] is None)
    return [(i["kind"], i["host"], i["gpu_index"], i["gpu_uuid"]) for i in items if i["kind"].startswith("gpu_")]


def test_insights_carry_the_gpus_uuid(client: TestClient) -> None:
    shared = client.get("/api/training/shared-index/insights").json()["insights"]
    # the two GPUs share host and index: only the UUID says which one is idle
    assert _gpu_fields(shared) == [("gpu_idle", "n1", 0, "GPU-idle")]
    # samples without UUID (gpu_key '#1'), and step readings: no UUID
    assert _gpu_fields(client.get("/api/training/idle-nohost/insights").json()["insights"]) == [
        ("gpu_idle", None, 1, None)
    ]
    steps = client.get("/api/training/step-gpus/insights").json()["insights"]
    assert _gpu_fields(steps) == [("gpu_idle", None, 1, None)]
    # a kind that is not a GPU's: null
    nan = client.get("/api/training/nan-loss/insights").json()["insights"]
    assert [(i["kind"], i["gpu_uuid"]) for i in nan] == [("nonfinite_loss", None)]
    # the fleet's pages too, each insight with the field
    fleet = client.get("/api/training/insights", params={"limit": 1000}).json()["insights"]
    assert all("gpu_uuid" in i for i in fleet)
    assert [i["gpu_uuid"] for i in fleet if i["job_id"] == "shared-index" and i["kind"] == "gpu_idle"] == ["GPU-idle"]
    assert list(shared[0]) == [
        "job_id", "kind", "severity", "first_step", "last_step", "start_time", "end_time", "host", "gpu_index",
        "gpu_uuid", "value", "reference", "message",
    ]  # fmt: skip


# --- the browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("s17")
    root, spool = tmp / "jobs", tmp / "spool"
    _fill(root, spool, with_tf2=TF2_EVAL.exists())
    db = tmp / "warehouse.duckdb"
    assert ingest(db, [root], spools=[spool]).failed == 0
    with serve(db) as base:
        yield {"base": base, "api": httpx.Client(base_url=base, timeout=30)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    page = Page(browser)
    yield page
    page.close()


def _job_url(site: dict[str, Any], job_id: str) -> str:
    return f"{site['base']}/job?id={quote(job_id, safe='')}"


def _chart(tab: Page, name: str) -> Any:
    return tab.page.evaluate(f"() => JSON.parse(JSON.stringify(window.runlyticsCharts?.[{name!r}] ?? null))")


CARD = """(title) => {
  const card = [...document.querySelectorAll('.card')].find((c) => c.querySelector('h3').textContent === title);
  return card ? [...card.querySelectorAll('dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]) : [];
}"""


def _card(tab: Page, title: str) -> dict[str, str]:
    """A card's figures, name → shown text."""
    return dict(tab.page.evaluate(CARD, title))


# item 1


@pytest.mark.parametrize("job_id", ["..", "."])
def test_a_job_named_dot_or_dot_dot_is_not_called_missing(site: dict[str, Any], tab: Page, job_id: str) -> None:
    assert site["api"].get("/api/training/jobs", params={"id_prefix": job_id}).json()["jobs"][0]["job_id"] == job_id
    tab.open(_job_url(site, job_id))
    assert tab.page.locator("h1").inner_text().startswith(job_id)
    text = tab.page.locator("main").inner_text()
    assert "Job not found" not in text and "has no job named" not in text
    note = tab.page.locator("p.unreachable").inner_text()
    assert f"runlytics analytics {job_id}" in note and "%2E" in note
    # no request went to the resolved-away path (/api/analytics, /api/training/analytics, ...)
    assert not [u for u in tab.requests if "/api/analytics" in u or "/api/training/analytics" in u]
    assert tab.errors == []


def test_a_job_named_three_dots_opens(site: dict[str, Any], tab: Page) -> None:
    tab.open(_job_url(site, "..."))
    assert tab.page.locator("h1").inner_text().startswith("...")
    assert _card(tab, "Performance")["Steps"] == "10"
    assert tab.errors == []


def test_compare_with_the_job_dot_dot_keeps_the_other_jobs(site: dict[str, Any], tab: Page) -> None:
    """`..` has its row in the table (the comparison asks by query parameter) and no curves; the
    other job keeps its own. Before: "The API answered 404" and nothing of either job."""
    tab.open(f"{site['base']}/compare?job_ids={quote('..', safe='')},other")
    assert tab.page.locator("ul.chips li").count() == 2
    text = tab.page.locator("main").inner_text()
    assert "answered 404" not in text
    assert not [u for u in tab.requests if "/api/steps" in u or "/api/gpus" in u or "/api/training/steps" in u]
    assert tab.errors == []


# items 2 and 3


def test_an_idle_gpu_without_host_is_marked(site: dict[str, Any], tab: Page) -> None:
    tab.open(_job_url(site, "idle-nohost"))
    assert _chart(tab, "gpu-utilization_percent")["labels"] == ["GPU 0", "GPU 1 ⚠ idle"]
    assert tab.page.locator(".gpu-insights li").all_inner_texts()[0].startswith("warning GPU 1: ")
    assert tab.errors == []


def test_of_two_gpus_sharing_an_index_only_the_idle_one_is_marked(site: dict[str, Any], tab: Page) -> None:
    tab.open(_job_url(site, "shared-index"))
    labels = _chart(tab, "gpu-utilization_percent")["labels"]
    assert labels == ["n1 GPU 0 (GPU-busy)", "n1 GPU 0 (GPU-idle) ⚠ idle"]
    assert _chart(tab, "gpu-memory_used_mb")["labels"] == labels
    assert tab.page.locator(".gpu-insights li").all_inner_texts()[0].startswith("warning n1 GPU 0 (GPU-idle): ")
    assert tab.page.locator("table.insights tbody td").nth(3).inner_text() == "n1 GPU 0 (GPU-idle)"
    assert tab.errors == []


# item 4


def _new_york(tab: Page) -> None:
    cdp = tab.context.new_cdp_session(tab.page)
    cdp.send("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
    # the override holds: 03:00 UTC is 22:00 in New York
    assert tab.page.evaluate(f"new Date({T0 * 1000}).getHours()") == 22


def _utc_label(ts: float) -> str:
    """uPlot's label of a tick at minutes (its `{h}:{mm}{aa}`), in UTC."""
    t = datetime.fromtimestamp(ts, UTC)
    return f"{t.hour % 12 or 12}:{t.minute:02d}{'am' if t.hour < 12 else 'pm'}"


def _ticks(tab: Page, name: str) -> list[tuple[float, str]]:
    chart = _chart(tab, name)
    assert chart["xTicks"], chart
    return [(s, str(label).split("\n")[0]) for s, label in zip(chart["xSplits"], chart["xTicks"], strict=True)]


def test_gpu_chart_ticks_read_utc_in_another_timezone(site: dict[str, Any], tab: Page) -> None:
    _new_york(tab)
    tab.open(_job_url(site, "idle-nohost"))
    ticks = _ticks(tab, "gpu-utilization_percent")
    assert len(ticks) >= 3
    # the run is 03:00 to 03:16 UTC (22:00 to 22:16 in New York)
    assert all(label == _utc_label(split) for split, label in ticks), ticks
    assert all(label.startswith("3:") and label.endswith("am") for _, label in ticks), ticks
    assert tab.errors == []


def test_summary_utilization_ticks_read_utc_in_another_timezone(site: dict[str, Any], tab: Page) -> None:
    _new_york(tab)
    tab.open(site["base"] + "/summary?model=nosamples")
    ticks = _ticks(tab, "utilization")
    assert len(ticks) >= 2
    assert all(label == _utc_label(split) for split, label in ticks), ticks
    assert all(label.startswith("3:") for _, label in ticks), ticks
    assert tab.errors == []


# item 5


def test_compare_with_a_195_character_id_fits_a_phone(site: dict[str, Any], browser: Any) -> None:
    phone = Page(browser, width=390, height=844)
    try:
        phone.open(f"{site['base']}/compare?job_ids={LONG_ID},other")
        assert phone.page.locator("ul.chips li").count() == 2
        assert phone.page.locator("ul.winners a").count() >= 1  # the long id wins something
        assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
        # the chip, its × and the winner links are on the screen
        rights = phone.page.evaluate(
            "() => [...document.querySelectorAll('ul.chips li, ul.chips button, ul.winners a')]"
            ".map((e) => e.getBoundingClientRect().right)"
        )
        assert rights and max(rights) <= 390, rights
        assert phone.errors == []
    finally:
        phone.close()


# item 6


def test_a_tiny_loss_is_not_shown_as_zero(site: dict[str, Any], tab: Page) -> None:
    assert site["api"].get("/api/training/tiny-loss/analytics").json()["losses"]["final_loss"] == TINY_LOSS
    tab.open(_job_url(site, "tiny-loss"))
    losses = _card(tab, "Losses")
    assert (losses["Final"], losses["Best"]) == ("4.72e-5", "4.72e-5")
    assert losses["Initial"] == "1.999"
    tab.open(site["base"] + "/?sort=final_loss")
    row = tab.page.locator("tr[data-job='tiny-loss'] td.c-final_loss")
    assert row.inner_text() == "4.72e-5"
    assert tab.errors == []


def test_a_null_figure_with_a_unit_is_a_dash_alone(site: dict[str, Any], tab: Page) -> None:
    energy = site["api"].get("/api/training/idle-nohost/analytics").json()["energy"]
    assert energy["total_energy_wh"] is not None and energy["energy_per_1000_samples_wh"] is None
    tab.open(_job_url(site, "idle-nohost"))
    assert _card(tab, "Energy")["Per 1,000 samples"] == "—"
    tab.open(site["base"] + "/summary?model=nosamples")
    assert _card(tab, "Averages")["Throughput"] == "—"
    assert tab.errors == []


def test_a_job_without_steps_says_so_instead_of_an_empty_loss_chart(site: dict[str, Any], tab: Page) -> None:
    tab.open(_job_url(site, "no-steps"))
    holder = tab.page.locator("[data-chart=loss]")
    assert holder.locator("canvas").count() == 0
    assert holder.inner_text() == "No steps logged yet."
    assert _card(tab, "Performance")["Steps"] == "—"
    tab.page.check("#log-loss")  # redrawn: still the sentence
    assert holder.inner_text() == "No steps logged yet." and holder.locator("canvas").count() == 0
    assert tab.errors == []


def test_an_eval_run_without_step_rows_does_not_contradict_its_steps(site: dict[str, Any], tab: Page) -> None:
    if not TF2_EVAL.exists():
        pytest.skip(f"no {TF2_EVAL}")
    (job,) = [j for j in site["api"].get("/api/training/jobs", params={"limit": 100}).json()["jobs"]
              if j["job_id"].endswith("my_ssd_mobnet/eval")]  # fmt: skip
    assert job["total_iterations"] == 20000
    tab.open(_job_url(site, job["job_id"]))
    assert _card(tab, "Performance")["Steps"] == "20,000"
    holder = tab.page.locator("[data-chart=loss]")
    assert holder.locator("canvas").count() == 0
    note = holder.inner_text()
    assert "No steps logged yet" not in note and "No steps logged yet" not in tab.page.locator("main").inner_text()
    assert note.startswith("No step rows, so no loss curve: the 20,000 steps above are the highest step the job logged")
    assert tab.page.locator("[data-chart=metric] canvas").count() > 0  # its metrics are charted
    assert tab.errors == []
