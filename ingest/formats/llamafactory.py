"""LLaMA-Factory's ``trainer_log.jsonl``: one JSON object a line, appended by its LogCallback.

A line holds ``current_steps`` (the step), ``total_steps``, and the values logged at that
step: ``loss``, ``lr`` or ``learning_rate``, ``epoch``, ``percentage``, ``eval_loss`` on eval
lines, ``throughput`` and ``total_tokens`` in newer versions, and ``elapsed_time`` /
``remaining_time`` as ``[D day[s], ]H:MM:SS`` text. Every numeric value other than
``current_steps`` / ``total_steps`` is a metric under its key. ``throughput`` is written as text
(``"0.00"``, LLaMA-Factory formats it with ``%.2f``): a string that is a plain number counts as
that number; the times are durations, not metrics, and place the points in time when the run's
start is known. A (key, step) written twice (eval lines at a train line's step, two ranks
logging the same step, the closing line repeating the last step) keeps the later line's value.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path

from runlytics.ingest.discover import LLAMAFACTORY, JobFolder

from .text_logs import Chunk, Point, complete_lines, number, utc_from_seconds, whole
from .tool_log import ToolLogParser

FILE_NAME = "trainer_log.jsonl"
NOT_METRICS = frozenset({"current_steps", "total_steps"})
DURATIONS = frozenset({"elapsed_time", "remaining_time"})
DURATION = re.compile(r"(?:(\d+) days?, )?(\d+):([0-5]\d):([0-5]\d)")


class LlamaFactoryParser(ToolLogParser):
    """A run folder's ``trainer_log.jsonl``, read on from the last complete line.

    The log holds no clock time, only each line's elapsed_time: the run's start is placed at the
    file's modification time (when its last line was written) less the elapsed_time of the last
    line read, and each point at that start plus its line's elapsed_time. For a log that is being
    written these are the real times; for a copy, the copy's time shifts them all alike.
    """

    kind = LLAMAFACTORY

    def parse(self, job: JobFolder, path: Path, data: bytes, offset: int, lines: int) -> Chunk:
        started_at = None
        elapsed = elapsed_of_last_line(data)
        if elapsed is not None:
            try:
                written = utc_from_seconds(os.stat(path).st_mtime)
            except OSError:
                written = None
            started_at = _shifted(written, -elapsed)
        chunk = parse(data, offset, lines + 1, started_at)
        chunk.info.started_at = started_at
        return chunk


def _shifted(moment: datetime | None, seconds: float | None) -> datetime | None:
    """``moment`` moved by ``seconds``; None when either is unknown or the result is no date."""
    if moment is None or seconds is None:
        return None
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:  # "99999999 days, 0:00:00"
        return None


def duration_seconds(text: object) -> float | None:
    """``"6:48:06"`` or ``"1 day, 0:08:23"`` (Python's ``str(timedelta)``) in seconds, else None."""
    if not isinstance(text, str):
        return None
    match = DURATION.fullmatch(text.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def parse(data: bytes, offset: int = 0, first_line: int = 1, started_at: datetime | None = None) -> Chunk:
    """The complete lines of ``data`` (read from the file at byte ``offset``; its first line is line
    ``first_line``). With ``started_at``, a point's time is the start plus the line's elapsed_time."""
    lines, consumed = complete_lines(data, offset)
    chunk = Chunk(consumed=consumed, lines=len(lines))
    info = chunk.info
    for number_, (position, line) in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            chunk.warnings.append(f"line {number_}: not JSON ({error}), skipped")
            continue
        if not isinstance(doc, dict):
            chunk.warnings.append(f"line {number_}: not a JSON object, skipped")
            continue
        step = whole(number(doc.get("current_steps")))
        if step is None:
            chunk.warnings.append(
                f"line {number_}: current_steps {str(doc.get('current_steps'))[:40]!r} is not a step, skipped"
            )
            continue
        total = whole(number(doc.get("total_steps")))
        if total is not None:
            info.total_steps = total
        info.current_step = max(step, info.current_step or 0)
        elapsed = duration_seconds(doc.get("elapsed_time"))
        ts = _shifted(started_at, elapsed)
        if elapsed is not None:
            info.ended_at = ts
        for key, value in doc.items():
            if key in NOT_METRICS or key in DURATIONS:
                continue
            figure = number(value, numeric_text=True)
            if figure is not None:
                chunk.points.append(Point(key, step, ts, figure, position))
            elif value is not None:
                chunk.warnings.append(f"line {number_}: {key} {str(value)[:40]!r} is not a number, dropped")
    if info.total_steps is not None and info.current_step is not None and info.current_step >= info.total_steps:
        info.status = "completed"
    else:
        info.ended_at = None  # the time of the last line, not an end: the status says nothing of one
    return chunk


def elapsed_of_last_line(data: bytes) -> float | None:
    """The elapsed_time of the last complete line that has one (to place a run's start from the
    file's modification time, the moment that line was written)."""
    end = data.rfind(b"\n")  # from the last complete line back, without splitting every line (parse does)
    while end >= 0:
        start = data.rfind(b"\n", 0, end) + 1
        line = data[start:end].removesuffix(b"\r")
        end = start - 1
        try:
            doc = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(doc, dict) and (seconds := duration_seconds(doc.get("elapsed_time"))) is not None:
            return seconds
    return None
