"""Bulk export: the fact tables and the per-job analytics, as Parquet partitioned by job, or CSV.

``export(con, out, fmt, selection)`` writes each table of ``TABLES`` with DuckDB's own
``COPY (SELECT …) TO``: Parquet as a folder per table, the fact tables partitioned by job
(``OUT/steps/job_id=<id>/data_0.parquet``, Hive layout) and the per-job tables as one file
(``OUT/jobs/data_0.parquet``), read as-is by DuckDB, pandas/pyarrow, polars and Spark; CSV as
``OUT/<table>.csv``. A fact table of which a job's folder name would be too long for the file
system (``_overlong``) is written whole as a file with a job_id column instead: every reader of
docs/export.md reads both layouts alike, a mix of the two none does. It writes into a temporary
folder beside OUT and renames it at the end, so a failed export leaves nothing behind (a rename
that never replaces a non-empty folder: OUT's rule holds at that moment, ``_install``); that
folder is locked (flock) while its export runs, so the next export to OUT can tell a killed
export's leftovers from a live one's and tidy them (``_tidy``). ``OUT/manifest.json`` lists
what was written. On
PostgreSQL (pg_reader's cursor), the selected jobs' rows of each relation of ``SOURCES`` are first
read into a DuckDB file beside OUT (``_local_sources``), on which the same export then runs.

``steps_csv`` and ``steps_parquet`` serve the API's streaming export of step histories. On
PostgreSQL (pg_reader's cursor) they read each group of jobs' rows there and write them with an
in-memory DuckDB holding those rows only, so that both engines give DuckDB's CSV and Parquet.

User values (job ids, times, paths) are always bound parameters; table and column names come
from the lists below. In CSV, a text cell that a spreadsheet would run as a formula gets a
leading ``'``, as does one that starts with ``'`` itself (``_csv_cells``). See docs/export.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import duckdb

from . import db
from .db import quote_identifier, quote_literal
from .fleet import UnknownJobs
from .pg_reader import NUL, NUL_REPLACEMENT, is_postgres
from .queries import SECTIONS

FORMATS = ("parquet", "csv")
LAYOUTS = {
    "parquet": "a folder per table; the fact tables in Hive partitions by job_id",
    "csv": "one CSV file per table, with a header",
}
MANIFEST = "manifest.json"
SELECTED = "export_jobs"  # the temp table of the selected job ids

# Exported table -> the warehouse relation it copies (each has a job_id column).
SOURCES: dict[str, str] = {
    "jobs": "jobs",
    "steps": "step_facts",  # progress.json and trainer-state rows, merged by (job, step)
    "step_gpus": "step_gpus",
    "checkpoints": "checkpoints",
    "gpu_samples": "gpu_samples",
    "analytics": "job_results",  # one row per job: job_analytics, materialised
}
TABLES = (*SOURCES, "analytics_long")
# The fact tables are partitioned by job in Parquet; the tables of one row (or a few) per job
# are one file each: a thousand files of one row would take longer to write and to read.
PARTITIONED = ("steps", "step_gpus", "checkpoints", "gpu_samples")
# Numeric columns of job_results outside the sections of queries.SECTIONS.
OTHER_SECTION = "coverage"
NUMERIC_TYPES = ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "HUGEINT", "UBIGINT")

SELECT_JOBS = f"CREATE OR REPLACE TEMP TABLE {SELECTED} AS SELECT job_id FROM jobs WHERE true"
BY_IDS = " AND job_id IN (SELECT unnest($job_ids))"
BY_SINCE = " AND job_id IN (SELECT job_id FROM job_results WHERE start_time >= $since)"
MISSING = "SELECT j FROM (SELECT unnest($job_ids) AS j) WHERE j NOT IN (SELECT job_id FROM jobs)"

# The API's step export: every column of step_facts, by job then step.
STEP_COUNTS = "SELECT job_id, count(*) FROM step_facts WHERE job_id IN (SELECT unnest($job_ids)) GROUP BY job_id"
STEPS_OF = "SELECT * FROM step_facts WHERE job_id IN (SELECT unnest($job_ids)) ORDER BY job_id, step"
STEP_ORDER = ("job_id", "step")
# the same on PostgreSQL (a list is bound there as a typed array)
PG_MISSING = "SELECT j FROM unnest(CAST($job_ids AS TEXT[])) AS ids(j) WHERE j NOT IN (SELECT job_id FROM jobs)"
PG_STEP_COUNTS = "SELECT job_id, count(*) FROM step_facts WHERE job_id = ANY($job_ids) GROUP BY job_id"
PG_STEPS_OF = "SELECT * FROM step_facts WHERE job_id = ANY($job_ids) ORDER BY job_id, step"
# the bulk export on PostgreSQL: the selected jobs, then each source's rows of a group of them
PG_SELECTED = "SELECT job_id FROM jobs WHERE true"
PG_BY_IDS = " AND job_id = ANY($job_ids)"
PG_BY_SINCE = BY_SINCE
PG_ALL_COUNTS = "SELECT job_id, count(*) FROM {source} GROUP BY job_id"
PG_COUNTS = "SELECT job_id, count(*) FROM {source} WHERE job_id = ANY($job_ids) GROUP BY job_id"
PG_ROWS_OF = "SELECT * FROM {source} WHERE job_id = ANY($job_ids)"
PG_NULL_ROWS = "SELECT * FROM {source} WHERE job_id IS NULL"
# PostgreSQL's types (by OID) as Arrow's, so that DuckDB writes a value as it writes its own
PG_ARROW_TYPES = {
    16: "bool_", 20: "int64", 21: "int16", 23: "int32", 25: "string", 700: "float32", 701: "float64",
    1043: "string", 1114: "timestamp_us", 1082: "date32", 114: "string", 3802: "string",
    1009: "text_list", 1015: "text_list",
}  # fmt: skip
PG_JSON_TYPES = (114, 3802)  # json and jsonb: their text, typed JSON again in DuckDB
# A CSV text cell starting with one of = + - @ tab CR is a formula to a spreadsheet (OWASP's list):
# written with a leading ' it stays text. One starting with ' gets one too: a reader then strips one
# leading ' wherever there is one, and -x (written '-x) and '-x (''-x) stay two values.
SAFE_CELL = "CASE WHEN left({c}, 1) IN ('=', '+', '-', '@', chr(9), chr(13), '''') THEN '''' || {c} ELSE {c} END AS {c}"
GROUP_ROWS = 100_000  # the API's export writes jobs in groups of about this many rows
PART_ROWS = 250_000  # a partitioned table is written a range of jobs of about this many rows at a time
CHUNK_BYTES = 1 << 20  # bytes per chunk of a streamed answer
PARTITION_KEY = "job_id="
NAME_MAX = 255  # bytes of a file name, where the file system does not say (ext4, XFS, APFS, NTFS: 255)
# the hidden folders an export to OUT makes beside it: its work, the old export --overwrite
# moves aside, PostgreSQL's rows (tempfile.mkdtemp's 8 characters)
LEFTOVER = r"\.{name}\.(?:(export|replaced)-[0-9a-f]{{12}}|(pg)-[a-z0-9_]{{8}})"
# why an export finished yet not installed (``_install``): its own folder is removed
FILLED = (
    "it was filled while this export ran (another export to it, or files), and only --overwrite"
    " replaces an earlier export; this export was discarded"
)
CHANGED = "something else (another export?) moved or filled it at the last moment; this export was discarded"


class ExportError(Exception):
    """An export that can't be done as asked; the message says why."""


