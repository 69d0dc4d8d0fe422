"""Building and upgrading the warehouse with alembic, and refusing files newer than the code.

A new DuckDB warehouse at the head is built directly (``head.py``); an existing one, another
revision and PostgreSQL go through the chain."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from . import db, snapshots

if TYPE_CHECKING:
    import duckdb
    import sqlalchemy as sa
    from alembic.config import Config

# The newest revision under migrations/versions (tests/test_migrations.py keeps them equal).
# Commands compare against it without loading alembic, which costs half a second of start-up.
HEAD_REVISION = "0047"

# runlytics.migrations, found without importing it (it is alembic's folder, not a library)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@cache
def known_revisions() -> frozenset[str]:
    return frozenset(revision_order())


@cache
def revision_order() -> tuple[str, ...]:
    """The chain's revisions, oldest first (it has no branches)."""
    from alembic.script import ScriptDirectory

    newest_first = [s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
    return tuple(reversed(newest_first))


class BadRevision(ValueError):
    """A target revision ``db upgrade`` can't go to: unknown, or older than the warehouse's."""


def checked_target(revision: str) -> str:
    """``revision`` as a target of ``upgrade``: ``head`` or a revision of the chain; BadRevision else."""
    if revision != "head" and revision not in known_revisions():
        order = revision_order()
        raise BadRevision(f"unknown --revision {revision!r}: give head or a revision from {order[0]} to {order[-1]}")
    return revision


def check_not_older(revision: str, current: str | None, path: Path | db.PostgresUrl) -> None:
    """Refuse a target older than the warehouse's revision: an upgrade never goes back (alembic's
    downgrade does; docs/decisions.md, "db upgrade never downgrades")."""
    if revision == "head" or current is None or current not in known_revisions():
        return
    order = revision_order()
    if order.index(revision) < order.index(current):
        raise BadRevision(
            f"{path} is at revision {current}, past --revision {revision}: db upgrade never downgrades "
            f"(`alembic -x db=PATH downgrade {revision}` does)"
        )


# the tables of a database (DuckDB's, or PostgreSQL's through pg_reader's cursor), its catalogs left out
USER_TABLES = """
SELECT table_name FROM information_schema.tables
WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY table_name
"""


def current_revision(con: duckdb.DuckDBPyConnection) -> str | None:
    """The warehouse's alembic revision, or None for an empty database. WarehouseError for one that
    holds tables but no revision: another program's database, which a runlytics warehouse built
    into would change (before session 26 a read command added the warehouse's tables to it). On
    PostgreSQL, a database without the revision is None whatever other schemas hold."""
    import duckdb

    names = [row[0] for row in con.execute(USER_TABLES).fetchall()]
    if "alembic_version" not in names:
        # (PostgreSQL, through pg_reader's cursor: other schemas' tables are no warehouse's concern)
        if names and isinstance(con, duckdb.DuckDBPyConnection):
            shown = ", ".join(repr(name) for name in names[:3]) + (", …" if len(names) > 3 else "")
            raise db.WarehouseError(
                f"{_database_name(con)} is not a runlytics warehouse: it holds {len(names)} table(s) ({shown}) "
                "and no runlytics schema revision; name another --db (a new file is built)"
            )
        return None
    row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def schema_named(revision: str | None) -> str:
    """A warehouse's schema as a message names it: its revision, or none (a database no `db
    upgrade` built)."""
    return "no runlytics schema yet" if revision is None else f"schema at revision {revision}"


DATABASE_PATH = "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"


def _database_name(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute(DATABASE_PATH).fetchone()
    return str(row[0]) if row and row[0] else "the database"


def check_revision(revision: str | None, path: Path | db.PostgresUrl) -> None:
    """Refuse a warehouse written by a newer runlytics: guessing at its schema could lose data."""
    if revision is not None and revision != HEAD_REVISION and revision not in known_revisions():
        raise db.WarehouseError(
            f"warehouse {path} is at schema revision {revision!r}, which this runlytics does not know "
            f"(its newest is {head_revision()!r}): it was written by a newer version. "
            "Upgrade runlytics, or use another --db."
        )


def upgrade(
    path: Path | db.PostgresUrl,
    revision: str = "head",
    wait: float = db.DEFAULT_WAIT_SECONDS,
    *,
    chain: bool = False,
    what: str | None = None,
) -> str:
    """Build or upgrade the warehouse at ``path`` and publish a snapshot; returns its revision.

    A PostgreSQL database is upgraded in one transaction, under its schema lock (no snapshot).
    ``chain``: build a new DuckDB warehouse through the chain too (the tests that compare both).
    ``what``: the upgrade as a message names it when a full disk stops it (``db.refused_writes``)."""
    checked_target(revision)
    if isinstance(path, db.PostgresUrl):
        return upgrade_postgres(path, revision, wait)
    with snapshots.published_write(
        path, wait, check=lambda: check_upgradable(path, revision, wait), what=what or f"upgrade of {path}"
    ):
        done = upgrade_locked(path, revision, wait, chain=chain)
    return done


def check_upgradable(path: Path, revision: str, wait: float = db.DEFAULT_WAIT_SECONDS) -> None:
    """Refuse what ``upgrade_locked`` would refuse before writing: a file DuckDB can't open, a
    warehouse written by a newer runlytics, a target older than its revision. Checked before the
    ``.unpublished`` marker is made: a refused upgrade leaves nothing beside the file."""
    if not path.exists():  # new (or a write-ahead log alone, which DuckDB replays)
        return
    con = db.connect(path, read_only=True, wait=wait)
    try:
        current = current_revision(con)
    finally:
        con.close()
    check_revision(current, path)
    check_not_older(revision, current, path)


def upgrade_locked(
    path: Path, revision: str = "head", wait: float = db.DEFAULT_WAIT_SECONDS, *, chain: bool = False
) -> str:
    """``upgrade`` for a caller that already holds the writer lock (no snapshot published).

    A new warehouse at the head is built directly (``warehouse/head.py``), unless ``chain``: the
    chain's result, which tests/test_migrations.py checks is the same."""
    if not chain and revision in ("head", HEAD_REVISION) and is_new(path):
        from . import head

        return head.build(path, HEAD_REVISION)
    con = db.connect(path, wait=wait)  # waits for other processes, and holds the file meanwhile
    try:
        before_chain(con, path, revision)
    finally:
        con.close()
    from sqlalchemy import create_engine, event

    engine = create_engine(f"duckdb:///{path}")
    event.listen(engine, "connect", _no_extensions)
    try:
        with engine.connect() as conn:
            run_chain(conn, revision)
            conn.commit()
            conn.exec_driver_sql("CHECKPOINT")
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    finally:
        engine.dispose()


def before_chain(con: duckdb.DuckDBPyConnection, path: Path, revision: str = "head") -> None:
    """What every upgrade of a DuckDB warehouse does before the chain (``db upgrade`` and alembic
    by hand, migrations/env.py): refuse a newer runlytics' warehouse, another program's database
    or a target older than the warehouse's revision, then name this warehouse's own parts."""
    current = current_revision(con)
    check_revision(current, path)
    check_not_older(revision, current, path)
    relink_parts(con)


def _no_extensions(dbapi_con: duckdb.DuckDBPyConnection, _record: object) -> None:
    """The chain's connection, as ``db.connect``'s: no extension installed or loaded."""
    for statement in db.NO_EXTENSIONS:
        dbapi_con.execute(statement)


def relink_parts(con: duckdb.DuckDBPyConnection) -> None:
    """Views over sealed parts name them by absolute path: a warehouse moved with its parts
    folder would have the chain bind its views to the old place (failing, or reading another
    warehouse's files when that folder still exists). Rebuilt first to name this warehouse's
    parts, with the columns they have at this revision (the chain then changes them as usual)."""
    from . import parts

    manifest = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = $t", {"t": parts.MANIFEST})
    if manifest.fetchone() != (0,):
        parts.ensure_view(con, parts.GPU_SAMPLES, as_built=True)


def is_new(path: Path) -> bool:
    """No warehouse at ``path`` yet: neither the file nor a write-ahead log DuckDB would replay."""
    return not os.path.lexists(path) and not os.path.lexists(f"{path}.wal")


def run_chain(conn: sa.Connection, revision: str = "head") -> None:
    """Run the alembic chain up to ``revision`` on this connection. Within a transaction the
    connection already began, the upgrade joins it (committed or rolled back with it)."""
    from alembic import command

    from ..migrations import derived

    config = alembic_config()
    config.attributes["connection"] = conn
    config.attributes[derived.UPGRADING] = True  # its refills run once, at the chain's end
    try:
        command.upgrade(config, revision)
    except BaseException:
        # alembic's Operations.context installs its `op` proxy and removes it only when the chain
        # ends well: a revision that failed left `op` bound to that connection, so that frozen
        # views and engine.on_postgres() in this process answered for a failed PostgreSQL chain
        from alembic import op

        proxy = getattr(op, "_proxy", None)
        if proxy is not None:
            proxy._remove_proxy()
        raise


def upgrade_postgres(target: db.PostgresUrl, revision: str = "head", wait: float = db.DEFAULT_WAIT_SECONDS) -> str:
    """``upgrade`` of a PostgreSQL database: the whole chain in one transaction, so that a failure
    leaves the database as it was (PostgreSQL's DDL is transactional)."""
    import psycopg
    import sqlalchemy as sa

    from . import postgres

    with postgres.connection(target) as conn:
        try:
            postgres.lock_schema(conn, target, wait)
            # a view replaced waits for the sessions reading it (an analyst's open transaction), and
            # every new reader of it waits behind: at most --wait, then the upgrade stops, undone
            conn.exec_driver_sql(postgres.SET_LOCK_TIMEOUT, postgres.lock_timeout(wait))
            current = postgres.current_revision(conn)
            check_revision(current, target)
            check_not_older(revision, current, target)
            run_chain(conn, revision)
            done = postgres.current_revision(conn)
            conn.commit()
        except sa.exc.DBAPIError as error:
            if isinstance(error.orig, (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)):
                raise db.WarehouseBusy(
                    f"cannot upgrade {target} now: other sessions read the tables or views it changes (waited "
                    f"{wait:g} s, --wait; {postgres.reason(error)}); nothing was changed, run it again when they end"
                ) from error
            raise db.WarehouseError(f"cannot upgrade {target}: {postgres.reason(error)}") from error
    assert done is not None
    return done


def ensure_current(
    path: Path, wait: float = db.DEFAULT_WAIT_SECONDS, *, locked: bool = False, mark: bool = False
) -> None:
    """Create or migrate the warehouse on first use; refuse one newer than the code.

    Readers check the newest snapshot (they never open the warehouse itself while it may be
    written); a writer that holds the lock (``locked``) checks the warehouse, and with ``mark``
    (a writer that publishes) marks it unpublished once checked, just before migrating it.
    """
    if path.exists() or (not locked and snapshots.latest(path) is not None):
        # a reader opens the newest copy as every read does: one kept copy can be replaced
        # between listing and opening (connect_latest lists again)
        con = db.connect(path, read_only=True, wait=wait) if locked else snapshots.connect_latest(path, wait=wait)
        try:
            revision = current_revision(con)
        finally:
            con.close()
        if revision == HEAD_REVISION:
            return
        check_revision(revision, path)
    if locked:
        if mark:
            snapshots.mark_unpublished(path)
        upgrade_locked(path, wait=wait)
    else:
        # a reader's first use of an older warehouse writes it: a full disk says why a read wrote
        upgrade(path, wait=wait, what=f"upgrade of {path} to schema revision {HEAD_REVISION}, which reading it needs,")
        check_published(path, wait)


def check_published(path: Path, wait: float) -> None:
    """After a reader's upgrade: the newest snapshot is at this runlytics' revision, else the
    upgrade's publish was held back (jobs queued by an ingest killed before its refresh: the
    ingest that refreshes them publishes) and the reader is refused, not served the older
    revision's snapshot (audit 26: its views and tables are not this code's; a route read a
    table the old schema lacks)."""
    con = snapshots.connect_latest(path, wait=wait)
    try:
        revision = current_revision(con)
    finally:
        con.close()
    if revision != HEAD_REVISION:
        raise db.WarehouseError(
            f"warehouse {path} is at schema revision {HEAD_REVISION}, but its newest snapshot is at {revision}: "
            "an ingest run was killed before it refreshed the jobs it queued, and the next `runlytics ingest` "
            "publishes (run it)"
        )
