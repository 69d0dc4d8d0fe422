"""Finding job folders under the roots given to ``runlytics ingest``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
PROGRESS = "progress.json"
TRAINER_STATE = "trainer_state.json"


@dataclass
class JobFolder:
    """A job's directory: its progress.json (if any) and checkpoint folders."""

    path: Path
    progress: Path | None = None
    checkpoints: dict[int, Path] = field(default_factory=dict)
    trainer_states: list[Path] = field(default_factory=list)
    root: Path | None = None  # the (resolved) root it was found under: its files must not leave it

    @property
    def name_is_utf8(self) -> bool:
        """False for a folder whose path holds bytes that are not UTF-8 (it can't be stored as text)."""
        return is_utf8(self.path)


def is_utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: Path) -> str:
    """A path as text that can be stored and printed (bytes that are not UTF-8 replaced)."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def discover(roots: list[Path]) -> list[JobFolder]:
    """Every job folder under the roots, each once, in path order.

    A job folder holds a ``progress.json`` or a ``trainer_state.json``, directly or in a
    ``checkpoint-<step>/`` subfolder. A root may itself be a job folder or a progress.json.
    Job folders are not searched further down; hidden folders are skipped.
    """
    found: dict[Path, JobFolder] = {}
    for root in roots:
        root = root.resolve()
        if root.is_file():
            root = root.parent
        if not root.is_dir():
            raise FileNotFoundError(f"ingest root {root} is not a folder or a file")
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            job = _job_folder(here, dirnames, filenames)
            if job is not None:
                job.root = root
                found.setdefault(here, job)
                dirnames[:] = []
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return [found[p] for p in sorted(found)]


def _job_folder(here: Path, dirnames: list[str], filenames: list[str]) -> JobFolder | None:
    job = JobFolder(here)
    if PROGRESS in filenames:
        job.progress = here / PROGRESS
    if TRAINER_STATE in filenames:
        job.trainer_states.append(here / TRAINER_STATE)
    for name in sorted(dirnames):
        if name.startswith("."):
            continue
        match = CHECKPOINT_DIR.match(name)
        if match:
            job.checkpoints[int(match.group(1))] = here / name
        # a checkpoint-<step>/ folder, or another checkpoint copy such as last-checkpoint/
        state = here / name / TRAINER_STATE
        if (match or job.progress or TRAINER_STATE in filenames) and state.is_file():
            job.trainer_states.append(state)
    if job.progress is None and not job.trainer_states:
        return None
    if job.progress is None and TRAINER_STATE not in filenames and not job.checkpoints:
        return None
    return job