@dataclass(frozen=True)
class Selection:
    """Which jobs to export: these ids (None: all), started at or after ``since`` (naive UTC)."""

    job_ids: tuple[str, ...] | None = None
    since: datetime | None = None

    @property
    def everything(self) -> bool:
        return self.job_ids is None and self.since is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_ids": list(self.job_ids) if self.job_ids is not None else None,
            "since": self.since.isoformat() + "Z" if self.since else None,
        }


@dataclass
class Result:
    out: Path
    fmt: str
    jobs: int
    rows: dict[str, int]
    seconds: float
    notes: list[str]  # what the user should know besides the rows (a table not partitioned, …)


def unknown_jobs(con: duckdb.DuckDBPyConnection, job_ids: Sequence[str]) -> list[str]:
    """The ids the warehouse has no job for, in the order given."""
    postgres = is_postgres(con)
    sql = PG_MISSING if postgres else MISSING
    missing = {r[0] for r in con.execute(sql, {"job_ids": list(job_ids)}).fetchall()}
    if postgres:  # the reader sent each NUL as U+FFFD (pg_reader.nul_free): the ids come back so
        return [j for j in job_ids if j.replace(NUL, NUL_REPLACEMENT) in missing]
    return [j for j in job_ids if j in missing]


def export(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    fmt: str = "parquet",
    selection: Selection | None = None,
    *,
    overwrite: bool = False,
) -> Result:
    """Write every table of TABLES under ``out``; raises ExportError or UnknownJobs first."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    selection = selection or Selection()
    notes = _tidy(out)
    try:
        _check_target(out, overwrite)
    except ExportError as error:  # after a restore, the refusal names it
        raise ExportError("; ".join([*notes, str(error)])) from None
    started = time.monotonic()
    try:
        if is_postgres(con):
            with _local_sources(con, selection, out) as local:
                return _export(local, out, fmt, Selection(), selection, started, notes, overwrite)
        return _export(con, out, fmt, selection, selection, started, notes, overwrite)
    except Exception as error:  # an earlier export restored to OUT stays said when this one fails
        for note in notes:
            error.add_note(note)
        raise


def _export(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    fmt: str,
    selection: Selection,
    asked: Selection,
    started: float,
    notes: list[str],
    overwrite: bool,
) -> Result:
    """The export of ``selection`` from a DuckDB connection; the manifest names ``asked``."""
    try:
        jobs = _select(con, selection)
        out.parent.mkdir(parents=True, exist_ok=True)
        work = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:12]}"
        work.mkdir()
        lock = _lock(work)  # held to the end: the next export to OUT leaves this folder alone
        try:
            # rows need not keep the tables' order: lets DuckDB write in parallel, in less memory
            con.execute("SET preserve_insertion_order = false")
            columns: dict[str, dict[str, str]] = {}
            rows = {table: _copy(con, table, selection, work, fmt, notes, columns) for table in TABLES}
            manifest = _manifest(fmt, rows, jobs, asked, work, columns)
            (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _install(work, out, overwrite)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            _unlock(lock)
    finally:  # the caller's connection as it was
        with contextlib.suppress(duckdb.Error):
            con.execute("RESET preserve_insertion_order")
            con.execute(f"DROP TABLE IF EXISTS temp.{SELECTED}")
    return Result(out, fmt, jobs, rows, time.monotonic() - started, notes)


def _manifest(
    fmt: str, rows: dict[str, int], jobs: int, asked: Selection, work: Path, columns: dict[str, dict[str, str]]
) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = {}
    for table, n in rows.items():
        tables[table] = {"path": table if fmt == "parquet" else f"{table}.csv", "rows": n}
        if table in columns:  # a CSV's types, which its readers would guess (an id `007` as 7.0)
            tables[table]["columns"] = columns[table]
        if fmt == "parquet":  # where a job's rows are, without reading the files
            partitioned = any(p.name.startswith(PARTITION_KEY) for p in (work / table).iterdir())
            tables[table]["partitioned_by"] = "job_id" if partitioned else None
    return {
        "format": fmt,
        "layout": LAYOUTS[fmt],
        "tables": tables,
        "jobs": jobs,
        "selection": asked.as_dict(),
        "exported_at": db.utc_now().isoformat(timespec="seconds") + "Z",
    }


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise ExportError(f"{out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"{out} exists and is not empty (use --overwrite to replace an earlier export)")
    if not (out / MANIFEST).is_file():
        raise ExportError(f"{out} is not empty and holds no earlier export ({MANIFEST}): not replacing it")


def _select(con: duckdb.DuckDBPyConnection, selection: Selection) -> int:
    """Fill the temp table of the selected jobs (bound values only); the number of jobs."""
    if selection.everything:
        return db.one(con, "SELECT count(*) FROM jobs")[0]
    params: dict[str, Any] = {}
    sql = SELECT_JOBS
    if selection.job_ids is not None:
        missing = unknown_jobs(con, selection.job_ids)
        if missing:
            raise UnknownJobs(missing)
        sql += BY_IDS
        params["job_ids"] = list(selection.job_ids)
    if selection.since is not None:
        sql += BY_SINCE
        params["since"] = selection.since
    con.execute(sql, params)
    return db.one(con, f"SELECT count(*) FROM {SELECTED}")[0]


def _query(con: duckdb.DuckDBPyConnection, table: str, selection: Selection) -> str:
    where = "" if selection.everything else f" WHERE job_id IN (SELECT job_id FROM {SELECTED})"
    if table != "analytics_long":
        return f"SELECT * FROM {SOURCES[table]}{where}"
    return _long_query(con, where)


def _long_query(con: duckdb.DuckDBPyConnection, where: str) -> str:
    """job_results in long form: job_id, section, metric, value (DOUBLE); null figures left out."""
    section_of = {c: s for s, cols in SECTIONS.items() for c in cols}
    numeric = [
        name
        for name, kind, *_ in con.execute("DESCRIBE job_results").fetchall()
        if kind in NUMERIC_TYPES and name != "job_id"
    ]
    casts = ", ".join(f"CAST({quote_identifier(c)} AS DOUBLE) AS {quote_identifier(c)}" for c in numeric)
    names = ", ".join(quote_identifier(c) for c in numeric)
    sections = ", ".join(f"({quote_literal(c)}, {quote_literal(section_of.get(c, OTHER_SECTION))})" for c in numeric)
    return f"""
