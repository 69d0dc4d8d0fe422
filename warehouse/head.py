"""A new, empty DuckDB warehouse built directly at the head revision, without replaying the chain.

Alembic's recipe "Building an Up to Date Database from Scratch": the tables of ``schema.py``
(compiled once into ``tables.sql``), then what the chain leaves beside them (the views of
``warehouse/sql`` in ``views.ORDER``, the derived tables made from them, the seed rows), then
``alembic_version`` stamped at ``HEAD_REVISION``. The chain's 28 revisions cost a new warehouse
1 to 1.5 s (first ingest, every PostgreSQL-ingest stage, every test's warehouse); this costs what
creating the head's objects once does. Existing warehouses and PostgreSQL keep upgrading through
the chain (``migrate.upgrade_locked``); ``tests/test_migrations.py`` checks that both ways give
the same catalog and rows (docs/decisions.md, "A new warehouse built at head").

The file is built under a temporary name beside the warehouse and renamed into place once
complete and checkpointed: a kill on the way leaves no warehouse (and a leftover that the next
build removes), never a partial one. It is created with ``hotfile.BLOCK_SIZE`` blocks (64 KiB, not
DuckDB's 256 KiB), the size the end of a run would otherwise rebuild it with once
(warehouse/hotfile.py): a first ingest skips that rebuild.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import db, hotfile, insights, parts, results, sidefiles, views

if TYPE_CHECKING:
    import duckdb
    import sqlalchemy as sa

# The table alembic keeps the revision in, as alembic creates it (alembic.migration's
# MigrationContext: one VARCHAR(32) key column); the parity test compares it with the chain's.
VERSION_TABLE = "alembic_version"
STAMP = f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ($revision)"

# The tables the chain creates from a view with CREATE TABLE AS (schema.DERIVED_TABLES), each
# right after the view it selects from: later views read them (job_gpu_hours, insight_peers, ...
# read job_results).
DERIVED_AFTER: dict[str, str] = {
    "job_analytics": results.CREATE,  # job_results
    "gpu_utilization_readings": results.UTILIZATION_CREATE,  # utilization_minutes
}
# the views over a hot table and its sealed parts (warehouse/parts.py), created before the views
# that read them; with no part yet they read the hot table alone
SEALED = (parts.GPU_SAMPLES, parts.GPU_MINUTES)


def _version_table() -> sa.Table:
    import sqlalchemy as sa

    return sa.Table(
        VERSION_TABLE,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )


# table_ddl() as written out: a new warehouse reads its CREATE TABLEs from here, so that building
# one imports neither SQLAlchemy nor duckdb_engine (~0.5 s of a new process's first ingest, most
# of the time a first ingest of a few jobs takes beyond DuckDB's own work). tests/test_migrations.py
# fails when the file differs from table_ddl(); `python -m runlytics.warehouse.head` rewrites it.
TABLES_SQL = Path(__file__).resolve().parent / "tables.sql"
TABLES_HEADER = (
    "-- The head's tables in DuckDB's SQL: warehouse/schema.py compiled by duckdb_engine (head.table_ddl).\n"
    "-- Generated: edit schema.py, then run `python -m runlytics.warehouse.head`.\n"
)
SEPARATOR = ";\n\n"


def table_ddl() -> list[str]:
    """CREATE TABLE of every table of ``schema.py`` and of ``alembic_version``, in DuckDB's SQL
    (compiled by duckdb_engine, the dialect through which the chain's op.create_table runs),
    without trailing blanks."""
    import duckdb_engine
    from sqlalchemy.schema import CreateTable

    from . import schema

    dialect = duckdb_engine.Dialect()
    tables = [*schema.metadata.sorted_tables, _version_table()]
    compiled = [str(CreateTable(table).compile(dialect=dialect)).strip() for table in tables]
    return ["\n".join(line.rstrip() for line in text.splitlines()) for text in compiled]


def written_ddl() -> list[str]:
    """The statements of ``tables.sql``: ``table_ddl()`` as last written."""
    text = TABLES_SQL.read_text().removeprefix(TABLES_HEADER)
    return [statement for statement in text.split(SEPARATOR) if statement.strip()]


def write_ddl() -> None:
    """Rewrite ``tables.sql`` from ``schema.py``."""
    TABLES_SQL.write_text(TABLES_HEADER + "".join(statement + SEPARATOR for statement in table_ddl()))


def create(con: duckdb.DuckDBPyConnection, revision: str) -> None:
    """Create the head's schema, views and seed rows in an empty database and stamp ``revision``
    (the caller's transaction, if any)."""
    for statement in written_ddl():
        con.execute(statement)
    for sealed in SEALED:
        con.execute(parts.view_sql(sealed, Path(), []))  # no part yet: no folder named
    for view in views.CURRENT:
        con.execute(view.create_sql())
        if view.name in DERIVED_AFTER:
            con.execute(DERIVED_AFTER[view.name])
    insights.fill_defaults(con)
    con.execute(STAMP, {"revision": revision})


def build(path: Path, revision: str) -> str:
    """Build a new warehouse at ``path`` (which must not exist) at ``revision``, the head; the
    caller holds the writer lock. Whole or absent: built under a temporary name, then renamed."""
    partial = sidefiles.new_build(path)
    for leftover in (partial, Path(f"{partial}.wal")):  # a build killed before its rename
        leftover.unlink(missing_ok=True)
    try:
        _create_file(partial)
        with db.connection(partial) as con:
            with db.atomic(con):
                create(con, revision)
            con.execute("CHECKPOINT")  # everything in the file, no WAL to carry along
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        Path(f"{partial}.wal").unlink(missing_ok=True)
        raise
    db.fsync_dir(path.parent)  # the rename made durable (the checkpoint synced the file's bytes)
    return revision


def _create_file(path: Path) -> None:
    """An empty DuckDB file at ``path`` with ``hotfile.BLOCK_SIZE`` blocks (DuckDB fixes a file's
    block size when it creates it), 0600 as ``db.connect`` creates a warehouse."""
    import duckdb

    with db.private_files():
        con = duckdb.connect()
        try:
            for statement in db.NO_EXTENSIONS:  # before the ATTACH, which names the file
                con.execute(statement)
            con.execute(f"ATTACH {db.quote_literal(str(path))} AS new_warehouse (BLOCK_SIZE {hotfile.BLOCK_SIZE})")
            con.execute("DETACH new_warehouse")
        except duckdb.Error as error:
            raise db.WarehouseError(f"cannot create warehouse {path}: {error}") from error
        finally:
            con.close()


if __name__ == "__main__":
    write_ddl()
