"""The time limit of each read of a DuckDB warehouse, as PostgreSQL's ``statement_timeout`` is
for a PostgreSQL one (``runlytics serve --read-timeout``, default 30 s).

``Reader`` is the app's snapshot reader whose cursors are ``Cursor``: each ``execute`` starts a
read whose deadline is ``timeout`` seconds later, and the read's calls to DuckDB (``execute``
and every ``fetch*``, ``df``, ``arrow``, … of its result) each run armed with that deadline:
one watchdog thread calls the cursor's ``interrupt()`` when a call outlives it, and each call
disarms it before it returns. DuckDB streams a result when its plan allows (a ``SELECT``
without ``ORDER BY`` or an aggregate does its work in the fetch, not in ``execute``), so the
limit covers the fetches as well as ``execute``. DuckDB then stops the call
(``InterruptException``, from ``execute`` or from a fetch, even one whose interrupt came in
the last moments of ``execute``), which becomes ``db.WarehouseError``: a 503, "warehouse
unavailable: a read took longer than its time limit", worded as PostgreSQL's
(warehouse/pg_reader.py).

The interrupt can never reach another statement: it is sent only while a call of its own read
runs (one lock orders the watchdog's ``interrupt()`` against the end of each call, after which
that call's deadline is dead), each request has its own cursor (a DuckDB connection of its
own, closed at the end), and DuckDB clears an interrupt that finds no statement running when
the next one starts.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import duckdb

from runlytics.warehouse import db, snapshots


class _Statement:
    """One running statement: its cursor, whether it still runs, whether its time ran out."""

    __slots__ = ("cursor", "fired", "running")

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self.running = True
        self.fired = False


class _Watchdog:
    """One thread for every reader's statements (a thread per statement costs more than a short
    read): a heap of deadlines, the earliest waited for. Under its lock a statement ends
    (``finish``) and the thread interrupts one (only one still running), so an interrupt never
    comes after ``finish``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Statement]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, cursor: duckdb.DuckDBPyConnection, timeout: float) -> _Statement:
        statement = _Statement(cursor)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + timeout, next(self._count), statement))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="runlytics-read-timeout", daemon=True)
                self._thread.start()
            if self._heap[0][2] is statement:  # the earliest now: the thread waits for it instead
                self._cond.notify()
        return statement

    def finish(self, statement: _Statement) -> None:
        with self._cond:
            statement.running = False

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and not self._heap[0][2].running:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, statement = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:  # bounded: a wait past threading.TIMEOUT_MAX raises and kills the thread
                    self._cond.wait(min(delay, threading.TIMEOUT_MAX))
                    continue
                heapq.heappop(self._heap)
                statement.fired = True
                # a cursor closed under its call raises: nothing to stop, and the thread lives on
                with contextlib.suppress(duckdb.Error):
                    statement.cursor.interrupt()


_WATCHDOG = _Watchdog()


# the calls that read a result: DuckDB may do the statement's work in them (a streamed result)
FETCHES = frozenset(
    {"fetchone", "fetchmany", "fetchall", "fetchdf", "fetch_df", "fetch_df_chunk", "df", "fetchnumpy",
     "fetch_arrow_table", "fetch_record_batch", "arrow", "pl", "torch", "tf"}
)  # fmt: skip


class Cursor:
    """A DuckDB cursor whose reads each have ``timeout`` seconds, from ``execute`` to the last
    fetch of its result; every other call (``description``, ``close``, …) is the cursor's own.
    ``execute`` returns this object, as DuckDB's returns the cursor, so
    ``con.execute(…).fetchall()`` reads as before."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, timeout: float) -> None:
        self._cursor = cursor
        self._timeout = timeout
        self._deadline = 0.0  # of the current read, set by its execute
        self._fired = False  # whether a call of the current read was interrupted for its time

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        statement = _WATCHDOG.arm(self._cursor, self._deadline - time.monotonic())
        try:
            return method(*args, **kwargs)
        except duckdb.InterruptException as error:
            # only this module interrupts a reader's cursor: never a 500, whichever call it reached
            self._fired = self._fired or statement.fired
            reason = f"took longer than its time limit: {self._timeout:g} s" if self._fired else "was interrupted"
            raise db.WarehouseError(f"a read {reason} on DuckDB") from error
        finally:
            _WATCHDOG.finish(statement)
            self._fired = self._fired or statement.fired

    def execute(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> Cursor:
        self._deadline = time.monotonic() + self._timeout
        self._fired = False
        self._call(self._cursor.execute, sql, params)
        return self

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._cursor, name)
        if name not in FETCHES:
            return attribute
        return lambda *args, **kwargs: self._call(attribute, *args, **kwargs)


class Reader(snapshots.Reader):
    """A snapshot reader (warehouse/snapshots.py) whose cursors limit each read to ``timeout`` seconds."""

    def __init__(self, db_path: Path, timeout: float) -> None:
        super().__init__(db_path)
        self.timeout = timeout

    def cursor(self) -> duckdb.DuckDBPyConnection:
        # typed as DuckDB's cursor, whose calls it answers (as pg_reader.Cursor does)
        return cast(duckdb.DuckDBPyConnection, Cursor(super().cursor(), self.timeout))
