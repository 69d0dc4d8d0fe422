"""Building and upgrading the warehouse with alembic, and refusing files newer than the code."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from . import db, snapshots
from .lock import run_lock

if TYPE_CHECKING:
    import duckdb
    from alembic.config import Config

# The newest revision under migrations/versions (tests/test_migrations.py keeps them equal).
# Commands compare against it without loading alembic, which costs half a second of start-up.
HEAD_REVISION = "0021"

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
    from alembic.script import ScriptDirectory

    return frozenset(s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def current_revision(con: duckdb.DuckDBPyConnection) -> str | None:
    """The warehouse's alembic revision, or None for an empty file."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alembic_version'"
    ).fetchone()
    if not exists or not exists[0]:
        return None
    row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def check_revision(revision: str | None, path: Path) -> None:
    """Refuse a warehouse written by a newer runlytics: guessing at its schema could lose data."""
    if revision is not None and revision != HEAD_REVISION and revision not in known_revisions():
        raise db.WarehouseError(
            f"warehouse {path} is at schema revision {revision!r}, which this runlytics does not know "
            f"(its newest is {head_revision()!r}): it was written by a newer version. "
            "Upgrade runlytics, or use another --db."
        )


def upgrade(path: Path, revision: str = "head", wait: float = db.DEFAULT_WAIT_SECONDS) -> str:
    """Build or upgrade the warehouse at ``path`` and publish a snapshot; returns its revision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with run_lock(path, wait=wait):
        done = upgrade_locked(path, revision, wait)
        snapshots.publish(path)
    return done


def upgrade_locked(path: Path, revision: str = "head", wait: float = db.DEFAULT_WAIT_SECONDS) -> str:
    """``upgrade`` for a caller that already holds the writer lock (no snapshot published)."""
    con = db.connect(path, wait=wait)  # waits for other processes, and holds the file meanwhile
    try:
        check_revision(current_revision(con), path)
    finally:
        con.close()
    from alembic import command
    from sqlalchemy import create_engine

    engine = create_engine(f"duckdb:///{path}")
    try:
        with engine.connect() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
            conn.exec_driver_sql("CHECKPOINT")
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    finally:
        engine.dispose()


def ensure_current(path: Path, wait: float = db.DEFAULT_WAIT_SECONDS, *, locked: bool = False) -> None:
    """Create or migrate the warehouse on first use; refuse one newer than the code.

    Readers check the newest snapshot (they never open the warehouse itself while it may be
    written); a writer that holds the lock (``locked``) checks the warehouse.
    """
    source = path if locked else snapshots.latest(path) or path
    if source.exists():
        with db.connection(source, read_only=True, wait=wait) as con:
            revision = current_revision(con)
        if revision == HEAD_REVISION:
            return
        check_revision(revision, path)
    if locked:
        upgrade_locked(path, wait=wait)
    else:
        upgrade(path, wait=wait)
