"""Session 25's dashboard fixes, each seen in a real browser (docs/dashboard.md).

- A running job's page refreshed its cards and curves only: a job that gained timestamps, a
  throughput or GPU readings kept "No GPU readings" and a disabled time axis until reloaded.
- Compare asked for each job's record at /api/training/{id}: for an id `x/steps` that is job x's
  steps (404 for the page), for `jobs` the job list. Records are at /api/training/jobs/{id}.
- Compare's elapsed time started at `started_at`, else the first row: a job without started_at
  started a row's seconds late (analytics.md: start = first row's time less its seconds).
- A duration under half a second read "0 s"; a config key holding `{}` did not differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from test_dashboard_s17 import _card, _chart, _iso, _write, browser, tab  # noqa: F401 (fixtures)

from runlytics.ingest.pipeline import ingest
from tests.browser import Page, serve

T0 = 1_767_236_400  # 2026-01-01T03:00:00Z


def _rows(timed: bool, n: int = 10) -> list[dict[str, Any]]:
    rows = []
    for step in range(1, n + 1):
        row: dict[str, Any] = {"step": step, "loss": 2.0 - step / 20}
        if timed:
            row.update(timestamp=_iso(T0 + 10 * step), iteration_time=10.0)
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("s25")
    root = tmp / "jobs"
    done = {"status": "completed", "history": _rows(True)}
    _write(root, "tiny", {"job_id": "tiny", "status": "completed", "started_at": _iso(T0), "ended_at": _iso(T0 + 0.3),
                          "history": [{"step": 1, "loss": 1.0}]})  # fmt: skip
    _write(root, "nostart", {"job_id": "nostart", "config": {"a": {}, "lr": 1e-7}, **done})
    _write(root, "withstart", {"job_id": "withstart", "started_at": _iso(T0), "config": {"lr": 1e-7}, **done})
    _write(root, "route", {"job_id": "jobs", "config": {"bs": 8}, **done})
    _write(root, "suffix", {"job_id": "x/steps", "config": {"bs": 4}, **done})
    _write(root, "x", {"job_id": "x", "config": {"bs": 2}, **done})
    _write(root, "live", {"job_id": "live", "status": "running", "history": _rows(False)})
    db = tmp / "warehouse.duckdb"
    assert ingest(db, [root]).failed == 0
    with serve(db) as base:
        yield {"base": base, "db": db, "root": root}


def test_a_duration_under_half_a_second_is_not_zero(site: dict[str, Any], tab: Page) -> None:  # noqa: F811
    tab.open(f"{site['base']}/job?id=tiny")
    shown = _card(tab, "Duration")
    assert shown["Total"] == "0.3 s", shown
    assert tab.errors == []


def test_compare_reads_each_jobs_record_whatever_its_id(site: dict[str, Any], tab: Page) -> None:  # noqa: F811
    tab.open(f"{site['base']}/compare?job_ids={quote('x/steps,jobs,nostart', safe='')}")
    keys = tab.page.locator("table.config-diff tbody tr").evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert keys == ["a", "bs", "lr"]  # an empty object is a value: it differs from a missing key
    assert tab.page.locator("table.config-diff tr[data-key=bs] td").all_inner_texts() == ["4", "8", "—"]
    assert not any("/api/training/x%2Fsteps?" in url or url.endswith("/api/training/x%2Fsteps") for url in tab.requests)
    assert tab.errors == []


def test_compare_elapsed_time_starts_at_each_jobs_start(site: dict[str, Any], tab: Page) -> None:  # noqa: F811
    tab.open(f"{site['base']}/compare?job_ids=nostart,withstart&x=time")
    chart = _chart(tab, "compare-metric")
    xs, *series = chart["data"]
    firsts = [next(x for x, y in zip(xs, ys, strict=True) if y is not None) for ys in series]
    assert firsts == [10, 10]  # both start 10 s before their first row (its iteration_time)
    assert tab.errors == []


def test_a_running_jobs_page_draws_what_it_gains_on_refresh(site: dict[str, Any], tab: Page) -> None:  # noqa: F811
    tab.open(f"{site['base']}/job?id=live&refresh=1")
    assert tab.page.inner_text(".gpu-charts").startswith("No GPU readings")
    rows = _rows(True)
    for row in rows:
        row.update(samples_per_second=16.0, gpus=[{"index": 0, "utilization_percent": 80.0, "memory_used_mb": 1000.0}])
    _write(site["root"], "live", {"job_id": "live", "status": "running", "started_at": _iso(T0), "history": rows})
    assert ingest(site["db"], [site["root"]]).failed == 0
    tab.page.wait_for_function("() => !document.querySelector('.gpu-charts')?.textContent.startsWith('No GPU')",
                               timeout=15_000)  # fmt: skip
    tab.page.wait_for_function("() => document.querySelector('#x-time') && !document.querySelector('#x-time').disabled",
                               timeout=15_000)  # fmt: skip
    assert "No GPU readings" not in tab.page.inner_text("main")
    assert tab.errors == []
