"""Benchmark: GPU charts and the fleet's utilization with tens of millions of GPU samples stored.

    python bench/gpu_reads.py [--data DIR] [--hosts 16] [--days 30] [--interval 6.5] [--requests 30]

Builds a warehouse straight into its tables with DuckDB SQL (no spool: ingesting 50M samples
is bench/fleet.py's subject, not this one's): the jobs through a real ingest of their
progress.json files, then the samples as sealed Parquet parts, one per host and day
(warehouse/parts.py), their rollups (warehouse/rollups.py) as sealed parts too, one per day in
job order, as ingest's sealing and compaction leave them (revision 0021), and
the jobs' derived rows (warehouse/results.py), as an ingest of the same samples would leave them.

- host node-00: the job ``node-08-week`` (the week job), 8 GPUs sampled every second for the last 7 days (4.8M samples);
- hosts node-01 … node-NN: 8 GPUs each, jobs of 12 hours back to back over the whole span,
  sampled every ``--interval`` seconds (the default makes 50M samples in all over 30 days: more
  minutes per sample than at 1 s, so more rollup rows to read than a fleet sampled every second).

Then serves it (``runlytics serve``) and times over loopback, after 3 warm-up requests:
the week job's chart (``/gpus?max_points=1000``: the issue's target, < 100 ms), the dashboard's
3,200 points, one GPU, and the fleet's utilization over the whole span
(``/analytics/fleet``: < 200 ms), each also as the server's CPU per request (what load on a
shared machine disturbs least). For contrast it times the same chart's raw downsampling (the
SQL the API used before the rollups) on the same data. With ``--data DIR`` the warehouse is kept
and reused.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# bench/api.py by its path: the name `api` is the project's API package
_spec = importlib.util.spec_from_file_location("bench_api", REPO / "bench" / "api.py")
assert _spec is not None and _spec.loader is not None
bench_api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_api)
CLI, ENV, free_port, http_times, pct, wait_ready = (
    bench_api.CLI,
    bench_api.ENV,
    bench_api.free_port,
    bench_api.http_times,
    bench_api.pct,
    bench_api.wait_ready,
)
from runlytics.warehouse import fleet, history, parts, results, rollups, snapshots, trends  # noqa: E402

GPUS = 8
JOB_HOURS = 12
# the charted job, on host node-00; named among the others, so that no zonemap on job_id singles it out
WEEK = "node-08-week"
WEEK_DAYS = 7
TARGET_CHART_MS = 100.0
TARGET_FLEET_MS = 200.0

# One host's samples of one day: a row per GPU and tick; jobs of JOB_HOURS back to back (node-00:
# the week job alone); values wobble deterministically, with a one-second spike now and then.
SAMPLES_OF_DAY = """
SELECT CASE WHEN $host = 'node-00' THEN $week
            ELSE $host || '-' || lpad(CAST(CAST(floor(epoch(ts - $start) / 3600 / $job_hours) AS BIGINT) AS VARCHAR),
                                      3, '0')
       END AS job_id,
       $host AS host, g AS gpu_index, ts, 'GPU-' || $host || '-' || g AS gpu_uuid,
       CASE WHEN h % 9973 = 0 THEN 100.0 ELSE 40.0 + (h % 500) / 10 END AS utilization_percent,
       30000.0 + (h % 1000) * 10 AS memory_used_mb, 81920.0 AS memory_total_mb,
       55.0 + (h % 200) / 10 AS temperature_c, 250.0 + (h % 3000) / 20 AS power_w,
       1400.0 + (h % 50) AS sm_clock_mhz, CASE WHEN h % 101 = 0 THEN 4 ELSE 0 END AS clocks_event_reasons,
       'spool' AS source, 'GPU-' || $host || '-' || g AS gpu_key
