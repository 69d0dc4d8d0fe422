"""One ingest run, phase by phase: discover, read and merge each format, refresh, publish.

Each format's reader (``ingest/formats/``) reads what changed since the ledger's record of its
files and merges it in transactions of its own, so a run killed at any moment leaves the
warehouse as its last committed transaction left it, and the next run reads the rest. Runs are
serialised by a lock file beside the warehouse.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runlytics.warehouse import db, hotfile, ingest_status, migrate, parts, results, retention, snapshots
from runlytics.warehouse.lock import run_lock

from . import journal, ledger, quick, unknown_jobs
from .discover import JobFolder, discover, root_folders
from .formats import JOB_FORMATS, nvidia_smi, spool
from .formats.base import DEFAULT_MAX_FILE_MB, Context, JobFormat, ProgressCallback
from .formats.nvidia_smi import CsvImport
from .sql import install_macros
from .summary import Summary

if TYPE_CHECKING:
    from collections.abc import Iterator

    import duckdb


def ingest(
    db_path: Path,
    roots: list[Path],
    *,
    spools: list[Path] | None = None,
    csv_imports: list[CsvImport] | None = None,
    wait: float = db.DEFAULT_WAIT_SECONDS,
    on_progress: ProgressCallback | None = None,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    keep_raw_days: int = retention.DEFAULT_KEEP_DAYS,
    archive: Path | None = None,
    stage: bool = False,
) -> Summary:
    """Ingest every job folder under ``roots``, GPU sample spools and nvidia-smi logs; raw GPU
    samples of days more than ``keep_raw_days`` old are dropped (0: kept), or moved to ``archive``.

    ``stage``: the warehouse is the stage of an ingest into PostgreSQL (ingest/postgres.py): the
    jobs the run changes are queued in ``publish_queue`` for the publish that follows, and no
    snapshot is published (nothing reads a stage's snapshots; copying the file costs)."""
    started = time.monotonic()
    summary = Summary()
    # discover
    jobs = discover(roots)
    spool_files = spool.files(spools or [])
    csv_imports = csv_imports or []
    readers = [make() for make in JOB_FORMATS]
    if on_progress is not None:
        found = sum(len(reader.files(job)) for reader in readers for job in jobs) + len(spool_files) + len(csv_imports)
        on_progress("discover", found, found)
    nvidia_smi.check(csv_imports)
    state = None if spool_files or csv_imports else quick.state(jobs)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if not 0 < max_file_mb < math.inf:  # the command refuses it as a usage error first
        raise ValueError(f"max_file_mb must be a number of MiB above 0, not {max_file_mb}")
    max_file_bytes = int(max_file_mb * 2**20)
    db.check_file(db_path)  # a file that is no warehouse: refused before its lock file is created beside it
    # a full disk stops the run in one line wherever a write is refused: the lock file's pid, a
    # commit, a Parquet part, the publish
    with db.refused_writes(f"ingest of {db_path}", RETRIED), db.private_files(), run_lock(db_path, wait=wait):
        if not db_path.exists():  # a new warehouse has read nothing yet: read while migrations build it
            for reader in readers:
                reader.prefetch(jobs, max_file_bytes)
        snapshots.check_folder(db_path)  # a publish that can't happen: refused before any commit
        hotfile.remove_leftovers(db_path)
        inputs = Inputs(jobs, spool_files, csv_imports, keep_raw_days, archive, stage, tuple(root_folders(roots)))
        # owed: an earlier run committed and never published. _read_and_merge marks the
        # warehouse unpublished once it has opened and checked it, before the first commit
        # (migrations included): a kill from there to the publish leaves the marker, and the
        # next run publishes even when it finds nothing new (a stage never publishes: no marker).
        owed = not stage and snapshots.unpublished(db_path).exists()
        run_id, stored, sparse = _read_and_merge(
            db_path, wait, readers, inputs, summary, on_progress, max_file_bytes, started
        )
        # publish
        changed = stored or summary.ingested or summary.pending or summary.failed or summary.job_ids
        if on_progress is not None:
            on_progress("publish", 0, 1)
        if sparse:  # mostly free blocks (rows sealed away): a smaller file to copy from now on
            hotfile.rebuild(db_path)
        if not stage and (changed or sparse or owed or snapshots.age(db_path) > snapshots.REFRESH_SECONDS):
            snapshots.publish(db_path)  # removes the marker
        elif not stage:
            snapshots.clear_unpublished(db_path)  # nothing new for readers, none owed
        if on_progress is not None:
            on_progress("publish", 1, 1)
        # a log whose last line waits: no state, so that the next run takes the full road and reads it
        state = None if summary.waiting else state
        journal.write_heartbeat(
            db_path, run_id, summary.as_dict(), state=state, warehouse=quick.warehouse_stat(db_path)
        )
    summary.seconds = time.monotonic() - started
    return summary


# what a run stopped by a refused write adds to its message (db.refused_writes)
RETRIED = "; what this run could not store is read again then"


@dataclass(frozen=True)
class Inputs:
    """What a run reads: the job folders found, the spool files and nvidia-smi logs named."""

    jobs: list[JobFolder]
    spool_files: list[Path]
    csv_imports: list[CsvImport]
    keep_raw_days: int = retention.DEFAULT_KEEP_DAYS
    archive: Path | None = None
    stage: bool = False
    roots: tuple[Path, ...] = ()  # the folders discovery walked (discover.root_folders)


# a stage owes PostgreSQL the jobs queued for a refresh: queued in their own transaction before the
# refresh empties refresh_queue, so that a kill between loses none (revision 0022)
QUEUE_PUBLISH = "INSERT INTO publish_queue SELECT job_id FROM refresh_queue ON CONFLICT DO NOTHING"


def _read_and_merge(
    db_path: Path,
    wait: float,
    readers: list[JobFormat],
    inputs: Inputs,
    summary: Summary,
    on_progress: ProgressCallback | None,
    max_file_bytes: int,
    started: float,
) -> tuple[int, bool, bool]:
    """Read, stage and merge every format, refresh the derived tables, record the run; its id, and
    whether sealing, compaction or retention changed the stored samples' layout (or records of
    problem files gone were dropped), and whether the file is mostly free blocks."""
    with _current_connection(db_path, wait, mark=not inputs.stage) as con:
        run_id = journal.start(con)
        ctx = Context(con, summary, on_progress, max_file_bytes=max_file_bytes, roots=inputs.roots)
        try:
            install_macros(con)
            stored = _seal(con)
            retention.open_window(con, parts.GPU_SAMPLES, inputs.keep_raw_days)
            # the failed and pending files gone since under the roots walked: no longer problems,
            # which readers list from the snapshot (one to publish)
            stored = ledger.forget_vanished(con, inputs.roots, inputs.jobs) > 0 or stored
            # read, stage and merge, format by format
            for reader in readers:
                reader.ingest(ctx, inputs.jobs)
            spool.ingest(ctx, inputs.spool_files)
            nvidia_smi.ingest(ctx, inputs.csv_imports)
            stored = _compact_and_prune(con, inputs) or stored
            # refresh the derived tables of the jobs queued by this run and any killed before it,
            # after the prune: the stored results are then what the views give from the samples
            # kept (gpu_idle at a gpu_idle.utilization other than 10 reads the raw ones: audit 18)
            if inputs.stage:
                con.execute(QUEUE_PUBLISH)
            results.refresh_queued(con)
            summary.listed_warnings = ingest_status.run_warnings(con, run_id, Summary.MAX_LISTED_WARNINGS)
            unknown_jobs.warn(con, summary)
            summary.seconds = time.monotonic() - started
            journal.finish(con, run_id, summary.as_dict())
            con.execute("CHECKPOINT")
            sparse = hotfile.is_sparse(con, db_path)
        except Exception as error:
            summary.seconds = time.monotonic() - started
            message = f"{type(error).__name__}: {_first_line(error)}"
            # the record of a failed run must not hide why it failed (a full disk fails it too)
            with contextlib.suppress(Exception):
                journal.finish(con, run_id, summary.as_dict(), error=message)
            with contextlib.suppress(OSError):
                journal.write_heartbeat(db_path, run_id, summary.as_dict(), error=message)
            raise
    return run_id, stored, sparse


@contextlib.contextmanager
def _current_connection(db_path: Path, wait: float, *, mark: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse, created or migrated first when not at the head revision: a warehouse at the
    head is opened once, not once to check and once to write (opening is most of a run that finds
    nothing new). ``mark``: once the warehouse is opened and its revision checked (a file DuckDB
    refuses, one a newer runlytics wrote: no marker), mark it unpublished before anything commits."""
    if db_path.exists():
        con = db.connect(db_path, wait=wait)
        try:
            current = migrate.current_revision(con) == migrate.HEAD_REVISION
            if current:
                if mark:
                    snapshots.mark_unpublished(db_path)
                yield con
        finally:
            con.close()
        if current:
            return
    migrate.ensure_current(db_path, wait=wait, locked=True, mark=mark)
    with db.connection(db_path, wait=wait) as con:
        if mark:
            snapshots.mark_unpublished(db_path)  # made by ensure_current unless it had nothing to do
        yield con


def _seal(con: duckdb.DuckDBPyConnection) -> bool:
    """Before anything is read: delete the part files of killed runs and the retired files no
    kept snapshot can name, then seal the hot samples of past hours into parts."""
    table = parts.GPU_SAMPLES
    parts.remove_orphans(con)
    with db.atomic(con):
        parts.delete_retired(con)
        moved = parts.ensure_view(con, table)
    with db.atomic(con):
        return parts.seal(con, table, parts.cutoff(con, table)) > 0 or moved


def _compact_and_prune(con: duckdb.DuckDBPyConnection, inputs: Inputs) -> bool:
    """A bounded share of compaction, then retention: each its own transaction."""
    table = parts.GPU_SAMPLES
    with db.atomic(con):
        compacted = parts.compact(con, table, parts.cutoff(con, table))
    with db.atomic(con):
        pruned = retention.prune(con, table, inputs.keep_raw_days, inputs.archive)
    return compacted > 0 or pruned > 0


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
