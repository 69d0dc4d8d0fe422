"""``checkpoint-<step>/`` folders: a checkpoint of the job whose folder holds them, even without files read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runlytics.ingest.discover import JobFolder
from runlytics.warehouse import db, results

from .base import Context

KIND = "checkpoint_folder"

# Checkpoint folders of every job folder seen, for jobs the warehouse knows.
FOLDERS_TABLE = "CREATE OR REPLACE TEMP TABLE seen_folders (source_dir VARCHAR, step BIGINT, path VARCHAR)"
INSERT_FOLDERS = "INSERT INTO seen_folders SELECT source_dir, step, path FROM folder_rows"
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
        source_dirs: list[str] = []
        steps: list[int] = []
        paths: list[str] = []
        for j in jobs:
            if j.checkpoints and j.name_is_utf8 and j.path not in ctx.conflicts:
                folder = str(j.path)
                for step, name in j.checkpoints.items():
                    source_dirs.append(folder)
                    steps.append(step)
                    paths.append(os.path.join(folder, name))
        if not steps:
            return
        ctx.con.execute(FOLDERS_TABLE)
        folder_rows = {  # noqa: F841 - read by DuckDB's replacement scan, by name (list parameters cost more)
            "source_dir": np.array(source_dirs, dtype=object),
            "step": np.array(steps, dtype=np.int64),
            "path": np.array(paths, dtype=object),
        }
        ctx.con.execute(INSERT_FOLDERS)
        with db.atomic(ctx.con):
            changed = {job_id for (job_id,) in ctx.con.execute(ADD_FOLDER_CHECKPOINTS).fetchall()}
            results.enqueue(ctx.con, changed)
        ctx.summary.job_ids |= changed
