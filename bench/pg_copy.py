"""Benchmark: ``runlytics db copy`` of GPU samples from a DuckDB warehouse into PostgreSQL.

    python bench/pg_copy.py [SAMPLES] [--to postgresql://…]

Builds a warehouse of SAMPLES GPU samples (default 1,000,000: 200 jobs, 7 hosts, 8 GPUs, one a
second) sealed into Parquet parts as ingest leaves them (warehouse/parts.py), then times
``pg_copy.copy`` into an empty PostgreSQL database: ``--to`` one, else a throwaway local server
(tests/pg_server.py: Debian's postgresql package, fsync off). Prints the seconds and rows a second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from pg_server import PgServer, bin_dir  # noqa: E402

from runlytics.warehouse import db, migrate, parts, pg_copy, pg_samples, snapshots  # noqa: E402

START = datetime(2026, 11, 1)


def build(path: Path, samples: int) -> None:
    migrate.upgrade(path)
    with db.connection(path) as con, db.atomic(con):
        con.execute(
            "INSERT INTO gpu_samples_hot SELECT 'job-' || (i % 200), 'node-' || (i % 7), i % 8, "
            "$start + to_microseconds(i * 1000000), 'GPU-' || (i % 7) || '-' || (i % 8), random() * 100, "
            "random() * 80000, 81920, 60 + random() * 20, 300 + random() * 100, 1800, 0, 'spool', "
            "'GPU-' || (i % 7) || '-' || (i % 8) FROM range($n) t(i)",
            {"start": START, "n": samples},
        )
        parts.seal(con, parts.GPU_SAMPLES, START + timedelta(seconds=samples + 3600))
    snapshots.publish(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--to", help="an empty PostgreSQL database (default: a throwaway local server)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pg-copy-") as tmp:
        path = Path(tmp) / "w.duckdb"
        build(path, args.samples)
        server = None
        if args.to is None:
            bins = bin_dir()
            if bins is None:
                raise SystemExit("PostgreSQL is not installed (Debian's postgresql package), and no --to given")
            server = PgServer(bins)
        try:
            url = args.to or server.new_database()  # type: ignore[union-attr]
            began = time.perf_counter()
            result = pg_copy.copy(path, db.PostgresUrl(url))
            seconds = time.perf_counter() - began
        finally:
            if server is not None:
                server.stop()
    copied = result.rows[pg_samples.VIEW]
    print(f"db copy of {copied:,} GPU samples (Parquet parts): {seconds:.1f} s, {copied / seconds:,.0f} samples/s")


if __name__ == "__main__":
    main()
