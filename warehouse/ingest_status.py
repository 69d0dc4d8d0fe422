"""Queries on the ingest's own health: its runs, and the files that keep failing."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import duckdb

from . import db, pages
from .queries import records

RUNS_PAGE = """
SELECT run_id, started_at, ended_at, outcome, files_seen, ingested, unchanged, pending, failed, rows, warnings,
       jobs_changed, seconds, error, host, pid
FROM ingest_runs
WHERE $before IS NULL OR run_id < $before
ORDER BY run_id DESC
LIMIT $limit
"""

# Files not ingested as they are now: failed (read again when they change) or pending.
PROBLEM_FILES = """
SELECT path, kind, job_id, outcome, error, last_read_at
FROM ingest_files
WHERE outcome <> 'ingested'
ORDER BY outcome, path
"""

# The warnings of the files this run read (the ledger keeps the first 50 of each file).
RUN_WARNINGS = """
SELECT f.path, w.message
FROM ingest_files f, unnest(CAST(f.warnings AS VARCHAR[])) WITH ORDINALITY AS w(message, pos)
WHERE f.warning_count > 0
  AND f.last_read_at >= (SELECT started_at FROM ingest_runs WHERE run_id = $run_id)
ORDER BY f.path, w.pos
LIMIT $limit
"""

# Every file whose last read left warnings, with those the ledger keeps (the first 50).
WARNING_FILES = """
SELECT path, kind, warning_count, warnings, last_read_at
FROM ingest_files
WHERE outcome = 'ingested' AND warning_count > 0
ORDER BY path
"""

# step_rows: what the ingest summary calls step rows (its `rows`), stored: progress.json steps and
# trainer states' log_history steps (tool logs' metric points are not step rows; docs/ingest.md)
COUNTS = """
SELECT (SELECT count(*) FROM jobs) AS jobs,
       (SELECT count(*) FROM steps) + (SELECT count(*) FROM trainer_steps) AS step_rows,
       (SELECT count(*) FROM gpu_samples) AS gpu_samples,
       (SELECT count(*) FROM ingest_files) AS files
"""


def runs_page(
    con: duckdb.DuckDBPyConnection, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Ingest runs, newest first, one keyset page; and the next page's cursor."""
    before = None
    if cursor:
        (before,) = pages.decode("runs", cursor, 1)
        if not isinstance(before, int) or isinstance(before, bool):
            raise pages.BadCursor("cursor is not one this API handed out")
    rows = records(con.execute(RUNS_PAGE, {"before": before, "limit": limit + 1}))
    return pages.page(rows, limit, "runs", lambda row: [row["run_id"]])


def problem_files(con: duckdb.DuckDBPyConnection, *, server_paths: bool = True) -> list[dict[str, Any]]:
    """The files not ingested as they are now. Without ``server_paths`` (the API: its clients
    need not learn the server's folders) each path, in its field and in its error, is shown from
    its job folder on (``alpha/progress.json``), or as its folder and name when no job is known."""
    rows = records(con.execute(PROBLEM_FILES))
    for row in rows:
        job_id = row.pop("job_id")
        if not server_paths:
            shown = shown_path(row["path"], job_id)
            row["error"] = row["error"].replace(row["path"], shown) if row["error"] else row["error"]
            row["path"] = shown
    return rows


def shown_path(path: str, job_id: str | None) -> str:
    """``path`` from its job's folder on (a job id is the folder's path under the jobs root), or
    its last folder and name."""
    marker = f"/{job_id}/" if job_id else None
    if marker and marker in path:
        return path[path.rindex(marker) + 1 :]
    return "/".join(PurePosixPath(path).parts[-2:])


def run_warnings(con: duckdb.DuckDBPyConnection, run_id: int, limit: int) -> list[tuple[str, str]]:
    """(path, message) of the warnings of the files the run ``run_id`` read, the first ``limit``."""
    return [
        (path, message) for path, message in con.execute(RUN_WARNINGS, {"run_id": run_id, "limit": limit}).fetchall()
    ]


def warning_files(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The files whose last read left warnings, each with the warnings kept."""
    rows = records(con.execute(WARNING_FILES))
    for row in rows:
        # the JSON array as text on both engines (PostgreSQL casts no json to an array)
        row["warnings"] = [str(w) for w in json.loads(row["warnings"])] if row["warnings"] else []
    return rows


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return db.one_dict(con, COUNTS)
