"""Sealed rows in immutable Parquet parts, shared by the warehouse and every snapshot.

A sealed table (``GPU_SAMPLES``, and its rollups ``GPU_MINUTES``) is three things: a small hot
DuckDB table that takes new rows (``gpu_samples_hot``), Parquet files that hold the rows that no
longer change (``<db>.parts/<table>/day=YYYY-MM-DD/host=<host>/<name>.parquet``, zstd, rows
sorted by the key; the minutes' parts hold every host: ``day=YYYY-MM-DD/<name>.parquet``),
and a view under the table's old name (``gpu_samples``) that reads both. The manifest
``gpu_parts`` lists the live parts; the view names exactly them, by absolute path (DuckDB
resolves a relative path against the reading process's working directory, not the database's).
Manifest and view change in the transaction that changes the data, so a snapshot, a copy of
the DuckDB file only, reads exactly the parts of its moment.

A part is written once under a name never used again (a temporary name, fsync, rename), then
entered in the manifest. A part replaced (rewritten without superseded rows, merged by
compaction, pruned by retention) is retired: it leaves the manifest for ``gpu_parts_retired`` in
the same transaction, and its file is deleted only once no kept snapshot can name it and a grace
time has passed (readers holding an old snapshot open). A file neither live nor retired was
written by a run killed before its commit: the next run deletes it.

Every function here runs under the ingest lock, in the caller's transaction unless it says so.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb

from . import db, sidefiles, snapshots

COPY_OPTIONS = "FORMAT parquet, COMPRESSION zstd"  # the samples' parts and their archive


@dataclass(frozen=True)
class Sealed:
    """A table stored as hot rows plus sealed parts, read through a view of its name."""

    name: str  # the view readers query
    hot: str  # the DuckDB table of rows not yet sealed
    columns: tuple[str, ...]  # in the view's order
    key: tuple[str, ...]  # a row's identity: a later row with the same key replaces it
    ts: str = "ts"  # the time that decides the day and the seal
    host: str | None = "host"  # the column a part holds one value of; None: a part holds every host's
    copy_options: str = COPY_OPTIONS

    @property
    def select_list(self) -> str:
        """The columns, quoted, in the view's order."""
        return _identifiers(self.columns)

    @property
    def order(self) -> str:
        """The key's columns, quoted: a part's sort order."""
        return _identifiers(self.key)

    @property
    def hot_table(self) -> str:
        return db.quote_identifier(self.hot)

    @property
    def ts_column(self) -> str:
        return db.quote_identifier(self.ts)

    @property
    def host_of(self) -> str:
        """A row's host: the host column, or '' for a table whose parts hold every host's."""
        return db.quote_identifier(self.host) if self.host is not None else "''"


GPU_SAMPLES = Sealed(
    name="gpu_samples",
    hot="gpu_samples_hot",
    columns=(
        "job_id",
        "host",
        "gpu_index",
        "ts",
        "gpu_uuid",
        "utilization_percent",
        "memory_used_mb",
        "memory_total_mb",
        "temperature_c",
        "power_w",
        "sm_clock_mhz",
        "clocks_event_reasons",
        "source",
        "gpu_key",
    ),  # fmt: skip
    key=("job_id", "host", "gpu_key", "ts"),
)
# The samples' per-minute rollups (revision 0021; warehouse/rollups.py): sealed like the samples,
# so that the DuckDB file, which every snapshot copies, holds only the current hour's minutes. A
# part holds a day of every host (a reader opens one file per day, not one per host and day: 457
# files cost a 30-day fleet's chart ~400 ms of footers), its rows sorted by key, so a job's
# minutes lie together, in row groups small enough that a chart reads little beside them
# (docs/decisions.md, "GPU minutes sealed into Parquet parts").
_FIGURE_COLUMNS = tuple(
    f"{figure}_{part}"
    for figure in ("utilization_percent", "memory_used_mb", "temperature_c", "power_w", "sm_clock_mhz")
    for part in ("n", "sum", "min", "max")
)
GPU_MINUTES = Sealed(
    name="gpu_minutes",
    hot="gpu_minutes_hot",
    columns=(
        "job_id",
        "host",
        "gpu_key",
        "minute",
        "gpu_index",
        "gpu_uuid",
        "samples",
        "first_ts",
        "last_ts",
        *_FIGURE_COLUMNS,
        "memory_total_mb_max",
        "nonfinite",
        "interval_seconds",
        "utilization_seconds",
        "idle_seconds",
        "reasons_seconds",
        "throttled_seconds",
        "energy_wh",
    ),  # fmt: skip
    key=("job_id", "host", "gpu_key", "minute"),
    ts="minute",
    host=None,
    copy_options="FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 16384",
)
TABLES = {GPU_SAMPLES.name: GPU_SAMPLES, GPU_MINUTES.name: GPU_MINUTES}  # identifiers come from here, never from input
# Tables sealed and compacted along with another: ingest seals and compacts the samples (each in
# its own transaction), and the samples' rollups go with them, so that neither step is missed.
FOLLOWERS: dict[str, tuple[Sealed, ...]] = {GPU_SAMPLES.name: (GPU_MINUTES,)}

