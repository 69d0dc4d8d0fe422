"""Finding job folders under the roots given to ``runlytics ingest``.

Two kinds of job folder: a folder holding ``progress.json`` or a Hugging Face
``trainer_state.json`` (its job id comes from those files), and the run folder of a training
tool's own logs (TensorBoard event files, Lightning ``metrics.csv``, an MLflow file-store run,
LLaMA-Factory ``trainer_log.jsonl``), whose job id is its path relative to the root.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_DIR = re.compile(r"^checkpoint-([0-9]+)$")  # ASCII digits only (\d takes any script's)
# The largest step a checkpoint-<step>/ folder may name: progress.json's bound on steps (10^18,
# ingest/progress.py, whose SQL writes it as the integer 1000000000000000000, and the C reader's
# MAX_WHOLE), well inside BIGINT; the one bound
# of every whole number read in Python (trainer_state.MAX_WHOLE). A folder naming a larger one is
# named as a problem.
MAX_STEP = 10**18
# A checkpoint copy named for what it is, not for its step: ``last-checkpoint/`` (the folder
# push_to_hub's hub_strategy="checkpoint" writes), best/final/latest variants, ``checkpoint/``.
# Holding a trainer state, it makes its parent a job folder even when the parent holds nothing
# else, unless another folder below the parent is a job folder (a sweep's trials beside its
# best-checkpoint/: ``_walk``; docs/ingest.md). Only names that say "checkpoint": any subfolder
# would make a folder of runs (a jobs root holding run1/trainer_state.json) one job.
CHECKPOINT_COPY = re.compile(
    r"^(?:(?:last|latest|best|final)[-_]?checkpoint|checkpoint(?:[-_]?(?:last|latest|best|final))?)$", re.I
)
PROGRESS = "progress.json"
TRAINER_STATE = "trainer_state.json"

# Tool logs (docs/ingest.md, "Trainers' own logs"): the kinds of ``JobFolder.tool_files``
TENSORBOARD = "tensorboard"
LIGHTNING_CSV = "lightning_csv"
MLFLOW = "mlflow"
LLAMAFACTORY = "llamafactory"
TOOL_KINDS = (TENSORBOARD, LIGHTNING_CSV, MLFLOW, LLAMAFACTORY)

EVENT_FILE_PREFIX = "events.out.tfevents."
# written by TensorFlow's profiler next to the real event file: a header record and nothing else
EVENT_FILE_SKIPPED_SUFFIXES = (".profile-empty",)
LIGHTNING_METRICS = "metrics.csv"
LIGHTNING_HPARAMS = "hparams.yaml"
LLAMAFACTORY_LOG = "trainer_log.jsonl"
MLFLOW_META = "meta.yaml"
MLFLOW_RUN_FOLDERS = ("metrics", "params", "tags")
HF_RUNS = "runs"  # a Hugging Face output folder's TensorBoard logging_dir: runs/<date>_<host>/
# torch's SummaryWriter.add_hparams writes its record into <logdir>/<time.time()>/ (a Hugging Face
# Trainer's TensorBoard callback does at its start): hparams, and the metrics it is given, no curve
HPARAMS_RUN = re.compile(r"\d{9,}\.\d+", re.ASCII)  # (a sweep's 0.1/ or 1.5/ is a run)


@dataclass
class JobFolder:
    """A job's directory: its progress.json (if any) and checkpoint folders."""

    path: Path
    progress: Path | None = None
    # step -> the name of its checkpoint-<step>/ folder in ``path`` (names, not Paths: a run over
    # many small jobs finds hundreds of thousands)
    checkpoints: dict[int, str] = field(default_factory=dict)
    trainer_states: list[Path] = field(default_factory=list)
    root: Path | None = None  # the (resolved) root it was found under: its files must not leave it
    # the files of trainers' own logs, by kind (TOOL_KINDS); event files sorted by name
    tool_files: dict[str, list[Path]] = field(default_factory=dict)
    # a run folder of tool logs only: its job id, the folder's path relative to the root
    tool_job_id: str | None = None
    # what discovery could not read in or below it, or refused: (path, reason), each reported as a
    # `failed` (to_retry) entry of the run (formats/checkpoint_folders.py). A folder that could not
    # be listed outside any job folder is a JobFolder of its own holding nothing else.
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def is_tool_run(self) -> bool:
        """A folder of tool logs only (no progress.json or trainer state names its job)."""
        return self.progress is None and not self.trainer_states and not self.unreadable

    @property
    def unreadable(self) -> bool:
        """A folder discovery could not list (outside any job folder): it stands for its problems only."""
        return self.progress is None and not self.trainer_states and not self.tool_files and bool(self.problems)

    def tool_paths(self) -> list[Path]:
        """Every tool-log file of the folder, all kinds."""
        return [path for kind in TOOL_KINDS for path in self.tool_files.get(kind, [])]

    def watched(self) -> dict[Path, Path]:
        """Files outside the folder that one of its files is read with, by that file: an MLflow run's
        ``meta.yaml`` is read with its experiment's, one folder up (below the root). Several runs
        share that one, so it has no ledger record of its own: a change to it reads the run's
        ``meta.yaml`` again (formats/tool_log.py), and the no-op shortcut's digest holds it."""
        if MLFLOW in self.tool_files and self.root is not None and self.path != self.root:
            return {self.path / MLFLOW_META: self.path.parent / MLFLOW_META}
        return {}

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
    ``checkpoint-<step>/`` subfolder or a checkpoint copy such as ``last-checkpoint/``
    (``CHECKPOINT_COPY``; a copy only when no other folder below is a job folder: ``_walk``);
    its tool logs (event files under ``runs/*/``, a
    ``trainer_log.jsonl`` or ``metrics.csv`` beside them) are its own. Such folders are not
    searched further down. Else a folder holding event files, ``metrics.csv`` or
    ``trainer_log.jsonl``, or an MLflow run folder, is a tool-log run; subfolders of a tool-log
    run (but not of an MLflow run) are searched too. A root may itself be a job folder or a
    file in one. Hidden folders are skipped.
    """
    found: dict[Path, JobFolder] = {}
    for root in root_folders(roots):
        _walk(root, root, found)
    return [found[p] for p in sorted(found)]


def root_folders(roots: list[Path]) -> list[Path]:
    """The folders ``discover`` walks for these roots (resolved; a job file's folder), each checked.

    A file is a root only when it is a file a job folder is found by (``is_job_file``): its
    folder is walked. Any other file is refused: its folder, walked whole, could be a home folder
    (docs/decisions.md, "A file given as an ingest root")."""
    folders: list[Path] = []
    for root in roots:
        try:
            root = root.resolve()
        except (RuntimeError, OSError) as error:  # RuntimeError: Python 3.11's "Symlink loop"
            raise FileNotFoundError(f"ingest root {shown(root)} can't be resolved: {error}") from None
        try:
            is_file = root.is_file()
            is_dir = root.parent.is_dir() if is_file else root.is_dir()
        except OSError as error:  # a root below a folder this user can't search
            raise FileNotFoundError(f"ingest root {root} can't be read: {error.strerror or error}") from None
        if is_file:
            if not is_job_file(root.name):
                raise FileNotFoundError(
                    f"ingest root {root} is a file, not a job's (progress.json, trainer_state.json or a "
                    "training tool's log): name a folder of jobs, a job folder or a job's file"
                )
            root = root.parent
        if not is_dir:
            raise FileNotFoundError(f"ingest root {root} is not a folder or a file")
        folders.append(root)
    return folders


def is_job_file(name: str) -> bool:
    """A file name a job folder is found by: a progress.json, a trainer state, a tool's log."""
    return name in (PROGRESS, TRAINER_STATE, LIGHTNING_METRICS, LLAMAFACTORY_LOG, MLFLOW_META) or is_event_file(name)


def _walk(top: Path, root: Path, found: dict[Path, JobFolder]) -> None:
    """The job folders and tool-log runs under ``top`` (``root`` or a folder below it) into ``found``.

    A folder that only its checkpoint copies make a job's (no progress.json, trainer state or
    checkpoint-<step>/ of its own) is decided once the walk below it is done: it is the job when
    every file found in and below it is read for it, i.e. no other folder below is a job folder
    and no tool-log run holds files other than its own (event files in it or under ``runs/*/``). So a
    sweep's ``trial-1/``, ``trial-2/`` beside its ``best-checkpoint/`` stay jobs, and nothing
    below such a folder goes unread; else it is walked as a folder that is no job (as before
    copies counted), and each copy is a job folder of its own."""
    pending: list[tuple[JobFolder, JobFolder | None]] = []  # such a folder, and the tool-log run it is else
    waiting: set[Path] = set()  # their paths
    blocked: set[Path] = set()  # those with a job folder below
    runs_below: dict[Path, list[Path]] = {}  # tool-log runs found below them

    def unlisted(error: OSError) -> None:  # a folder os.walk could not list: said, not skipped silently
        path = Path(error.filename) if error.filename is not None else top
        found.setdefault(path, JobFolder(path, root=root)).problems.append((path, _cannot("list folder", error)))

    for dirpath, dirnames, filenames in os.walk(top, onerror=unlisted):
        here = Path(dirpath)
        job = _job_folder(here, dirpath, dirnames, filenames)
        if job is not None:
            job.root = root
            _attach_tool_logs(job, dirnames, filenames)
            if job.progress is None and not job.checkpoints and TRAINER_STATE not in filenames:
                copies = {state.parent.name for state in job.trainer_states}
                dirnames[:] = [d for d in _searched(dirnames, filenames) if d not in copies]
                run = _tool_run(here, dirnames, filenames)
                if run is not None:
                    _name_run(run, here, root)
                pending.append((job, run))
                waiting.add(here)
                if run is not None and MLFLOW in run.tool_files:
                    dirnames[:] = []
                continue
            found.setdefault(here, job)
            blocked.update(_above(here, waiting))
            dirnames[:] = []
            continue
        dirnames[:] = _searched(dirnames, filenames)
        run = _tool_run(here, dirnames, filenames)
        if run is not None and here not in found:
            _name_run(run, here, root)
            found[here] = run
            for folder in _above(here, waiting):
                runs_below.setdefault(folder, []).append(here)
            if MLFLOW in run.tool_files:
                dirnames[:] = []
    for job, run in reversed(pending):  # the deepest first: a job among them blocks those above it
        own = set(job.tool_paths())
        runs = [found[path] for path in runs_below.get(job.path, []) if path in found] + ([run] if run else [])
        if job.path in blocked or any(not set(r.tool_paths()) <= own for r in runs):
            if run is not None:
                found.setdefault(job.path, run)
            for state in job.trainer_states:
                _walk(state.parent, root, found)
            continue
        found.setdefault(job.path, job)
        for below in runs_below.get(job.path, []):  # a job folder is not searched further down
            found.pop(below, None)
        blocked.update(_above(job.path, waiting))


def _searched(dirnames: list[str], filenames: list[str]) -> list[str]:
    """The subfolders the walk goes into: not hidden ones, nor a TensorBoard run's add_hparams
    folder (``HPARAMS_RUN``; a job of its own, with no rows, before session 26)."""
    events = any(is_event_file(name) for name in filenames)
    return sorted(d for d in dirnames if not d.startswith(".") and not (events and HPARAMS_RUN.fullmatch(d)))


def _above(path: Path, folders: set[Path]) -> list[Path]:
    """Those of ``folders`` that hold ``path`` (empty at once when there are none)."""
    return [parent for parent in path.parents if parent in folders] if folders else []


def _name_run(run: JobFolder, here: Path, root: Path) -> None:
    run.root = root
    rel = here.relative_to(root).as_posix()
    run.tool_job_id = rel if rel != "." else here.name


def _job_folder(here: Path, dirpath: str, dirnames: list[str], filenames: list[str]) -> JobFolder | None:
    # Paths as strings until the folder is known to be a job's: a tree of many small jobs has
    # hundreds of thousands of names, and a Path per name cost most of the discovery.
    # a folder named progress.json is listed among the folders: its job is then failed with the
    # reason ("not a regular file (a folder)"), as any other progress.json that can't be read
    has_progress = PROGRESS in filenames or PROGRESS in dirnames
    has_state = TRAINER_STATE in filenames
    checkpoints: dict[int, str] = {}
    numbered = False  # a checkpoint-<step>/ folder, its step in range or not
    problems: list[tuple[Path, str]] = []
    names = sorted(name for name in dirnames if not name.startswith("."))
    # the checkpoint-<step>/ folders holding a trainer state: with one, the folder is a job anyway
    with_state = {
        name
        for name in names
        if CHECKPOINT_DIR.match(name) and _is_entry(os.path.join(dirpath, name, TRAINER_STATE), problems)
    }
    job_anyway = has_progress or has_state or bool(with_state)
    states: list[str] = []
    copies = False  # a checkpoint copy (CHECKPOINT_COPY) holding a trainer state
    for name in names:
        match = CHECKPOINT_DIR.match(name)
        if match:
            numbered = True
            step = int(match.group(1))
            if step <= MAX_STEP:
                checkpoints[step] = name
            else:  # BIGINT can't hold it: no checkpoint at that step (its trainer state is still read)
                problems.append((here / name, f"checkpoint step {_short(match.group(1))} is out of range (0 to 10^18): "
                                 "the folder counts as a checkpoint only at its trainer state's "
                                 "global_step, if any"))  # fmt: skip
            if name in with_state:
                states.append(name)
            continue
        # (a copy matters only to a folder that is no job's without it)
        copy = (
            not (has_progress or has_state)
            and CHECKPOINT_COPY.match(name) is not None
            and _plain_copy(os.path.join(dirpath, name))
        )
        # a checkpoint copy such as last-checkpoint/, or, in a folder that is a job's anyway (its
        # progress.json, its own trainer state or a checkpoint-<step>/ one), any subfolder's trainer
        # state (a copy under another name: final_model/, tmp-checkpoint-500/)
        if (copy or job_anyway) and name != PROGRESS and _is_entry(os.path.join(dirpath, name, TRAINER_STATE),
                                                                    problems):  # fmt: skip
            states.append(name)
            copies = copies or copy
    if not has_progress and not has_state and not states:
        return None
    if not has_progress and not has_state and not numbered and not copies:
        return None
    job = JobFolder(here, problems=problems)
    if has_progress:
        job.progress = here / PROGRESS
    if has_state:
        job.trainer_states.append(here / TRAINER_STATE)
    job.trainer_states += [here / name / TRAINER_STATE for name in states]
    job.checkpoints = checkpoints
    return job


def _plain_copy(path: str) -> bool:
    """A folder named like a checkpoint copy that holds a copy's files only: nothing that would
    make it a job or tool-log folder of its own (a progress.json, checkpoint-<step>/ folders, a
    Trainer's runs/ or tool logs). A Trainer's output_dir named ``checkpoint/`` is such a folder
    of its own: taken for a copy, its parent would be the job and its checkpoints and logs unread."""
    try:
        names = os.listdir(path)
    except OSError:
        return False
    own = (PROGRESS, HF_RUNS, LIGHTNING_METRICS, LLAMAFACTORY_LOG, MLFLOW_META)
    return not any(n in own or CHECKPOINT_DIR.match(n) or is_event_file(n) for n in names)


def _is_entry(path: str, problems: list[tuple[Path, str]]) -> bool:
    """Whether a file of that name is there, for a path as text: a file, or anything else of that
    name but a folder (a FIFO, a link to nothing or a loop: its read refuses it then, with the
    reason, as the job's own files; until session 29 it was passed over unsaid). False where it is absent;
    False too where it can't be looked at (a folder this user may not search), the folder and the
    reason then in ``problems``: discovery never stops on a folder it can't read."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        if error.errno not in _ABSENT:
            problems.append((Path(os.path.dirname(path)), _cannot("read folder", error)))
        return False
    return not stat.S_ISDIR(mode)  # a folder of that name is no state (a link to one is said)


_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def _cannot(what: str, error: OSError) -> str:
    """``cannot list folder: permission denied`` from an OSError (the path is named beside it)."""
    reason = error.strerror.lower() if error.strerror else str(error)
    return f"cannot {what}: {reason}"


def _short(digits: str) -> str:
    """A number as written, shortened when long (a folder name may be 255 digits)."""
    return digits if len(digits) <= 30 else f"{digits[:12]}...({len(digits)} digits)"


def is_event_file(name: str) -> bool:
    """A TensorBoard event file's name (not the profiler's header-only ``.profile-empty``)."""
    return name.startswith(EVENT_FILE_PREFIX) and not name.endswith(EVENT_FILE_SKIPPED_SUFFIXES)


def _event_files(folder: Path, filenames: list[str]) -> list[Path]:
    return [folder / name for name in sorted(filenames) if is_event_file(name)]


def _by_name(paths: list[Path]) -> list[Path]:
    """Event files in the order their writers made them: by file name (it starts with the time)."""
    return sorted(paths, key=lambda p: (p.name, str(p)))


def _attach_tool_logs(job: JobFolder, dirnames: list[str], filenames: list[str]) -> None:
    """A progress/trainer-state job's own tool logs: event files in the folder and under runs/*/
    (a running Hugging Face job logs to them after its last checkpoint), its trainer_log.jsonl;
    the folder's MLflow run when it is one (a run folder with checkpoint-<step>/ states: read
    fresh, its metrics were dropped, read before its first state, kept)."""
    if _add_mlflow(job, dirnames, filenames):
        return
    events = _event_files(job.path, filenames)
    runs = job.path / HF_RUNS if HF_RUNS in dirnames else None  # listed: no stat (nor Path) for folders without
    if runs is not None and _is_dir(runs):
        try:
            subfolders = sorted(p for p in runs.iterdir() if _is_dir(p) and not p.name.startswith("."))
        except OSError as error:  # its event files can't be found: said, as any folder that can't be read
            job.problems.append((runs, _cannot("list folder", error)))
            subfolders = []
        for sub in subfolders:
            try:
                events += _event_files(sub, [p.name for p in sub.iterdir() if _is_regular(p)])
            except OSError as error:
                job.problems.append((sub, _cannot("list folder", error)))
                continue
    _add_logs(job, events, filenames, dirnames)


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _add_logs(job: JobFolder, events: list[Path], filenames: list[str], dirnames: list[str]) -> None:
    """The event files, Lightning CSV and LLaMA-Factory log of a folder, into ``job.tool_files``.

    A folder under a log's name (``metrics.csv/``) is listed as that log too: its reader fails it,
    "not a regular file (a folder)", as a folder named progress.json, instead of passing it by."""
    events = events + [job.path / name for name in dirnames if is_event_file(name)]
    if events:
        job.tool_files[TENSORBOARD] = _by_name(events)
    if LIGHTNING_METRICS in filenames or LIGHTNING_METRICS in dirnames:
        files = [job.path / LIGHTNING_METRICS]
        if LIGHTNING_HPARAMS in filenames or LIGHTNING_HPARAMS in dirnames:
            files.append(job.path / LIGHTNING_HPARAMS)
        job.tool_files[LIGHTNING_CSV] = files
    if LLAMAFACTORY_LOG in filenames or LLAMAFACTORY_LOG in dirnames:
        job.tool_files[LLAMAFACTORY] = [job.path / LLAMAFACTORY_LOG]


def _add_mlflow(job: JobFolder, dirnames: list[str], filenames: list[str]) -> bool:
    """Whether the folder is an MLflow run (``meta.yaml`` beside ``metrics/``, ``params/`` or
    ``tags/``): its files then into ``job.tool_files`` (a folder named meta.yaml: the run's meta.yaml
    that can't be read, failed by its reader)."""
    if not ((MLFLOW_META in filenames or MLFLOW_META in dirnames) and any(d in dirnames for d in MLFLOW_RUN_FOLDERS)):
        return False
    files = [job.path / MLFLOW_META]
    for sub in MLFLOW_RUN_FOLDERS:
        if sub in dirnames:
            files += sorted(_files_under(job.path / sub, job.problems))
    job.tool_files[MLFLOW] = files
    return True


def _tool_run(here: Path, dirnames: list[str], filenames: list[str]) -> JobFolder | None:
    """The tool-log run this folder is, or None."""
    run = JobFolder(here)
    if not _add_mlflow(run, dirnames, filenames):
        _add_logs(run, _event_files(here, filenames), filenames, dirnames)
        if not run.tool_files:
            return None
    # its checkpoint-<step>/ folders are its checkpoints (analytics.md's C), as a job folder's: a
    # LLaMA-Factory run caught mid-save (the trainer state comes last) or published with its
    # adapters; an MLflow run's too (session 23: they were left out)
    run.checkpoints = {
        int(m.group(1)): name
        for name in sorted(dirnames)
        if (m := CHECKPOINT_DIR.match(name)) is not None and int(m.group(1)) <= MAX_STEP
    }
    return run


def _files_under(folder: Path, problems: list[tuple[Path, str]]) -> list[Path]:
    """Every file under an MLflow run's metrics/, params/ or tags/ (a name with ``/`` is a subfolder);
    the folders that can't be listed into ``problems``. An empty subfolder is listed as a file (a
    metric, param or tag that is a folder): its reader fails it, "not a regular file (a folder)"."""
    found = []

    def unlisted(error: OSError) -> None:
        problems.append((Path(error.filename or folder), _cannot("list folder", error)))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlisted):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        names = [name for name in filenames if not name.startswith(".")]
        found += [Path(dirpath) / name for name in names]
        if not names and not dirnames and dirpath != str(folder):
            found.append(Path(dirpath))
    return found
