"""Benchmark: the REST API over loopback against the original specification's approach.

    python bench/api.py [--jobs 2000 --steps 200 --gpus 2 --big-jobs 3 --big-steps 20000] [--data DIR]

Generates the jobs (bench/generate.py) plus a few long jobs (``big-000000`` …, generated with
another seed and renamed), ingests them, starts ``runlytics serve`` and measures with httpx:

- (a) the summary endpoint against the original specification's approach: re-read and
  json-parse every job's progress.json per request and compute the summary in Python;
- (b) one long job's analytics via the API against json.load of its progress.json and the
  same analytics computed in Python;
- (c) single-job analytics p50/p95 over random jobs, and the summary's p50.

Prints a Markdown table; docs/benchmark.md ("## API") holds the figures of the project machine.
With ``--data DIR`` the jobs and the warehouse are kept in DIR and reused by the next run.
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
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "runlytics"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
STATUSES = ("queued", "running", "paused", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")

TARGET_SUMMARY_RATIO = 50.0
TARGET_JOB_RATIO = 5.0
TARGET_JOB_P50_MS = 20.0
TARGET_SUMMARY_P50_MS = 100.0


# --- the original specification's approach: parse the files, compute in Python -------------


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def naive_job(doc: dict[str, Any]) -> dict[str, Any]:
    """One job's analytics (analytics.md, "One job"), straight from its parsed progress.json."""
    config = doc.get("config") or {}
    batch = _num(config.get("batch_size"))
    rows = sorted({r["step"]: r for r in doc.get("history") or [] if isinstance(r.get("step"), int)}.items())
    prev_step, prev_ts = 0, None
    samples_sum = seconds_sum = timed_samples = timed_seconds = timed_delta = 0.0
    rates: list[float] = []
    losses: list[float] = []
    util: list[float] = []
    memory: list[float] = []
    temp: list[float] = []
    first_ts = first_seconds = None
    for step, r in rows:
        delta = step - prev_step
        ts = _time(r.get("timestamp"))
        it = _num(r.get("iteration_time"))
        seconds = it * delta if it is not None else (
            (ts - prev_ts).total_seconds() if ts and prev_ts and ts >= prev_ts else None
        )  # fmt: skip
        rate = _num(r.get("samples_per_second"))
        samples = _num(r.get("samples"))
        if samples is None:
            samples = batch * delta if batch is not None else (rate * seconds if rate and seconds else None)
        if first_ts is None:
            first_ts, first_seconds = ts, seconds
        if samples is not None:
            samples_sum += samples
        if seconds is not None:
            seconds_sum += seconds
            timed_delta += delta
            if samples is not None:
                timed_samples += samples
                timed_seconds += seconds
        if rate is not None:
            rates.append(rate)
        if (loss := _num(r.get("loss"))) is not None:
            losses.append(loss)
        for g in r.get("gpus") or []:
            for values, key in ((util, "utilization_percent"), (memory, "memory_used_mb"), (temp, "temperature_c")):
                if (v := _num(g.get(key))) is not None:
                    values.append(v)
        prev_step, prev_ts = step, ts
    start = _time(doc.get("started_at"))
    if start is None and first_ts is not None and first_seconds is not None:
        start = first_ts - timedelta(seconds=first_seconds)
    status = doc.get("status")
    end = _time(doc.get("ended_at")) if status in TERMINAL else None
    if end is None:
        candidates = [t for t in (prev_ts, _time(doc.get("updated_at"))) if t is not None]
        end = max(candidates) if candidates else None
    total_seconds = (end - start).total_seconds() if start and end else None
    throughput = timed_samples / timed_seconds if timed_seconds > 0 else (statistics.fmean(rates) if rates else None)
    peak = max(rates, default=None)
    target = _num(config.get("target_samples_per_second"))
    reference = target if target and target > 0 else peak
    throughput_score = min(100.0, 100 * throughput / reference) if throughput is not None and reference else None
    gpu_util = statistics.fmean(util) if util else None
    scores = [s for s in (gpu_util, throughput_score) if s is not None]
    checkpoints = sorted({c["step"] for c in doc.get("checkpoints") or [] if isinstance(c.get("step"), int)})
    initial, final = (losses[0], losses[-1]) if losses else (None, None)
    return {
        "job_id": doc.get("job_id"),
        "status": status if status in STATUSES else "unknown",
        "total_seconds": total_seconds,
        "training_seconds": seconds_sum,
        "total_iterations": max([s for s, _ in rows] + [doc.get("current_step") or 0], default=None),
        "total_samples": samples_sum,
        "average_samples_per_second": throughput,
        "peak_samples_per_second": peak,
        "average_iteration_time": seconds_sum / timed_delta if timed_delta else None,
        "initial_loss": initial,
        "final_loss": final,
        "best_loss": min(losses, default=None),
        "loss_reduction_percent": 100 * (initial - final) / initial if initial else None,
        "average_gpu_utilization": gpu_util,
        "average_gpu_memory_mb": statistics.fmean(memory) if memory else None,
        "peak_gpu_memory_mb": max(memory, default=None),
        "average_gpu_temp_celsius": statistics.fmean(temp) if temp else None,
        "peak_gpu_temp_celsius": max(temp, default=None),
        "total_checkpoints": len(checkpoints),
        "final_checkpoint": f"checkpoint-{checkpoints[-1]}" if checkpoints else None,
        "gpu_utilization_score": gpu_util,
        "throughput_score": throughput_score,
        "overall_score": statistics.fmean(scores) if scores else None,
    }