FROM (
    SELECT ts, g, hash(ts, g, $host) AS h
    FROM generate_series($lo, $hi - INTERVAL 1 MICROSECOND, $step) t(ts), range(0, $gpus) r(g)
)
"""


def build(folder: Path, hosts: int, days: int, interval: float) -> Path:
    db = folder / "warehouse.duckdb"
    root = folder / "jobs"
    end = datetime(2026, 11, 30)
    start = end - timedelta(days=days)
    week_start = end - timedelta(days=WEEK_DAYS)
    # the jobs, through a real ingest: jobs, steps and the migrations of a fresh warehouse
    jobs = [(WEEK, week_start, end)]
    for h in range(1, hosts):
        for j in range(days * 24 // JOB_HOURS):
            lo = start + timedelta(hours=JOB_HOURS * j)
            jobs.append((f"node-{h:02d}-{j:03d}", lo, lo + timedelta(hours=JOB_HOURS)))
    for job_id, lo, hi in jobs:
        t0, t1 = lo.replace(tzinfo=UTC).timestamp(), hi.replace(tzinfo=UTC).timestamp()
        doc = {
            "job_id": job_id, "status": "completed", "started_at": t0, "ended_at": t1,
            "config": {"model_name": "llama-7b", "batch_size": 32, "gpu_count": GPUS},
            "history": [{"step": s, "timestamp": t0 + (t1 - t0) * s / 10, "loss": 3.0 - s / 10, "iteration_time": 1.0}
                        for s in range(1, 11)],
        }  # fmt: skip
        (root / job_id).mkdir(parents=True, exist_ok=True)
        (root / job_id / "progress.json").write_text(json.dumps(doc))
    done = subprocess.run(
        [*CLI, "ingest", "--db", str(db), str(root)], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"runlytics ingest exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    con = duckdb.connect(str(db))
    try:
        con.execute("BEGIN")
        day = start
        while day < end:
            for h in range(hosts):
                host = f"node-{h:02d}"
                if h == 0 and day < week_start:
                    continue
                step = timedelta(seconds=1 if h == 0 else interval)
                params = {
                    "host": host, "start": start, "job_hours": JOB_HOURS, "lo": day, "hi": day + timedelta(days=1),
                    "step": step, "gpus": GPUS, "week": WEEK,
                }  # fmt: skip
                parts.write_part(
                    con, parts.GPU_SAMPLES, SAMPLES_OF_DAY, params, date(day.year, day.month, day.day), host
                )
            day += timedelta(days=1)
            print(f"samples of {day:%Y-%m-%d} written", file=sys.stderr)
        parts.refresh_view(con, parts.GPU_SAMPLES)
        # the rollups as ingest leaves them (revision 0021): each complete day of minutes sealed
        # into one Parquet part in job order (parts.seal, parts.compact); and the GPUs of
        # each job (job_gpu_series)
        con.execute("CREATE TEMP TABLE rolled AS " + rollups.SELECT_ALL)
        for (day,) in con.execute("SELECT DISTINCT CAST(minute AS DATE) FROM rolled ORDER BY 1").fetchall():
            lo = datetime(day.year, day.month, day.day)
            bounds = {"lo": lo, "hi": lo + timedelta(days=1)}
            minutes = "SELECT * FROM rolled WHERE minute >= $lo AND minute < $hi"
            parts.write_part(con, parts.GPU_MINUTES, minutes, bounds, day, "")
        con.execute("DROP TABLE rolled")
        parts.refresh_view(con, parts.GPU_MINUTES)
        con.execute(rollups.SERIES_REFILL)
        results.refresh(con, {job_id for job_id, _, _ in jobs})
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    snapshots.publish(db)
    return db


def ms(values: list[float]) -> str:
    p50, p90, top = (1000 * v for v in (statistics.median(values), pct(values, 0.9), max(values)))
    return f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, max {top:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="keep (and reuse) the warehouse here")
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--interval", type=float, default=6.5, help="seconds between samples, hosts but node-00")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    folder = args.data or Path(tempfile.mkdtemp(prefix="gpu-reads-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "warehouse.duckdb"
    if not snapshots.latest(db):
        started = time.perf_counter()
        build(folder, args.hosts, args.days, args.interval)
        print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    con = snapshots.connect_latest(db)
    try:
        (samples,) = con.execute("SELECT count(*) FROM gpu_samples").fetchone() or (0,)
        (week,) = con.execute("SELECT count(*) FROM gpu_samples WHERE job_id = $week", {"week": WEEK}).fetchone() or (
            0,
        )
        (minutes,) = con.execute("SELECT count(*) FROM gpu_minutes").fetchone() or (0,)
        (per_job,) = con.execute("SELECT count(*) FROM utilization_minutes").fetchone() or (0,)
        (n_parts,) = con.execute("SELECT count(*) FROM gpu_parts").fetchone() or (0,)
        # the chart as it was read before the rollups: the raw samples' downsampling
        raw_sql = history.GPU_DOWNSAMPLED.format(
            source=history.SAMPLES_OF_JOB,
            x="epoch(ts)",
            extremes=", ".join(history.GPU_EXTREME.format(f=f) for f in history.GPU_FIGURES),
            keep_extremes=history.GPU_KEEP_EXTREMES,
        )
        raw_times = []
        for _ in range(3):
            t = time.perf_counter()
            con.execute(raw_sql, {"job_id": WEEK, "gpu": None, "max_points": 1000, "buckets": 15}).fetchall()
            raw_times.append(time.perf_counter() - t)
        # CPU seconds per call (every DuckDB thread of this process): what load on a shared
        # machine disturbs least; an idle machine's wall time is at most this
        cpu = {
            "chart (history.gpu_readings_downsampled, max_points=1000)": lambda: history.gpu_readings_downsampled(
                con, WEEK, None, 1000
            ),
            "fleet (trends.fleet_trends)": lambda: trends.fleet_trends(con, fleet.Filters(), 20, 120),
            "fleet utilization query alone (trends.UTILIZATION_OVER_TIME)": lambda: con.execute(
                trends.UTILIZATION_OVER_TIME, {**fleet.Filters().params(), "buckets": 120}
            ).fetchall(),
        }
        cpu_times = {name: cpu_seconds(fn, args.requests) for name, fn in cpu.items()}
    finally:
        con.close()
    print(f"{samples:,} samples stored ({week:,} of the week job) in {n_parts} parts; "
          f"{minutes:,} gpu_minutes rows; {per_job:,} utilization_minutes rows")  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # a kept warehouse's last ingest is old: readiness must not wait on its staleness
    server = subprocess.Popen(
        [*CLI, "serve", "--db", str(db), "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env={**ENV, "RUNLYTICS_STALE_AFTER": "0"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=60.0) as client:
            chart = client.get(f"/api/training/{WEEK}/gpus", params={"max_points": 1000}).json()
            cases = {
                "week job's chart, max_points=1000": f"/api/training/{WEEK}/gpus?max_points=1000",
                "week job's chart, max_points=3200 (dashboard)": f"/api/training/{WEEK}/gpus?max_points=3200",
                "week job's chart, one GPU, max_points=1000": f"/api/training/{WEEK}/gpus?max_points=1000&gpu=3",
                "fleet trends (utilization over 30 days)": "/api/training/analytics/fleet",
            }
            timed, served = {}, {}
            for name, path in cases.items():
                before = server_cpu(server.pid)
                timed[name] = http_times(client, [path] * args.requests)
                # the server's CPU seconds per request (warm-up requests included: 3 more)
                served[name] = (server_cpu(server.pid) - before) / (args.requests + 3)
            trend = client.get("/api/training/analytics/fleet").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"chart: resolution {chart['resolution']}, {chart['bucket_seconds']} s buckets, "
          f"{len(chart['readings'])} readings; fleet: {len(trend['utilization_over_time'])} buckets, "
          f"{trend['jobs']} jobs")  # fmt: skip
    for name, values in timed.items():
        target = TARGET_FLEET_MS if name.startswith("fleet") else TARGET_CHART_MS
        met = "met" if 1000 * statistics.median(values) < target else "MISSED"
        print(
            f"- {name}: {ms(values)}; server CPU {1000 * served[name]:.1f} ms/request (target < {target:.0f} ms: {met})"
        )
    print(f"- before (raw downsampling SQL of the week job, in process): {ms(raw_times)}")
    for name, (wall, used) in cpu_times.items():
        print(f"- in process, {name}: wall {ms(wall)}; CPU p50 {1000 * statistics.median(used):.1f} ms")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used (every thread), from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(fn: Callable[[], object], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (this process, all threads) per call, after one warm-up call."""
    fn()
    wall, used = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF)
        wall.append(time.perf_counter() - t)
        used.append(after.ru_utime + after.ru_stime - c.ru_utime - c.ru_stime)
    return wall, used


if __name__ == "__main__":
    main()
