"""``runlytics ingest`` when nothing changed, told without opening the warehouse.

A cron run every minute mostly finds every file as the last run left it. The last complete
run writes into its heartbeat file a digest of what it found (every progress.json,
trainer_state.json and tool log with its size and mtime, an MLflow run's experiment meta.yaml too,
every checkpoint folder) and the warehouse file's size and mtime after it. A run that finds the
same digest, the warehouse untouched since, no file being written, no ``<db>.unpublished`` marker
(commits no snapshot holds) and a recent snapshot has nothing to read: it rewrites the heartbeat
and ends, without importing DuckDB
(whose import alone costs a third of a second here). Such a run is in the heartbeat only, not
in ``ingest_runs``: its ``run_id`` there is null, and ``recorded_run_id`` names the last run that
is. Runs with ``--spool`` or ``--nvidia-smi-csv`` always take the full road.

This module imports nothing that imports DuckDB.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from runlytics.warehouse import db, sidefiles, snapshots
from runlytics.warehouse.lock import IngestLocked, run_lock

from . import journal, ledger
from .discover import JobFolder, discover
from .summary import Summary


def state(jobs: list[JobFolder]) -> str | None:
    """A digest of the job folders' files; None when one is being written or can't be read."""
    digest = hashlib.sha256()
    now = time.time()
    for job in jobs:
        digest.update(os.fsencode(job.path) + b"\0")
        for path in (job.progress, *job.trainer_states, *job.tool_paths()):
            if path is None:
                continue
            name = os.fsencode(path)
            try:
                st = os.stat(name)
            except OSError:
                return None
            if ledger.is_fresh(st.st_mtime_ns, now):  # the full road reads fresh files again
                return None
            digest.update(name + b"\0%d\0%d\0" % (st.st_size, st.st_mtime_ns))
        for path in job.watched().values():  # an MLflow run's experiment meta.yaml: there or not
            name = os.fsencode(path)
            try:
                st = os.stat(name)
            except FileNotFoundError:
                digest.update(name + b"\0absent\0")
                continue
            except OSError:
                return None
            if ledger.is_fresh(st.st_mtime_ns, now):
                return None
            digest.update(name + b"\0%d\0%d\0" % (st.st_size, st.st_mtime_ns))
        for step in sorted(job.checkpoints):
            digest.update(b"checkpoint-%d\0" % step)
    return digest.hexdigest()


def warehouse_stat(db_path: Path) -> list[int] | None:
    """Size and mtime of the warehouse file and of its write-ahead log: a commit may change only
    the log (a run killed after committing facts still owes their refresh)."""
    try:
        st = os.stat(db_path)
    except OSError:
        return None
    try:
        wal = os.stat(sidefiles.wal(db_path))
        logged = [wal.st_size, wal.st_mtime_ns]
    except OSError:
        logged = [0, 0]
    return [st.st_size, st.st_mtime_ns, *logged]


def nothing_to_do(db_path: Path, roots: list[Path]) -> Summary | None:
    """The summary of a run that found nothing to read, or None when the full road must run."""
    started = time.monotonic()
    last = journal.previous_heartbeat(db_path)
    if not last or last.get("outcome") not in ("ok", "files_failed") or not last.get("state"):
        return None
    counts = last.get("summary", {})
    if counts.get("pending") or counts.get("to_retry") or last.get("warehouse") != warehouse_stat(db_path):
        return None
    if snapshots.unpublished(db_path).exists():  # a run committed and was killed before publishing
        return None
    if snapshots.age(db_path) > snapshots.REFRESH_SECONDS:  # the full road publishes a fresh one
        return None
    jobs = discover(roots)
    if state(jobs) != last["state"]:
        return None
    seen = sum(job.progress is not None for job in jobs) + sum(
        len(job.trainer_states) + len(job.tool_paths()) for job in jobs
    )
    summary = Summary(files_seen=seen, unchanged=seen)
    try:
        with run_lock(db_path, wait=0):
            if journal.previous_heartbeat(db_path) != last:  # another run ended meanwhile
                return None
            # a folder it can't write in, a full disk: one line, exit 3, as the full road says them
            snapshots.check_folder(db_path)
            summary.seconds = time.monotonic() - started
            # in no ingest_runs row: no run id (the heartbeat keeps the last recorded run's apart)
            with db.refused_writes(f"ingest of {db_path}"):
                journal.write_heartbeat(
                    db_path, None, summary.as_dict(), state=last["state"], warehouse=last["warehouse"]
                )
    except IngestLocked:  # a run is going on: the full road waits for it
        return None
    return summary
