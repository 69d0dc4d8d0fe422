"""What a cron run and its snapshot cost with GPU samples in sealed Parquet parts, by samples stored.

    .venv/bin/python bench/parts_publish.py --samples 700000 5500000

For each size: a warehouse holding that many 1 s samples of 8 hosts x 8 GPUs (one job per
host), stored through ingest's own path (gpu_store.store_staged, an hour a batch: sealed hours
to Parquet parts, rollups updated), compacted and published; then ``--runs`` cron runs, each
`runlytics ingest --spool` of a spool file holding the next minute of the 64 GPUs (3,840
samples), as cron would start them. Prints, per size: the runs' wall time (process included)
and the run's own seconds (median), the publish alone (snapshots.publish, median), the
DuckDB file's size, and the bytes per stored sample at rest (warehouse + kept snapshots + parts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runlytics.ingest import gpu_store
from runlytics.warehouse import db, migrate, parts, sidefiles, snapshots

HOSTS, GPUS = 8, 8
REPO = Path(__file__).resolve().parent.parent
STAGE = f"""
CREATE OR REPLACE TEMP TABLE batch_gpu_samples AS
SELECT 'job-' || h AS job_id, 'node' || h AS host, CAST(g AS INTEGER) AS gpu_index,
       $start + to_seconds(s) AS ts, 'GPU-' || h || '-' || g AS gpu_uuid,
       CAST((s * 7 + g * 13 + h) % 1000 AS DOUBLE) / 10 AS utilization_percent,
       40000.0 + (s * 11 + g) % 30000 AS memory_used_mb, 81920.0 AS memory_total_mb,
       40 + CAST((s + g) % 400 AS DOUBLE) / 10 AS temperature_c,
       100 + CAST((s * 3 + h) % 5000 AS DOUBLE) / 10 AS power_w,
       1400.0 + s % 500 AS sm_clock_mhz, CAST(CASE WHEN s % 50 = 0 THEN 4 ELSE 1 END AS BIGINT) AS clocks_event_reasons,
       CAST(s * {HOSTS * GPUS} + h * {GPUS} + g AS BIGINT) AS seq
FROM range($seconds) r(s), range({HOSTS}) a(h), range({GPUS}) b(g)
"""


def build(path: Path, samples: int, end: datetime) -> None:
    seconds_total = samples // (HOSTS * GPUS)
    migrate.upgrade(path)
    with db.connection(path) as con:
        con.execute(
            "INSERT INTO jobs (job_id, status, config, ingested_at) "
            f"SELECT 'job-' || h, 'running', '{{}}', $now FROM range({HOSTS}) r(h)",
            {"now": end},
        )
        t = end - timedelta(seconds=seconds_total)
        while t < end:  # an hour a batch, as a first ingest of a day-long spool reads it
            seconds = int(min(3600, (end - t).total_seconds()))
            con.execute(STAGE, {"start": t, "seconds": seconds})
            with db.atomic(con):
                gpu_store.store_staged(con, "spool")
            t += timedelta(seconds=seconds)
        while True:
            with db.atomic(con):
                if not parts.compact(con, parts.GPU_SAMPLES, parts.cutoff(con, parts.GPU_SAMPLES)):
                    break
        con.execute("CHECKPOINT")
    snapshots.publish(path)


def minute_spool(folder: Path, start: datetime, n: int) -> None:
    lines = [
        json.dumps({"ts": (start + timedelta(seconds=s)).replace(tzinfo=UTC).timestamp(), "host": f"node{h}",
                    "job_id": f"job-{h}", "gpu_index": g, "gpu_uuid": f"GPU-{h}-{g}",
                    "utilization_percent": float((s + g) % 100), "power_w": 300.0, "memory_used_mb": 40000.0})
        for s in range(60) for h in range(HOSTS) for g in range(GPUS)
    ]  # fmt: skip
    (folder / f"minute-{n:03d}.jsonl").write_text("\n".join(lines) + "\n")


def at_rest(path: Path) -> int:
    files = [path, *sidefiles.snapshots(path).glob("*.duckdb"), *sidefiles.parts(path).rglob("*.parquet")]
    return sum(f.stat().st_size for f in files if f.exists())


def measure(samples: int, runs: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.duckdb"
        # the stored samples end where the hot hour starts: the runs add minutes of the hot hour
        now = datetime.now(UTC).replace(tzinfo=None)
        end = (now - parts.SEAL_LAG).replace(minute=0, second=0, microsecond=0)
        began = time.perf_counter()
        build(path, samples, end)
        built = time.perf_counter() - began
        spool = Path(folder) / "spool"
        spool.mkdir()
        walls, own = [], []
        for n in range(runs):
            minute_spool(spool, end + timedelta(minutes=n), n)
            command = [sys.executable, "-m", "runlytics", "ingest", "--spool", str(spool), "--db", str(path), "--json"]
            started = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - started)
            own.append(json.loads(done.stdout)["seconds"])
        publish = []
        for _ in range(repeat):
            started = time.perf_counter()
            snapshots.publish(path)
            publish.append(time.perf_counter() - started)
        with db.connection(path, read_only=True) as con:
            stored = con.execute("SELECT count(*) FROM gpu_samples").fetchone()
            live = con.execute("SELECT count(*), sum(bytes) FROM gpu_parts").fetchone()
        assert stored is not None and live is not None
        print(
            f"{stored[0]:>10,} samples stored (built in {built:.0f} s; {live[0]} parts, {live[1] / 2**20:.1f} MiB): "
            f"cron run adding 3,840 samples: wall {statistics.median(walls):.2f} s "
            f"(runs {', '.join(f'{w:.2f}' for w in walls)}), run's own {statistics.median(own):.2f} s; "
            f"publish alone {statistics.median(publish) * 1000:.0f} ms; "
            f"DuckDB file {path.stat().st_size / 2**20:.1f} MiB; "
            f"at rest {at_rest(path) / stored[0]:.1f} bytes/sample"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[700_000, 5_500_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for samples in args.samples:
        measure(samples, args.runs, args.repeat)


if __name__ == "__main__":
    main()