SELECT u.job_id, m.section, u.metric, u.value
FROM (UNPIVOT (SELECT job_id, {casts} FROM job_results{where}) ON {names} INTO NAME metric VALUE value) u
JOIN (VALUES {sections}) m(metric, section) ON m.metric = u.metric"""


def _copy(
    con: duckdb.DuckDBPyConnection,
    table: str,
    selection: Selection,
    work: Path,
    fmt: str,
    notes: list[str],
    columns: dict[str, dict[str, str]],
) -> int:
    """Write one table; a CSV's column types go to ``columns[table]`` (the manifest lists them)."""
    if fmt == "parquet" and table in PARTITIONED:
        return _copy_partitioned(con, table, selection, work / table, notes)
    query = _query(con, table, selection)
    if fmt == "csv":
        columns[table] = _column_types(con, query)
        query = _csv_cells(con, query, types=columns[table])
        options, target = "FORMAT csv, HEADER", work / f"{table}.csv"
    else:
        (work / table).mkdir()
        options, target = "FORMAT parquet", work / table / "data_0.parquet"
    row = con.execute(f"COPY ({query}) TO $path ({options})", {"path": str(target)}).fetchone()
    return int(row[0]) if row else 0


def _copy_partitioned(
    con: duckdb.DuckDBPyConnection, table: str, selection: Selection, target: Path, notes: list[str]
) -> int:
    """A fact table in Hive partitions by job, a range of jobs (about PART_ROWS rows) per COPY.

    DuckDB buffers a partitioned write's rows until its end, so one COPY of a whole table
    takes memory in proportion to it; ranges of jobs (disjoint partitions) bound that. When a
    job's folder name would be too long, the whole table is one file with job_id a column (a
    plain COPY streams: no buffering to bound), as the per-job tables are.
    """
    source = SOURCES[table]
    chosen = "" if selection.everything else f" AND job_id IN (SELECT job_id FROM {SELECTED})"
    counts = con.execute(
        f"SELECT job_id, count(*) FROM {source} WHERE true{chosen} GROUP BY job_id ORDER BY job_id"
    ).fetchall()
    target.mkdir()
    overlong = _overlong((job_id for job_id, _ in counts), _name_max(target))
    if overlong:
        notes.append(f"{table}: one file with a job_id column, not partitioned by job: {overlong}")
        flat = f"COPY (SELECT * FROM {source} WHERE true{chosen}) TO $path (FORMAT parquet)"
        row = con.execute(flat, {"path": str(target / "data_0.parquet")}).fetchone()
        return int(row[0]) if row else 0
    copy = (
        f"COPY (SELECT * FROM {source} WHERE job_id BETWEEN $first AND $last{chosen}) TO $path "
        "(FORMAT parquet, PARTITION_BY (job_id), OVERWRITE_OR_IGNORE)"
    )
    rows = 0
    for group in _groups(counts, PART_ROWS):
        row = con.execute(copy, {"first": group[0], "last": group[-1], "path": str(target)}).fetchone()
        rows += int(row[0]) if row else 0
    if not rows:  # no row, no partition: one empty file keeps the table readable, with its columns
        empty = f"COPY (SELECT * FROM {source} LIMIT 0) TO $path (FORMAT parquet)"
        con.execute(empty, {"path": str(target / "data_0.parquet")})
    return rows


