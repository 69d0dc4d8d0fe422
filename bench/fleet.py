"""Benchmark: GPU telemetry of a fleet (issue 14) — spool ingest, cron runs, bytes at rest, charts.

    python bench/fleet.py [--hosts 8] [--hours 24] [--small-hours 3] [--big] [--big-samples 50000000]
                          [--keep DIR] [--parse-only]

Generates a fleet's spool (``<host>-<YYYYMMDDHH>.jsonl`` as sampler/spool.py writes it: hosts x 8
GPUs sampled every second, realistic values with some throttle bits, a job per host and week,
timestamps ending a minute before now so that the last hour stays hot) with DuckDB's JSON
writer, then measures, each run in a fresh process:

1. DuckDB's own ``read_json`` of the spool files into a table (the floor) against the first
   ``runlytics ingest --spool`` of the same files (--hosts x 8 GPUs x --hours);
2. a cron run adding one minute of every GPU's samples, with --small-hours and with --hours of
   samples stored (wall seconds less a bare ``python -c 'import runlytics.cli'``, and the ratio);
3. bytes per raw sample at rest: everything in the warehouse's folder (the DuckDB file,
   snapshots, Parquet parts, anything else runlytics wrote) over the samples stored, and by kind
   (the live file, its snapshots, each sealed table's parts);
4. with --big: --big-samples samples stored (ingested a day of spool at a time, each day's files
   deleted once read), one job's GPU chart (/api/training/{job}/gpus?max_points=1000, 8 GPUs,
   7 days) and the fleet's utilization over 30 days (/api/training/analytics/fleet), and the
   peak memory of those ingest runs.

Prints Markdown tables; docs/benchmark.md ("Fleet-scale telemetry") holds the figures of the
project machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parent.parent
GPUS_PER_HOST = 8
WEEK = 7 * 86400

FLOOR = """
import duckdb, glob, sys
files = sorted(glob.glob(sys.argv[1] + '/*.jsonl'))
con = duckdb.connect(sys.argv[2])
con.execute("SET enable_progress_bar = false")
con.execute("CREATE TABLE samples AS SELECT * FROM read_json(?, format = 'newline_delimited')", [files])
print(con.execute("SELECT count(*) FROM samples").fetchone()[0])
"""
INGEST = (
    "import sys; from runlytics import cli; "
    "sys.exit(cli.main(['ingest', *sys.argv[3:], '--spool', sys.argv[1], '--db', sys.argv[2], '--json']))"
)
START = "import runlytics.cli"
# Reading and parsing alone: the spool staged batch by batch as ingest does, nothing stored.
STAGE_ONLY = """
import glob, sys, duckdb
from pathlib import Path
from runlytics.ingest import gpu_samples as g
con, rows, batch, size = duckdb.connect(), 0, [], 0
for path in sorted(Path(p) for p in glob.glob(sys.argv[1] + '/*.jsonl')):
    for piece in g.read_pieces(path, 0, 1, g.PIECE_BYTES):
        batch.append(piece)
        size += len(piece.data)
        if size >= g.BATCH_BYTES:
            rows += sum(s.rows for s in g.stage(con, batch))
            batch, size = [], 0
