"""Alembic environment: migrates one warehouse, a DuckDB file or a PostgreSQL database.

The warehouse is, in order: the connection handed over by ``warehouse.migrate`` (``runlytics db
upgrade``), ``alembic -x db=PATH_OR_URL``, ``$RUNLYTICS_DB``, or ``./runlytics.duckdb``. A
``postgresql://`` URL names a PostgreSQL database (``runlytics.migrations.engine``: what the
revisions written for DuckDB do there).
"""

from __future__ import annotations

from alembic import context
from alembic.ddl.impl import DefaultImpl
from sqlalchemy import create_engine

from runlytics.migrations import derived
from runlytics.warehouse import db, migrate, postgres
from runlytics.warehouse.schema import metadata


class AlembicDuckDBImpl(DefaultImpl):
    """Alembic has no DuckDB implementation of its own; DuckDB's DDL is transactional."""

    __dialect__ = "duckdb"
    transactional_ddl = True


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    target = db.resolve_target(context.get_x_argument(as_dictionary=True).get("db"))
    if isinstance(target, db.PostgresUrl):
        with postgres.connection(target) as conn:
            _run(conn)
            conn.commit()
        return
    # what `runlytics db upgrade` does first (a warehouse moved with its parts folder: the chain
    # failed on the old place, or read another's)
    if _command() in (None, "upgrade", "downgrade"):  # not `alembic current`
        con = db.connect(target)
        try:
            migrate.before_chain(con, target)
        finally:
            con.close()
    engine = create_engine(f"duckdb:///{target}")
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True)
    with context.begin_transaction(), derived.deferred(context.config, connection, _upgrading()):
        context.run_migrations()


def _command() -> str | None:
    """The alembic command run from its command line (``upgrade``, ``current``...); None when
    called from code."""
    cmd = getattr(context.config.cmd_opts, "cmd", None)
    return None if cmd is None else getattr(cmd[0], "__name__", "")


def _upgrading() -> bool:
    """An upgrade: ``warehouse.migrate``'s chain (``runlytics db upgrade``, an older warehouse's
    first ingest) or ``alembic upgrade``; not a downgrade, nor a test's own alembic command."""
    return bool(context.config.attributes.get(derived.UPGRADING)) or _command() == "upgrade"


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a warehouse")
run_migrations()
