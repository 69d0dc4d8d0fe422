"""The ingest ledger: what was read of each source file, and with what outcome.

A file whose size and modification time match the ledger is not read again. A file read
within ``FRESH_SECONDS`` of its last change gets no fingerprint (a writer may still be at it
within the same clock tick), nor does a log whose last line waits for its newline or for the
file to settle (``settled``), so the next run reads it again; ``pending`` files (empty or cut
short) are read again on every run. A file dated further ahead of this machine's clock (a file
server's clock ahead, ``touch -d 2099-01-01``) is fingerprinted as any other: its time tells
nothing of a writer, and it is read again when its size or time changes (``is_fresh``).
A failed or pending file that is gone from a root the run walks loses its record
(``forget_vanished``); an ingested one keeps it, as its job keeps its facts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runlytics.warehouse import db

from .discover import TOOL_KINDS, JobFolder, shown

if TYPE_CHECKING:
    import duckdb

FRESH_SECONDS = 2.0
# A file unchanged this long has no writer at it (``settled``): an appended file's last line
# without its newline is then its last line, and a progress.json still torn then fails
# (progress.TORN_TAIL_SECONDS is this window)
SETTLED_SECONDS = 300.0
MAX_STORED_WARNINGS = 50

LOAD = "SELECT path, fingerprint, outcome FROM ingest_files WHERE kind = $kind"
FINGERPRINT = """
UPDATE ingest_files SET size = $size, mtime_ns = $mtime_ns, fingerprint = $fingerprint WHERE path = $path
"""
LOAD_RESUME = "SELECT path, read_offset, rows, read_digest FROM ingest_files WHERE kind = $kind"
PROGRESS_JOB_IDS = "SELECT path, job_id FROM ingest_files WHERE kind = 'progress' AND job_id IS NOT NULL"
# The records of the files a walk of the ingest roots finds (formats/progress.py's, trainer_state.py's
# and tool_log.py's kinds; not the spool's or nvidia-smi logs', whose readers keep their own, nor a
# folder's, which formats/checkpoint_folders.py drops) that name a problem: failed or pending
# (``forget_vanished``). An ingested file's record stays when its file goes, as its job's facts do.
WALKED_KINDS = ("progress", "trainer_state", *TOOL_KINDS)
PROBLEM_PATHS = "SELECT path FROM ingest_files WHERE outcome IN ('failed', 'pending') AND list_contains($kinds, kind)"
FORGET_PROBLEMS = """
DELETE FROM ingest_files
WHERE outcome IN ('failed', 'pending') AND list_contains($kinds, kind) AND path IN (SELECT unnest($paths::VARCHAR[]))
"""

# What ``record`` and ``record_many`` write of a file, and how they replace an earlier record.
UPSERT_INTO = """
INSERT INTO ingest_files (path, kind, job_id, size, mtime_ns, fingerprint, outcome, rows, warning_count,
                          warnings, error, read_offset, read_digest, first_seen_at, last_read_at)
"""
UPSERT_SET = """
ON CONFLICT (path) DO UPDATE SET
    kind = excluded.kind, job_id = coalesce(excluded.job_id, ingest_files.job_id), size = excluded.size,
    mtime_ns = excluded.mtime_ns, fingerprint = excluded.fingerprint, outcome = excluded.outcome,
    rows = excluded.rows, warning_count = excluded.warning_count, warnings = excluded.warnings,
    error = excluded.error, read_offset = excluded.read_offset, read_digest = excluded.read_digest,
    last_read_at = excluded.last_read_at
"""

UPSERT = (
    UPSERT_INTO
    + """
VALUES ($path, $kind, $job_id, $size, $mtime_ns, $fingerprint, $outcome, $rows, $warning_count,
        $warnings, $error, $read_offset, $read_digest, now()::TIMESTAMP, now()::TIMESTAMP)
"""
    + UPSERT_SET
)

# Many files read and ingested at once (tool logs), from the arrays of ``record_many``.
UPSERT_MANY = (
    UPSERT_INTO
    + """
SELECT path, $kind, job_id, size, mtime_ns, fingerprint, 'ingested', rows, warning_count, CAST(warnings AS JSON),
       NULL, read_offset, read_digest, now()::TIMESTAMP, now()::TIMESTAMP
FROM outcomes
"""
    + UPSERT_SET
)

# The outcome of every file of a staged batch, from the batch tables. Its rows: the step rows its
# entries make, one per step (merge.py's batch_winners), so a `latest` repeating a step of its
# history is no second row, as in the `steps` table that `status` counts (docs/ingest.md).
UPSERT_BATCH = """
INSERT INTO ingest_files (path, kind, job_id, size, mtime_ns, fingerprint, outcome, rows, warning_count,
                          warnings, error, first_seen_at, last_read_at)
SELECT f.path, $kind, j.job_id, f.size, f.mtime_ns, f.fingerprint, 'ingested',
       coalesce(r.rows, 0), coalesce(w.n, 0), to_json(w.first), NULL, now()::TIMESTAMP, now()::TIMESTAMP
