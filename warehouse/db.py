"""Where the warehouse lives and how to open it.

DuckDB lets one process open a file for writing, and other processes open it only while no
process writes. Every runlytics process therefore opens the file for as short a time as it
can, and waits (retrying) while another process holds it. See docs/concurrency.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

DEFAULT_DB = "runlytics.duckdb"
ENV_DB = "RUNLYTICS_DB"
DEFAULT_WAIT_SECONDS = 30.0


class WarehouseError(Exception):
    """A warehouse that can't be used as asked; the message says why and what to do."""


class WarehouseBusy(WarehouseError):
    """Another process held the warehouse for longer than we were willing to wait."""


class WarehouseWriteError(WarehouseError):
    """The warehouse's file system refused a write (full, over quota, read-only)."""


# How a refused write shows in OSError numbers and in DuckDB's messages (which carry no errno): in
# words, or, for a write DuckDB made in another thread (its Parquet writer's), as a JSON object
# ending the message, whose "errno" is the OS's number and "exception_message" the words:
# ``IO Error: Async write failed for range […]: {"exception_type":"IO","exception_message":
# "Could not write file \"….parquet.tmp\": No space left on device","errno":"28"}``.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_QUOTED = re.compile(r'"[^"]*"')
_WRITE_MESSAGES = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Could not write file")
_JSON = json.JSONDecoder()
_CHAIN_DEPTH = 8


def is_write_failure(error: BaseException) -> bool:
    """True for an error that says the disk refused a write: the run must stop, not blame a file.

    The error's causes count too (a failed rollback can hide the refused write). Quoted parts of
    DuckDB's messages (file names) are left out, so a folder named after the message matches nothing.
    """
    return _refused_write(error) is not None


def write_failure_reason(error: BaseException) -> str:
    """The refused write ``error`` tells of (``is_write_failure``), in one line: the error of its
    chain that says so, as the driver said it (not SQLAlchemy's wrapping), DuckDB's JSON form read
    (its words, not the object)."""
    refused = _refused_write(error) or error
    text = str(getattr(refused, "orig", None) or refused)
    words, detail = _ending_json(text)
    if detail is not None and isinstance(detail.get("exception_message"), str):
        text = words + detail["exception_message"]
    lines = text.strip().splitlines()
    return lines[0] if lines else type(refused).__name__


def _refused_write(error: BaseException) -> BaseException | None:
    """The error of ``error``'s chain that says the disk refused a write, or None."""
    seen: BaseException | None = error
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in _WRITE_ERRNOS:
            return seen
        if _says_write_refused(str(seen)):
            return seen
        # the chain Python itself shows: the cause, else the context unless `from None` hid it
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def _says_write_refused(text: str, depth: int = 0) -> bool:
    """Whether a message says a write was refused: in its words outside quotes, or in the JSON
    object ending it (its errno, or its own message read the same way)."""
    words, detail = _ending_json(text)
    if detail is not None and depth < _CHAIN_DEPTH:
        code = str(detail.get("errno", ""))
        if code.isascii() and code.isdigit() and int(code) in _WRITE_ERRNOS:
            return True
        message = detail.get("exception_message")
        if isinstance(message, str) and _says_write_refused(message, depth + 1):
            return True
    unquoted = _QUOTED.sub('""', words)
    return any(phrase in unquoted for phrase in _WRITE_MESSAGES)


def _ending_json(text: str) -> tuple[str, dict[str, Any] | None]:
    """``text`` split into what comes before the JSON object that ends it, and that object (None
    when it ends in none). An object must end the text: one inside a quoted file name is no
    detail of the error (a name ends before the quote that closes it)."""
    end = len(text.rstrip())
    start = text.find("{")
    while start != -1:
        try:
            detail, stop = _JSON.raw_decode(text, start)
        except ValueError:
            pass
        else:
            if stop == end and isinstance(detail, dict):
                return text[:start], detail
        start = text.find("{", start + 1)
    return text, None


