"""The input formats ingest reads, one module each (see ``base.py`` for what a format provides).

``JOB_FORMATS`` are the formats found in job folders, read in this order (a trainer state's
job id comes from the progress file merged before it; trainers' own logs add points to the jobs
the others made, or make their own; checkpoint folders, last, attach to the jobs all of them made). GPU samples come
from the folders and logs named on the command line (``spool``, ``nvidia_smi``). A new format is
a new module here and one line in this list; a trainer's own log is a ``tool_log.ToolLogParser``
wrapped in a ``ToolLogFormat``.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import JobFormat
from .checkpoint_folders import CheckpointFolderFormat
from .lightning_csv import LightningCsvParser
from .llamafactory import LlamaFactoryParser
from .mlflow_store import MlflowParser
from .progress import ProgressFormat
from .tensorboard import TensorBoardParser
from .tool_log import ToolLogFormat
from .trainer_state import TrainerStateFormat

JOB_FORMATS: tuple[Callable[[], JobFormat], ...] = (
    ProgressFormat,
    TrainerStateFormat,
    lambda: ToolLogFormat(TensorBoardParser()),
    lambda: ToolLogFormat(LightningCsvParser()),
    lambda: ToolLogFormat(MlflowParser()),
    lambda: ToolLogFormat(LlamaFactoryParser()),
    CheckpointFolderFormat,
)
