"""Reads of a PostgreSQL warehouse (issue #18) with a DuckDB cursor's calling convention.

The warehouse's named queries are written for DuckDB's API: ``con.execute(sql, {"name": v})``
with ``$name`` placeholders, then ``fetchone``/``fetchall``/``description``. ``Cursor`` offers
the same on a pooled psycopg connection, so that the API's routes and the CLI's readers serve a
PostgreSQL database unchanged (the SQL itself must be portable: warehouse/dialect.py).

Every read runs in a READ ONLY, REPEATABLE READ transaction (one request sees one state of the
database, as a DuckDB snapshot does), with JIT off (issue #18: 252 ms instead of 7.4 ms for one
job's analytics) and ``statement_timeout`` as the per-read time limit.

Values are bound client-side (psycopg's ClientCursor: literals, quoted by psycopg): the queries
test optional filters with ``$x IS NULL OR …``, where PostgreSQL cannot infer the type of a
server-side parameter. ``runlytics sql`` does not use this module's binding: the analyst's text
goes through the extended protocol, which refuses a second statement.
"""

from __future__ import annotations

import functools
import os
import queue
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import db, postgres
from .dialect import DUCKDB, POSTGRES, render
from .postgres import SESSION_OPTIONS, reason

if TYPE_CHECKING:
    import psycopg

DEFAULT_TIMEOUT_SECONDS = 30.0
# PostgreSQL's text holds no NUL character (psycopg refuses to send one): a string read with carries
# U+FFFD in its place, as the strings an ingest published do (ingest/postgres.py), so that a job id
# of a URL holding NUL is not found (404), as on DuckDB, instead of failing the request. Defined
# here, the light module the CLI imports at its start; pg_copy and the publish take them from here
NUL = "\x00"
NUL_REPLACEMENT = "\ufffd"
POOL_SIZE = 8
_PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# JSON's NaN, Infinity and -Infinity (Python's json and DuckDB write them; PostgreSQL's json refuses
# them) are published and copied as the strings "NaN", "Infinity" and "-Infinity", and a string that
# IS one of those words with its first letter escaped ("\u004eaN": the same string to every JSON
# reader, ``config->>'k'`` included): pg_copy.portable_json. The readers' JSON text (duckdb_json) is
# then DuckDB's again, numbers as numbers and strings as strings, so that every surface renders a
# non-finite number as it does on DuckDB (null in the API's JSON, NaN in an export's JSON text)
ESCAPED_WORDS = {'"NaN"': '"\\u004eaN"', '"Infinity"': '"\\u0049nfinity"', '"-Infinity"': '"-\\u0049nfinity"'}
# a value: the words are numbers again, their escaped spellings plain strings
_FROM_POSTGRES = {'"NaN"': "NaN", '"Infinity"': "Infinity", '"-Infinity"': "-Infinity"} | {
    escaped: word for word, escaped in ESCAPED_WORDS.items()
}
# an object's key is a string whatever it spells (JSON has no other key): an escaped word is the
# plain string again, and the word itself (a key a copy or publish before audit 18 wrote as it was,
# or another tool's) stays a string; a number there would be no JSON ({NaN: 1})
_KEY_FROM_POSTGRES = {escaped: word for word, escaped in ESCAPED_WORDS.items()}
# a JSON string (outside one, JSON text holds no '"'), and the `:` after it when it is a key: each
# string is matched once, from its opening quote, so the text is read in one pass
_JSON_STRING = re.compile(r'("(?:[^"\\]|\\.)*")([ \t\n\r]*:)?')


def sql_for(con: Any, template: str) -> str:
    """``template``'s macros (warehouse/dialect.py) rendered for the engine ``con`` reads: this
    module's cursor says PostgreSQL, anything else is a DuckDB connection."""
    return _rendered(template, is_postgres(con))


def is_postgres(con: Any) -> bool:
    """Whether ``con`` is this module's cursor (else a DuckDB connection)."""
    return getattr(con, "dialect", None) is POSTGRES


@functools.cache
def _rendered(template: str, postgres: bool) -> str:
    return render(template, POSTGRES if postgres else DUCKDB)


def session_options(timeout: float, read_only: bool = True) -> str:
    """libpq ``options`` for a reader's connection (added to the URL's own: ``postgres.connect``):
    JIT off, UTC, the time limit, read-only."""
    parts = [SESSION_OPTIONS, f"-c statement_timeout={max(1, round(timeout * 1000))}"]
    if read_only:
        parts.append("-c default_transaction_read_only=on")
    return " ".join(parts)