@contextmanager
def refused_writes(what: str, then: str = "") -> Iterator[None]:
    """Within: an error that says the disk refused a write (``is_write_failure``: full, over quota,
    read-only) stops ``what`` (``"ingest of PATH"``) as a WarehouseWriteError in one line, exit 3.
    Nothing stored is lost: DuckDB keeps what it committed, and a commit no snapshot holds yet
    leaves the ``.unpublished`` marker, so the next writer publishes it. ``then``: what the
    message adds after "run again"."""
    try:
        yield
    except WarehouseWriteError:
        raise
    except Exception as error:
        if not is_write_failure(error):
            raise
        reason = write_failure_reason(error)
        # a read-only file system is no full disk: the hint says what would let the write through
        remedy = "make its file system writable" if "read-only" in reason.lower() else "free some space"
        raise WarehouseWriteError(
            f"{what} stopped, a write was refused: {reason}. Nothing stored was lost: {remedy} and run again{then}."
        ) from error


# what --db and $RUNLYTICS_DB name a PostgreSQL warehouse by (libpq's URL schemes, and SQLAlchemy's)
POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass(frozen=True)
class PostgresUrl:
    """A PostgreSQL warehouse: ``postgresql://user@host:port/dbname`` as the user named it."""

    url: str = field(repr=False)  # it may hold a password

    @property
    def rest(self) -> str:
        """The URL after its scheme."""
        return self.url.split("://", 1)[1]

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://{self.rest}"

    @property
    def libpq_url(self) -> str:
        return f"postgresql://{self.rest}"

    def __str__(self) -> str:
        """The URL without its password (messages name the warehouse by it)."""
        return "postgresql://" + _PASSWORD_PARAMETER.sub(r"\1***", _PASSWORD.sub(r"\1:***@", self.rest))


_PASSWORD = re.compile(r"^([^/@:]*):[^/@]*@")
# libpq takes the password as a parameter too (``?password=…``, and a client key's ``sslpassword``;
# a key may be percent-encoded)
_PASSWORD_PARAMETER = re.compile(
    r"([?&](?:ssl)?" + "".join(f"(?:{c}|%{ord(c):02x})" for c in "password") + r"=)[^&]*", re.IGNORECASE
)


def is_postgres_url(text: str | os.PathLike[str]) -> bool:
    return isinstance(text, str) and text.startswith(POSTGRES_SCHEMES)


def resolve_target(db: str | os.PathLike[str] | None = None) -> Path | PostgresUrl:
    """The warehouse: ``db`` when given, else ``$RUNLYTICS_DB``, else ./runlytics.duckdb; a
    ``postgresql://`` URL names a PostgreSQL database, anything else a DuckDB file
    (``local_path``: never another URL, which DuckDB would hand to an extension)."""
    named = db or os.environ.get(ENV_DB) or DEFAULT_DB
    if isinstance(named, str) and is_postgres_url(named):
        return PostgresUrl(named)
    return local_path(named)


# What DuckDB reads as other than a file: ``scheme://…`` (s3://, mysql://), a prefix of two or more
# letters, digits or underscores and a ':' (``md:db``, ``sqlite:x.db``: an extension's), ``:memory:``.
# Other names holding ':' (``w-10:00.duckdb``, ``c:w.duckdb``) are files to DuckDB, and stay so.
NOT_A_FILE = re.compile(r"[^/]*://|[A-Za-z0-9_]{2,}:|:memory:")


def local_path(named: str | os.PathLike[str], what: str = "warehouse") -> Path:
    """``named`` as a DuckDB file's path; WarehouseError for a relative name DuckDB would not take
    for a file (NOT_A_FILE: ``mysql://…``, ``md:db``, ``sqlite:x.db``, ``s3://…``, ``:memory:``),
    which it reads as an extension's URL (loading, even installing, that extension) or as an
    in-memory database. A file named so is named by its absolute path. A leading ``~/`` is the
    home folder, as DuckDB itself reads it (a quoted ``--db "~/w.duckdb"`` that the shell left as
    typed: DuckDB opened the home's file while the lock and snapshot files went to ./~/)."""
    text = os.fspath(named)
    path = Path(os.path.expanduser(text) if text == "~" or text.startswith("~/") else text)
    if not path.is_absolute() and NOT_A_FILE.match(str(path)):  # Path drops a leading ./
        # the warehouse may be either; another (--stage) only a file: its message says so
        kind = "neither a DuckDB file nor a postgresql:// URL" if what == "warehouse" else "not a DuckDB file's path"
        raise WarehouseError(
            f"{what} {os.fspath(named)!r} is {kind} (a file whose name holds ':' is named by its absolute path)"
        )
    return path


