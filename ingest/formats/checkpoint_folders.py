"""``checkpoint-<step>/`` folders: a checkpoint of the job whose folder holds them, even without files read.

This reader also reports what discovery could not read (``JobFolder.problems``): a folder that
can't be listed or searched, a ``checkpoint-<step>/`` whose step is out of range. Each is a
`failed` (to_retry) entry of the run, in the ledger as ``kind = 'folder'``, named every run while
it is so; its ledger row goes once the folder can be read (or is gone).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runlytics.ingest import trainer_state
from runlytics.ingest.discover import JobFolder, shown
from runlytics.warehouse import db, results

from .base import NO_STAT, Candidate, Context, Rejection, not_ingested

KIND = "checkpoint_folder"
FOLDER_KIND = "folder"  # the ledger's kind of a folder discovery named as a problem

FOLDER_PROBLEMS = "SELECT path FROM ingest_files WHERE kind = 'folder'"
FORGET_FOLDER = "DELETE FROM ingest_files WHERE kind = 'folder' AND path = $path"

# Checkpoint folders of every job folder seen, for jobs the warehouse knows. A checkpoint known
# without a path (a progress.json `checkpoints` item naming none) takes its folder's: the same path
# whichever was read first (docs/ingest.md, "Checkpoints").
FOLDERS_TABLE = "CREATE OR REPLACE TEMP TABLE seen_folders (source_dir VARCHAR, step BIGINT, path VARCHAR)"
INSERT_FOLDERS = "INSERT INTO seen_folders SELECT source_dir, step, path FROM folder_rows"
ADD_FOLDER_CHECKPOINTS = """
INSERT INTO checkpoints (job_id, step, path, saved_at, eval_loss, source)
SELECT DISTINCT j.job_id, f.step, f.path, NULL, NULL, 'folder'
FROM seen_folders f
JOIN jobs j ON j.source_dir = f.source_dir
ON CONFLICT (job_id, step) DO UPDATE SET path = excluded.path
WHERE checkpoints.path IS NULL
   OR (checkpoints.source = 'trainer_state' AND NOT {own})  -- a copy's path (last-checkpoint/): the folder's first
RETURNING job_id
""".format(own=trainer_state.OWN_FOLDER.format(path="checkpoints.path", step="checkpoints.step"))


class CheckpointFolderFormat:
    """Adds a checkpoint for each folder not yet known; reads no file. The folders discovery could
    not list or read are named as ledger rows of kind 'folder' (and forgotten once readable)."""

    kind = KIND

    def files(self, job: JobFolder) -> list[Path]:
        return []

    def prefetch(self, jobs: list[JobFolder], max_file_bytes: int) -> None:
        return None

    def ingest(self, ctx: Context, jobs: list[JobFolder]) -> None:
        _report_problems(ctx, jobs)
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
        folder_rows = {  # numpy arrays: list parameters cost more
            "source_dir": np.array(source_dirs, dtype=object),
            "step": np.array(steps, dtype=np.int64),
            "path": np.array(paths, dtype=object),
        }
        with db.registered(ctx.con, {"folder_rows": folder_rows}):
            ctx.con.execute(INSERT_FOLDERS)
        with db.atomic(ctx.con):
            changed = {job_id for (job_id,) in ctx.con.execute(ADD_FOLDER_CHECKPOINTS).fetchall()}
            results.enqueue(ctx.con, changed)
        ctx.summary.job_ids |= changed


def _report_problems(ctx: Context, jobs: list[JobFolder]) -> None:
    """Each folder discovery could not read (or refused) as a `failed` (to_retry) entry; the ledger
    rows of folders named before that can be read now, or are gone, are dropped."""
    named: set[str] = set()
    for job in jobs:
        for path, reason in job.problems:
            if shown(path) in named:
                continue
            named.add(shown(path))
            not_ingested(ctx, Rejection(Candidate(path, job, NO_STAT), "failed", reason, retry=True), FOLDER_KIND)
    # the run's own roots, not its jobs' (a root left with no job folder is still looked at)
    roots = {str(root) for root in ctx.roots} | {str(job.root) for job in jobs if job.root is not None}
    for (path,) in ctx.con.execute(FOLDER_PROBLEMS).fetchall():
        if path in named or not any(_below(path, root) for root in roots):
            continue  # still a problem, or under a root this run did not walk
        if _readable(path):
            ctx.con.execute(FORGET_FOLDER, {"path": path})


def _below(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def _readable(path: str) -> bool:
    """The folder can be listed now, or is gone: nothing left to say about it."""
    try:
        with os.scandir(path):
            return True
    except FileNotFoundError:
        return True
    except OSError:
        return False
