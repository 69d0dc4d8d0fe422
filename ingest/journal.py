"""The record of ingest runs (table ``ingest_runs``): started, then completed with its counts."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runlytics.warehouse import sidefiles

if TYPE_CHECKING:
    import duckdb

# The runs still 'running' when a run starts (it holds the ingest lock): killed (kill -9, a power
# cut) before they ended; their rows say so instead of 'running' for ever (audit 25)
INTERRUPTED = "UPDATE ingest_runs SET outcome = 'interrupted' WHERE outcome = 'running'"
START = """
INSERT INTO ingest_runs (run_id, started_at, outcome, host, pid)
VALUES ($run_id, now()::TIMESTAMP, 'running', $host, $pid)
"""

FINISH = """
UPDATE ingest_runs SET
    ended_at = now()::TIMESTAMP, outcome = $outcome, files_seen = $files_seen, ingested = $ingested,
    unchanged = $unchanged, pending = $pending, failed = $failed, rows = $rows, warnings = $warnings,
    jobs_changed = $jobs_changed, seconds = $seconds, error = $error
WHERE run_id = $run_id
"""


def start(con: duckdb.DuckDBPyConnection) -> int:
    """Record a run as started (committed at once, so a killed run leaves its trace), and the runs
    killed before they ended as 'interrupted'."""
    run_id = time.time_ns()
    con.execute(INTERRUPTED)
    con.execute(START, {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid()})
    return run_id


def finish(con: duckdb.DuckDBPyConnection, run_id: int, summary: dict[str, Any], error: str | None = None) -> None:
    """Complete the run's record: 'ok', 'files_failed' (some files could not be read) or 'error'."""
    outcome = "error" if error else ("files_failed" if summary.get("failed") else "ok")
    params = {k: summary.get(k) for k in (
        "files_seen", "ingested", "unchanged", "pending", "failed", "rows", "warnings", "jobs_changed", "seconds",
    )}  # fmt: skip
    con.execute(FINISH, {**params, "run_id": run_id, "outcome": outcome, "error": error})


class HeartbeatUnreadable(Exception):
    """The heartbeat file is there but can't be read by this user (its mode, a folder in its
    place), or holds no record: the last run is unknown, which is not "no run yet"."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} can't be read: {reason}")
        self.path = path
        self.reason = reason


def write_heartbeat(
    db_path: Path,
    run_id: int | None,
    summary: dict[str, Any],
    error: str | None = None,
    *,
    state: str | None = None,
    warehouse: list[int] | None = None,
) -> None:
    """The last run, in a small file readers can check without opening the warehouse.

    ``run_id`` is the run's row in ``ingest_runs``; None for a run with nothing to do (quick.py),
    which is in none: ``recorded_run_id`` then still names the last run that is, so that the
    record never pairs one run's id with another run's outcome and counts.
    It keeps the time of the last successful run across failed ones (for staleness checks).
    ``state`` and ``warehouse`` (the digest of the files the run found, and the warehouse
    file's size and mtime after it) let the next run see that it has nothing to do (quick.py).
    """
    path = sidefiles.heartbeat(db_path)
    previous = previous_heartbeat(db_path) or {}
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    ok = error is None
    record = {
        "run_id": run_id,
        # a heartbeat of before session 20 named the last recorded run as run_id even after a quick run
        "recorded_run_id": run_id if run_id is not None else previous.get("recorded_run_id", previous.get("run_id")),
        "ended_at": now,
        "outcome": "error" if error else ("files_failed" if summary.get("failed") else "ok"),
        "error": error,
        "summary": {k: v for k, v in summary.items() if k != "problems"},
        "last_success_at": now if ok else previous.get("last_success_at"),
        "state": state,
        "warehouse": warehouse,
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)
    except OSError:  # a full disk, say: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise


def read_heartbeat(db_path: Path) -> dict[str, Any] | None:
    """The last run's record; None when there is no heartbeat file (no run yet). Raises
    ``HeartbeatUnreadable`` when the file is there but can't be read (another user's file of mode
    0600) or is no JSON object: a reader must not take that for "never ingested"."""
    path = sidefiles.heartbeat(db_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise HeartbeatUnreadable(path, (error.strerror or type(error).__name__).lower()) from None
    try:
        record = json.loads(text)
    except ValueError:  # a UnicodeDecodeError too
        raise HeartbeatUnreadable(path, "not JSON") from None
    if not isinstance(record, dict):
        raise HeartbeatUnreadable(path, "not a JSON object")
    return record


def previous_heartbeat(db_path: Path) -> dict[str, Any] | None:
    """The record the ingest itself goes on from (quick.py's shortcut, the next heartbeat's last
    success): an unreadable one counts as none, and the next run's heartbeat replaces it."""
    try:
        return read_heartbeat(db_path)
    except HeartbeatUnreadable:
        return None
