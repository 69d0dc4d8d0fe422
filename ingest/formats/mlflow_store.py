"""MLflow's file store: ``mlruns/<experiment_id>/<run_id>/`` as ``mlflow.tracking`` writes it.

A run folder holds ``meta.yaml`` (run name, status, start and end in epoch milliseconds),
``metrics/<name>`` (one ``<timestamp ms> <value> <step>`` line per logged value, appended;
a name with ``/`` is a sub-folder path), ``params/<name>`` and ``tags/<name>`` (one value per
file). The experiment's ``meta.yaml``, one folder up, names the experiment.

MLflow stores the status as its ``RunStatus`` number (1 RUNNING, 2 SCHEDULED, 3 FINISHED,
4 FAILED, 5 KILLED), older and hand-written stores as the name: both are mapped to inputs.md's
vocabulary. A run folder whose ``meta.yaml`` is missing or unreadable (a copy that lost it, a
run being created) still has its metrics read: its status is ``unknown``, with a warning.
Params and tags are the job's config (``{"params": …, "tags": …, "mlflow": …}``).

MLflow rewrites ``meta.yaml`` in place (status RUNNING -> FINISHED, end_time): a read may find it
empty or cut short, and a prefix cut at a line's end is valid YAML (``start_time: 17800``). A
``meta.yaml`` that ends without its newline, or lacks one of the keys MLflow always writes
(``REQUIRED``: ``end_time`` is null while the run runs), is taken for one caught mid-rewrite while
a writer may be at it (``ledger.settled``): nothing of it is applied, and it is left for the next
run (``pending``). Once settled it is read as it is (a hand-written store may lack a key). Its
``start_time`` and ``end_time`` are the run's own (``RunInfo.times_final``): each whole read
replaces the stored ones.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import reprlib
from pathlib import Path
from typing import Any

import yaml

from runlytics.ingest import ledger
from runlytics.ingest.discover import MLFLOW, JobFolder

from .base import Candidate, examine
from .lightning_csv import MODEL_KEYS, OUT_OF_RANGE, load_yaml, overflows
from .text_logs import (
    MAX_STEP,
    Chunk,
    Point,
    RunInfo,
    clean_strings,
    complete_lines,
    number,
    step_text,
    utc_from_ms,
    whole,
)
from .tool_log import NotYet, ToolLogParser

META = "meta.yaml"
METRICS = "metrics"
PARAMS = "params"
TAGS = "tags"
RUN_NAME_TAG = "mlflow.runName"
MAX_META_BYTES = 1 << 20
MAX_VALUE_BYTES = 1 << 16  # MLflow itself caps a param at 6,000 characters and a tag at 8,000
# the keys of a run's meta.yaml that MLflow always writes (RunInfo's fields) and that give the job's
# facts: a meta.yaml without one of them is one caught mid-rewrite until it settles
REQUIRED = ("status", "start_time", "end_time")

STATUSES: dict[object, str] = {
    1: "running", 2: "queued", 3: "completed", 4: "failed", 5: "cancelled",
    "RUNNING": "running", "SCHEDULED": "queued", "FINISHED": "completed", "FAILED": "failed", "KILLED": "cancelled",
}  # fmt: skip


class MlflowParser(ToolLogParser):
    """An MLflow run folder: each metric file read on from its last complete line; ``meta.yaml``,
    params, tags (and the experiment's ``meta.yaml``) read whole whenever a file of the run changed."""

    kind = MLFLOW
    reads_lines = True

    def grows(self, path: Path) -> bool:
        """A metric file: below the ``metrics/`` folder of the nearest folder holding a meta.yaml."""
        for folder in path.parents:
            if folder.name in (METRICS, PARAMS, TAGS) and (folder.parent / META).is_file():
                return folder.name == METRICS
        return False

    def read(self, c: Candidate, data: bytes, offset: int, lines: int, seen: int) -> Chunk:
        """A run's meta.yaml caught mid-rewrite is left for the next run (``NotYet``)."""
        if c.path == c.job.path / META and not ledger.settled(c.stat):
            reason = cut_short(data)
            if reason is not None:
                raise NotYet(f"{reason}: taken for a file being rewritten, read again next run")
        # one byte past what the run found: a settled file's last line without its newline, given
        # one to be read (ToolLogParser.reads_lines)
        return self.parse(c.job, c.path, data, offset, lines, cut_last=len(data) == c.stat.size - offset + 1)

    def parse(self, job: JobFolder, path: Path, data: bytes, offset: int, lines: int, cut_last: bool = False) -> Chunk:
        name = _name_under(job.path / METRICS, path)
        if name is None:  # meta.yaml, a param or a tag: read in job_info
            return Chunk(consumed=len(data))
        return parse_metric(data, name, offset, lines + 1, cut_last)

    def job_info(self, job: JobFolder) -> tuple[RunInfo | None, list[str]]:
        warnings: list[str] = []
        meta = experiment = None
        data, problem, st = _read_checked(job, job.path / META, MAX_META_BYTES)
        if data is not None and st is not None and not ledger.settled(st) and cut_short(data) is not None:
            # caught mid-rewrite (its read is pending): no RunInfo this run, so the facts of meta.yaml,
            # params and tags wait for its next read; the metric files read this run are stored as usual
            return None, []
        if data is not None:
            meta, warnings = load_meta(data)
        elif problem is not None:
            warnings.append(f"{META}: {problem}")
        if job.path != job.root:  # the experiment's meta.yaml, when the root holds it
            data, _, _ = _read_checked(job, job.path.parent / META, MAX_META_BYTES)
            if data is not None:
                experiment, found = load_meta(data)
                warnings += [f"../{w}" for w in found if experiment is not None]
        values: dict[str, dict[str, str]] = {PARAMS: {}, TAGS: {}}
        for path in job.tool_files.get(MLFLOW, []):
            for kind, named in values.items():
                name = _name_under(job.path / kind, path)
                if name is None:
                    continue
                data, problem, _ = _read_checked(job, path, MAX_VALUE_BYTES)
                if data is not None:
                    named[name] = data.decode("utf-8", errors="replace")
                else:
                    warnings.append(f"{kind}/{name}: {problem}")
        info, more = run_info(meta, values[PARAMS], values[TAGS], experiment)
        return info, warnings + more


def _read_checked(job: JobFolder, path: Path, limit: int) -> tuple[bytes | None, str | None, ledger.Stat | None]:
    """A small file of the run and the stat it was found with, or None and why it was not read
    (missing, not a plain file, a link out of the root, larger than ``limit``: the checks every job
    file passes before it is opened)."""
    try:
        st, problem = examine(path, job, limit)
        if problem is not None:
            return None, problem, st
        with path.open("rb") as f:
            return f.read(limit), None, st
    except FileNotFoundError:
        return None, None if path.name == META and path.parent != job.path else "missing", None
    except OSError as error:
        return None, f"cannot read ({error})", None


def cut_short(data: bytes) -> str | None:
    """Why a run's meta.yaml looks cut short (MLflow's yaml.dump ends in a newline and writes every
    key of ``REQUIRED``), or None. A file that is no YAML mapping is not said so here: its read
    warns of it."""
    if not data.strip():
        return "empty"
    if not data.endswith(b"\n"):
        return "no newline at its end"
    meta, _ = load_meta(data)
    if meta is None:
        return None
    missing = [key for key in REQUIRED if key not in meta]
    return f"no {', '.join(missing)}" if missing else None


def _name_under(folder: Path, path: Path) -> str | None:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return None


def parse_metric(data: bytes, name: str, offset: int = 0, first_line: int = 1, cut_last: bool = False) -> Chunk:
    """The complete lines of metric file ``name``'s ``data``, read from the file at ``offset``.

    A line is ``<timestamp ms> <value> <step>``; stores from before MLflow 1.0 wrote no step
    (step 0, as MLflow reads them). ``cut_last``: the last line had no newline in the file (settled):
    a line cut short, whatever its fields (MLflow writes each line whole, newline and all: a cut
    one is an old store's step 0 without its step, or a step cut short, 4 for 40).
    """
    lines, consumed = complete_lines(data, offset)
    chunk = Chunk(consumed=consumed, lines=len(lines))
    current = -1
    ms: float
    for number_, (position, line) in enumerate(lines, start=first_line):
        fields = line.split()
        if not fields:
            continue
        if cut_last and number_ == first_line + len(lines) - 1:
            shown = line[:60].decode("utf-8", errors="replace")
            chunk.warnings.append(f"line {number_}: {shown!r} has no newline: a line cut short, skipped")
            continue
        try:  # MLflow writes `<int> <float repr> <int>`: the common case without the checks below
            ms, value, step = int(fields[0]), float(fields[1]), int(fields[2])
            if len(fields) != 3 or not 0 <= step <= MAX_STEP:
                raise ValueError
        except (ValueError, IndexError):
            parsed = _metric_line(fields)
            if isinstance(parsed, str):
                shown = line[:60].decode("utf-8", errors="replace")
                chunk.warnings.append(f"line {number_}: {shown!r}{parsed}, skipped")
                continue
            ms, value, step = parsed
        if overflows(value, fields[1]):
            shown = fields[1][:40].decode("utf-8", errors="replace")
            chunk.warnings.append(f"line {number_}: value {shown!r} {OUT_OF_RANGE}, skipped")
            continue
        ts = utc_from_ms(ms)
        if ts is None:
            chunk.warnings.append(
                f"line {number_}: timestamp {str(ms)[:40]} ms is no time (years 1-9999), the point kept untimed"
            )
        chunk.points.append(Point(name, step, ts, value, position))
        current = max(current, step)
    if current >= 0:
        chunk.info.current_step = current
    return chunk


NOT_A_LINE = " is not '<timestamp ms> <value> <step>'"


def _metric_line(fields: list[bytes]) -> tuple[float, float, int] | str:
    """The line's (ms, value, step), else why not: not the form, or a step that is none (a
    negative, fractional or too large number: dropped, as progress.json's and TensorBoard's)."""
    if len(fields) not in (2, 3):
        return NOT_A_LINE
    ms, value = (number(f.decode("ascii", errors="replace"), numeric_text=True) for f in fields[:2])
    if ms is None or not math.isfinite(ms) or value is None:
        return NOT_A_LINE
    if len(fields) == 2:
        return ms, value, 0
    written = step_text(fields[2].decode("ascii", errors="replace"))
    step = whole(written)
    if written is None:
        return NOT_A_LINE
    if step is None:
        shown = fields[2][:40].decode("ascii", errors="replace")
        if written < 0:
            return f": step {shown} is negative"
        return f": step {shown} is out of range (above 10^18)" if written > MAX_STEP else f": step {shown} is not whole"
    return ms, value, step


def load_meta(data: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """A ``meta.yaml`` as a mapping, or None and why not."""
    try:
        doc = load_yaml(data)
    except yaml.YAMLError as error:
        return None, [f"{META}: not YAML ({getattr(error, 'problem', None) or error})"]
    if not isinstance(doc, dict):
        return None, [f"{META}: not a YAML mapping"]
    # the run's facts are its top-level scalars: a list or mapping is none of them (kept as a short
    # text, for the warning that says so), and a few lines of YAML aliases can name 10^9 values
    # once expanded, which cleaning them whole walked for hours
    scalars = {
        key: value if value is None or isinstance(value, SCALARS) else _short(value) for key, value in doc.items()
    }
    warnings: list[str] = []
    return clean_strings(scalars, f"{META}: ", warnings), warnings


SCALARS = (str, int, float, bool, dt.date)


def _short(value: object) -> str:
    """A bounded text of any structure: a few items of two levels (``[[1, 2, ...], ...]``)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxother = 2, 4, 4, 40
    return short.repr(value)


def run_info(
    meta: dict[str, Any] | None,
    params: dict[str, str],
    tags: dict[str, str],
    experiment: dict[str, Any] | None,
) -> tuple[RunInfo, list[str]]:
    """The job's facts from its run's meta.yaml, params, tags and its experiment's meta.yaml."""
    warnings = []
    info = RunInfo(status="unknown")
    # meta.yaml read whole: its start and end are the run's, replacing the stored ones (an unreadable
    # one, a copy that lost it, keeps them, as it keeps the status)
    info.times_final = meta is not None
    if meta is None:
        warnings.append(f"no readable {META}: status unknown")
        meta = {}
    else:
        raw = meta.get("status")
        # a str or an int names a status; anything else (a list, a mapping, true) none, kept as unknown
        key = raw.upper() if isinstance(raw, str) else raw if type(raw) is int else None
        status = STATUSES.get(key)
        if status is None:
            warnings.append(f"{META}: status {str(raw)[:40]!r} is not an MLflow run status, kept as unknown")
        info.status = status or "unknown"
    for key in ("start_time", "end_time"):
        raw = meta.get(key)
        moment = _ms_time(raw)
        if moment is None and raw is not None:
            warnings.append(f"{META}: {key} {str(raw)[:40]!r} is no time (epoch milliseconds, years 1-9999), ignored")
        setattr(info, "started_at" if key == "start_time" else "ended_at", moment)
    mlflow = {
        "experiment_id": _text(meta.get("experiment_id")) or _text((experiment or {}).get("experiment_id")),
        "experiment_name": _text((experiment or {}).get("name")),
        "run_id": _text(meta.get("run_id") or meta.get("run_uuid")),
        "run_name": _text(meta.get("run_name")) or tags.get(RUN_NAME_TAG),
        "user_id": _text(meta.get("user_id")),
        "lifecycle_stage": _text(meta.get("lifecycle_stage")),
        "artifact_uri": _text(meta.get("artifact_uri")),
    }
    info.config = {"params": params, "tags": tags, "mlflow": {k: v for k, v in mlflow.items() if v is not None}}
    # a run or experiment deleted in MLflow stays in the file store until `mlflow gc`: kept as a job (a
    # restored run comes back the same), and said (MLflow's UI and search_runs hide it by default)
    for what, doc in (("run", meta), ("experiment", experiment or {})):
        if _text(doc.get("lifecycle_stage")) == "deleted":
            where = META if what == "run" else f"the experiment's {META}"
            warnings.append(f"{where}: lifecycle_stage deleted (the {what} was deleted in MLflow; its files stay until"
                            " `mlflow gc`): kept as a job")  # fmt: skip
    info.model_name = next((params[k] for k in MODEL_KEYS if params.get(k)), None)
    return info, warnings


def _ms_time(value: object) -> Any:
    figure = number(value)
    return utc_from_ms(figure) if figure is not None and math.isfinite(figure) and figure > 0 else None


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def named_files(folder: Path) -> dict[str, Path]:
    """The files under a run's ``metrics/``, ``params/`` or ``tags/``: name (``/`` between sub-folders) -> path."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for file in sorted(filenames):
            path = Path(dirpath, file)
            found[path.relative_to(folder).as_posix()] = path
    return found
