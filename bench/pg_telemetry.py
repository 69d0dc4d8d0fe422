"""Benchmark: GPU telemetry published from a stage to PostgreSQL (warehouse/pg_telemetry.py).

    python bench/pg_telemetry.py [--hosts 4] [--hours 1 3] [--minutes 3] [--to postgresql://…]

A stage (a DuckDB warehouse) ingests a fleet's spool (bench/fleet.py's generator: --hosts x 8
GPUs, one sample a second, GPU UUIDs as keys); its first publish sends everything to PostgreSQL
(``--to`` an empty database, else a throwaway local server: tests/pg_server.py, fsync off). Then,
for each size of --hours stored, --minutes cron runs each add one minute of every GPU, ingest it
into the stage and publish it: the publish's seconds (median) should not grow with what is stored.
Last, PostgreSQL's bytes per raw sample: ``pg_total_relation_size`` (table, primary key, TOAST)
of the samples' table (gpu_sample_minutes since revision 0028: one row per GPU and minute of
arrays, warehouse/pg_samples.py) over the samples it holds, checked to give back every sample of
the stage to the bit through the view gpu_samples; of the rollups (gpu_minutes, job_gpu_series,
utilization_minutes) over the same samples; and of the alternatives (docs/decisions.md): one row
per sample (the layout before 0028), the same with narrower columns, the packed rows with TOAST's
defaults and with lz4. ``--noisy`` adds the packed layout of as many samples whose readings are
random (no two alike: the worst case for compression). Prints Markdown; docs/postgresql.md ("GPU
telemetry") and docs/benchmark.md hold the figures of the project machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from fleet import GPUS_PER_HOST, hosts_of, write_jobs, write_spool  # noqa: E402
from pg_server import PgServer, bin_dir  # noqa: E402

from runlytics.ingest.pipeline import ingest  # noqa: E402
from runlytics.warehouse import db, migrate, pg_samples, pg_telemetry  # noqa: E402

RELOPTIONS = f"SELECT reloptions FROM pg_class WHERE oid = '{pg_samples.TABLE}'::regclass"
SIZES = "SELECT pg_total_relation_size(%(t)s::regclass), pg_relation_size(%(t)s::regclass)"
TABLES = (pg_samples.TABLE, "gpu_minutes", "job_gpu_series", "utilization_minutes")
_COLUMNS = [
    *("gpu_index", "ts", "gpu_uuid", "utilization_percent", "memory_used_mb", "memory_total_mb"),
    *("temperature_c", "power_w", "sm_clock_mhz", "clocks_event_reasons", "source"),
]
_ALL = ", ".join(["job_id", "host", "gpu_key", *_COLUMNS])
# the alternatives, each built from the samples of the view gpu_samples (name, statements)
ROWS = "CREATE TABLE bench_rows AS SELECT * FROM gpu_samples ORDER BY job_id, host, gpu_key, ts"
ROWS_KEY = "ALTER TABLE bench_rows ADD PRIMARY KEY (job_id, host, gpu_key, ts)"
# narrower columns only: the UUID once (gpu_uuid NULL where it is gpu_key), 2-byte index, 4-byte
# floats (not the same doubles: measured for its size only), 2-byte source code
NARROW = """
CREATE TABLE bench_narrow AS
SELECT job_id, host, gpu_key, ts, CAST(gpu_index AS SMALLINT) AS gpu_index,
       CASE WHEN gpu_uuid = gpu_key THEN NULL ELSE gpu_uuid END AS gpu_uuid,
       CAST(utilization_percent AS REAL) AS utilization_percent, CAST(memory_used_mb AS REAL) AS memory_used_mb,
       CAST(memory_total_mb AS REAL) AS memory_total_mb, CAST(temperature_c AS REAL) AS temperature_c,
       CAST(power_w AS REAL) AS power_w, CAST(sm_clock_mhz AS REAL) AS sm_clock_mhz,
       clocks_event_reasons, CAST(CASE source WHEN 'spool' THEN 0 ELSE 1 END AS SMALLINT) AS source
