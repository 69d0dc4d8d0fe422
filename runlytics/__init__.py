"""runlytics: a training-run analytics warehouse.

The repository's top-level folders (``api/``, ``cli/``, ``ingest/``, ``migrations/``,
``sampler/``, ``warehouse/``) install as subpackages of this one package
(``runlytics.warehouse`` …), so that no generic top-level name reaches site-packages.

``runlytics.connect()`` opens the warehouse from a notebook (docs/notebook.md). This module
imports nothing else at import time: the command line imports it too, and DuckDB alone costs
a third of a second.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

__version__ = "0.2.0"


def connect(db: str | os.PathLike[str] | None = None, *, wait: float = 30.0) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the newest snapshot of the warehouse, for notebooks.

    ``db`` defaults as the command line's ``--db`` does: ``$RUNLYTICS_DB``, else
    ./runlytics.duckdb. The connection reads a published snapshot, never the file ingest writes,
    so holding it open never blocks a cron run; reconnect to see a newer ingest. Timestamps are
    shown in UTC, as the API and the command line show them. A missing warehouse raises
    ``runlytics.warehouse.db.WarehouseError`` and creates nothing.
    """
    from runlytics.warehouse import db as warehouse_db
    from runlytics.warehouse import migrate, snapshots

    path = warehouse_db.resolve_path(db)
    if not path.is_file():
        raise warehouse_db.WarehouseError(
            f"no warehouse at {path}: run `runlytics ingest ROOT --db {path}` first, "
            f"or pass the path (or set ${warehouse_db.ENV_DB})"
        )
    con = snapshots.connect_latest(path, wait=wait)
    try:
        revision = migrate.current_revision(con)
        if revision is None:
            raise warehouse_db.WarehouseError(f"{path} is not a runlytics warehouse (no schema revision)")
        migrate.check_revision(revision, path)
        con.execute("SET TimeZone = 'UTC'")
    except BaseException:
        con.close()
        raise
    return con
