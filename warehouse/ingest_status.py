"""Queries on the ingest's own health: its runs, and the files that keep failing."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import duckdb

from . import db, pages
from .pg_reader import is_postgres
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

# The ledger's paths that end with one of these tails, each a problem file's least shown path after
# its '/': those its shown path must be told apart from (``shown_paths``; a path that ends with a
# longer tail of the file ends with that one). One scan of the ledger and no path split per row (a
# problem file among 200,000 rows: ~3 ms). DuckDB's suffix compares bytes; PostgreSQL has no
# suffix, and types no unnest of a bound list without the cast
ALIKE = "SELECT f.path FROM ingest_files f, unnest(CAST($ends AS TEXT[])) AS e(tail) WHERE suffix(f.path, e.tail)"
PG_ALIKE = """
SELECT f.path FROM ingest_files f, unnest(CAST($ends AS TEXT[])) AS e(tail) WHERE right(f.path, length(e.tail)) = e.tail
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
    shown = _shown(con, [(row["path"], job_id) for row, job_id in zip(rows, job_ids, strict=True)])
    for row in rows:
        local = _split(row["path"])[2]
        prefix, tail = shown[row["path"]]
        row["path"] = prefix + tail
        row["error"] = public_text(row["error"], local, local[: len(local) - len(tail)])
    return rows


def shown_paths(con: duckdb.DuckDBPyConnection, files: list[tuple[str, str | None]]) -> dict[str, str]:
    """Each (ledger path, job id) as the API shows it: ``shown_path``, with as many folders above
    as it takes to tell it from every other path of the ledger (``ingest_files``): a file of
    ``team/run-1/`` beside one of ``other/run-1/`` is ``team/run-1/progress.json``, never the two
    alike. A path shows folders above its ingest root only where two roots hold the same path
    below them. The ledger keeps no root, so the root itself can't be the rule (docs/api.md). On
    PostgreSQL a path that only another ingester's path is alike to is told by its host
    (``gpu-07:run-42/progress.json``), or, alike only to a path of another stage of its host, by its
    host and its stage's file name (``gpu-07:a.duckdb:run-42/progress.json``; ``_stage_names``)."""
    return {path: prefix + tail for path, (prefix, tail) in _shown(con, files).items()}


def _shown(con: duckdb.DuckDBPyConnection, files: list[tuple[str, str | None]]) -> dict[str, tuple[str, str]]:
    """``shown_paths``, each path as what names its ingester (``''``, ``gpu-07:``, ``gpu-07:a.duckdb:``)
    and the tail of the file's own path shown."""
    if not files:
        return {}
    tails = {path: list(_tails(_split(path)[2])) for path, _ in files}
    least = {path: _least(tails[path], _split(path)[2], job_id) for path, job_id in files}
    ends = sorted({"/" + tails[path][depth - 1] for path, depth in least.items()})
    query = PG_ALIKE if is_postgres(con) else ALIKE
    ledger = {path for (path,) in con.execute(query, {"ends": ends}).fetchall()} | set(tails)
    # how many of those paths end with each tail of a problem file that it may show: of any ingester,
    # of its host, of its stage. A walk up a path stops at its first tail that is no problem file's
    # (they are suffix-closed), mostly its second: the scan chose the paths ending with a least tail
    wanted = {tail for path_tails in tails.values() for tail in path_tails}
    shown_tails = {tail for path, depth in least.items() for tail in tails[path][depth - 1 :]}
    alike: Counter[tuple[str, ...]] = Counter()
    for path in ledger:
        host, stage, local = _split(path)
        for tail in _tails(local):
            if tail in shown_tails:
                alike[(tail,)] += 1
                if host:
                    alike[tail, host] += 1
                    alike[tail, host, stage] += 1
            elif tail not in wanted:
                break
    names = _stage_names({_split(path)[:2] for path in ledger})
    shown = {}
    for path, depth in least.items():
        host, stage, _ = _split(path)
        told: list[tuple[str, tuple[str, ...]]] = [("", ())]  # what names the ingester, and the count's key
        if host:
            told.append((f"{host}:", (host,)))
            if (host, stage) in names:
                told.append((f"{host}:{names[host, stage]}:", (host, stage)))
        found = (
            (prefix, tail) for tail in tails[path][depth - 1 :] for prefix, key in told if alike[(tail, *key)] == 1
        )
        # else its whole path: a tail of another path of its stage (/a/x beside /m/a/x)
        shown[path] = next(found, (told[-1][0], tails[path][-1]))
    return shown


def _least(tails: list[str], local: str, job_id: str | None) -> int:
    """How many of a file's ``tails`` (shortest first) its least shown path (``shown_path``) spans."""
    return max(1, min(len(PurePosixPath(shown_path(local, job_id)).parts), len(tails)))


def shown_path(path: str, job_id: str | None) -> str:
    """The least of ``path`` the API shows: from its job's folder on when a folder above it is named
    as the job (a tool log's job id is its folder's path under the root), else its last folder and name."""
    marker = f"/{job_id}/" if job_id else None
    if marker and marker in path:
        return path[path.rindex(marker) + 1 :]
    return "/".join(PurePosixPath(path).parts[-2:])


def _split(path: str) -> tuple[str, str, str]:
    """A ledger path's host, stage and the file's own path: on PostgreSQL its ingester's host and
    stage's path come first (``gpu-07:/var/lib/stage.duckdb:/data/a/progress.json``, docs/postgresql.md);
    a path of this host's ledger has neither (``''``)."""
    if path.startswith("/") or ":/" not in path:
        return "", "", path
    host, _, rest = path.partition(":")
    cut = rest.rfind(":/")
    return (host, "", rest) if cut < 0 else (host, rest[:cut], rest[cut + 1 :])


def _tails(path: str) -> Iterator[str]:
    """The tails of a path, shortest first: its name, its folder and name, … up to every part but
    the leading ``/``."""
    end = len(path)
    while end > 0:
        end = path.rfind("/", 0, end)
        yield path[end + 1 :]


def _stage_names(stages: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The (host, stage path) of the hosts with several stages, each by its file's name, or with as
    many folders above it as it takes to tell it from the host's other stages (two ``stage.duckdb``)."""
    by_host: dict[str, list[str]] = {}
    for host, stage in stages:
        by_host.setdefault(host, []).append(stage)
    names = {}
    for host, paths in by_host.items():
        if host and len(paths) > 1:
            alike = Counter(tail for path in paths for tail in _tails(path))
            for path in paths:
                tails = list(_tails(path))
                names[host, path] = next((tail for tail in tails if alike[tail] == 1), tails[-1])
    return names


# An absolute path in a stored message: a '/' that begins a word (not after a letter, digit, '.',
# '~', '-' or '/': no ratio or relative path), or that follows a ':' but for a URL's '://' (DuckDB's
# `file:/srv/x.json`), or that follows a URL's '://' with no host (`file:///srv/x.json`), up to a
# blank or a quote. A path holding a blank is cut there; the words after it are relative.
ABSOLUTE_PATH = re.compile(r"(?:(?<![\w.:~/-])/|(?<=:)/(?!/)|(?<=://)/)[^\s'\"]+")
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