FROM batch_files f
JOIN batch_jobs j ON j.file_id = f.file_id
LEFT JOIN (SELECT file_id, count(*) AS rows FROM batch_winners GROUP BY file_id) r
       ON r.file_id = f.file_id
LEFT JOIN (SELECT file_id, count(*) AS n, list(message ORDER BY pos, sub, message)[1:$max_warnings] AS first
           FROM batch_warnings GROUP BY file_id) w
       ON w.file_id = f.file_id
ON CONFLICT (path) DO UPDATE SET
    kind = excluded.kind, job_id = excluded.job_id, size = excluded.size, mtime_ns = excluded.mtime_ns,
    fingerprint = excluded.fingerprint, outcome = excluded.outcome, rows = excluded.rows,
    warning_count = excluded.warning_count, warnings = excluded.warnings, error = NULL,
    last_read_at = excluded.last_read_at
"""


@dataclass(frozen=True)
class Stat:
    size: int
    mtime_ns: int
    fresh: bool
    # the file's inode: a file replaced by a rename may keep the size and mtime (not a fingerprint's part)
    ino: int = field(default=0, kw_only=True)

    @property
    def fingerprint(self) -> str | None:
        return None if self.fresh else f"{self.size}:{self.mtime_ns}"


def stat(path: Path) -> Stat:
    return stat_of(os.stat(path))


def stat_of(st: os.stat_result) -> Stat:
    """The ledger's view of a stat already taken."""
    return Stat(st.st_size, st.st_mtime_ns, is_fresh(st.st_mtime_ns), ino=st.st_ino)


def is_fresh(mtime_ns: int, now: float | None = None) -> bool:
    """Whether a file's time is within ``FRESH_SECONDS`` of this machine's clock (``now``), on
    either side: a writer may still be at it within the same clock tick. A time further ahead is
    no sign of a writer (it was fresh for ever: read, counted and published again by every run)."""
    return abs((time.time() if now is None else now) - mtime_ns / 1e9) < FRESH_SECONDS


def ahead(st: Stat) -> bool:
    """Whether the file's time is ahead of this machine's clock by ``FRESH_SECONDS`` or more: it
    then tells nothing of when a writer was last at the file (``settled`` never holds)."""
    return st.mtime_ns / 1e9 - time.time() >= FRESH_SECONDS


def settled(st: Stat) -> bool:
    """Whether no writer has been at the file for ``SETTLED_SECONDS``: an appended file's last
    line without its newline is then its last line, not one still being written. Its readers
    read that line only if the file is still ``unchanged_since`` this stat once read: a writer
    that came back meanwhile may have written half a line."""
    return time.time() - st.mtime_ns / 1e9 > SETTLED_SECONDS


def final(path: Path, before: Stat) -> bool:
    """Whether a file read since the stat ``before`` was read as its writer left it for good: it
    had ``settled`` then and is ``unchanged_since`` (call it once the read is done). Its last line
    without a newline is then its last line, read as any other."""
    return settled(before) and unchanged_since(path, before)


def unchanged_since(path: Path, before: Stat) -> bool:
    """True when the file still has the size, mtime and inode it had at ``before`` (a stat taken
    before it was opened): a read between the two saw one version of it."""
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_size, now.st_mtime_ns, now.st_ino) == (before.size, before.mtime_ns, before.ino)


def load(con: duckdb.DuckDBPyConnection, kind: str) -> dict[str, tuple[str | None, str]]:
    """path -> (fingerprint, outcome) of every file of this kind read before."""
    rows = con.execute(LOAD, {"kind": kind}).fetchall()
    return {path: (fingerprint, outcome) for path, fingerprint, outcome in rows}


def load_resume(con: duckdb.DuckDBPyConnection, kind: str) -> dict[str, tuple[int, int, str | None]]:
    """path -> (bytes read, lines or records read, digest of the bytes before) of every appended file
    (tool log, spool file) of this kind."""
    rows = con.execute(LOAD_RESUME, {"kind": kind}).fetchall()
    return {path: (offset or 0, lines or 0, digest) for path, offset, lines, digest in rows}