def connect(target: db.PostgresUrl, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> psycopg.Connection[Any]:
    """A read-only connection (WarehouseError naming the server when it is refused)."""
    import psycopg

    conn = postgres.connect(target, session_options(timeout), cursor_factory=psycopg.ClientCursor)
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    _load_as_duckdb(conn)
    return conn


def translate(sql: str, params: Mapping[str, Any] | None) -> str:
    """DuckDB's ``$name`` placeholders as psycopg's ``%(name)s`` (a literal ``%`` doubled);
    a ``$`` not followed by a parameter's name (JSON paths, ``$$``) stays."""
    if not params:
        return sql
    sql = sql.replace("%", "%%")
    return _PLACEHOLDER.sub(lambda m: f"%({m.group(1)})s" if m.group(1) in params else m.group(0), sql)


def duckdb_json(text: str) -> str:
    """PostgreSQL's JSON text as DuckDB holds it: the strings "NaN", "Infinity" and "-Infinity"
    numbers again where they are values, the escaped words (ESCAPED_WORDS) plain strings again;
    an object's keys stay strings. Linear in the text's length."""
    if 'aN"' not in text and 'nfinity"' not in text:  # "NaN", "\u004eaN", "Infinity", …
        return text
    return _JSON_STRING.sub(_from_postgres, text)


def _from_postgres(match: re.Match[str]) -> str:
    string, colon = match.group(1, 2)
    if colon is not None:  # a key
        return _KEY_FROM_POSTGRES.get(string, string) + colon
    return _FROM_POSTGRES.get(string, string)


def nul_free(params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``params`` with NUL replaced in each string (and in the strings of a list or tuple)."""

    def free(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(NUL, NUL_REPLACEMENT) if NUL in value else value
        if isinstance(value, (list, tuple)):
            return type(value)(free(v) for v in value)
        return value

    if not params:
        return params
    return {name: free(value) for name, value in params.items()}


class Cursor:
    """One request's reads on a pooled connection; ``close`` ends its transaction and gives the
    connection back. ``execute`` returns the cursor itself, as DuckDB's does."""

    dialect = POSTGRES

    def __init__(self, conn: psycopg.Connection[Any], pool: Reader | None = None) -> None:
        self._conn = conn
        self._pool = pool
        self._cursor = conn.cursor()

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Cursor:
        import psycopg

        params = nul_free(params)
        try:
            self._cursor.execute(translate(sql, params), params or None)
        except psycopg.errors.QueryCanceled as error:
            raise db.WarehouseError(f"a read took longer than its time limit: {reason(error)}") from error
        except psycopg.OperationalError as error:
            raise db.WarehouseError(f"PostgreSQL failed a read: {reason(error)}") from error
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()

    def fetchnumpy(self) -> dict[str, Any]:
        """The rows as a numpy array per column, a masked one where a value is NULL (as DuckDB's)."""
        import numpy as np

        names = [d.name for d in self._cursor.description or []]
        rows = self._cursor.fetchall()
        out: dict[str, Any] = {}
        for i, name in enumerate(names):
            column = [row[i] for row in rows]
            nulls = [v is None for v in column]
            if any(nulls):
                out[name] = np.ma.masked_array([0 if v is None else v for v in column], mask=nulls)
            else:
                out[name] = np.array(column)
        return out

    @property
    def description(self) -> list[Any] | None:
        return self._cursor.description

    def close(self) -> None:
        self._cursor.close()
        if self._pool is not None:
            self._pool.release(self._conn)
        else:
            self._conn.close()


class Reader:
    """A small pool of read-only connections to one database (the API's reader on PostgreSQL)."""

    # what the API asks a snapshot reader about: no snapshot here, and no file beside which an
    # ingest leaves its heartbeat (the ingest into PostgreSQL is a later step of issue #18)
    snapshot = None
    db_path = Path(os.devnull)

    def __init__(self, target: db.PostgresUrl, timeout: float = DEFAULT_TIMEOUT_SECONDS, size: int = POOL_SIZE) -> None:
        self.target = target
        self.timeout = timeout
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue(maxsize=size)

    def cursor(self) -> Cursor:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = connect(self.target, self.timeout)
        return Cursor(conn, self)

    def release(self, conn: psycopg.Connection[Any]) -> None:
        """End the connection's transaction; keep it for the next request unless it broke or
        the pool is full."""
        try:
            if not conn.closed:
                conn.rollback()
        except Exception:  # a broken connection is dropped, never handed out again
            conn.close()
        if conn.closed or conn.broken:
            return
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _load_as_duckdb(conn: psycopg.Connection[Any]) -> None:
    """Values as DuckDB's Python API gives them: JSON as its text, DuckDB's (duckdb_json; the
    readers parse it, bounded: warehouse/bounded_json.py), and NUMERIC (PostgreSQL's sum and avg
    of integers) as an int when whole, else a float."""
    from psycopg.adapt import Loader
    from psycopg.types.string import TextLoader

    class NumberLoader(Loader):
        def load(self, data: Any) -> Any:
            text = bytes(data).decode()
            if text.lstrip("-").isdigit():
                return int(text)
            return float(Decimal(text))

    class JsonLoader(TextLoader):
        def load(self, data: Any) -> Any:
            text = super().load(data)  # bytes on a SQL_ASCII database only
            return duckdb_json(text) if isinstance(text, str) else text

    for name in ("json", "jsonb"):
        conn.adapters.register_loader(name, JsonLoader)
    conn.adapters.register_loader("numeric", NumberLoader)