def partition_folder(job_id: str) -> str:
    """The folder name DuckDB gives a job's partition: the id's UTF-8 %-escaped but for RFC
    3986's unreserved characters (A-Z a-z 0-9 - . _ ~), as DuckDB 2.0 writes it."""
    return PARTITION_KEY + urllib.parse.quote(job_id, safe="")


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` takes."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not said, or no pathconf (Windows)
        return NAME_MAX
    return limit if limit > 0 else NAME_MAX


def _overlong(job_ids: Iterable[str | None], limit: int) -> str:
    """The first of these jobs whose partition folder name passes ``limit`` bytes, said for a
    user (its id cut to 60 characters, and why); "" when none does."""
    for job_id in job_ids:
        if job_id is None:  # no job: DuckDB's NULL partition
            continue
        size = len(partition_folder(job_id))
        if size > limit:
            shown = repr(job_id if len(job_id) <= 60 else f"{job_id[:60]}…")
            return f"job {shown} is too long for a folder name ({size} bytes escaped; the file system takes {limit})"
    return ""


def _install(work: Path, out: Path, overwrite: bool) -> None:
    """Move the finished export to ``out``, by the rules of ``_check_target`` as they hold now.

    rename(2) of a folder replaces a missing or empty folder and never a non-empty one: OUT
    filled while this export ran (another export, a user's files) stays as it is, and this
    export fails with the refusal of a non-empty OUT. ``--overwrite`` then replaces it only
    if it is still an export (``_replace``).
    """
    try:
        os.rename(work, out)
        return
    except OSError as error:
        if error.errno == errno.ENOTDIR:  # a file or a link made there meanwhile
            raise ExportError(f"{out} exists and is not a folder") from None
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if not overwrite:
        raise ExportError(f"{out} exists and is not empty: {FILLED}")
    _replace(work, out)


def _replace(work: Path, out: Path) -> None:
    """Replace the earlier export in ``out`` by ``work``; a folder that is not one is never removed.

    The folder at OUT is opened and locked, then checked: still at OUT (another ``--overwrite``
    may have replaced it while this one waited for its lock) and an export (manifest.json).
    It is moved aside locked (``.OUT.replaced-…``): killed before the second rename, this
    process leaves it unlocked, and the next export puts it back. A change in between
    (OUT replaced, or filled again once moved aside) fails the export, OUT as the change left it.
    """
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ExportError(f"{out} changed while this export ran: {CHANGED}") from None
    except OSError:  # a link or a file now
        raise ExportError(f"{out} exists and is not a folder") from None
    try:
        with contextlib.suppress(OSError):  # no flock on folders there: the checks below still hold
            fcntl.flock(fd, fcntl.LOCK_EX)
        if not _same_folder(fd, out):
            raise ExportError(f"{out} changed while this export ran: {CHANGED}")
        if not _holds_manifest(fd):
            raise ExportError(f"{out} is not empty and holds no earlier export ({MANIFEST}): not replacing it")
        old = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:12]}"
        os.rename(out, old)
        try:
            if not _same_folder(fd, old):  # OUT replaced between the check and the move
                raise ExportError(f"{out} changed while this export ran: {CHANGED}")
            os.rename(work, out)
        except BaseException as error:
            kept = _put_back(old, out)
            if kept:
                raise ExportError(f"{out} changed while this export ran: {CHANGED}; {kept}") from error
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        os.close(fd)


def _put_back(old: Path, out: Path) -> str:
    """Move ``old`` back to ``out``: "", or, OUT filled meanwhile, where ``old`` is kept instead
    (a name the next export's ``_tidy`` leaves alone: it may not be an export)."""
    try:
        os.rename(old, out)
        return ""
    except OSError:
        kept = out.parent / f"{out.name}.kept-{uuid.uuid4().hex[:12]}"
        os.rename(old, kept)
        return f"what was in {out} before is now in {kept}"


def _same_folder(fd: int, path: Path) -> bool:
    """Whether ``path`` (not followed) is the folder open as ``fd``."""
    try:
        there = path.lstat()
    except OSError:
        return False
    here = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def _holds_manifest(fd: int) -> bool:
    """Whether the folder open as ``fd`` holds an export's manifest.json (a file)."""
    try:
        return stat.S_ISREG(os.stat(MANIFEST, dir_fd=fd).st_mode)
    except OSError:
        return False


def _lock(folder: Path, wait: bool = True) -> int | None:
    """An exclusive flock on the folder itself, held until ``_unlock`` or dropped with the
    process (kill -9 too); it follows the folder through renames. None where it can't be had:
    a file system without flock on folders (the export goes on; ``_tidy`` then leaves its
    folders alone), or, not waiting, another process holds it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _tidy(out: Path) -> list[str]:
    """Remove the hidden folders that exports to ``out`` killed before their end left beside it
    (those whose lock is free: a live export holds its own), first putting back in ``out``, when
    it is missing, the export an interrupted ``--overwrite`` had moved aside. What was restored,
    said for the user."""
    pattern = re.compile(LEFTOVER.format(name=re.escape(out.name)))
    try:
        found = [p for p in out.parent.iterdir() if pattern.fullmatch(p.name)]
        # a moved-aside export first (the newest: the one a kill took from OUT), then the rest
        found.sort(key=lambda p: (".replaced-" not in p.name, -p.lstat().st_mtime))
    except OSError:  # no such folder yet, one we may not read, or a leftover gone meanwhile
        return []
    notes: list[str] = []
    for leftover in found:
        lock = _lock(leftover, wait=False)
        if lock is None:  # a live export's, or gone meanwhile
            continue
        try:
            if ".replaced-" in leftover.name and not out.exists() and not out.is_symlink():
                os.replace(leftover, out)
                notes.append(f"restored {out} from {leftover.name}, where an interrupted --overwrite had moved it")
            else:
                shutil.rmtree(leftover, ignore_errors=True)
        finally:
            _unlock(lock)
    return notes


def _column_types(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any] | None = None) -> dict[str, str]:
    """The query's columns and their DuckDB types, in its order (planned, not run)."""
    return {c[0]: str(c[1]) for c in con.execute(f"SELECT * FROM ({query}) LIMIT 0", params).description}


def _csv_cells(
    con: duckdb.DuckDBPyConnection,
    query: str,
    params: dict[str, Any] | None = None,
    order: Sequence[str] = (),
    types: dict[str, str] | None = None,
) -> str:
    """The query with SAFE_CELL over each text column (SAFE_CELL keeps the type), in the query's
    order or by ``order``; ``types``: the query's _column_types, when the caller has them."""
    types = _column_types(con, query, params) if types is None else types
    cells = ", ".join(
        SAFE_CELL.format(c=quote_identifier(name)) if kind == "VARCHAR" else quote_identifier(name)
        for name, kind in types.items()
    )
    by = f" ORDER BY {', '.join(f'src.{quote_identifier(c)}' for c in order)}" if order else ""
    return f"SELECT {cells} FROM ({query}) AS src{by}"


# --- the API's streaming export of step histories ----------------------------------------


def steps_csv(con: duckdb.DuckDBPyConnection, job_ids: Sequence[str]) -> Iterator[bytes]:
    """The step_facts rows of these jobs as CSV (a header, then by job and step), in chunks.

    DuckDB writes the jobs a group of about GROUP_ROWS rows at a time to a temporary file
    (the CSV dialect of ``export``), which is sent CHUNK_BYTES at a time and deleted: neither
    DuckDB nor Python holds more than one group, whatever the number of jobs. The first chunk
    is the header with the first group's first rows: taking it runs the first group's queries,
    so that the API decides its answer's status after them (a later group's failure can only
    cut the stream: docs/export.md).
    """
    groups = _step_groups(con, job_ids)
    header = [d[0] for d in con.execute("SELECT * FROM step_facts LIMIT 0").description]
    head = (",".join(header) + "\n").encode()  # plain identifiers: nothing to quote
    for chunk in _csv_groups(con, groups):
        if head:
            chunk, head = head + chunk, b""
        yield chunk
    if head:  # no rows
        yield head


def _csv_groups(con: duckdb.DuckDBPyConnection, groups: list[list[str]]) -> Iterator[bytes]:
    """The rows of these groups of jobs as headerless CSV, in chunks (``steps_csv``)."""
    if is_postgres(con):
        for group in groups:
            with _local_steps(con, group) as local:
                query = _csv_cells(local, STEPS_OF, {"job_ids": []}, order=STEP_ORDER)
                with _copy_to_temp(local, query, {"job_ids": group}, "FORMAT csv, HEADER false", ".csv") as f:
                    while chunk := f.read(CHUNK_BYTES):
                        yield chunk
        return
    query = _csv_cells(con, STEPS_OF, {"job_ids": []}, order=STEP_ORDER)
    for group in groups:
        with _copy_to_temp(con, query, {"job_ids": group}, "FORMAT csv, HEADER false", ".csv") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk


def steps_parquet(con: duckdb.DuckDBPyConnection, job_ids: Sequence[str]) -> BinaryIO:
    """The step_facts rows of these jobs (by job and step) as one Parquet file, open for reading.

    Each group of jobs is sorted and written on its own, then the parts are joined in order
    into one file by a private single-threaded DuckDB (which keeps the order of its input
    without buffering): no sort of the whole answer, and memory bounded by a group. The file
    is already deleted from its folder: it is gone once the caller closes it.
    """
    groups = _step_groups(con, job_ids)
    if len(groups) <= 1 and not is_postgres(con):
        return _copy_to_temp(con, STEPS_OF, {"job_ids": groups[0] if groups else []}, "FORMAT parquet", ".parquet")
    if not groups:  # PostgreSQL: no rows, yet the columns and their types
        with _local_steps(con, []) as local:
            return _copy_to_temp(local, STEPS_OF, {"job_ids": []}, "FORMAT parquet", ".parquet")
    folder = Path(tempfile.mkdtemp(prefix="runlytics-export-"))
    try:
        parts = [str(folder / f"{i:06d}.parquet") for i in range(len(groups))]
        for group, part in zip(groups, parts, strict=True):
            with _local_steps(con, group) if is_postgres(con) else contextlib.nullcontext(con) as source:
                source.execute(f"COPY ({STEPS_OF}) TO $path (FORMAT parquet)", {"job_ids": group, "path": part})
        joiner = duckdb.connect(config={"threads": 1})
        try:
            return _copy_to_temp(
                joiner, "FROM read_parquet($parts)", {"parts": db.exact_paths(parts)}, "FORMAT parquet", ".parquet"
            )
        finally:
            joiner.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _step_groups(con: duckdb.DuckDBPyConnection, job_ids: Sequence[str]) -> list[list[str]]:
    """The jobs that have step rows, sorted, in groups of about GROUP_ROWS rows."""
    ordered = sorted(set(job_ids))
    counts = dict(con.execute(PG_STEP_COUNTS if is_postgres(con) else STEP_COUNTS, {"job_ids": ordered}).fetchall())
    return list(_groups(((j, counts[j]) for j in ordered if counts.get(j)), GROUP_ROWS))


@contextlib.contextmanager
def _local_sources(con: Any, selection: Selection, near: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB file (in a hidden folder beside ``near``, deleted on exit) whose relations of
    SOURCES hold the selected jobs' rows, read from PostgreSQL (``con``) with their types, a
    group of jobs of about GROUP_ROWS rows at a time: the bulk export then runs on it as on a
    warehouse (UnknownJobs first)."""
    import pyarrow as pa

    chosen: list[str] | None = None
    if not selection.everything:
        params: dict[str, Any] = {}
        sql = PG_SELECTED
        if selection.job_ids is not None:
            missing = unknown_jobs(con, selection.job_ids)
            if missing:
                raise UnknownJobs(missing)
            sql += PG_BY_IDS
            params["job_ids"] = list(selection.job_ids)
        if selection.since is not None:
            sql += PG_BY_SINCE
            params["since"] = selection.since
        chosen = sorted(r[0] for r in con.execute(sql, params).fetchall())
    near.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{near.name}.pg-", dir=near.parent))
    lock = _lock(folder)  # a live export's: the next export to OUT leaves it alone
    local = duckdb.connect(str(folder / "rows.duckdb"))
    try:
        for source in SOURCES.values():
            if chosen is None:
                counts = con.execute(PG_ALL_COUNTS.format(source=source)).fetchall()
            else:
                counts = con.execute(PG_COUNTS.format(source=source), {"job_ids": chosen}).fetchall()
            # rows without a job (GPU samples of none) are a group of their own, as DuckDB exports them
            nulls = [n for job_id, n in counts if job_id is None]
            groups: list[list[str] | None] = [*_groups(sorted(c for c in counts if c[0] is not None), GROUP_ROWS)]
            groups += [None] if nulls else []
            create = f"CREATE TABLE {quote_identifier(source)} AS "
            for group in groups or [[]]:
                if group is None:
                    cursor = con.execute(PG_NULL_ROWS.format(source=source))
                else:
                    cursor = con.execute(PG_ROWS_OF.format(source=source), {"job_ids": group})
                local.register("pg_rows", _arrow_rows(pa, cursor))
                local.execute(f"{create}SELECT *{_json_again(cursor.description)} FROM pg_rows")
                local.unregister("pg_rows")
                create = f"INSERT INTO {quote_identifier(source)} "
        yield local
    finally:
        local.close()
        shutil.rmtree(folder, ignore_errors=True)
        _unlock(lock)


def _arrow_rows(pa: Any, cursor: Any) -> Any:
    """A PostgreSQL cursor's rows as an Arrow table with DuckDB's types for PostgreSQL's."""
    columns = cursor.description
    rows = cursor.fetchall()
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    arrays = [
        pa.array(list(column), type=_arrow_type(pa, d.type_code)) for column, d in zip(values, columns, strict=True)
    ]
    return pa.table(arrays, names=[d.name for d in columns])


def _json_again(columns: Any) -> str:
    """``SELECT *``'s REPLACE clause that types PostgreSQL's JSON columns (text in Arrow) JSON."""
    json = [quote_identifier(d.name) for d in columns if d.type_code in PG_JSON_TYPES]
    return f" REPLACE ({', '.join(f'CAST({c} AS JSON) AS {c}' for c in json)})" if json else ""


@contextlib.contextmanager
def _local_steps(con: Any, job_ids: list[str]) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB whose ``step_facts`` holds these jobs' rows, read from PostgreSQL
    (``con``) with their types: what the DuckDB path writes, for a group of about GROUP_ROWS."""
    import pyarrow as pa

    cursor = con.execute(PG_STEPS_OF, {"job_ids": job_ids})
    table = _arrow_rows(pa, cursor)
    local = duckdb.connect(config={"threads": 1})
    try:
        local.register("pg_rows", table)
        local.execute(f"CREATE VIEW step_facts AS SELECT *{_json_again(cursor.description)} FROM pg_rows")
        yield local
    finally:
        local.close()


def _arrow_type(pa: Any, oid: int) -> Any:
    name = PG_ARROW_TYPES.get(oid)
    if name == "timestamp_us":
        return pa.timestamp("us")
    if name == "text_list":
        return pa.list_(pa.string())
    return getattr(pa, name)() if name else None


def _groups(counts: Iterable[tuple[str, int]], limit: int) -> Iterator[list[str]]:
    """Consecutive job ids in groups of at most ``limit`` rows (a bigger job alone)."""
    group: list[str] = []
    rows = 0
    for job_id, n in counts:
        if group and rows + n > limit:
            yield group
            group, rows = [], 0
        group.append(job_id)
        rows += n
    if group:
        yield group


def _copy_to_temp(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any], options: str, suffix: str
) -> BinaryIO:
    """COPY the query's rows to a new temporary file; that file opened, and unlinked."""
    fd, name = tempfile.mkstemp(prefix="runlytics-export-", suffix=suffix)
    os.close(fd)
    try:
        con.execute(f"COPY ({query}) TO $path ({options})", {**params, "path": name})
        return open(name, "rb")  # noqa: SIM115 - the caller closes it
    finally:
        os.unlink(name)