def progress_job_ids(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """progress.json path -> the job id it names: the job its folder's other files belong to."""
    return dict(con.execute(PROGRESS_JOB_IDS).fetchall())


def forget_vanished(con: duckdb.DuckDBPyConnection, roots: Sequence[Path], jobs: list[JobFolder]) -> int:
    """Drop the records of failed and pending files under ``roots`` (the folders this run walks,
    resolved) whose file is gone, found by none of ``jobs`` (the walk's job folders); how many.
    Else such a record stayed for ever: listed by ``status``, /api/ingest/runs' problem files and
    the ``runlytics_problem_files`` gauge. A root another run walks keeps its records; on
    PostgreSQL the publish of the stage's problem files then drops this ingester's row there
    (ingest/postgres.py). A stat per problem record: they are few."""
    walked = [str(root) for root in roots]
    kinds = {"kinds": list(WALKED_KINDS)}
    problems = [path for (path,) in con.execute(PROBLEM_PATHS, kinds).fetchall()]
    gone = [path for path in problems if any(below(path, root) for root in walked) and is_gone(path)]
    if gone:  # a path that is not UTF-8 is recorded with U+FFFD: not there by that name, but found
        found = {shown(path) for job in jobs for path in (job.progress, *job.trainer_states, *job.tool_paths()) if path}
        gone = [path for path in gone if path not in found]
    if gone:
        con.execute(FORGET_PROBLEMS, {**kinds, "paths": gone})
    return len(gone)


def below(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies in it (both as text, absolute)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # one relative, the other absolute
        return False


def is_gone(path: str) -> bool:
    """Whether nothing is at ``path`` (a link to nothing is there); a folder above it that can't
    be searched tells nothing (discovery names that folder as a problem of its own)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def is_unchanged(previous: tuple[str | None, str] | None, current: Stat) -> bool:
    if previous is None or current.fingerprint is None:
        return False
    fingerprint, outcome = previous
    return outcome != "pending" and fingerprint == current.fingerprint


def fingerprint(con: duckdb.DuckDBPyConnection, path: str, st: Stat) -> None:
    """Give a file's record the size, time and fingerprint of ``st``, the rest of it kept: for an
    appended file found to hold the bytes it was read to since its record (recorded within
    FRESH_SECONDS of a change, or only touched), which the next run then need not open."""
    values = {"path": storable(path), "size": st.size, "mtime_ns": st.mtime_ns, "fingerprint": st.fingerprint}
    con.execute(FINGERPRINT, values)


def storable(text: str) -> str:
    """Text that can be stored: a lone surrogate (a byte of a name that is not UTF-8, read with
    surrogateescape, or an escape no reader replaced) becomes U+FFFD, as ``discover.shown`` shows
    a path; DuckDB refuses to store or to cast to JSON a string holding one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def _stored_warnings(warnings: list[str] | None) -> str:
    return json.dumps([storable(w) for w in (warnings or [])[:MAX_STORED_WARNINGS]])


def record(
    con: duckdb.DuckDBPyConnection,
    path: str,
    kind: str,
    st: Stat | None,
    outcome: str,
    error: str | None = None,
    job_id: str | None = None,
    rows: int = 0,
    warnings: list[str] | None = None,
    read_offset: int | None = None,
    read_digest: str | None = None,
) -> None:
    """Record one file's outcome: ingested (rows, warnings), or pending/failed with the reason.
    Text that is not UTF-8 (a file name's bytes in a path or a warning) is stored with U+FFFD."""
    con.execute(
        UPSERT,
        {
            "path": storable(path),
            "kind": kind,
            "job_id": None if job_id is None else storable(job_id),
            "size": st.size if st else None,
            "mtime_ns": st.mtime_ns if st else None,
            "fingerprint": st.fingerprint if st and outcome != "pending" else None,
            "outcome": outcome,
            "rows": rows,
            "warning_count": len(warnings or []),
            "warnings": _stored_warnings(warnings),
            "error": None if error is None else storable(error),
            "read_offset": read_offset,
            "read_digest": read_digest,
        },
    )


@dataclass(frozen=True)
class Outcome:
    """One file ingested, for ``record_many``."""

    path: str
    stat: Stat
    job_id: str | None
    rows: int
    warnings: list[str]
    read_offset: int | None = None
    read_digest: str | None = None


def record_many(con: duckdb.DuckDBPyConnection, kind: str, files: list[Outcome]) -> None:
    """Record many files ingested, in one statement (a statement per file costs milliseconds each).
    Text that is not UTF-8 is stored with U+FFFD, as by ``record``."""
    if not files:
        return
    import numpy as np  # here: the no-op road (ingest/quick.py) imports this module and must stay light

    outcomes = {
        "path": np.array([storable(f.path) for f in files], dtype=object),
        "job_id": np.array([None if f.job_id is None else storable(f.job_id) for f in files], dtype=object),
        "size": np.array([f.stat.size for f in files], dtype=np.int64),
        "mtime_ns": np.array([f.stat.mtime_ns for f in files], dtype=np.int64),
        "fingerprint": np.array([f.stat.fingerprint for f in files], dtype=object),
        "rows": np.array([f.rows for f in files], dtype=np.int64),
        "warning_count": np.array([len(f.warnings) for f in files], dtype=np.int64),
        "warnings": np.array([_stored_warnings(f.warnings) for f in files], dtype=object),
        "read_offset": np.array([f.read_offset for f in files], dtype=object),
        "read_digest": np.array([f.read_digest for f in files], dtype=object),
    }
    with db.registered(con, {"outcomes": outcomes}):
        con.execute(UPSERT_MANY, {"kind": kind})


def record_batch(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    """Record the staged batch's files, after ``merge.apply`` (their rows: its batch_winners)."""
    con.execute(UPSERT_BATCH, {"kind": kind, "max_warnings": MAX_STORED_WARNINGS})