def naive_summary(root: Path, top: int = 10) -> dict[str, Any]:
    """The all-jobs summary, as one request of the original approach: every file, every time."""
    jobs = []
    for path in sorted(root.glob("*/progress.json")):
        with path.open("rb") as f:
            jobs.append(naive_job(json.load(f)))

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.fmean(known) if known else None

    ranked = sorted(
        jobs,
        key=lambda j: (j["average_samples_per_second"] is None, -(j["average_samples_per_second"] or 0), j["job_id"]),
    )
    return {
        "total_jobs": len(jobs),
        "jobs_by_status": dict(Counter(j["status"] for j in jobs)),
        "average_training_duration_seconds": mean([j["total_seconds"] for j in jobs if j["status"] == "completed"]),
        "total_training_time_hours": sum(j["training_seconds"] for j in jobs) / 3600,
        "average_throughput_samples_per_sec": mean([j["average_samples_per_second"] for j in jobs]),
        "top_performing_jobs": [
            {"job_id": j["job_id"], "throughput": j["average_samples_per_second"], "duration": j["total_seconds"]}
            for j in ranked[:top]
        ],
        "resource_trends": {
            "average_gpu_utilization": mean([j["average_gpu_utilization"] for j in jobs]),
            "average_peak_memory_mb": mean([j["peak_gpu_memory_mb"] for j in jobs]),
        },
    }


def naive_one_job(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return naive_job(json.load(f))


# --- setup ---------------------------------------------------------------------------------


def generate(root: Path, args: argparse.Namespace) -> None:
    gen = [sys.executable, str(REPO / "bench" / "generate.py")]
    subprocess.run([*gen, str(root), "--jobs", str(args.jobs), "--steps", str(args.steps), "--gpus", str(args.gpus)],
                   check=True)  # fmt: skip
    big = root.parent / "big.tmp"
    shutil.rmtree(big, ignore_errors=True)
    subprocess.run([*gen, str(big), "--jobs", str(args.big_jobs), "--steps", str(args.big_steps), "--gpus",
                    str(args.gpus), "--seed", "1"], check=True)  # fmt: skip
    # generate.py numbers jobs from job-000000: rename the long ones, folder and job_id both
    for i, folder in enumerate(sorted(big.iterdir())):
        doc = json.loads((folder / "progress.json").read_text())
        doc["job_id"] = f"big-{i:06d}"
        target = root / doc["job_id"]
        target.mkdir(parents=True, exist_ok=True)
        (target / "progress.json").write_text(json.dumps(doc))
    shutil.rmtree(big)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"runlytics serve exited with {server.returncode}")
        try:
            if httpx.get(base + "/readyz", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"runlytics serve not ready after {timeout:g} s")


# --- measuring -----------------------------------------------------------------------------


def http_times(client: httpx.Client, paths: list[str], warm: int = 3) -> list[float]:
    """Seconds per request, in order; every answer must be 200."""
    for path in paths[:warm]:
        client.get(path).raise_for_status()
    times = []
    for path in paths:
        start = time.perf_counter()
        response = client.get(path)
        response.json()
        times.append(time.perf_counter() - start)
        response.raise_for_status()
    return times