rows += sum(s.rows for s in g.stage(con, batch))
print(rows)
"""

# One host's hour of samples, in file order (by second, then GPU); $t0 the hour's first second.
SAMPLES = """
COPY (
    SELECT round($t0 + s + 0.001 * ((g * 37 + s) % 50), 3) AS ts, $host AS host,
           $host || '-job-' || CAST(($t0 + s) // {week} AS VARCHAR) AS job_id, g AS gpu_index,
           'GPU-' || md5($host || CAST(g AS VARCHAR))[1:8] || '-5c1e-4b2a-9f3d-0a1b2c3d4e5f' AS gpu_uuid,
           CAST(greatest(0, least(100, 80 + 25 * sin((s + g * 13) / 97.0))) AS INTEGER)::DOUBLE
               AS utilization_percent,
           round(60000 + 5000 * cos(s / 300.0), 1) AS memory_used_mb, 81559.0 AS memory_total_mb,
           CAST(65 + 8 * sin(s / 600.0 + g) AS INTEGER)::DOUBLE AS temperature_c,
           round(280 + 60 * sin((s * 7 + g) / 113.0), 3) AS power_w, 1980.0 AS sm_clock_mhz,
           CASE WHEN (s + g * 11) % 97 = 0 THEN 4 WHEN (s + g) % 331 = 0 THEN 1 ELSE 0 END AS clocks_event_reasons
    FROM range($first, $last) r(s), range({gpus}) q(g)
    ORDER BY s, g
) TO '{path}' (FORMAT json)
""".replace("{week}", str(WEEK)).replace("{gpus}", str(GPUS_PER_HOST))


def hosts_of(n: int) -> list[str]:
    return [f"node-{h:03d}" for h in range(n)]


def write_spool(folder: Path, hosts: list[str], start: int, end: int) -> int:
    """Samples of every host from ``start`` to ``end`` (epoch seconds), appended to the hours' files."""
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    scratch = folder.parent / ".scratch.jsonl"
    lines = 0
    hour = start - start % 3600
    while hour < end:
        first, last = max(start, hour) - hour, min(end, hour + 3600) - hour
        for host in hosts:
            target = folder / f"{host}-{time.strftime('%Y%m%d%H', time.gmtime(hour))}.jsonl"
            sql = SAMPLES.replace("{path}", str(scratch if target.exists() else target))
            con.execute(sql, {"t0": hour, "host": host, "first": first, "last": last})
            if target.exists() and scratch.exists():
                with target.open("ab") as out, scratch.open("rb") as src:
                    shutil.copyfileobj(src, out)
                scratch.unlink()
            lines += (last - first) * GPUS_PER_HOST
        hour += 3600
    return lines


def write_jobs(root: Path, hosts: list[str], start: int, end: int) -> None:
    """A progress.json per job (host and week), so that the API knows the jobs the samples name."""
    for host in hosts:
        for week in range(start // WEEK, (end - 1) // WEEK + 1):
            job = f"{host}-job-{week}"
            began, ended = max(start, week * WEEK), min(end, (week + 1) * WEEK)
            folder = root / job
            folder.mkdir(parents=True, exist_ok=True)
            progress = {
                "job_id": job, "status": "running", "started_at": began, "config": {"batch_size": 8},
                "history": [{"step": 1, "timestamp": began + 1, "loss": 2.0, "iteration_time": 1.0},
                            {"step": 2, "timestamp": ended - 1, "loss": 1.0, "iteration_time": 1.0}],
            }  # fmt: skip
            (folder / "progress.json").write_text(json.dumps(progress))


def timed(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB and stdout of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"{args} failed:\n{result.stderr}")
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return seconds, peak, result.stdout


def ingest(spool: Path, warehouse: Path, *extra: str) -> tuple[float, float, dict]:
    seconds, peak, out = timed([sys.executable, "-c", INGEST, str(spool), str(warehouse), *extra])
    return seconds, peak, json.loads(out)


def start_seconds() -> float:
    return min(timed([sys.executable, "-c", START])[0] for _ in range(3))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def at_rest(warehouse: Path) -> dict[str, int]:
    """Bytes at rest by kind: the live DuckDB file, its snapshots, and each sealed table's parts."""
    out = {"duckdb": warehouse.stat().st_size}
    out["snapshots"] = folder_bytes(warehouse.with_name(warehouse.name + ".snapshots"))
    parts_folder = warehouse.with_name(warehouse.name + ".parts")
    for table in sorted(p.name for p in parts_folder.iterdir()) if parts_folder.is_dir() else []:
        out[f"parts {table}"] = folder_bytes(parts_folder / table)
    return out


def stored_samples(warehouse: Path) -> int:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def cron_minutes(
    spool: Path, warehouse: Path, hosts: list[str], end: int, start_s: float, runs: int
) -> tuple[list[float], int]:
    """Append one minute of every GPU's samples after ``end``, ``runs`` times, and time each run
    that reads it (the first also pays the bounded compaction of what the first ingest wrote)."""
    seconds: list[float] = []
    for k in range(runs):
        write_spool(spool, hosts, end + 60 * k, end + 60 * (k + 1))
        wall, _, summary = ingest(spool, warehouse)
        seconds.append(wall - start_s)
    return seconds, summary["gpu_samples"]


def fleet(tmp: Path, hosts: list[str], hours: int, end: int, label: str, cron_runs: int) -> dict[str, Any]:
    """Spool of ``hours`` ending at ``end``: floor, first ingest, cron minutes, bytes at rest."""
    spool, home = tmp / f"spool-{label}", tmp / f"warehouse-{label}"
    home.mkdir()
    warehouse = home / "runlytics.duckdb"
    lines = write_spool(spool, hosts, end - hours * 3600, end)
    floor_s, floor_mb, out = timed([sys.executable, "-c", FLOOR, str(spool), str(tmp / f"floor-{label}.duckdb")])
    assert int(out) == lines, (out, lines)
    (tmp / f"floor-{label}.duckdb").unlink()
    ingest_s, ingest_mb, summary = ingest(spool, warehouse)
    assert summary["gpu_samples"] == lines, summary
    start_s = start_seconds()
    cron, cron_samples = cron_minutes(spool, warehouse, hosts, end, start_s, cron_runs)
    stored = stored_samples(warehouse)
    return {
        "samples": lines, "floor_s": floor_s, "floor_mb": floor_mb, "ingest_s": ingest_s, "ingest_mb": ingest_mb,
        "cron_s": statistics.median(cron), "cron_first_s": cron[0], "cron_max_s": max(cron),
        "cron_samples": cron_samples, "start_s": start_s, "stored": stored,
        "bytes": folder_bytes(home), "spool_bytes": folder_bytes(spool), "at_rest": at_rest(warehouse),
    }  # fmt: skip


def big(tmp: Path, hosts: list[str], samples: int, end: int) -> dict[str, float]:
    """``samples`` stored, a day of spool at a time; chart and fleet-utilization reads."""
    from fastapi.testclient import TestClient

    from runlytics.api.app import create_app

    spool, home, jobs = tmp / "spool-big", tmp / "warehouse-big", tmp / "jobs-big"
    home.mkdir()
    warehouse = home / "runlytics.duckdb"
    per_second = len(hosts) * GPUS_PER_HOST
    start = end - (samples // per_second)
    write_jobs(jobs, hosts, start, end)
    peak = 0.0
    day = start
    while day < end:
        stop = min(end, day + 86400)
        write_spool(spool, hosts, day, stop)
        _, mb, _ = ingest(spool, warehouse, str(jobs)) if day == start else ingest(spool, warehouse)
        peak = max(peak, mb)
        if stop < end - 3600:  # read: the ledger keeps their offsets; the last hours stay for the cron run
            for path in spool.glob("*.jsonl"):
                path.unlink()
        day = stop
    stored = stored_samples(warehouse)
    client = TestClient(create_app(warehouse))
    job = f"{hosts[0]}-job-{(end - 1) // WEEK}"
    since = (datetime.fromtimestamp(end, UTC) - timedelta(days=30)).isoformat()
    reads = {
        "chart": f"/api/training/{job}/gpus?max_points=1000",
        "fleet": f"/api/training/analytics/fleet?since={since}",
    }
    out: dict[str, float] = {"stored": stored, "peak_mb": peak, "bytes": folder_bytes(home)}
    for name, url in reads.items():
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:300])
        times = []
        for _ in range(7):
            began = time.perf_counter()
            client.get(url)
            times.append(time.perf_counter() - began)
        out[f"{name}_ms"] = statistics.median(times) * 1000
    out["chart_points"] = len(client.get(reads["chart"]).json()["readings"])
    return out


def parse_only(hosts: list[str], hours: int, end: int, keep: Path | None) -> None:
    """DuckDB's read_json of the spool against ingest's reading and parsing alone (no store)."""
    with tempfile.TemporaryDirectory(dir=keep) as scratch:
        tmp = Path(scratch)
        lines = write_spool(tmp / "spool", hosts, end - hours * 3600, end)
        floor_s, floor_mb, _ = timed([sys.executable, "-c", FLOOR, str(tmp / "spool"), str(tmp / "floor.duckdb")])
        stage_s, stage_mb, out = timed([sys.executable, "-c", STAGE_ONLY, str(tmp / "spool")])
        assert int(out) == lines, (out, lines)
    print(f"| {len(hosts) * GPUS_PER_HOST} GPUs, {hours} h | samples | seconds | peak MiB |")
    print("|---|---:|---:|---:|")
    print(f"| DuckDB read_json of the spool | {lines:,} | {floor_s:.2f} | {floor_mb:.0f} |")
    print(f"| gpu_samples.stage alone (reading, parsing) | {lines:,} | {stage_s:.2f} | {stage_mb:.0f} |")
    print()
    print(f"stage / read_json = {stage_s / floor_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=8, help="hosts of 8 GPUs (default 8: 64 GPUs)")
    parser.add_argument("--hours", type=int, default=24, help="hours of spool of the large fleet (default 24)")
    parser.add_argument("--small-hours", type=int, default=3, help="hours stored for the small cron run (default 3)")
    parser.add_argument("--big", action="store_true", help="also store --big-samples and time the chart reads")
    parser.add_argument("--big-samples", type=int, default=50_000_000)
    parser.add_argument("--cron-runs", type=int, default=5, help="cron minutes timed one after another (default 5)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--parse-only", action="store_true", help="only read_json against the reading and parsing")
    args = parser.parse_args()

    hosts = hosts_of(args.hosts)
    now = int(time.time())
    end = now - now % 60 - 60  # whole minutes; the cron minute is the last one before now
    if args.parse_only:
        parse_only(hosts, args.hours, end, args.keep)
        return
    with tempfile.TemporaryDirectory(dir=args.keep) as scratch:
        tmp = Path(scratch)
        small = fleet(tmp, hosts, args.small_hours, end, "small", args.cron_runs)
        shutil.rmtree(tmp / "spool-small")
        large = fleet(tmp, hosts, args.hours, end, "large", args.cron_runs)
        shutil.rmtree(tmp / "spool-large")
        shutil.rmtree(tmp / "warehouse-small")
        huge = big(tmp, hosts, args.big_samples, end) if args.big else None

    gpus = args.hosts * GPUS_PER_HOST
    print(f"| {gpus} GPUs, 1 s samples | samples | seconds | samples/s | peak MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, run in (("small", small), ("large", large)):
        lines = int(run["samples"])
        print(f"| DuckDB read_json of the spool ({name}) | {lines:,} | {run['floor_s']:.2f} | "
              f"{lines / run['floor_s']:,.0f} | {run['floor_mb']:.0f} |")  # fmt: skip
        print(f"| runlytics ingest --spool, first run ({name}) | {lines:,} | {run['ingest_s']:.2f} | "
              f"{lines / run['ingest_s']:,.0f} | {run['ingest_mb']:.0f} |")  # fmt: skip
    print()
    print(f"first ingest / read_json = {large['ingest_s'] / large['floor_s']:.2f}x "
          f"({large['samples']:,.0f} samples, {large['spool_bytes'] / 2**30:.2f} GiB of spool); "
          f"small: {small['ingest_s'] / small['floor_s']:.2f}x")  # fmt: skip
    print()
    print(f"| cron run: one minute of every GPU ({args.cron_runs} in a row) | stored | new samples | "
          "seconds beyond start: median | first | max | bytes/sample at rest |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, run in (("small", small), ("large", large)):
        print(f"| {name} | {run['stored']:,.0f} | {run['cron_samples']:,.0f} | {run['cron_s']:.2f} | "
              f"{run['cron_first_s']:.2f} | {run['cron_max_s']:.2f} | "
              f"{run['bytes'] / run['stored']:.1f} |")  # fmt: skip
    for name, run in (("small", small), ("large", large)):
        kinds = ", ".join(f"{kind} {size / 2**20:.1f} MiB" for kind, size in run["at_rest"].items())  # type: ignore[attr-defined]
        print(f"at rest ({name}): {kinds}")
    print()
    print(
        f"cron large / small = {large['cron_s'] / small['cron_s']:.2f} (medians), "
        f"{large['cron_first_s'] / small['cron_first_s']:.2f} (first runs); process start {small['start_s']:.2f} s"
    )
    if huge:
        print()
        print("| stored | chart (8 GPUs, 7 days, max_points=1000) ms | points | fleet utilization 30 days ms "
              "| peak ingest MiB | bytes/sample |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {huge['stored']:,.0f} | {huge['chart_ms']:.1f} | {huge['chart_points']:.0f} | "
              f"{huge['fleet_ms']:.1f} | {huge['peak_mb']:.0f} | {huge['bytes'] / huge['stored']:.1f} |")  # fmt: skip
    print()
    print(f"cpus {os.cpu_count()}, duckdb {duckdb.__version__}")


if __name__ == "__main__":
    main()