FROM gpu_samples ORDER BY job_id, host, gpu_key, ts
"""
NARROW_KEY = "ALTER TABLE bench_narrow ADD PRIMARY KEY (job_id, host, gpu_key, ts)"
_ARRAYS = tuple(name for name, _ in pg_samples.COLUMNS[4:])


# the samples of the view packed again (as revision 0028 converts rows): new values, which the
# table's settings compress (INSERT ... SELECT * would keep the values as gpu_sample_minutes compressed them)
FRESH = f"""
INSERT INTO {{name}}
SELECT job_id, host, gpu_key, date_trunc('minute', ts),
       array_agg(CAST(EXTRACT(EPOCH FROM ts - date_trunc('minute', ts)) * 1000000 AS INTEGER) ORDER BY ts),
       {", ".join(f"array_agg({c} ORDER BY ts)" for c in pg_samples.PACKED)}
FROM gpu_samples GROUP BY job_id, host, gpu_key, date_trunc('minute', ts)
"""


def packed(name: str, storage: str, compression: str, target: int | None) -> tuple[str, ...]:
    """A copy of gpu_sample_minutes with its arrays' TOAST storage and compression, and the
    table's toast_tuple_target (None: PostgreSQL's default, about 2 kB)."""
    reloption = f"SET (toast_tuple_target = {target})" if target else "RESET (toast_tuple_target)"
    return (
        f"CREATE TABLE {name} (LIKE gpu_sample_minutes INCLUDING ALL)",
        f"ALTER TABLE {name} {reloption}",
        *(f"ALTER TABLE {name} ALTER COLUMN {c} SET STORAGE {storage}, ALTER COLUMN {c} SET COMPRESSION {compression}"
          for c in _ARRAYS),
        FRESH.format(name=name),
    )  # fmt: skip


ALTERNATIVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("one row per sample (before revision 0028)", (ROWS, ROWS_KEY)),
    ("one row per sample, narrower columns (4-byte floats: not exact)", (NARROW, NARROW_KEY)),
    ("packed, TOAST's defaults (EXTENDED, pglz, about 2 kB)", packed("bench_default", "EXTENDED", "pglz", None)),
    ("packed, EXTENDED, pglz, toast_tuple_target 128", packed("bench_ext128", "EXTENDED", "pglz", 128)),
    ("packed, MAIN, pglz, toast_tuple_target 128", packed("bench_main_pglz", "MAIN", "pglz", 128)),
    ("packed, MAIN, lz4, toast_tuple_target 128", packed("bench_main_lz4", "MAIN", "lz4", 128)),
)
# as many samples as stored, each GPU-minute's readings random (two decimals; utilization whole)
RANDOM = {  # a reading's random value (two decimals; utilization and clocks whole)
    "utilization_percent": "round(random() * 100)",
    "memory_used_mb": "round(CAST(random() * 80000 AS NUMERIC), 2)::float8",
    "temperature_c": "round(CAST(30 + random() * 60 AS NUMERIC), 2)::float8",
    "power_w": "round(CAST(50 + random() * 650 AS NUMERIC), 2)::float8",
    "sm_clock_mhz": "round(200 + random() * 1800)",
}
NOISY = f"""
INSERT INTO bench_noisy
SELECT job_id, host, gpu_key, date_trunc('minute', ts),
       array_agg(CAST(EXTRACT(EPOCH FROM ts - date_trunc('minute', ts)) * 1000000 AS INTEGER) ORDER BY ts),
       {", ".join(f"array_agg({RANDOM.get(c, c)} ORDER BY ts)" for c in pg_samples.PACKED)}