MANIFEST = "gpu_parts"
RETIRED = "gpu_parts_retired"
SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"
# Samplers write the last seconds of an hour a little after it ends: the hour is sealed once
# this much of the next has passed.
SEAL_LAG = timedelta(minutes=5)
# A retired file outlives every snapshot that may name it by this much: a reader that opened a
# snapshot just before a newer one replaced it still reads its parts meanwhile.
RETIRED_GRACE_SECONDS = 3600.0
# Compaction merges at most about this many rows per run (at least one (host, day)), so a cron
# run's cost stays bounded whatever the backlog.
COMPACT_ROWS_PER_RUN = 2_000_000
# parts read by name alone: DuckDB would take host from the folder name (module docstring)
READ_F = "read_parquet($f, hive_partitioning = false)"
READ_FILES = "read_parquet($files, hive_partitioning = false)"


@dataclass(frozen=True)
class Part:
    path: str  # relative to the parts folder
    day: date
    host: str
    min_ts: datetime
    max_ts: datetime
    rows: int


# --- where -------------------------------------------------------------------------------------


def database_path(con: duckdb.DuckDBPyConnection) -> Path:
    """The warehouse file this connection writes, absolute."""
    (path,) = db.one(con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
    return Path(os.path.abspath(path))


def root(con: duckdb.DuckDBPyConnection) -> Path:
    return sidefiles.parts(database_path(con))


# A host's folder ``host=<value>`` (the parts', the archive's): Hive readers percent-decode the value
# and read ``__HIVE_DEFAULT_PARTITION__`` as NULL after decoding it (pandas, polars: escaping it is
# no way out), and a file name stops at 255 bytes. A host the folder cannot carry exactly has a
# stand-in there: its first whole characters, '~' and 32 hex digits of its SHA-256 (the archive
# lists each stand-in's host: retention.HOSTS_FILE). A host that looks like a stand-in gets one
# too, so a value of that form is always a stand-in (docs/decisions.md, "Archive folder names").
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
NAME_MAX = 255  # bytes of a file name (ext4, XFS, btrfs, APFS)
STAND_IN_PREFIX = 150  # at most this many escaped bytes of the host's text begin its stand-in
STAND_IN_TAIL = re.compile(r"~[0-9a-f]{32}\Z")


def escape(value: str) -> str:
    """Percent-encoded as Hive readers decode it: each byte of the UTF-8 but RFC 3986's unreserved
    characters (DuckDB's own escaping), so a name is ASCII whatever the host."""
    return quote(value, safe="")


def host_value(host: str) -> str:
    """The value a Hive reader reads from a host's folder: the host, or its stand-in (above)."""
    fits = len("host=" + escape(host)) <= NAME_MAX  # escaped: one byte a character
    if fits and host != HIVE_NULL and not STAND_IN_TAIL.search(host):
        return host
    prefix, size = [], 0
    for character in host:  # whole characters: a cut never splits an escape or a UTF-8 sequence
        size += len(escape(character))
        if size > STAND_IN_PREFIX:
            break
        prefix.append(character)
    return "".join(prefix) + "~" + hashlib.sha256(host.encode()).hexdigest()[:32]


def segment(host: str) -> str:
    """A host's folder value, escaped: one safe path segment. The parts name the unknown host ''
    Hive's way (they are read by path, never by folder name; the archive names it ``host=``)."""
    return escape(host_value(host)) if host else HIVE_NULL


def relative_folder(table: Sealed, day: date, host: str) -> str:
    if table.host is None:
        return f"{table.name}/day={day.isoformat()}"
    return f"{table.name}/day={day.isoformat()}/host={segment(host)}"


def new_name() -> str:
    """A part's file name, never used before: its creation time and a random tail."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}{SUFFIX}"


# --- the view ----------------------------------------------------------------------------------


def live_paths(con: duckdb.DuckDBPyConnection, table: Sealed) -> list[str]:
    rows = con.execute(f"SELECT path FROM {MANIFEST} WHERE table_name = $t ORDER BY path", {"t": table.name})
    return [path for (path,) in rows.fetchall()]


def file_list(folder: Path, paths: list[str]) -> str:
    """These parts as the quoted items of a read_parquet list, their glob characters escaped:
    DuckDB would take a '[' of the warehouse's folder name as a pattern."""
    return ", ".join(db.quote_literal(file) for file in db.exact_paths([str(folder / path) for path in paths]))


def view_sql(table: Sealed, folder: Path, paths: list[str]) -> str:
    """The view over the hot table and these parts (paths relative to ``folder``)."""
    columns = table.select_list
    text = f"CREATE OR REPLACE VIEW {db.quote_identifier(table.name)} AS SELECT {columns} FROM {table.hot_table}"
    if paths:
        files = file_list(folder, paths)
        text += f"\nUNION ALL SELECT {columns} FROM read_parquet([{files}], hive_partitioning = false)"
    return text


def refresh_view(con: duckdb.DuckDBPyConnection, table: Sealed) -> None:
    con.execute(view_sql(table, root(con), live_paths(con, table)))


# DuckDB's words for a file of a view's read_parquet that is not there, or (a `sql` reader's) that
# lies outside the folders the reader may open: a part of a warehouse copied or moved apart
_UNREADABLE_FILE = re.compile(r'(?:No files found that match the pattern|Cannot access file) "([^"]*)"')
# a glob character bracketed by db.exact_paths, as the views name their parts
_ESCAPED = re.compile(r"\[([\[*?])\]")


def unreadable_part(error: BaseException) -> tuple[Path, Path] | None:
    """The part file a DuckDB error says it could not read and the parts folder it lies in, when
    it names a part (``<parts>/<sealed table>/day=…/…``, as ``relative_folder`` lays them out),
    else None (any other file: a `sql` reader's own)."""
    match = _UNREADABLE_FILE.search(str(error))
    if match is None:
        return None
    path = Path(_ESCAPED.sub(r"\1", match.group(1)))
    names = path.parts
    for at in range(1, len(names) - 2):
        if names[at] in TABLES and names[at + 1].startswith("day="):
            return path, Path(*names[:at])
    return None


def parts_elsewhere(db_path: Path, part: tuple[Path, Path], *, show_paths: bool = True) -> db.WarehouseError:
    """A reader's one line for a part it could not read: the views name the parts of the folder
    the warehouse was moved from (until a writer relinks them), or a part that is gone.
    ``show_paths``: name the folder moved from (not to an API's client)."""
    path, folder = part
    if folder.resolve() != sidefiles.parts(db_path.resolve()).resolve():
        where = f" ({folder})" if show_paths else ""
        return db.WarehouseError(
            f"{db_path}'s views name its GPU parts in another folder{where}: the warehouse was moved; "
            "one `runlytics ingest` (or `runlytics db upgrade`) reads them where they are now"
        )
    return db.WarehouseError(
        f"{db_path}: the GPU part {path} is not there: its `.parts` folder is not the one the warehouse "
        "was written with (a copy of the file alone, or a part deleted): its sealed GPU rows can't be read"
    )


def unread_part_error(error: BaseException, db_path: Path, *, show_paths: bool = True) -> db.WarehouseError | None:
    """``parts_elsewhere`` of the part a DuckDB error could not read, or None when it names none:
    what every reader of ``db_path`` says instead of DuckDB's error (a command's one line, the
    API's 503)."""
    part = unreadable_part(error)
    return None if part is None else parts_elsewhere(db_path, part, show_paths=show_paths)


VIEW_TEXT = "SELECT sql FROM duckdb_views() WHERE view_name = $v"
VIEW_COLUMNS = "SELECT column_name FROM duckdb_columns() WHERE table_name = $v ORDER BY column_index"


def ensure_view(con: duckdb.DuckDBPyConnection, table: Sealed, *, as_built: bool = False) -> bool:
    """Rebuild the view (and its followers') when it names its parts elsewhere (the warehouse was
    moved with its parts). ``as_built``: with the columns the view has now, not today's (a
    warehouse at an older revision, before the chain upgrades it: migrate.relink_parts)."""
    moved = False
    where = database_path(con)  # (asked first: a failed statement aborts the transaction)
    for each in (table, *FOLLOWERS.get(table.name, ())):
        paths = live_paths(con, each)
        if not paths:
            continue
        built = con.execute(VIEW_TEXT, {"v": each.name}).fetchone()
        if built is not None and file_list(sidefiles.parts(where), paths[:1]) in built[0]:
            continue
        if as_built:
            columns = tuple(name for (name,) in con.execute(VIEW_COLUMNS, {"v": each.name}).fetchall())
            each = replace(each, columns=columns)
        try:
            con.execute(view_sql(each, sidefiles.parts(where), paths))
        except duckdb.IOException as error:
            if (said := unread_part_error(error, where)) is None:
                raise
            raise said from None
        moved = True
    return moved


# --- writing and retiring parts ----------------------------------------------------------------


def write_part(
    con: duckdb.DuckDBPyConnection, table: Sealed, select: str, params: dict[str, Any], day: date, host: str
) -> Part | None:
    """Write the rows of ``select`` (one host, one day) as a new part and enter it in the manifest;
    None when there are none. The file is whole on disk before the manifest names it."""
    folder = root(con)
    relative = f"{relative_folder(table, day, host)}/{new_name()}"
    final = folder / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    rows_sql = f"SELECT {table.select_list} FROM ({select}) ORDER BY {table.order}"
    try:
        con.execute(f"COPY ({rows_sql}) TO $path ({table.copy_options})", {**params, "path": str(tmp)})
        db.fsync_file(tmp)
        os.replace(tmp, final)
        db.fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rows, min_ts, max_ts = db.one(
        con,
        f"SELECT count(*), min({table.ts_column}), max({table.ts_column}) FROM {READ_F}",
        {"f": db.exact_paths([str(final)])[0]},
    )
    if not rows:
        final.unlink()
        return None
    part = Part(relative, day, host, min_ts, max_ts, rows)
    con.execute(
        f"INSERT INTO {MANIFEST} (path, table_name, day, host, min_ts, max_ts, rows, bytes, created_at) "
        "VALUES ($path, $t, $day, $host, $min_ts, $max_ts, $rows, $bytes, $now)",
        {"path": relative, "t": table.name, "day": day, "host": host, "min_ts": min_ts, "max_ts": max_ts,
         "rows": rows, "bytes": final.stat().st_size, "now": db.utc_now()},
    )  # fmt: skip
    return part


def retire(con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
    """Take these parts out of the manifest; their files wait until no kept snapshot can name them."""
    if not paths:
        return
    stamps = snapshots.stamps(database_path(con))
    con.execute(
        f"INSERT INTO {RETIRED} (path, table_name, retired_at, after_snapshot) "
        f"SELECT path, table_name, $now, $after FROM {MANIFEST} WHERE path IN (SELECT unnest($paths))",
        {"now": db.utc_now(), "after": stamps[-1] if stamps else None, "paths": paths},
    )
    con.execute(f"DELETE FROM {MANIFEST} WHERE path IN (SELECT unnest($paths))", {"paths": paths})


def parts_of(con: duckdb.DuckDBPyConnection, table: Sealed, day: date, host: str) -> list[Part]:
    rows = con.execute(
        f"SELECT path, day, host, min_ts, max_ts, rows FROM {MANIFEST} "
        "WHERE table_name = $t AND day = $day AND host = $host ORDER BY path",
        {"t": table.name, "day": day, "host": host},
    ).fetchall()
    return [Part(*row) for row in rows]


def store_cold(con: duckdb.DuckDBPyConnection, table: Sealed, source: str) -> int:
    """Store the rows of the temporary table ``source`` (the table's columns, one row per key) in
    new parts, one per (host, day); a row whose key a live part holds replaces it there (that part
    is rewritten without it, the rare path of late or re-read data). Returns the parts written.
    The caller refreshes the view."""
    written = 0
    in_group = _in_group(table, source)
    for host, day, first, last in _groups(con, table, source):
        span = _span(host, day)
        written += len(_rewrite_without(con, table, in_group, span, day, host, first, last))
        if write_part(con, table, in_group, span, day, host) is not None:
            written += 1
    return written


def remove_keys(con: duckdb.DuckDBPyConnection, table: Sealed, source: str) -> tuple[int, int]:
    """Rewrite the live parts that hold a key of the temporary table ``source`` (the table's key
    columns) without those rows: (parts rewritten, rows removed). The caller refreshes the view."""
    rewritten = removed = 0
    for host, day, first, last in _groups(con, table, source):
        dropped = _rewrite_without(con, table, _in_group(table, source), _span(host, day), day, host, first, last)
        rewritten += len(dropped)
        removed += sum(dropped)
    return rewritten, removed


def _groups(con: duckdb.DuckDBPyConnection, table: Sealed, source: str) -> list[tuple[Any, ...]]:
    """(host, day, first ts, last ts) of the rows of ``source``, a part's worth each."""
    ts = table.ts_column  # a part of every host is listed with host '' (host_of)
    return con.execute(
        f"SELECT {table.host_of}, CAST({ts} AS DATE) AS day, min({ts}), max({ts}) FROM {db.quote_identifier(source)} "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()


def _span(host: str, day: date) -> dict[str, Any]:
    day_start = datetime.combine(day, datetime.min.time())
    return {"host": host, "lo": day_start, "hi": day_start + timedelta(days=1)}


def _in_group(table: Sealed, source: str) -> str:
    """The rows of ``source`` in one group of _groups (its bounds: _span's parameters)."""
    ts = table.ts_column
    return f"SELECT * FROM {db.quote_identifier(source)} WHERE {table.host_of} = $host AND {ts} >= $lo AND {ts} < $hi"


def _rewrite_without(
    con: duckdb.DuckDBPyConnection,
    table: Sealed,
    in_group: str,
    span: dict[str, Any],
    day: date,
    host: str,
    first: datetime,
    last: datetime,
) -> list[int]:
    """Rewrite each live part of (``host``, ``day``) that holds a key of ``in_group`` without those
    rows, and retire it; the rows each rewritten part lost."""
    folder = root(con)
    key = table.order
    dropped: list[int] = []
    for part in parts_of(con, table, day, host):
        if part.max_ts < first or part.min_ts > last:
            continue
        file = {"f": db.exact_paths([str(folder / part.path)])[0]}
        (clashes,) = db.one(
            con,
            f"SELECT count(*) FROM {READ_F} SEMI JOIN ({in_group}) AS fresh USING ({key})",
            {**file, **span},
        )
        if not clashes:
            continue
        kept = f"SELECT * FROM {READ_F} ANTI JOIN ({in_group}) AS fresh USING ({key})"
        write_part(con, table, kept, {**file, **span}, day, host)
        retire(con, [part.path])
        dropped.append(int(clashes))
    return dropped


def cutoff(con: duckdb.DuckDBPyConnection, table: Sealed, now: datetime | None = None) -> datetime:
    """Rows before this time are sealed: the start of the hour SEAL_LAG ago, and never before a
    sealed row (a clock set back must not make a hot row of a sealed key)."""
    now = now or db.utc_now()
    hour = (now - SEAL_LAG).replace(minute=0, second=0, microsecond=0)
    (sealed,) = db.one(con, f"SELECT max(max_ts) FROM {MANIFEST} WHERE table_name = $t", {"t": table.name})
    return max(hour, sealed + timedelta(microseconds=1)) if sealed is not None else hour


def seal(con: duckdb.DuckDBPyConnection, table: Sealed, before: datetime) -> int:
    """Move the hot rows older than ``before`` to parts (in the caller's transaction), and those of
    the table's followers older than their own cutoff; rows moved."""
    moved = _seal_hot(con, table, before)
    for follower in FOLLOWERS.get(table.name, ()):
        moved += _seal_hot(con, follower, cutoff(con, follower))
    return moved


# A backlog (an upgraded warehouse's hot minutes: 5.26M rows at 52.7M samples) is sealed a day at a
# time through a temporary view of that day's hot rows, its bounds in these session variables. A
# temporary table per day would copy the rows, and DuckDB keeps a table dropped inside a
# transaction until the transaction ends (for its rollback): the copies of every day added up to
# 2.9 GiB in the caller's one transaction. The parts are the same (one per (host, day)).
SEAL_FROM, SEAL_UNTIL = "runlytics_seal_from", "runlytics_seal_until"
SEALING = "sealing"  # the view of the day being sealed, read by store_cold


def _seal_hot(con: duckdb.DuckDBPyConnection, table: Sealed, before: datetime) -> int:
    hot, ts = table.hot_table, table.ts_column
    (rows,) = db.one(con, f"SELECT count(*) FROM {hot} WHERE {ts} < $before", {"before": before})
    if not rows:
        return 0
    days = con.execute(
        f"SELECT DISTINCT CAST({ts} AS DATE) FROM {hot} WHERE {ts} < $before ORDER BY 1", {"before": before}
    ).fetchall()
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {SEALING} AS SELECT {table.select_list} FROM {hot} "
        f"WHERE {ts} >= getvariable('{SEAL_FROM}') AND {ts} < getvariable('{SEAL_UNTIL}')"
    )
    for (day,) in days:
        lo = datetime.combine(day, datetime.min.time())
        _seal_day(con, table, lo, min(lo + timedelta(days=1), before))
    con.execute(f"DROP VIEW {SEALING}")
    refresh_view(con, table)
    return rows


def _seal_day(con: duckdb.DuckDBPyConnection, table: Sealed, lo: datetime, hi: datetime) -> None:
    """Move the hot rows from ``lo`` to before ``hi`` (one day at most) to parts, through the view
    ``SEALING``; the variables are constants when a statement is bound, so each scan reads only
    the row groups of that day."""
    con.execute(f"SET VARIABLE {SEAL_FROM} = $lo", {"lo": lo})
    con.execute(f"SET VARIABLE {SEAL_UNTIL} = $hi", {"hi": hi})
    store_cold(con, table, SEALING)
    hot, ts = table.hot_table, table.ts_column
    con.execute(f"DELETE FROM {hot} WHERE {ts} >= $lo AND {ts} < $hi", {"lo": lo, "hi": hi})


def unseal(con: duckdb.DuckDBPyConnection, table: Sealed, paths: list[str]) -> int:
    """Move the rows of these live parts back to the hot table and retire the parts (in the
    caller's transaction): rows about to be replaced in place (rollups.update); the next seal
    writes them out again. Returns the rows moved."""
    if not paths:
        return 0
    columns = table.select_list
    files = {"files": db.exact_paths([str(root(con) / path) for path in paths])}
    (rows,) = db.one(con, f"SELECT count(*) FROM {READ_FILES}", files)
    con.execute(f"INSERT INTO {table.hot_table} ({columns}) SELECT {columns} FROM {READ_FILES}", files)
    retire(con, paths)
    refresh_view(con, table)
    return int(rows)


def compact(con: duckdb.DuckDBPyConnection, table: Sealed, before: datetime, budget: int = COMPACT_ROWS_PER_RUN) -> int:
    """Merge the parts of complete days (ending before ``before``) with several parts into one
    each, up to about ``budget`` rows (in the caller's transaction); returns the groups merged.
    The table's followers are sealed up to their own cutoff first (rows this run wrote to their hot
    table, e.g. the minutes of a first ingest's cold samples), then compacted alike."""
    merged = _compact(con, table, before, budget)
    for follower in FOLLOWERS.get(table.name, ()):
        follower_cutoff = cutoff(con, follower)
        _seal_hot(con, follower, follower_cutoff)
        merged += _compact(con, follower, follower_cutoff, budget)
    return merged


def _compact(con: duckdb.DuckDBPyConnection, table: Sealed, before: datetime, budget: int) -> int:
    groups = con.execute(
        f"SELECT day, host, sum(rows) FROM {MANIFEST} WHERE table_name = $t AND day + INTERVAL 1 DAY <= $before "
        "GROUP BY day, host HAVING count(*) > 1 ORDER BY day, host",
        {"t": table.name, "before": before},
    ).fetchall()
    folder = root(con)
    merged, spent = 0, 0
    for day, host, rows in groups:
        if merged and spent + rows > budget:
            break
        old = [p.path for p in parts_of(con, table, day, host)]
        files = {"files": db.exact_paths([str(folder / path) for path in old])}
        write_part(con, table, f"SELECT * FROM {READ_FILES}", files, day, host)
        retire(con, old)
        merged, spent = merged + 1, spent + rows
    if merged:
        refresh_view(con, table)
    return merged


# --- files no longer needed --------------------------------------------------------------------


def delete_retired(con: duckdb.DuckDBPyConnection, grace: float = RETIRED_GRACE_SECONDS) -> int:
    """Delete the retired files that no kept snapshot can name, retired over ``grace`` s ago
    (in its own transaction; files first, so a kill between leaves rows whose files are gone)."""
    stamps = snapshots.stamps(database_path(con))
    oldest = stamps[0] if stamps else None
    rows = con.execute(
        f"SELECT path FROM {RETIRED} "
        "WHERE retired_at <= $limit AND (after_snapshot IS NULL OR after_snapshot < $oldest)",
        {"limit": db.utc_now() - timedelta(seconds=grace), "oldest": oldest if oldest is not None else 2**62},
    ).fetchall()
    if not rows:
        return 0
    folder = root(con)
    paths = [path for (path,) in rows]
    for path in paths:
        (folder / path).unlink(missing_ok=True)
    con.execute(f"DELETE FROM {RETIRED} WHERE path IN (SELECT unnest($paths))", {"paths": paths})
    return len(paths)


def remove_orphans(con: duckdb.DuckDBPyConnection) -> int:
    """Delete the files under the parts folder that are neither live nor retired: written by a run
    killed before its commit (or temporary files of a torn write). Runs before anything is written."""
    folder = root(con)
    if not folder.is_dir():
        return 0
    known = {
        path for (path,) in con.execute(f"SELECT path FROM {MANIFEST} UNION ALL SELECT path FROM {RETIRED}").fetchall()
    }
    removed = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            full = Path(directory) / name
            relative = full.relative_to(folder).as_posix()
            if relative not in known and (name.endswith(SUFFIX) or name.endswith(TMP_SUFFIX)):
                full.unlink(missing_ok=True)
                removed += 1
    return removed


# --- helpers -----------------------------------------------------------------------------------


def _identifiers(names: tuple[str, ...]) -> str:
    return ", ".join(db.quote_identifier(name) for name in names)
