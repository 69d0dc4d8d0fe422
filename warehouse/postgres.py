"""PostgreSQL warehouses (issue #18): connections, their errors, and the lock on schema changes.

Every connection is opened by ``connect``: the URL's own session options (a search_path naming
the warehouse's schema, say) followed by runlytics' own. Those turn PostgreSQL's JIT off: on
analytics queries of one job it compiled plans for longer than they run (252 ms instead of
7.4 ms in the study of issue #18). Times are UTC, as on DuckDB (``db.connect``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import db

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy as sa

SESSION_OPTIONS = "-c jit=off -c TimeZone=UTC"
# libpq's default for a connection's options when its URL names none
OPTIONS_VARIABLE = "PGOPTIONS"

# pg_advisory_xact_lock's key for schema changes (upgrade, copy): 'runl' in ASCII
SCHEMA_LOCK = 0x72756E6C
# pg_advisory_xact_lock(JOB_LOCK, hashtext(job_id)): a job's rows, taken by every publisher that
# deletes and copies them (a job's facts, its GPU telemetry), always in job_id order
JOB_LOCK = 0x72756E6A  # 'runj'
LOCK_JOB = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"
# SET LOCAL lock_timeout, its value bound (SET takes no parameter)
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"


def lock_timeout(wait: float) -> tuple[str]:
    """SET_LOCK_TIMEOUT's value: ``wait`` seconds in whole milliseconds, at least one: a ``wait`` of 0
    gives up after 1 ms, never PostgreSQL's ``0``, which waits without limit."""
    return (f"{max(1, round(wait * 1000))}ms",)


LOCK_TIMEOUT_NOW = "SELECT current_setting('lock_timeout')"


@contextmanager
def advisory_wait(con: psycopg.Connection[Any] | psycopg.Cursor[Any], wait: float) -> Iterator[None]:
    """The advisory locks taken inside wait at most ``wait`` seconds (--wait; any session may hold
    one at will, an analyst's ``pg_advisory_lock`` too): lock_timeout for them alone, then the
    transaction's own again, so that a row another ingester's batch holds is waited for as before.
    A statement that fails leaves the transaction aborted: nothing to set back."""
    row = con.execute(LOCK_TIMEOUT_NOW).fetchone()
    con.execute(SET_LOCK_TIMEOUT, lock_timeout(wait))
    yield
    con.execute(SET_LOCK_TIMEOUT, (row[0] if row else "0",))


def connect(target: db.PostgresUrl, options: str = SESSION_OPTIONS, **kwargs: Any) -> psycopg.Connection[Any]:
    """A psycopg connection to ``target`` (``kwargs``: psycopg.connect's, a cursor factory, …) whose
    session options are the URL's own (else $PGOPTIONS, as libpq takes them) followed by
    ``options``: libpq has one ``options`` parameter, and a keyword given beside a URL replaces the
    URL's (a search_path naming the warehouse's schema was lost). Later settings win, so ours
    hold over the user's (a reader's time limit, its read-only mode). A URL libpq refuses, or a
    refused connection, is a WarehouseError naming the server (its password hidden)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(target.libpq_url)
    except psycopg.ProgrammingError as error:
        # libpq's message may quote the whole URL, password included
        said = reason(error).replace(target.libpq_url, str(target))
        raise db.WarehouseError(f"{target} is not a URL libpq takes: {said}") from error
    own = params.get("options", os.environ.get(OPTIONS_VARIABLE))
    merged = " ".join(part for part in (str(own or ""), options) if part)
    try:
        return psycopg.connect(target.libpq_url, options=merged, **kwargs)
    except psycopg.OperationalError as error:
        raise db.WarehouseError(f"cannot connect to {target}: {reason(error)}") from error


@contextmanager
def connection(target: db.PostgresUrl) -> Iterator[sa.Connection]:
    """A SQLAlchemy connection to ``target``, on a psycopg connection of ``connect``; closed on
    exit, its transaction rolled back unless committed. A refused or failed connection is a
    WarehouseError naming the server."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    # the URL names the dialect only: ``connect`` opens the connection, as for every other caller
    engine = sa.create_engine("postgresql+psycopg://", poolclass=NullPool, creator=lambda: connect(target))
    try:
        try:
            conn = engine.connect()
        except sa.exc.OperationalError as error:
            raise db.WarehouseError(f"cannot connect to {target}: {reason(error)}") from error
        with conn:
            yield conn
    finally:
        engine.dispose()


def reason(error: BaseException) -> str:
    """A database error in one line: the driver's first line, without SQLAlchemy's additions."""
    orig = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def lock_schema(conn: sa.Connection, target: db.PostgresUrl, wait: float) -> None:
    """Hold the schema lock until the transaction ends, waiting up to ``wait`` seconds for another
    upgrade or copy of the same database (WarehouseBusy after that)."""
    wait_for_lock(
        lambda sql, values: conn.exec_driver_sql(sql, values).scalar_one(),
        SCHEMA_LOCK,
        wait,
        f"warehouse {target} is being upgraded or filled by another process (waited {wait:g} s)",
    )


def wait_for_lock(scalar: Callable[[str, tuple[Any, ...]], Any], key: int, wait: float, busy: str) -> None:
    """Take the transaction-level advisory lock ``key`` through ``scalar`` (a connection's
    one-value query, given its SQL and bound values), trying again with growing pauses for up to
    ``wait`` seconds; then WarehouseBusy(``busy``). A try, not a blocking wait: a lock wait has no
    time limit of its own."""
    deadline = time.monotonic() + wait
    delay = 0.01
    while not scalar(TRY_LOCK, (key,)):
        if time.monotonic() >= deadline:
            raise db.WarehouseBusy(busy)
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def current_revision(conn: sa.Connection) -> str | None:
    """The database's alembic revision, or None when it has no runlytics schema yet."""
    if conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar() is None:
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def tables(conn: sa.Connection) -> list[str]:
    """The tables of the connection's current schema (the one runlytics builds in)."""
    rows = conn.exec_driver_sql(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
    )
    return [name for (name,) in rows]
