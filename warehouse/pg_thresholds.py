"""Changing an insight threshold of a PostgreSQL warehouse (issue #18): ``runlytics insights set``.

As on DuckDB (``insights.set_threshold``), the new value is written to ``insight_settings`` and
every job's insights are recomputed from the views (``insights.REFILL``: ``insight_results``
and ``insight_jobs``) in the same transaction, so that readers see either the old thresholds
and their insights or the new ones and theirs.

The transaction first locks the three insight tables in SHARE ROW EXCLUSIVE mode: readers go
on (they see the state before), but a writer of those tables (another ``insights set``, an
ingester publishing a job's insights) waits for the commit, and this one waits for theirs.
Without it, a publish committed while the refill runs would keep its rows (the refill's DELETE
did not see them) beside the refill's own for the same job: two sets of one job's insights.
"""

from __future__ import annotations

from typing import Any

from . import db, insights, migrate, postgres
from .postgres import reason

LOCK = "LOCK TABLE insight_settings, insight_results, insight_jobs IN SHARE ROW EXCLUSIVE MODE"
UPSERT = (
    "INSERT INTO insight_settings (name, value) VALUES (%(name)s, %(value)s) "
    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
)
REVISION = "SELECT version_num FROM alembic_version"


def set_threshold(target: db.PostgresUrl, name: str, value: float, head: str, wait: float) -> None:
    """Set one threshold and recompute every job's insights, in one transaction; WarehouseBusy
    when the insight tables stay locked for longer than ``wait`` seconds, WarehouseError when
    the database is not at revision ``head`` or a statement fails (nothing written)."""
    import psycopg

    number = insights.check_threshold(name, value)
    conn = postgres.connect(target)
    try:
        with conn.transaction():
            revision = _revision(conn)
            if revision != head:
                raise db.WarehouseError(
                    f"{target}: {migrate.schema_named(revision)}, this runlytics writes {head}: "
                    "run `runlytics db upgrade --db URL`"
                )
            conn.execute(postgres.SET_LOCK_TIMEOUT, postgres.lock_timeout(wait))
            try:
                conn.execute(LOCK)
            except psycopg.errors.LockNotAvailable as error:
                raise db.WarehouseBusy(
                    f"{target}: the insight tables stayed locked by another writer (waited {wait:g} s)"
                ) from error
            conn.execute(UPSERT, {"name": name, "value": number})
            conn.execute(insights.REFILL)
    except psycopg.Error as error:
        raise db.WarehouseError(f"{target}: setting {name} failed, nothing written: {reason(error)}") from error
    finally:
        conn.close()


def _revision(conn: Any) -> str | None:
    if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
        return None
    row = conn.execute(REVISION).fetchone()
    return row[0] if row else None
