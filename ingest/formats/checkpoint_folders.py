"""``checkpoint-<step>/`` folders: a checkpoint of the job whose folder holds them, even without files read."""

from __future__ import annotations

from pathlib import Path

from runlytics.ingest.discover import JobFolder
from runlytics.warehouse import db, results

from .base import Context

KIND = "checkpoint_folder"

# Checkpoint folders of every job folder seen, for jobs the warehouse knows.
FOLDERS_TABLE = "CREATE OR REPLACE TEMP TABLE seen_folders (source_dir VARCHAR, step BIGINT, path VARCHAR)"
INSERT_FOLDERS = "INSERT INTO seen_folders SELECT unnest($source_dir), unnest($step), unnest($path)"
ADD_FOLDER_CHECKPOINTS = """
INSERT INTO checkpoints (job_id, step, path, saved_at, eval_loss, source)
SELECT DISTINCT j.job_id, f.step, f.path, NULL, NULL, 'folder'
FROM seen_folders f
JOIN jobs j ON j.source_dir = f.source_dir
ON CONFLICT (job_id, step) DO NOTHING
RETURNING job_id
"""


class CheckpointFolderFormat:
    """Adds a checkpoint for each folder not yet known; reads no file (so no ledger rows)."""

    kind = KIND

    def files(self, job: JobFolder) -> list[Path]:
        return []

    def prefetch(self, jobs: list[JobFolder], max_file_bytes: int) -> None:
        return None

    def ingest(self, ctx: Context, jobs: list[JobFolder]) -> None:
        rows = [
            (str(j.path), step, str(p))
            for j in jobs
            if j.name_is_utf8 and j.path not in ctx.conflicts
            for step, p in j.checkpoints.items()
        ]
        if not rows:
            return
        ctx.con.execute(FOLDERS_TABLE)
        source_dirs, steps, paths = (list(column) for column in zip(*rows, strict=True))
        ctx.con.execute(INSERT_FOLDERS, {"source_dir": source_dirs, "step": steps, "path": paths})
        with db.atomic(ctx.con):
            changed = {job_id for (job_id,) in ctx.con.execute(ADD_FOLDER_CHECKPOINTS).fetchall()}
            results.enqueue(ctx.con, changed)
        ctx.summary.job_ids |= changed
