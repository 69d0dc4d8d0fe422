"""The ingest ledger: what was read of each source file, and with what outcome.

A file whose size and modification time match the ledger is not read again. A file read
within ``FRESH_SECONDS`` of its last change gets no fingerprint (a writer may still be at it
within the same clock tick), so the next run reads it again; ``pending`` files (empty or cut
short) are read again on every run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

FRESH_SECONDS = 2.0
MAX_STORED_WARNINGS = 50

LOAD = "SELECT path, fingerprint, outcome FROM ingest_files WHERE kind = $kind"
LOAD_OFFSETS = "SELECT path, read_offset, rows FROM ingest_files WHERE kind = $kind"

UPSERT = """
INSERT INTO ingest_files (path, kind, job_id, size, mtime_ns, fingerprint, outcome, rows, warning_count,
                          warnings, error, read_offset, first_seen_at, last_read_at)
VALUES ($path, $kind, $job_id, $size, $mtime_ns, $fingerprint, $outcome, $rows, $warning_count,
        $warnings, $error, $read_offset, now()::TIMESTAMP, now()::TIMESTAMP)
ON CONFLICT (path) DO UPDATE SET
    kind = excluded.kind, job_id = coalesce(excluded.job_id, ingest_files.job_id), size = excluded.size,
    mtime_ns = excluded.mtime_ns, fingerprint = excluded.fingerprint, outcome = excluded.outcome,
    rows = excluded.rows, warning_count = excluded.warning_count, warnings = excluded.warnings,
    error = excluded.error, read_offset = excluded.read_offset, last_read_at = excluded.last_read_at
"""

# The outcome of every file of a staged batch, from the batch tables.
UPSERT_BATCH = """
INSERT INTO ingest_files (path, kind, job_id, size, mtime_ns, fingerprint, outcome, rows, warning_count,
                          warnings, error, first_seen_at, last_read_at)
SELECT f.path, $kind, j.job_id, f.size, f.mtime_ns, f.fingerprint, 'ingested',
       coalesce(r.rows, 0), coalesce(w.n, 0), to_json(w.first), NULL, now()::TIMESTAMP, now()::TIMESTAMP
FROM batch_files f
JOIN batch_jobs j ON j.file_id = f.file_id
LEFT JOIN (SELECT file_id, count(*) AS rows FROM staged_steps WHERE step IS NOT NULL GROUP BY file_id) r
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

    @property
    def fingerprint(self) -> str | None:
        return None if self.fresh else f"{self.size}:{self.mtime_ns}"


def stat(path: Path) -> Stat:
    return stat_of(os.stat(path))


def stat_of(st: os.stat_result) -> Stat:
    """The ledger's view of a stat already taken."""
    return Stat(st.st_size, st.st_mtime_ns, time.time() - st.st_mtime_ns / 1e9 < FRESH_SECONDS)


def load(con: duckdb.DuckDBPyConnection, kind: str) -> dict[str, tuple[str | None, str]]:
    """path -> (fingerprint, outcome) of every file of this kind read before."""
    rows = con.execute(LOAD, {"kind": kind}).fetchall()
    return {path: (fingerprint, outcome) for path, fingerprint, outcome in rows}


def load_offsets(con: duckdb.DuckDBPyConnection, kind: str) -> dict[str, tuple[int, int]]:
    """path -> (bytes read, lines read) of every appended file of this kind."""
    rows = con.execute(LOAD_OFFSETS, {"kind": kind}).fetchall()
    return {path: (offset or 0, lines or 0) for path, offset, lines in rows}


def is_unchanged(previous: tuple[str | None, str] | None, current: Stat) -> bool:
    if previous is None or current.fingerprint is None:
        return False
    fingerprint, outcome = previous
    return outcome != "pending" and fingerprint == current.fingerprint


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
) -> None:
    """Record one file's outcome: ingested (rows, warnings), or pending/failed with the reason."""
    con.execute(
        UPSERT,
        {
            "path": path,
            "kind": kind,
            "job_id": job_id,
            "size": st.size if st else None,
            "mtime_ns": st.mtime_ns if st else None,
            "fingerprint": st.fingerprint if st and outcome != "pending" else None,
            "outcome": outcome,
            "rows": rows,
            "warning_count": len(warnings or []),
            "warnings": json.dumps((warnings or [])[:MAX_STORED_WARNINGS]),
            "error": error,
            "read_offset": read_offset,
        },
    )


def record_batch(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    con.execute(UPSERT_BATCH, {"kind": kind, "max_warnings": MAX_STORED_WARNINGS})
