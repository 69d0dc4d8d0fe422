"""What the GPU rollups (gpu_minutes, revision 0015) cost and save, on a generated 64-GPU fleet.

    .venv/bin/python bench/rollups_cost.py --hours 22     # ~5.1M samples stored

Stores ``--hours`` of 1 s samples of 8 hosts x 8 GPUs (one completed job per host) through ingest's own
path (gpu_store.store_staged: sealed hours to Parquet parts, the current hour to the hot table,
rollups updated per batch), then measures:
- the rollup update of a cron run adding one minute of the 64 GPUs (rollups.update alone, and
  the whole store_staged of that minute);
- one job's refresh (job_results, utilization_minutes, insights: results.refresh +
  insights.refresh) with the views reading gpu_minutes. (The comparison with the views of before
  0015, reading the raw samples, was measured at that revision: docs/benchmark.md. Their frozen
  texts no longer bind to today's other views, so it is not rerun.)
Prints one line per figure (median of --repeat runs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from runlytics.ingest import gpu_store
from runlytics.warehouse import db, insights, migrate, results, rollups

HOSTS, GPUS = 8, 8
# one batch of samples: every GPU of the fleet from $start for $seconds seconds, 1 s apart
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


def _store(con: duckdb.DuckDBPyConnection, start: datetime, seconds: int) -> float:
    con.execute(STAGE, {"start": start, "seconds": seconds})
    began = time.perf_counter()
    with db.atomic(con):
        gpu_store.store_staged(con, "spool")
    return time.perf_counter() - began


def _median(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=22)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.duckdb"
        migrate.upgrade(path)
        now = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
        start = now - timedelta(hours=args.hours)
        with db.connection(path) as con:
            con.execute(
                "INSERT INTO jobs (job_id, status, config, ingested_at) "
                f"SELECT 'job-' || h, 'completed', '{{}}', $now FROM range({HOSTS}) r(h)",
                {"now": now},
            )
            began = time.perf_counter()
            t = start
            while t < now:  # an hour a batch, as a first ingest of a day-long spool would read
                seconds = int(min(3600, (now - t).total_seconds()))
                _store(con, t, seconds)
                t += timedelta(seconds=seconds)
            (stored,) = con.execute("SELECT count(*) FROM gpu_samples").fetchone() or (0,)
            (minutes,) = con.execute("SELECT count(*) FROM gpu_minutes").fetchone() or (0,)
            print(f"stored {stored:,} samples, {minutes:,} GPU-minutes in {time.perf_counter() - began:.1f} s")

            # a cron run: the next minute of the 64 GPUs
            whole = _store(con, now, 60)
            print(f"store_staged of one minute of {HOSTS * GPUS} GPUs (3,840 samples), rollups included: {whole:.3f} s")

            def update() -> None:
                with db.atomic(con):
                    rollups.update(con)  # stored_gpu_keys still names that minute

            print(f"rollups.update of that minute: {_median(update, args.repeat) * 1000:.1f} ms (median)")

            job = {"job-0"}
            (job_samples,) = con.execute("SELECT count(*) FROM gpu_samples WHERE job_id = 'job-0'").fetchone() or (0,)

            def refresh() -> None:
                with db.atomic(con):
                    results.refresh(con, job)
                    insights.refresh(con, job)

            after = _median(refresh, args.repeat)
            print(f"refresh of one job (8 GPUs, {job_samples:,} samples), rollup views: {after:.3f} s (median)")


if __name__ == "__main__":
    main()
