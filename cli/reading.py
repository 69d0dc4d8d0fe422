"""The warehouse a read command names: refused when there is none, read at this runlytics' schema."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

from runlytics.warehouse import db, migrate, pg_reader, readonly, snapshots

from .errors import NoWarehouse

if TYPE_CHECKING:  # the readers import DuckDB: a run with nothing to do never needs it
    import duckdb


READ_TIMEOUT_SECONDS = readonly.DEFAULT_PG_TIMEOUT_SECONDS  # analytics, insights on PostgreSQL: per statement


def _existing_warehouse(args: argparse.Namespace) -> Path:
    """The warehouse a read command names; NoWarehouse when there is none (a read creates nothing)."""
    path = db.resolve_path(args.db)
    if not path.exists():
        raise NoWarehouse(
            f"no warehouse at {path}: create it with `runlytics ingest ROOT` (or `runlytics db upgrade`), "
            f"or name another with --db or ${db.ENV_DB}"
        )
    return path


@contextmanager
def _reading(
    args: argparse.Namespace, timeout: float = READ_TIMEOUT_SECONDS
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    """A read command's warehouse and its name for messages: the newest snapshot of a DuckDB file
    (brought to this runlytics' schema first), or a PostgreSQL database at this runlytics'
    revision read in one READ ONLY transaction (warehouse/pg_reader.py: the API's cursor, whose
    calls the readers make as on DuckDB), each statement stopped after ``timeout`` seconds."""
    target = db.resolve_target(args.db)
    con: duckdb.DuckDBPyConnection
    if isinstance(target, db.PostgresUrl):
        con, name = _pg_cursor(target, timeout), str(target)
    else:
        path = _existing_warehouse(args)
        migrate.ensure_current(path, wait=args.wait)
        con, name = snapshots.connect_latest(path, wait=args.wait), str(path)
    try:
        yield con, name
    finally:
        con.close()


def _pg_cursor(target: db.PostgresUrl, timeout: float = pg_reader.DEFAULT_TIMEOUT_SECONDS) -> duckdb.DuckDBPyConnection:
    """A read-only cursor on ``target`` (typed as the DuckDB connection whose calls it answers);
    WarehouseError when the database is at another revision than this runlytics'."""
    con = cast("duckdb.DuckDBPyConnection", pg_reader.Cursor(pg_reader.connect(target, timeout)))
    try:
        _check_pg_revision(con, target)
    except BaseException:
        con.close()
        raise
    return con


def _check_pg_revision(con: duckdb.DuckDBPyConnection, target: db.PostgresUrl, *, unseen_ok: bool = False) -> None:
    """WarehouseError when the database is at another revision than this runlytics'. ``unseen_ok``
    (``sql``): a revision the role cannot see passes (an analyst's role may see the views alone;
    an unbuilt database's query then fails on its own: no such table)."""
    revision = migrate.current_revision(con)
    migrate.check_revision(revision, target)  # a newer runlytics' database: no upgrade helps
    if revision != migrate.HEAD_REVISION and not (unseen_ok and revision is None):
        raise db.WarehouseError(
            f"{target}: {migrate.schema_named(revision)}, this runlytics reads {migrate.HEAD_REVISION}: "
            "run `runlytics db upgrade --db URL`"
        )