def make_folder(path: Path) -> None:
    """Create the warehouse file's folder; a folder that can't be made is the warehouse's error (exit 3)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WarehouseError(
            f"cannot create the folder {path.parent} of warehouse {path}: {error.strerror or error}"
        ) from None


# Every DuckDB database file starts with its main header: an 8-byte checksum, then these bytes.
DUCKDB_MAGIC = b"DUCK"


def check_file(path: Path) -> None:
    """Refuse a ``path`` that exists but is no DuckDB database file (a folder, a text file, an empty
    or unreadable file): WarehouseError, before a writer creates its lock or its ``.unpublished``
    marker beside it, and before a reader trusts the files beside it. Only the header is read
    (never opened by DuckDB, which would lock a writer out). A path that does not exist passes: a
    writer creates it (a write-ahead log alone is DuckDB's to replay)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # a folder in the way: the writer's make_folder says so
        return
    except OSError as error:
        raise WarehouseError(f"cannot open warehouse {path}: {error.strerror or error}") from None
    if stat.S_ISDIR(st.st_mode):
        raise WarehouseError(f"cannot open warehouse {path}: it is a folder, not a DuckDB database file")
    if not stat.S_ISREG(st.st_mode):
        raise WarehouseError(f"cannot open warehouse {path}: not a regular file, so no DuckDB database file")
    try:
        with open(path, "rb") as f:
            header = f.read(8 + len(DUCKDB_MAGIC))
    except OSError as error:
        raise WarehouseError(f"cannot open warehouse {path}: {error.strerror or error}") from None
    if header[8:] != DUCKDB_MAGIC:
        raise WarehouseError(f"cannot open warehouse {path}: it is not a DuckDB database file")


def resolve_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The warehouse file: ``db`` when given, else ``$RUNLYTICS_DB``, else ./runlytics.duckdb.

    A PostgreSQL URL is refused: the callers of this read or write a DuckDB file only (the
    commands that take a URL are in docs/postgresql.md)."""
    target = resolve_target(db)
    if isinstance(target, PostgresUrl):
        raise WarehouseError(
            f"{target}: this reads a DuckDB warehouse file, not a PostgreSQL database "
            "(name a file with --db PATH; docs/postgresql.md lists the commands that take a URL)"
        )
    return target


# Set on every connection to a warehouse: no extension installed or loaded behind the command's
# back (a path or URL in a statement naming one). Those runlytics uses, json, parquet and icu, are
# built into DuckDB's Python package. Set after connecting, not as the connection's config: DuckDB
# refuses a second connection to an open file with another config.
NO_EXTENSIONS = ("SET autoinstall_known_extensions = false", "SET autoload_known_extensions = false")


def _is_lock_conflict(error: Exception) -> bool:
    text = str(error)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


def connect(path: Path, *, read_only: bool = False, wait: float = DEFAULT_WAIT_SECONDS) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, retrying while another process holds its lock (up to ``wait`` s)."""
    import duckdb  # here, not above: `runlytics ingest` with nothing to do never needs it

    if read_only and not path.exists():
        raise WarehouseError(f"no warehouse at {path}: run `runlytics db upgrade` or `runlytics ingest` first")
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            con = _connect_private(path) if not read_only else duckdb.connect(str(path), read_only=True)
            break
        except duckdb.Error as error:
            if not _is_lock_conflict(error):
                raise WarehouseError(f"cannot open warehouse {path}: {error}") from error
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"warehouse {path} is held by another process (waited {wait:g} s): {error}"
                ) from error
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    for statement in NO_EXTENSIONS:
        con.execute(statement)
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB draws a progress bar on stdout for statements over 2 s, which would corrupt
    # `--json` and `--format` outputs; commands report their own progress. Inside Jupyter without
    # ipywidgets DuckDB refuses the setting (it draws no bar there anyway).
    with contextlib.suppress(duckdb.Error):
        con.execute("SET enable_progress_bar = false")
    return con


