"""The input formats ingest reads, one module each (see ``base.py`` for what a format provides).

``JOB_FORMATS`` are the formats found in job folders, read in this order (a trainer state's
job id comes from the progress file merged before it; checkpoint folders attach to the jobs
both made). GPU samples come from the folders and logs named on the command line
(``spool``, ``nvidia_smi``). A new format is a new module here and one line in this list.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import JobFormat
from .checkpoint_folders import CheckpointFolderFormat
from .progress import ProgressFormat
from .trainer_state import TrainerStateFormat

JOB_FORMATS: tuple[Callable[[], JobFormat], ...] = (
    ProgressFormat,
    TrainerStateFormat,
    CheckpointFolderFormat,
)
