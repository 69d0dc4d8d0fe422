"""How fast each dashboard page loads and draws, in headless Chromium, on a large warehouse.

    python bench/dashboard.py --data /tmp/bench-dashboard

Defaults: 2,000 generated jobs x 200 steps x 2 GPUs (bench/generate.py, seed 0) plus one job of
100,000 steps x 2 GPUs (``big-100k``). The warehouse is built once and kept in --data. Each page
is opened --repeat times, each time in a new browser context (no cached scripts or API answers);
the figure is the time from navigation start until the page has drawn every chart
(``body[data-ready]``, set by the page's script after its charts are on the canvas).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/browser.py imports tests/servers.py as pytest's pythonpath has it

from playwright.sync_api import sync_playwright  # noqa: E402

from bench import generate  # noqa: E402
from tests.browser import Page, launch, serve  # noqa: E402

TARGET_MS = 1_000
BIG = "big-100k"


def build(work: Path, jobs: int, steps: int, gpus: int, big_steps: int) -> Path:
    """Generate the jobs (unless kept from an earlier run) and ingest them; the warehouse path."""
    root, db = work / "jobs", work / "warehouse.duckdb"
    if not root.exists():
        started = time.perf_counter()
        rng = random.Random(0)
        for i in range(jobs):
            _write(root, generate.make_job(i, steps, gpus, rng))
        print(f"generated {jobs} jobs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if not (root / BIG).exists():
        _write(root, big_job(jobs, big_steps, gpus))
    started = time.perf_counter()
    command = [sys.executable, "-m", "runlytics", "ingest", str(root), "--db", str(db), "--quiet"]
    subprocess.run(command, cwd=REPO, check=True)
    print(f"ingest {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return db


def big_job(index: int, steps: int, gpus: int) -> dict[str, Any]:
    """A long running job whose loss decays slowly, with an eval loss at each checkpoint."""
    rng = random.Random(1)
    job = generate.make_job(index, steps, gpus, rng)
    job.update(job_id=BIG, status="running")
    job.pop("ended_at", None)
    evaluated = {c["step"] for c in job["checkpoints"]} | set(range(steps // 20, steps + 1, steps // 20))
    for entry in job["history"]:
        step = entry["step"]
        entry["loss"] = round(0.35 + 2.2 * math.exp(-step / (steps / 6)) + rng.gauss(0, 0.04), 5)
        if step in evaluated:
            entry["eval_loss"] = round(0.42 + 2.0 * math.exp(-step / (steps / 6)) + 0.1 * (step / steps) ** 2, 5)
    return job


def _write(root: Path, job: dict[str, Any]) -> None:
    folder = root / job["job_id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "progress.json").write_text(json.dumps(job))


def measure(browser: Any, url: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        page = Page(browser)
        try:
            times.append(page.open(url, timeout_ms=60_000))
            if page.errors:
                raise SystemExit(f"{url}: console errors {page.errors}")
        finally:
            page.close()
    return times


def zoom_times(browser: Any, url: str, repeat: int) -> list[float]:
    """Milliseconds from the end of a drag over the loss chart until the finer range is drawn."""
    times = []
    page = Page(browser)
    try:
        page.open(url, timeout_ms=60_000)
        # below the insights and the chart controls: the drag must land on the chart
        page.page.locator("[data-chart=loss] .u-over").scroll_into_view_if_needed()
        for i in range(repeat):
            box = page.page.locator("[data-chart=loss] .u-over").bounding_box()
            y = box["y"] + box["height"] / 2
            page.page.mouse.move(box["x"] + box["width"] * (0.2 + 0.1 * i), y)
            page.page.mouse.down()
            page.page.mouse.move(box["x"] + box["width"] * (0.25 + 0.1 * i), y, steps=4)
            started = page.page.evaluate("performance.now()")
            page.page.mouse.up()
            page.page.wait_for_function("() => document.querySelector('#zoom-state').textContent.startsWith('Steps')")
            times.append(page.page.evaluate("performance.now()") - started)
            page.page.click("#reset-zoom")
            page.page.wait_for_function("() => document.querySelector('#zoom-state').textContent === ''")
    finally:
        page.close()
    return times


def screenshots(browser: Any, base: str, pages: dict[str, str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in pages.items():
        page = Page(browser, width=1280, height=1000)
        try:
            page.open(base + path, timeout_ms=60_000)
            page.page.screenshot(path=str(folder / f"dashboard-{name}.png"))
        finally:
            page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench-dashboard"))
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--big-steps", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--screenshots", type=Path, help="save a screenshot of each page here (docs/img)")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    db = build(args.data, args.jobs, args.steps, args.gpus, args.big_steps)
    ten = ",".join([BIG, *(f"job-{i:06d}" for i in range(1, 10))])
    pages = [
        ("jobs page (first 50 of all jobs)", "/"),
        ("jobs page sorted by throughput", "/?sort=-average_samples_per_second"),
        (f"job page, {args.big_steps:,} steps x {args.gpus} GPUs", f"/job?id={BIG}"),
        (f"job page, {args.steps} steps", "/job?id=job-000123"),
        (f"compare page, 10 jobs incl. the {args.big_steps:,}-step one", f"/compare?job_ids={ten}"),
        (f"summary page ({args.jobs + 1} jobs)", "/summary"),
    ]
    rows = []
    with serve(db) as base, sync_playwright() as playwright:
        browser = launch(playwright)
        measure(browser, base + "/summary", 1)  # warm the server's snapshot and the OS page cache
        for name, path in pages:
            times = measure(browser, base + path, args.repeat)
            rows.append((name, statistics.median(times), max(times)))
        zoom = zoom_times(browser, f"{base}/job?id={BIG}", 3)
        if args.screenshots:
            six = ",".join(f"job-{i:06d}" for i in range(1, 7))  # of one length: their curves side by side
            shots = {
                "jobs": "/",
                "job": f"/job?id={BIG}&log=1",
                "compare": f"/compare?job_ids={six}",
                "summary": "/summary",
            }
            screenshots(browser, base, shots, args.screenshots)
        browser.close()
    print(f"\n{args.jobs + 1} jobs; each page opened {args.repeat} times in a new browser context\n")
    print("| page | median ms | max ms | target | met |")
    print("|---|---:|---:|---|---|")
    for name, median, worst in rows:
        met = "yes" if worst < TARGET_MS else "**no**"
        print(f"| {name} | {median:.0f} | {worst:.0f} | < {TARGET_MS} ms | {met} |")
    print(f"| zoom into a range of the {args.big_steps:,}-step job (drag to redrawn) | {statistics.median(zoom):.0f} "
          f"| {max(zoom):.0f} | | |")  # fmt: skip


if __name__ == "__main__":
    main()
