"""Benchmark: the insight and metric endpoints over loopback (issues #16 and #17).

    python bench/insights_api.py [--jobs 2000 --steps 200 --gpus 2 --points 100000 --requests 50] [--data DIR]

Generates jobs (bench/generate.py's jobs, with anomalies injected so that insights exist: a loss
spike in every 3rd job, a NaN loss in every 7th, an hour's stall in every 11th) and one Lightning
run whose ``metrics.csv`` holds ``--points`` steps of ``train_loss`` and ``lr``; ingests them with
``runlytics ingest``, starts ``runlytics serve`` and measures with httpx, each request ``--requests``
times (p50 and p95, in ms):

- a job's metric list, and the ``--points``-point metric's history with ``max_points=1000``;
- a job's insights (random jobs);
- the fleet's insights, unfiltered and with filters (kind, severity, status, model, start time),
  and a second page (a cursor).

Targets (the issues'): metric list and history < 50 ms, a job's insights < 20 ms, the fleet's
list with filters < 50 ms. Prints a Markdown table; docs/benchmark.md holds the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from generate import MODELS, make_job  # noqa: E402

CLI = [sys.executable, "-m", "runlytics"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
RUN = "lightning_logs/version_0"
TARGETS_MS = {"metrics": 50.0, "history": 50.0, "job insights": 20.0, "fleet": 50.0}


def inject(doc: dict[str, Any], index: int) -> dict[str, Any]:
    history = doc["history"]
    if index % 3 == 0 and len(history) > 150:
        history[150]["loss"] = history[150]["loss"] * 10  # a spike
    if index % 7 == 0 and len(history) > 100:
        history[100]["loss"] = math.nan
    if index % 11 == 0 and len(history) > 120:
        for row in history[120:]:  # an hour without a row
            row["timestamp"] = (datetime.fromisoformat(row["timestamp"]) + timedelta(hours=1)).isoformat()
    return doc


def generate(root: Path, args: argparse.Namespace) -> None:
    rng = random.Random(0)
    for i in range(args.jobs):
        doc = inject(make_job(i, args.steps, args.gpus, rng), i)
        folder = root / doc["job_id"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "progress.json").write_text(json.dumps(doc, allow_nan=True))
    run = root / RUN
    run.mkdir(parents=True, exist_ok=True)
    with (run / "metrics.csv").open("w") as f:
        f.write("step,epoch,train_loss,lr\n")
        for step in range(args.points):
            loss = 3.0 / (1 + step / 1000) + 0.05 * rng.random() + (50.0 if step == args.points // 3 else 0.0)
            f.write(f"{step},{step // 10_000},{loss:.6f},{1e-4 * (1 - step / args.points):.8f}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(client: httpx.Client, url: str, params: dict[str, Any] | None, n: int) -> tuple[list[float], Any]:
    client.get(url, params=params)  # warm
    times, body = [], None
    for _ in range(n):
        began = time.perf_counter()
        response = client.get(url, params=params)
        times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (url, response.text[:300])
        body = response.json()
    return times, body


def p(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--data", type=Path, help="keep the jobs and the warehouse here (reused when present)")
    args = parser.parse_args()
    work = args.data or Path(tempfile.mkdtemp(prefix="runlytics-insights-bench-"))
    root, db = work / "jobs", work / "warehouse.duckdb"
    try:
        if not root.exists():
            began = time.perf_counter()
            generate(root, args)
            print(f"generated {args.jobs} jobs and a {args.points}-point run in {time.perf_counter() - began:.1f} s")
        if not db.exists():
            began = time.perf_counter()
            subprocess.run([*CLI, "ingest", "--quiet", "--db", str(db), str(root)], env=ENV, check=True)
            print(f"ingested in {time.perf_counter() - began:.1f} s")
        port = free_port()
        server = subprocess.Popen([*CLI, "serve", "--db", str(db), "--port", str(port)], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=30) as client:
                for _ in range(300):
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                measure(client, args)
        finally:
            server.terminate()
            server.wait()
    finally:
        if args.data is None:
            shutil.rmtree(work, ignore_errors=True)


def measure(client: httpx.Client, args: argparse.Namespace) -> None:
    n = args.requests
    rows: list[tuple[str, str, list[float], str]] = []
    times, body = timed(client, f"/api/training/{RUN}/metrics", None, n)
    points = {m["name"]: m["points"] for m in body["metrics"]}
    rows.append(("metrics", f"a job's metric list ({len(points)} metrics)", times, ""))
    params = {"name": "train_loss", "max_points": 1000}
    times, body = timed(client, f"/api/training/{RUN}/metrics/history", params, n)
    spike = max(body["points"], key=lambda q: q["value"])["step"]
    note = f"{len(body['points'])} of {points['train_loss']:,} points kept; spike at {spike} kept"
    rows.append(("history", "a metric's history, max_points=1000", times, note))
    rng = random.Random(1)
    jobs = [f"job-{rng.randrange(args.jobs):06d}" for _ in range(n)]
    job_times, counts = [], []
    for job in jobs:
        t, answer = timed(client, f"/api/training/{job}/insights", None, 1)
        job_times += t
        counts.append(len(answer["insights"]))
    rows.append(("job insights", "a job's insights (random jobs)", job_times, f"{statistics.mean(counts):.1f} each"))
    total = 0
    cursor = None
    while True:
        page = client.get("/api/training/insights", params={"limit": 10_000, **({"cursor": cursor} if cursor else {})})
        total += len(page.json()["insights"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    filters: list[tuple[str, dict[str, Any]]] = [
        ("no filter", {}),
        ("severity=critical", {"severity": "critical"}),
        ("kind=loss_spike&status=completed", {"kind": "loss_spike", "status": "completed"}),
        (f"model={MODELS[0]}&since=…&until=…", {"model": MODELS[0], "since": "2026-01-03", "until": "2026-01-08"}),
        ("kind=stall, limit=10", {"kind": "stall", "limit": 10}),
    ]
    for label, params in filters:
        times, body = timed(client, "/api/training/insights", params, n)
        rows.append(("fleet", f"the fleet's insights, {label}", times, f"{len(body['insights'])} on the page"))
    first = client.get("/api/training/insights", params={"severity": "warning"}).json()
    times, _ = timed(client, "/api/training/insights", {"severity": "warning", "cursor": first["next_cursor"]}, n)
    rows.append(("fleet", "the fleet's insights, severity=warning, 2nd page", times, ""))
    print(f"\n{args.jobs} jobs x {args.steps} steps ({total:,} insights), {args.points:,}-point metric;", end=" ")
    print(f"{n} requests each; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| request | min ms | p50 ms | p95 ms | target (p50) | |")
    print("|---|---:|---:|---:|---|---|")
    for key, label, times, note in rows:
        target = TARGETS_MS[key]
        verdict = "met" if p(times, 0.5) < target else "MISSED"
        print(
            f"| {label} | {min(times):.1f} | {p(times, 0.5):.1f} | {p(times, 0.95):.1f} | < {target:g} ms: {verdict} "
            f"| {note} |"
        )


if __name__ == "__main__":
    main()
