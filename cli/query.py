"""``runlytics sql`` and ``runlytics analytics``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from runlytics.warehouse import db, migrate, queries, readonly, sidefiles

from .errors import UserError
from .exits import EXIT_OK, EXIT_QUERY
from .output import _write_rows
from .reading import _check_pg_revision, _existing_warehouse, _reading

if TYPE_CHECKING:  # the readers import DuckDB: a run with nothing to do never needs it
    import duckdb

Result = TypeVar("Result")
BATCH_ROWS = 10_000  # rows fetched at a time for CSV and JSON: the output holds no more than these


def run_sql(args: argparse.Namespace) -> int:
    import duckdb

    target = db.resolve_target(args.db)
    if isinstance(target, db.PostgresUrl):
        return _sql_postgres(args, target)
    try:
        # before opening anything: a refused statement (readonly.Refused) touches no file
        statement = readonly.single_select(args.query)
    except duckdb.Error as error:  # it does not parse: the query's error, as a failed query's
        raise UserError(readonly.one_line(error), EXIT_QUERY) from error
    path = _existing_warehouse(args)
    migrate.ensure_current(path, wait=args.wait)
    con = readonly.connect(path, args.allow_read, wait=args.wait)
    stops = Stops(con, args.timeout)
    try:
        with stops:
            _run_statement(con, statement, args.format, stops)
    except duckdb.InterruptException as error:
        if stops.why == "timeout":
            raise UserError(readonly.timed_out(args.timeout, readonly.one_line(error)), EXIT_QUERY) from error
        raise KeyboardInterrupt from error  # Ctrl-C: "interrupted", exit 130 (cli/errors.py)
    except duckdb.OutOfMemoryException:
        raise  # out of memory: said as every command says it, exit 71 (cli/errors.py)
    except (duckdb.PermissionException, duckdb.IOException) as error:
        from runlytics.warehouse import parts  # (imports DuckDB: not at the start of every command)

        # the warehouse's own parts, elsewhere (a parts folder of its name: a user's file is no part)
        if (part := parts.unreadable_part(error)) is not None and part[1].name == sidefiles.parts(path).name:
            raise parts.parts_elsewhere(path, part) from None
        if isinstance(error, duckdb.IOException):
            raise UserError(readonly.one_line(error), EXIT_QUERY) from error
        raise UserError(f"{readonly.one_line(error)} (files: only under --allow-read folders)", EXIT_QUERY) from error
    except duckdb.Error as error:
        raise UserError(readonly.one_line(error), EXIT_QUERY) from error
    finally:
        con.close()
    return EXIT_OK


def _run_statement(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, fmt: str | None, stops: Stops) -> None:
    if fmt is None and sys.stdout.isatty():
        # DuckDB's own box rendering, as its shell draws it (wide results elided to the terminal)
        print(stops.call(lambda: str(con.sql(statement))).rstrip("\n"))
        return
    cursor = stops.call(con.execute, statement)
    columns = [d[0] for d in cursor.description or []]
    _write_rows(columns, _fetched(cursor, stops), fmt or "table")


def _fetched(cursor: duckdb.DuckDBPyConnection, stops: Stops) -> Iterator[tuple[Any, ...]]:
    """The rows of the result, BATCH_ROWS fetched at a time (DuckDB streams what its plan allows)."""
    while batch := stops.call(cursor.fetchmany, BATCH_ROWS):
        yield from batch


class Stops:
    """What stops a query on DuckDB: Ctrl-C, and ``timeout`` seconds spent in DuckDB (its
    ``execute`` and fetches, not the time the output's reader takes), each by ``con.interrupt()``,
    as the API's time limit does (api/timed_reads.py). Python's own Ctrl-C waits for DuckDB to
    act on it, which a long query may not do for many seconds, or ever; ``why`` says which came.

    One watchdog thread, started with the query, interrupts a call that outlives the time left
    (a thread per call could not start once memory ran out, and ``Thread.start`` then waits for
    ever). A Ctrl-C between DuckDB's calls (the output being written) finds no query to
    interrupt: the next call raises KeyboardInterrupt instead."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timeout: float) -> None:
        self._con = con
        self._left = timeout
        self.why: str | None = None  # "interrupt" (Ctrl-C) or "timeout", whichever came first
        self._cond = threading.Condition()
        self._deadline: float | None = None  # of the call running, if any
        self._done = False
        self._previous: Any = None

    def __enter__(self) -> Stops:
        threading.Thread(target=self._watch, name="runlytics-sql-timeout", daemon=True).start()
        self._previous = signal.signal(signal.SIGINT, self._sigint)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        signal.signal(signal.SIGINT, self._previous)
        with self._cond:
            self._done = True
            self._cond.notify()

    def _sigint(self, signum: int, frame: FrameType | None) -> None:
        # run by DuckDB's own look at the signals mid-query, or between calls
        self.why = self.why or "interrupt"
        self._con.interrupt()

    def _watch(self) -> None:
        with self._cond:
            while not self._done:
                delay = None if self._deadline is None else self._deadline - time.monotonic()
                if delay is None or delay > 0:  # bounded: a wait past TIMEOUT_MAX raises
                    self._cond.wait(None if delay is None else min(delay, threading.TIMEOUT_MAX))
                    continue
                self.why = self.why or "timeout"
                self._deadline = None
                self._con.interrupt()  # under the lock: the call it is for has not ended

    def call(self, method: Callable[..., Result], *args: Any) -> Result:
        """``method(*args)``, a call to DuckDB, stopped (InterruptException) when the time left runs out."""
        if self.why == "interrupt":
            raise KeyboardInterrupt
        began = time.monotonic()
        with self._cond:
            self._deadline = began + self._left
            self._cond.notify()
        try:
            return method(*args)
        finally:
            with self._cond:
                self._deadline = None
            self._left -= time.monotonic() - began


def _sql_postgres(args: argparse.Namespace, target: db.PostgresUrl) -> int:
    if args.allow_read:
        raise UserError("--allow-read reads files beside a DuckDB warehouse, not on PostgreSQL")
    # at another revision: WarehouseError, as every read's; refused (readonly.Refused) or failed
    # (readonly.QueryFailed): one line, exit 4 (cli/errors.py); Ctrl-C: psycopg cancels the query
    # on the server before KeyboardInterrupt reaches _guarded
    columns, rows = readonly.run_postgres(
        target, args.query, args.timeout, check=lambda con: _check_pg_revision(con, target, unseen_ok=True)
    )
    _write_rows(columns, rows, args.format or "table")
    return EXIT_OK


def run_analytics(args: argparse.Namespace) -> int:
    with _reading(args) as (con, name):
        result = queries.job_analytics(con, args.job_id)
    if result is None:
        raise UserError(f"no job {args.job_id!r} in {name}", EXIT_QUERY)
    print(json.dumps(result, indent=2))
    return EXIT_OK