FROM gpu_samples GROUP BY job_id, host, gpu_key, date_trunc('minute', ts)
"""


def _check(stage: Path, pg: object) -> None:
    """The view gpu_samples on PostgreSQL gives back every sample of the stage, to the bit."""
    order = " ORDER BY job_id, host, gpu_key, ts"
    with db.connection(stage, read_only=True) as con:
        ours = con.execute(f"SELECT {_ALL} FROM gpu_samples{order}").fetchall()
    theirs = pg.execute(f"SELECT {_ALL} FROM gpu_samples{order}").fetchall()  # type: ignore[attr-defined]

    def bits(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        return [tuple(v.hex() if isinstance(v, float) else v for v in row) for row in rows]

    assert bits(ours) == bits(theirs), "PostgreSQL's samples differ from the stage's"


# reads of the samples, through the packed view and on the rows of one row per sample (bench_rows)
READS = (
    ("a job's samples, every column", "SELECT * FROM {t} WHERE job_id = %(job)s"),
    (
        "one GPU's last 10 minutes",
        "SELECT * FROM {t} WHERE job_id = %(job)s AND host = %(host)s AND gpu_key = %(key)s AND ts >= %(since)s",
    ),
)
LAST = "SELECT job_id, host, gpu_key, max(ts) FROM gpu_samples GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 LIMIT 1"


def _reads(pg: Any) -> None:
    """Median milliseconds of 5 runs of each of READS on the view gpu_samples and on bench_rows."""
    job, host, key, newest = pg.execute(LAST).fetchone()
    params = {"job": job, "host": host, "key": key, "since": newest - timedelta(minutes=10)}
    print("\n| read (PostgreSQL, median of 5) | packed, view gpu_samples | one row per sample | rows |")
    print("|---|---|---|---|")
    for label, sql in READS:
        timings = {}
        for table in ("gpu_samples", "bench_rows"):
            runs = []
            for _ in range(5):
                began = time.perf_counter()
                found = pg.execute(sql.format(t=table), params).fetchall()
                runs.append(time.perf_counter() - began)
            timings[table] = statistics.median(runs) * 1000
        print(f"| {label} | {timings['gpu_samples']:.1f} ms | {timings['bench_rows']:.1f} ms | {len(found):,} |")


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
    parser.add_argument("--noisy", action="store_true", help="also the packed layout of random readings")
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
                _check(stage, pg)
                for table in TABLES:
                    pg.execute(f"VACUUM ANALYZE {table}")
                rows = pg_samples.stored_samples(pg)
                print("\n| table | bytes (heap + indexes + TOAST) | heap | bytes per raw sample |")
                print("|---|---|---|---|")
                for table in TABLES:
                    total, heap = pg.execute(SIZES, {"t": table}).fetchone() or (0, 0)
                    print(f"| {table} | {total:,} | {heap:,} | {total / rows:.1f} |")
                print(f"\n{rows:,} raw samples. The samples' alternatives (docs/decisions.md):\n")
                print("| layout | bytes (heap + indexes + TOAST) | heap | bytes per raw sample |")
                print("|---|---|---|---|")
                built = [("packed, as built (revision 0028)", pg_samples.TABLE)]
                for label, statements in ALTERNATIVES:
                    for statement in statements:
                        pg.execute(statement)
                    built.append((label, statements[0].split()[2]))
                if args.noisy:
                    # with the table's own settings (LIKE copies storage and compression, not reloptions)
                    pg.execute("CREATE TABLE bench_noisy (LIKE gpu_sample_minutes INCLUDING ALL)")
                    (options,) = pg.execute(RELOPTIONS).fetchone() or (None,)
                    if options:
                        pg.execute(f"ALTER TABLE bench_noisy SET ({', '.join(options)})")
                    pg.execute(NOISY)
                    built.append(("packed, readings random (as many samples)", "bench_noisy"))
                for label, table in built:
                    pg.execute(f"VACUUM ANALYZE {table}")
                    total, heap = pg.execute(SIZES, {"t": table}).fetchone() or (0, 0)
                    print(f"| {label} | {total:,} | {heap:,} | {total / rows:.1f} |")
                _reads(pg)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