def _connect_private(path: Path) -> duckdb.DuckDBPyConnection:
    """A writable connection; a warehouse it creates is 0600 (less what the umask takes).

    DuckDB creates the file itself (it refuses an empty one made beforehand), so the umask is
    tightened while it does: other threads meanwhile create private files, never open ones.
    """
    import duckdb

    if path.exists():
        return duckdb.connect(str(path))
    previous = os.umask(0o077)
    os.umask(previous | 0o077)
    try:
        return duckdb.connect(str(path))
    finally:
        os.umask(previous)


@contextmanager
def private_files() -> Iterator[None]:
    """Files and folders created meanwhile are private to their owner (the umask takes group and
    other bits): an ingest run creates the DuckDB write-ahead log, Parquet parts, snapshots and the
    heartbeat, each holding the warehouse's data, and DuckDB creates its files with the umask's mode.
    The umask is the process's: another thread meanwhile creates private files, never open ones."""
    previous = os.umask(0o077)
    os.umask(previous | 0o077)
    try:
        yield
    finally:
        os.umask(previous)


def quote_identifier(name: str) -> str:
    """A name as a SQL identifier (used even on allow-listed names: one way to quote)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Text as a SQL string literal, where the value is part of the statement's text: a view's
    definition (the parts a sealed table's view names), ATTACH's path, the code's own constants
    rendered once into a named statement (ingest/progress.py's statuses). Bind a value everywhere
    else, COPY … TO $path included."""
    return "'" + text.replace("'", "''") + "'"


def fsync_file(path: Path) -> None:
    """Flush a written file to disk before a rename names it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# DuckDB reads every file name handed to read_json/read_text/read_parquet as a glob pattern; a
# pattern character in brackets matches only itself (a backslash is no escape there).
_GLOB_ESCAPES = str.maketrans({"[": "[[]", "*": "[*]", "?": "[?]"})


def exact_paths(paths: list[str]) -> list[str]:
    """These file names as glob patterns that match exactly those files, whatever their names hold."""
    return [path.translate(_GLOB_ESCAPES) for path in paths]


def one(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """The single row of a query that always returns one (an aggregate, a count)."""
    return _single_row(con.execute(sql, params), sql)


def one_dict(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``one``'s row as a dict keyed by column name."""
    cursor = con.execute(sql, params)
    return dict(zip([d[0] for d in cursor.description], _single_row(cursor, sql), strict=True))


def _single_row(cursor: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    row = cursor.fetchone()
    if row is None:
        raise AssertionError(f"query returned no row: {sql[:80]!r}")
    return row


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, relations: Mapping[str, Any]) -> Iterator[None]:
    """Within: each of ``relations`` (a dict of numpy arrays, an Arrow table) readable under its
    name, as a table. DuckDB 2 registers and unregisters nothing while a result of an earlier
    statement is unread: it is run to its end first. In a transaction that a failed statement
    aborted nothing can be unregistered, and the rollback drops what was registered in it: the
    failure is the one raised."""
    import duckdb

    _finish(con)
    try:
        for name, relation in relations.items():
            con.register(name, relation)
        yield
    finally:
        _finish(con)
        for name in relations:
            with contextlib.suppress(duckdb.TransactionException):
                con.unregister(name)


def _finish(con: duckdb.DuckDBPyConnection) -> None:
    if hasattr(con, "complete"):  # DuckDB 2's; the 1.x releases pyproject allows have none
        con.complete()


def utc_now() -> datetime:
    """The time now in UTC, naive: as the warehouse's TIMESTAMP columns hold times."""
    return datetime.now(UTC).replace(tzinfo=None)


@contextmanager
def atomic(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back when it raises (or is killed)."""
    con.execute("BEGIN")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextmanager
def connection(
    path: Path, *, read_only: bool = False, wait: float = DEFAULT_WAIT_SECONDS
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection, closed (and the file's lock released) on exit."""
    con = connect(path, read_only=read_only, wait=wait)
    try:
        yield con
    finally:
        con.close()
