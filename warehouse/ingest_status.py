"""Queries on the ingest's own health: its runs, and the files that keep failing."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import PurePosixPath
from typing import Any

import duckdb

from . import db, pages
from .pg_reader import sql_for
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

# The ledger's files that bear one of these names (the last part of the path), problem files or not:
# those a shown path must be told apart from (``shown_paths``)
NAMESAKES = """
SELECT path FROM ingest_files WHERE @list_contains($names; regexp_replace(path, '^.*/', ''))
"""

# The files not ingested as they are now, by outcome (``failed``, ``pending``): /metrics' gauge
PROBLEM_COUNTS = """
SELECT outcome, count(*) AS files FROM ingest_files WHERE outcome <> 'ingested' GROUP BY outcome
"""
PROBLEM_OUTCOMES = ("failed", "pending")

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
    con: duckdb.DuckDBPyConnection, limit: int, cursor: str | None, *, server_paths: bool = False
) -> tuple[list[dict[str, Any]], str | None]:
    """Ingest runs, newest first, one keyset page; and the next page's cursor. Without
    ``server_paths`` (the API) each error is ``public_text``."""
    before = None
    if cursor:
        (before,) = pages.decode("runs", cursor, 1)
        if not isinstance(before, int) or isinstance(before, bool):
            raise pages.BadCursor("cursor is not one this API handed out")
    rows = records(con.execute(RUNS_PAGE, {"before": before, "limit": limit + 1}))
    if not server_paths:
        for row in rows:
            row["error"] = public_text(row["error"])
    return pages.page(rows, limit, "runs", lambda row: [row["run_id"]])


def problem_files(con: duckdb.DuckDBPyConnection, *, server_paths: bool = False) -> list[dict[str, Any]]:
    """The files not ingested as they are now. Without ``server_paths`` (the API: its clients
    need not learn the server's folders) each path is ``shown_paths``' and its error ``public_text``."""
    rows = records(con.execute(PROBLEM_FILES))
    job_ids = [row.pop("job_id") for row in rows]
    if server_paths:
        return rows
    shown = shown_paths(con, [(row["path"], job_id) for row, job_id in zip(rows, job_ids, strict=True)])
    for row in rows:
        path, row["path"] = row["path"], shown[row["path"]]
        row["error"] = public_text(row["error"], _local(path), _hidden(path, row["path"]))
    return rows


def shown_paths(con: duckdb.DuckDBPyConnection, files: list[tuple[str, str | None]]) -> dict[str, str]:
    """Each (ledger path, job id) as the API shows it: ``shown_path``, with as many folders above
    as it takes to tell it from every other path of the ledger (``ingest_files``): a file of
    ``team/run-1/`` beside one of ``other/run-1/`` is ``team/run-1/progress.json``, never the two
    alike. A path shows folders above its ingest root only where two roots hold the same path
    below them. The ledger keeps no root, so the root itself can't be the rule (docs/api.md). On
    PostgreSQL a path that only another ingester's path is alike to is told by its host instead."""
    if not files:
        return {}
    names = sorted({PurePosixPath(_local(path)).name for path, _ in files})
    ledger = {path for (path,) in con.execute(sql_for(con, NAMESAKES), {"names": names}).fetchall()}
    ledger |= {path for path, _ in files}  # a name the query's pattern reads otherwise (a newline in it)
    # how many of the ledger's paths end with each tail of a problem file, of any ingester and of
    # its own (suffix-closed: a walk up a path stops at its first tail that is no problem file's)
    wanted = {tail for path, _ in files for tail in _tails(path)}
    alike: Counter[str] = Counter()
    alike_here: Counter[tuple[str, str]] = Counter()
    for path in ledger:
        host = _ingester(path)
        for tail in _tails(path):
            if tail not in wanted:
                break
            alike[tail] += 1
            alike_here[host, tail] += 1
    shown = {}
    for path, job_id in files:
        host, tails = _ingester(path), _tails(path)
        least = len(PurePosixPath(shown_path(_local(path), job_id)).parts)
        shown[path] = host + tails[-1]
        for tail in tails[least - 1 :]:
            if alike[tail] == 1 or (host and alike_here[host, tail] == 1):
                shown[path] = tail if alike[tail] == 1 else host + tail
                break
    return shown


def shown_path(path: str, job_id: str | None) -> str:
    """The least of ``path`` the API shows: from its job's folder on when a folder above it is named
    as the job (a tool log's job id is its folder's path under the root), else its last folder and name."""
    marker = f"/{job_id}/" if job_id else None
    if marker and marker in path:
        return path[path.rindex(marker) + 1 :]
    return "/".join(PurePosixPath(path).parts[-2:])


def _ingester(path: str) -> str:
    """The ingester of a ledger path on PostgreSQL (``gpu-07:/stage.duckdb:/data/a/progress.json``,
    docs/postgresql.md): its host and ``:`` (``gpu-07:``); ``''`` for a path of this host's ledger."""
    return "" if path.startswith("/") or ":" not in path else path[: path.index(":") + 1]


def _local(path: str) -> str:
    """The file's own path: a PostgreSQL ledger path without its ingester (host and stage)."""
    if path.startswith("/") or ":/" not in path:
        return path
    return path[path.rindex(":/") + 1 :]


def _tails(path: str) -> list[str]:
    """The tails of a ledger path's own file path, shortest first: its name, its folder and name,
    … up to every part but the leading ``/``."""
    parts = PurePosixPath(_local(path)).parts
    parts = parts[1:] if parts[:1] == ("/",) else parts
    return ["/".join(parts[-n:]) for n in range(1, len(parts) + 1)] or ["/"]  # an ingest root of "/" itself


def _hidden(path: str, shown: str) -> str:
    """The folders of ``path`` that its shown path (its host first, or not) leaves out, ending in
    ``/`` (``/srv/jobs/``)."""
    local = _local(path)
    tail = shown if local.endswith("/" + shown) else shown[len(_ingester(path)) :]
    return local[: len(local) - len(tail)]


# An absolute path in a stored message: a '/' that begins a word (not after a letter, digit, '.',
# ':', '~', '-' or '/': no ratio, URL or relative path), up to a blank or a quote. A path holding a
# blank is cut there; the words after it are relative.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:~/-])/[^\s'\"]+")
# The messages of ingest/formats/ that name a path other than the file's, by that path (whole, even
# holding blanks or quotes); the first names the link's target and the ingest root, both dropped
OUTSIDE_ROOT = re.compile(r"^a symbolic link to .*, outside the ingest root .*$", re.S)
OUTSIDE_ROOT_SHOWN = "a symbolic link leading outside the ingest root"
NAMED_PATHS = (
    re.compile(r"^a symbolic link to (?P<path>/.*), which does not exist: not read$", re.S),
    re.compile(r"^job id .* belongs to the folder (?P<path>/.*): a second folder can't claim it", re.S),
    re.compile(r"^job id .* belongs to another folder, (?P<path>/.*): not read$", re.S),
)


def public_text(text: str | None, path: str | None = None, hidden: str = "") -> str | None:
    """A stored message (a file's error, a run's) with no server path in it, for the API: the file's
    own ``path`` as its shown path, a path below the folders its shown path leaves out (``hidden``)
    from there on, any other as ``…/<its name>``; a link leading outside the ingest root says so,
    naming neither."""
    if not text:
        return text
    if OUTSIDE_ROOT.match(text):
        return OUTSIDE_ROOT_SHOWN
    if path:
        text = text.replace(path, path[len(hidden) :])
    for pattern in NAMED_PATHS:
        found = pattern.match(text)
        if found:
            start, end = found.span("path")
            return text[:start] + _public_path(found["path"], hidden) + text[end:]
    return ABSOLUTE_PATH.sub(lambda m: _public_word(m[0], hidden), text)


def _public_word(word: str, hidden: str) -> str:
    """A path found in a message, with the punctuation after it (``/a/b:``) kept after."""
    path = word.rstrip(".,:;)")
    return _public_path(path, hidden) + word[len(path) :]


def _public_path(path: str, hidden: str) -> str:
    """A server path as the API shows it: below ``hidden`` (the folders a file's shown path leaves
    out, never ``/`` alone), from there on; else ``…/<its name>``."""
    if len(hidden) > 1 and path.startswith(hidden) and len(path) > len(hidden):
        return path[len(hidden) :]
    return "…/" + PurePosixPath(path).name


def problem_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """How many files are ``failed`` and ``pending`` now (every outcome, zeros included): the
    count of ``problem_files`` by outcome."""
    counts = dict.fromkeys(PROBLEM_OUTCOMES, 0)
    counts.update({outcome: files for outcome, files in con.execute(PROBLEM_COUNTS).fetchall()})
    return counts


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
