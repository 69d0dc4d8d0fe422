"""What ``runlytics sql`` lets an analyst run: one read-only statement on a locked-down connection.

Opening the snapshot read-only protects only that one file: a statement could still ATTACH the
live warehouse for writing, COPY or EXPORT to any path, read any file, install extensions,
change settings or run several statements (issue #15). So there are two locks, either of which
alone keeps the warehouse and its snapshots unwritten:

- the statement is classified by DuckDB's own parser, and only one SELECT-kind statement passes
  (to DuckDB, FROM, WITH, VALUES, TABLE, DESCRIBE, SHOW and SUMMARIZE are SELECTs too); EXPLAIN
  is refused because EXPLAIN ANALYZE runs the statement it explains, whatever its kind;
- the connection has external access off (no file but the snapshot and the warehouse's own
  Parquet parts, which its views read; no ATTACH, no extension
  install or load) except reading the folders an analyst opts into (never the live warehouse
  file and those beside it, ``readable``), extension autoloading off,
  no spilling to a temporary folder beside the snapshot, and then its configuration locked, so
  that no statement (nor a ``query()`` inside one) can turn any of it back on.

The second lock alone would let ``COPY … TO`` write into an opted-in folder; the first alone
would trust the parser's verdict on table functions. Together, nothing is written anywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import db, sidefiles, snapshots

if TYPE_CHECKING:
    import duckdb

# where DuckDB's error quotes the query ("LINE 1: SELEC 1", then a caret line under it)
_QUOTED_QUERY = re.compile(r"^LINE \d+:")


class Refused(Exception):
    """A query ``runlytics sql`` does not run; the message names what was refused, on one line."""


def single_select(sql: str) -> duckdb.Statement:
    """The one SELECT-kind statement of ``sql``; ``Refused`` for anything else.

    Raises duckdb.ParserException (a query error, not a refusal) when ``sql`` does not parse.
    """
    import duckdb

    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        kinds = "; ".join(_kind(s) for s in statements)
        raise Refused(_refusal(f"{len(statements)} statements ({kinds})" if statements else "no statement"))
    statement = statements[0]
    if _type(statement) != "SELECT":
        raise Refused(_refusal(_kind(statement)))
    return statement


def connect(db_path: Path, allow_read: list[Path], wait: float = db.DEFAULT_WAIT_SECONDS) -> duckdb.DuckDBPyConnection:
    """The newest snapshot, read-only, with external access off but for reading ``allow_read``
    (less the warehouse's own files: ``readable``).

    Settings are global to a DuckDB database instance, and DuckDB shares one instance between
    the connections of a process to the same file: use it in a process (or for a file) of its
    own, as ``runlytics sql`` does.
    """
    con = snapshots.connect_latest(db_path, wait=wait)
    try:
        lock_down(con, *readable(allow_read, db_path), own_parts=_own_parts(db_path))
    except BaseException:
        con.close()
        raise
    return con


def lock_down(
    con: duckdb.DuckDBPyConnection, folders: Sequence[str], files: Sequence[str] = (), own_parts: tuple[str, ...] = ()
) -> None:
    """Turn external access and autoloading off, allow reading ``folders`` and all below them,
    ``files`` (and the warehouse's own parts, named as its views name them), lock the settings."""
    con.execute("SET allowed_directories = $folders", {"folders": [*folders, *own_parts]})
    con.execute("SET allowed_paths = $files", {"files": list(files)})
    # spilling would create <snapshot>.tmp/ in the snapshots folder; not settable once access is off
    con.execute("SET temp_directory = ''")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def readable(allow_read: list[Path], db_path: Path) -> tuple[list[str], list[str]]:
    """What a query may read of ``allow_read``: the folders allowed whole, and the files allowed
    by name, so that the warehouse's own files (``<db>``, and ``<db>.*`` beside it: its WAL, lock,
    snapshots) are never among them.

    DuckDB opens a DuckDB file a query names (``read_duckdb('w.duckdb', …)``, ``FROM 'w.duckdb'``,
    a glob matching it) read-only, holding its file lock for as long as the query runs: on the
    live warehouse, that locks out ingest (exit 75), which readers must never do. DuckDB allows a
    folder with everything below it, or a file: so a folder on the way to the warehouse (DIR, or
    a folder within it) is allowed as its entries instead, each folder within whole (unless it
    too is on the way) and each file by name, the warehouse's own left out, links and hard links
    to them too. In such a folder a file is read by its name; a glob there is refused (DuckDB
    lists only a folder allowed whole). Not looked for: a link that leads back to the warehouse's
    folder from deeper within a folder allowed whole (docs/views.md)."""
    live = Path(os.path.realpath(db_path))
    try:
        live_id = _file_id(live)
    except OSError:  # gone: nothing to keep out but its names
        live_id = None
    folders: list[str] = []
    files: list[str] = []
    seen: set[Path] = set()
    for folder in allow_read:
        _allow(folder.resolve(), live, live_id, seen, folders, files)
    return folders, files


def _allow(
    path: Path, live: Path, live_id: tuple[int, int] | None, seen: set[Path], folders: list[str], files: list[str]
) -> None:
    """Add ``path`` (named so in queries) to ``folders`` or ``files``, or its entries, one by one,
    when the warehouse is within it; nothing of the warehouse's own."""
    real = Path(os.path.realpath(path))
    if _is_warehouse_file(real, live, live_id):
        return
    if not real.is_dir():
        files.append(str(path))
    elif not live.is_relative_to(real):  # the warehouse is not within it
        folders.append(str(path))
    elif real not in seen:  # a link back to a folder split already (a loop): its names stay refused
        seen.add(real)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:  # a folder this user can't list: refused, as DuckDB would find nothing in it
            return
        for entry in entries:
            _allow(path / entry.name, live, live_id, seen, folders, files)


def _is_warehouse_file(real: Path, live: Path, live_id: tuple[int, int] | None) -> bool:
    """Whether ``real`` (a path resolved) is the live warehouse or a file beside it named after it."""
    if real == live or (real.parent == live.parent and real.name.startswith(f"{live.name}.")):
        return True
    try:
        return live_id is not None and real.is_file() and _file_id(real) == live_id  # a hard link
    except OSError:
        return False


def _file_id(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _own_parts(db_path: Path) -> tuple[str, ...]:
    """The warehouse's sealed Parquet parts, which its views read (``<db>.parts/``), named as the
    views name them (absolute) and resolved: reading them is no escape, and without them every
    view over GPU samples fails once a sample is sealed."""
    folder = sidefiles.parts(Path(os.path.abspath(db_path)))
    return tuple(sorted({str(folder), str(folder.resolve())}))


def _refusal(what: str) -> str:
    return f"only one read-only SELECT per call; refused: {what}"


def _type(statement: duckdb.Statement) -> str:
    try:
        return statement.type.name
    except ValueError:
        # a kind newer than the Python binding's list of them (UPDATE EXTENSIONS in 2.0)
        return "UNKNOWN"


def _kind(statement: duckdb.Statement) -> str:
    """What the analyst wrote, and DuckDB's kind for it when the keyword differs: PRAGMA (kind: SET)."""
    kind = _type(statement).replace("_", " ")
    word = first_keyword(statement.query)
    if word and word != "WITH" and word != kind.split()[0]:
        return f"{word} (kind: {kind})"
    return kind


# --- PostgreSQL -------------------------------------------------------------------------------
# There, the database's own rules do what the DuckDB locks above do: the query runs as ONE
# prepared statement (the extended protocol refuses a second one, so no `COMMIT; …` can leave
# the transaction), in a READ ONLY transaction on a session whose default is read-only too, under
# ``statement_timeout``. What it may read is what the role may read: give analysts a role with
# SELECT only (docs/postgresql.md). A read-only transaction still runs COPY … TO STDOUT (which
# leaves the connection in COPY mode: psycopg's execute cannot read it), LISTEN, SET, ANALYZE,
# LOCK TABLE, DECLARE, DO, COMMIT, …: as on DuckDB (issue #18, audit 18), only a statement whose
# first word (PostgreSQL's statements all start with their keyword) is one of PG_SELECTS runs.

DEFAULT_PG_TIMEOUT_SECONDS = 300.0
# the statements of PostgreSQL that only read (SHOW a setting), as DuckDB's SELECT kinds
PG_SELECTS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW"})
# PostgreSQL's lexer: blanks, `--` comments to the end of the line, /* comments */ that nest
_PG_BLANK = re.compile(r"[ \t\n\r\f\v]+|--[^\n\r]*")
_PG_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def first_keyword(sql: str) -> str:
    """The first word of ``sql`` as PostgreSQL's lexer reads it, and DuckDB's (upper case), after blanks,
    comments (nested ones too), opening parentheses and empty statements; "" when none starts there."""
    i, depth = 0, 0
    while i < len(sql):
        if depth:
            if sql.startswith("/*", i):
                depth, i = depth + 1, i + 2
            elif sql.startswith("*/", i):
                depth, i = depth - 1, i + 2
            else:
                i += 1
            continue
        if sql.startswith("/*", i):
            depth, i = 1, i + 2
            continue
        blank = _PG_BLANK.match(sql, i)
        if blank:
            i = blank.end()
        elif sql[i] in "(;":  # `;` ends an empty statement, which PostgreSQL's parser drops (as DuckDB's)
            i += 1
        else:
            word = _PG_WORD.match(sql, i)
            return word.group(0).upper() if word else ""
    return ""


def run_postgres(
    target: db.PostgresUrl,
    sql: str,
    timeout: float = DEFAULT_PG_TIMEOUT_SECONDS,
    check: Callable[[Any], None] | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The column names and rows of one read-only statement; ``Refused`` (several statements)
    or ``QueryFailed`` (any error of the query, a write or the time limit) on one line.
    ``check`` is called first with a ``pg_reader.Cursor`` on the same connection and transaction
    (the schema's revision: cli/query.py)."""
    import psycopg

    from . import pg_reader
    from .postgres import reason

    conn = pg_reader.connect(target, timeout)
    try:
        if check is not None:
            check(pg_reader.Cursor(conn))
        keyword = first_keyword(sql)
        if keyword not in PG_SELECTS:
            _refuse_postgres(conn, sql, keyword)
        cursor = psycopg.Cursor(conn)
        try:
            # prepared: the server refuses a second statement instead of running it
            cursor.execute(sql, prepare=True)
        except psycopg.errors.QueryCanceled as error:
            raise QueryFailed(timed_out(timeout, reason(error))) from error
        except psycopg.errors.SyntaxError as error:
            if "multiple commands" in str(error):
                raise Refused(_refusal("several statements")) from error
            raise QueryFailed(_with_hint(error)) from error
        except psycopg.Error as error:
            raise QueryFailed(_with_hint(error)) from error
        columns = [d.name for d in cursor.description or []]
        return columns, cursor.fetchall() if cursor.description else []
    finally:
        with contextlib.suppress(psycopg.Error):  # a connection left mid-protocol: closing ends it
            conn.rollback()
        conn.close()


def _refuse_postgres(conn: Any, sql: str, keyword: str) -> None:
    """Refuse a statement that is no SELECT, as DuckDB's ``single_select`` does; PostgreSQL only
    parses it first (a Parse message runs nothing), so that a typo is its syntax error, as on
    DuckDB, and two statements are refused as such. Any other error of the Parse (a table that
    does not exist: PostgreSQL also looks up the names of an INSERT, UPDATE, DELETE or MERGE) is
    no syntax error: refused, as DuckDB refuses it without looking names up."""
    import psycopg
    from psycopg import pq

    result = conn.pgconn.prepare(b"", sql.encode())
    if result.status == pq.ExecStatus.FATAL_ERROR:
        error = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        if "multiple commands" in str(error):
            raise Refused(_refusal("several statements"))
        if isinstance(error, psycopg.errors.SyntaxError):
            raise QueryFailed(_with_hint(error))
    raise Refused(_refusal(keyword or "no statement"))


def timed_out(timeout: float, reason: str) -> str:
    """What a query stopped by ``--timeout`` says, on either engine, with the engine's reason."""
    return f"stopped after {timeout:g} s (--timeout): {reason}"


def one_line(error: BaseException) -> str:
    """DuckDB's error on one line: its message and hints ("Did you mean "jobs"?"), without the
    query it quotes below them (the analyst has it; its caret line means nothing joined)."""
    said: list[str] = []
    for line in str(error).splitlines():
        if _QUOTED_QUERY.match(line):
            break
        said += [line.strip()] if line.strip() else []
    return " ".join(said) or type(error).__name__


def _with_hint(error: BaseException) -> str:
    """PostgreSQL's error on one line (postgres.reason), with the server's hint when it gives one
    (“Perhaps you meant to reference the column …”)."""
    from .postgres import reason

    hint = getattr(getattr(error, "diag", None), "message_hint", None)
    return f"{reason(error)} ({' '.join(hint.split())})" if hint else reason(error)


class QueryFailed(Exception):
    """The query ran and failed (an error of its own, a refused write, the time limit); one line."""