def call_times(fn: Any, repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def close(a: float | None, b: float | None, rel: float = 1e-6) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, rel_tol=rel))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--big-jobs", type=int, default=3)
    parser.add_argument("--big-steps", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200, help="single-job analytics requests (c)")
    parser.add_argument("--summary-requests", type=int, default=50)
    parser.add_argument("--naive-repeat", type=int, default=3, help="runs of the naive summary (a)")
    parser.add_argument("--data", type=Path, help="keep the jobs and warehouse here (reused when present)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.data or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        root, db = work / "jobs", work / "warehouse.duckdb"
        fresh = not root.exists()
        if fresh:
            start = time.perf_counter()
            generate(root, args)
            print(f"generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        start = time.perf_counter()
        done = subprocess.run([*CLI, "ingest", str(root), "--db", str(db), "--quiet"], cwd=REPO, env=ENV,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"runlytics ingest exited with {done.returncode}:\n{done.stdout}{done.stderr}")
        ingest_s = time.perf_counter() - start
        files = sorted(root.glob("*/progress.json"))
        data_mb = sum(p.stat().st_size for p in files) / 2**20
        print(f"ingested {len(files)} files ({data_mb:.0f} MiB) in {ingest_s:.1f} s", file=sys.stderr)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [*CLI, "serve", "--db", str(db), "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(base, server)
            with httpx.Client(base_url=base, timeout=60.0) as client:
                # (c) single-job analytics over random jobs, and the summary
                rng = random.Random(0)
                job_ids = [p.parent.name for p in files]
                job_paths = [f"/api/training/{rng.choice(job_ids)}/analytics" for _ in range(args.requests)]
                job_times = http_times(client, job_paths)
                summary_times = http_times(client, ["/api/training/analytics/summary"] * args.summary_requests)
                api_summary = client.get("/api/training/analytics/summary").json()
                # (b) one long job
                big = "big-000000"
                big_times = http_times(client, [f"/api/training/{big}/analytics"] * 50)
                api_big = client.get(f"/api/training/{big}/analytics").json()
        finally:
            server.terminate()
            server.wait(timeout=30)

        naive_big_times, naive_big = call_times(lambda: naive_one_job(root / big / "progress.json"), 5)
        naive_summary_times, naive = call_times(lambda: naive_summary(root), args.naive_repeat)

    # the naive figures must be the API's, or the comparison means nothing
    agree = (
        naive["total_jobs"] == api_summary["total_jobs"]
        and close(naive["average_throughput_samples_per_sec"], api_summary["average_throughput_samples_per_sec"])
        and close(naive["total_training_time_hours"], api_summary["total_training_time_hours"])
        and close(naive_big["average_samples_per_second"], api_big["performance"]["average_samples_per_second"])
        and naive_big["total_iterations"] == api_big["performance"]["total_iterations"]
        and close(naive_big["final_loss"], api_big["losses"]["final_loss"])
    )

    summary_p50 = statistics.median(summary_times)
    naive_summary_s = statistics.median(naive_summary_times)
    big_p50 = statistics.median(big_times)
    naive_big_s = statistics.median(naive_big_times)
    job_p50, job_p95 = pct(job_times, 0.5), pct(job_times, 0.95)
    summary_ratio, big_ratio = naive_summary_s / summary_p50, naive_big_s / big_p50

    def ok(met: bool) -> str:
        return "yes" if met else "**no**"

    total = args.jobs + args.big_jobs
    print(f"\n{total} jobs ({args.jobs} x {args.steps} steps, {args.big_jobs} x {args.big_steps} steps; "
          f"{args.gpus} GPUs), {data_mb:.0f} MiB of progress.json; "
          f"{'first ingest' if fresh else 'ingest of the kept data'} {ingest_s:.1f} s\n")  # fmt: skip
    print("| measure | runlytics API (HTTP) | original approach (parse + Python) | ratio | target | met |")
    print("|---|---:|---:|---:|---|---|")
    print(f"| (a) summary of all {total} jobs | {summary_p50 * 1e3:.1f} ms (p50 of {len(summary_times)}) "
          f"| {naive_summary_s * 1e3:,.0f} ms (median of {len(naive_summary_times)}) | {summary_ratio:,.0f}x "
          f"| >= {TARGET_SUMMARY_RATIO:g}x | {ok(summary_ratio >= TARGET_SUMMARY_RATIO)} |")  # fmt: skip
    print(f"| (b) one {args.big_steps:,}-step job's analytics | {big_p50 * 1e3:.1f} ms (p50 of {len(big_times)}) "
          f"| {naive_big_s * 1e3:,.0f} ms (median of {len(naive_big_times)}) | {big_ratio:,.0f}x "
          f"| >= {TARGET_JOB_RATIO:g}x | {ok(big_ratio >= TARGET_JOB_RATIO)} |")  # fmt: skip
    print(f"| (c) single-job analytics, random jobs, p50 | {job_p50 * 1e3:.1f} ms | | | < {TARGET_JOB_P50_MS:g} ms "
          f"| {ok(job_p50 * 1e3 < TARGET_JOB_P50_MS)} |")  # fmt: skip
    print(f"| (c) single-job analytics, random jobs, p95 | {job_p95 * 1e3:.1f} ms | | | | |")
    print(f"| (c) summary p50 | {summary_p50 * 1e3:.1f} ms | | | < {TARGET_SUMMARY_P50_MS:g} ms "
          f"| {ok(summary_p50 * 1e3 < TARGET_SUMMARY_P50_MS)} |")  # fmt: skip
    print(f"\n{len(job_times)} single-job requests; naive and API figures agree: {ok(agree)}")
    if not agree:
        print(f"naive: {json.dumps(naive)[:600]}\napi: {json.dumps(api_summary)[:600]}")


if __name__ == "__main__":
    main()
