"""One ingest run, phase by phase: discover, read and merge each format, refresh, publish.

Each format's reader (``ingest/formats/``) reads what changed since the ledger's record of its
files and merges it in transactions of its own, so a run killed at any moment leaves the
warehouse as its last committed transaction left it, and the next run reads the rest. Runs are
serialised by a lock file beside the warehouse.
"""

from __future__ import annotations

import time
from pathlib import Path

from runlytics.warehouse import db, migrate, results, snapshots
from runlytics.warehouse.lock import run_lock

from . import quick, runs
from .discover import discover
from .formats import JOB_FORMATS, nvidia_smi, spool
from .formats.base import DEFAULT_MAX_FILE_MB, Context, ProgressCallback
from .formats.nvidia_smi import CsvImport
from .sql import install_macros
from .summary import Summary


def ingest(
    db_path: Path,
    roots: list[Path],
    *,
    spools: list[Path] | None = None,
    csv_imports: list[CsvImport] | None = None,
    wait: float = db.DEFAULT_WAIT_SECONDS,
    on_progress: ProgressCallback | None = None,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
) -> Summary:
    """Ingest every job folder under ``roots``, GPU sample spools and nvidia-smi logs."""
    started = time.monotonic()
    summary = Summary()
    # discover
    jobs = discover(roots)
    spool_files = spool.files(spools or [])
    csv_imports = csv_imports or []
    nvidia_smi.check(csv_imports)
    state = None if spool_files or csv_imports else quick.state(jobs)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    readers = [make() for make in JOB_FORMATS]
    with run_lock(db_path, wait=wait):
        if not db_path.exists():  # a new warehouse has read nothing yet: read while migrations build it
            for reader in readers:
                reader.prefetch(jobs)
        migrate.ensure_current(db_path, wait=wait, locked=True)
        with db.connection(db_path, wait=wait) as con:
            run_id = runs.start(con)
            ctx = Context(con, summary, on_progress, max_file_bytes=int(max_file_mb * 2**20))
            try:
                install_macros(con)
                # read, stage and merge, format by format
                for reader in readers:
                    reader.ingest(ctx, jobs)
                spool.ingest(ctx, spool_files)
                nvidia_smi.ingest(ctx, csv_imports)
                # refresh the derived tables of the jobs that changed
                results.refresh(con, summary.job_ids)
            except Exception as error:
                summary.seconds = time.monotonic() - started
                message = f"{type(error).__name__}: {error}"
                runs.finish(con, run_id, summary.as_dict(), error=message)
                runs.write_heartbeat(db_path, run_id, summary.as_dict(), error=message)
                raise
            summary.seconds = time.monotonic() - started
            runs.finish(con, run_id, summary.as_dict())
            con.execute("CHECKPOINT")
        # publish
        changed = summary.ingested or summary.pending or summary.failed or summary.job_ids
        if changed or snapshots.age(db_path) > snapshots.REFRESH_SECONDS:
            snapshots.publish(db_path)
        runs.write_heartbeat(db_path, run_id, summary.as_dict(), state=state, warehouse=quick.warehouse_stat(db_path))
    summary.seconds = time.monotonic() - started
    return summary
