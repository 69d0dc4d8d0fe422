"""The files runlytics keeps beside a warehouse file, named in this one place.

For a warehouse ``runlytics.duckdb``:

- ``runlytics.duckdb.ingest.lock``: the writers' lock (``lock.py``);
- ``runlytics.duckdb.snapshots/``: the read-only copies readers open (``snapshots.py``);
- ``runlytics.duckdb.last-ingest.json``: the heartbeat of the last ingest run (``ingest/journal.py``);
- ``runlytics.duckdb.parts/``: the sealed Parquet parts every snapshot shares (``parts.py``);
- ``runlytics.duckdb.rebuild.tmp``: a smaller copy being built, only for a moment (``hotfile.py``);
- ``runlytics.duckdb.new.tmp``: a new warehouse being built at head, until renamed into place (``head.py``);
- ``runlytics.duckdb.wal``: DuckDB's own write-ahead log;
- ``runlytics.duckdb.unpublished``: commits no snapshot holds yet (``snapshots.unpublished``);
- ``runlytics.duckdb.last-ingest.json.tmp``: the heartbeat being written, only for a moment;
- ``runlytics.duckdb.publish.ingest.lock``: a PostgreSQL ingest's stage, its publish lock
  (``ingest/postgres.py``).

The repository's .gitignore ignores them all (``*.duckdb.*``).
"""

from __future__ import annotations

from pathlib import Path


def lock(db_path: Path) -> Path:
    return _beside(db_path, ".ingest.lock")


def snapshots(db_path: Path) -> Path:
    return _beside(db_path, ".snapshots")


def parts(db_path: Path) -> Path:
    return _beside(db_path, ".parts")


def heartbeat(db_path: Path) -> Path:
    return _beside(db_path, ".last-ingest.json")


def wal(db_path: Path) -> Path:
    return _beside(db_path, ".wal")


def new_build(db_path: Path) -> Path:
    return _beside(db_path, ".new.tmp")


def _beside(db_path: Path, suffix: str) -> Path:
    return db_path.with_name(db_path.name + suffix)
