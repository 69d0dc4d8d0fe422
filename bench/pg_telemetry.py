"""Benchmark: GPU telemetry published from a stage to PostgreSQL (warehouse/pg_telemetry.py).

    python bench/pg_telemetry.py [--hosts 4] [--hours 1 3] [--minutes 3] [--to postgresql://…]

A stage (a DuckDB warehouse) ingests a fleet's spool (bench/fleet.py's generator: --hosts x 8
GPUs, one sample a second, GPU UUIDs as keys); its first publish sends everything to PostgreSQL
(``--to`` an empty database, else a throwaway local server: tests/pg_server.py, fsync off). Then,
for each size of --hours stored, --minutes cron runs each add one minute of every GPU, ingest it
into the stage and publish it: the publish's seconds (median) should not grow with what is stored.
Last, PostgreSQL's bytes per raw sample: ``pg_total_relation_size`` (table, primary key, TOAST)
of gpu_samples_hot over its rows, of the rollups (gpu_minutes, job_gpu_series,
utilization_minutes) over the same samples, and of a layout not built yet (one row per GPU and
minute holding each column's values as an array, compressed by TOAST), checked to give back
every sample to the bit. Prints Markdown; docs/postgresql.md ("GPU
telemetry") holds the figures of the project machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from fleet import GPUS_PER_HOST, hosts_of, write_jobs, write_spool  # noqa: E402
from pg_server import PgServer, bin_dir  # noqa: E402

from runlytics.ingest.pipeline import ingest  # noqa: E402
from runlytics.warehouse import db, migrate, pg_telemetry  # noqa: E402

SIZES = "SELECT pg_total_relation_size(%(t)s::regclass), pg_relation_size(%(t)s::regclass)"
TABLES = ("gpu_samples_hot", "gpu_minutes", "job_gpu_series", "utilization_minutes")
_COLUMNS = [
    *("gpu_index", "ts", "gpu_uuid", "utilization_percent", "memory_used_mb", "memory_total_mb"),
    *("temperature_c", "power_w", "sm_clock_mhz", "clocks_event_reasons", "source"),
]
_ALL = ", ".join(_COLUMNS)
PACKED = (
    f"""
CREATE TEMP TABLE bench_packed AS
SELECT job_id, host, gpu_key, date_trunc('minute', ts) AS minute,
       {", ".join(f"array_agg({c} ORDER BY ts) AS {c}" for c in _COLUMNS)}
FROM gpu_samples_hot GROUP BY job_id, host, gpu_key, date_trunc('minute', ts)
""",
    "ALTER TABLE bench_packed ADD PRIMARY KEY (job_id, host, gpu_key, minute)",
)
# the packed values, unnested, are the rows' to the bit (EXCEPT ALL: NaN matches NaN there)
UNPACKED_DIFFER = f"""
SELECT count(*) FROM (
    SELECT p.job_id, p.host, p.gpu_key, u.* FROM bench_packed p,
           unnest({", ".join(f"p.{c}" for c in _COLUMNS)}) AS u({", ".join(f"u_{c}" for c in _COLUMNS)})
    EXCEPT ALL SELECT job_id, host, gpu_key, {_ALL} FROM gpu_samples_hot
) d
"""


def _ingest(stage: Path, root: Path, spool: Path) -> float:
    began = time.perf_counter()
    summary = ingest(stage, [root], spools=[spool], keep_raw_days=0, wait=60)
    assert summary.failed == 0
    return time.perf_counter() - began


def _publish(stage: Path, url: db.PostgresUrl) -> pg_telemetry.Published:
    # a raw window on, as in production: each publish also probes the GPUs for samples past it
    with db.connection(stage) as con:
        return pg_telemetry.publish(con, url, keep_raw_days=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4, help="hosts of 8 GPUs (default 4)")
    parser.add_argument("--hours", type=int, nargs="+", default=[1, 3], help="hours stored when timed (default 1 3)")
    parser.add_argument("--minutes", type=int, default=3, help="cron minutes timed per size (default 3)")
    parser.add_argument("--to", help="an empty PostgreSQL database (default: a throwaway local server)")
    args = parser.parse_args()
    hosts = hosts_of(args.hosts)
    gpus = len(hosts) * GPUS_PER_HOST
    server = None
    if args.to is None:
        bins = bin_dir()
        if bins is None:
            raise SystemExit("PostgreSQL is not installed (Debian's postgresql package), and no --to given")
        server = PgServer(bins)
    try:
        url = db.PostgresUrl(args.to or server.new_database())  # type: ignore[union-attr]
        migrate.upgrade(url)
        with tempfile.TemporaryDirectory(prefix="pg-telemetry-") as tmp:
            root, spool, stage = Path(tmp) / "jobs", Path(tmp) / "spool", Path(tmp) / "stage" / "stage.duckdb"
            end = int(time.time()) // 60 * 60 - 60 * (args.minutes * len(args.hours) + 1)
            start = end - 3600 * max(args.hours)
            write_jobs(root, hosts, start - 3600, end + 3600)
            print(f"| samples stored | cron publish of one minute ({gpus * 60:,} samples): median s | ingest s |")
            print("|---|---|---|")
            stored_until = start
            first: pg_telemetry.Published | None = None
            for hours in sorted(args.hours):
                until = start + 3600 * hours if hours < max(args.hours) else end
                written = write_spool(spool, hosts, stored_until, until)
                _ingest(stage, root, spool)
                published = _publish(stage, url)
                first = first or published
                stored_until = until
                timings, ingests = [], []
                for _ in range(args.minutes):
                    write_spool(spool, hosts, stored_until, stored_until + 60)
                    stored_until += 60
                    ingests.append(_ingest(stage, root, spool))
                    cron = _publish(stage, url)
                    assert cron.samples >= gpus * 60, cron
                    timings.append(cron.seconds)
                del written
                with db.connection(stage, read_only=True) as con:
                    (samples,) = db.one(con, "SELECT count(*) FROM gpu_samples")
                print(f"| {samples:,} | {statistics.median(timings):.3f} | {statistics.median(ingests):.2f} |")
            assert first is not None
            print(f"\nfirst publish: {first.samples:,} samples in {first.seconds:.2f} s "
                  f"({first.samples / first.seconds:,.0f} a second)")  # fmt: skip
            import psycopg

            with psycopg.connect(url.libpq_url, autocommit=True) as pg:
                for table in TABLES:
                    pg.execute(f"VACUUM ANALYZE {table}")
                (rows,) = pg.execute("SELECT count(*) FROM gpu_samples_hot").fetchone() or (0,)
                print("\n| table | bytes (heap + indexes + TOAST) | heap | bytes per raw sample |")
                print("|---|---|---|---|")
                for table in TABLES:
                    total, heap = pg.execute(SIZES, {"t": table}).fetchone() or (0, 0)
                    print(f"| {table} | {total:,} | {heap:,} | {total / rows:.1f} |")
                # a layout not built yet (docs/decisions.md): one row per GPU and minute of arrays
                for statement in PACKED:
                    pg.execute(statement)
                pg.execute("VACUUM ANALYZE bench_packed")
                total, heap = pg.execute(SIZES, {"t": "bench_packed"}).fetchone() or (0, 0)
                print(f"| one row per GPU-minute of arrays (not built) | {total:,} | {heap:,} | {total / rows:.1f} |")
                (differ,) = pg.execute(UNPACKED_DIFFER).fetchone() or (None,)
                assert differ == 0, f"{differ} samples differ after unnest"
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
