"""LLaMA-Factory's ``trainer_log.jsonl``: one JSON object a line, appended by its LogCallback.

A line holds ``current_steps`` (the step), ``total_steps``, and the values logged at that
step: ``loss``, ``lr`` or ``learning_rate``, ``epoch``, ``percentage``, ``eval_loss`` on eval
lines, ``throughput`` and ``total_tokens`` in newer versions, and ``elapsed_time`` /
``remaining_time`` as ``[D day[s], ]H:MM:SS`` text. Every numeric value other than
``current_steps`` / ``total_steps`` is a metric under its key. ``throughput`` is written as text
(``"0.00"``, LLaMA-Factory formats it with ``"{:.2f}"``): a string that format prints (a plain
decimal number, ``nan``, ``inf``, ``-inf``) counts as that number, no other string does. A line
whose ``total_tokens`` is 0 (tokens not counted) has no ``throughput`` or ``total_tokens`` metric.
The times are durations, not metrics, and place the points in time when the run's start is
known. A (key, step) written twice (eval lines at a train line's step, two ranks logging the same
step, the closing line repeating the last step) keeps the later line's value.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from runlytics.ingest import json_text
from runlytics.ingest.discover import LLAMAFACTORY

from .base import Candidate
from .text_logs import Chunk, Point, as_read, clean_strings, complete_lines, number, utc_from_ns, whole
from .tool_log import ToolLogParser, bytes_before

FILE_NAME = "trainer_log.jsonl"
NOT_METRICS = frozenset({"current_steps", "total_steps"})
DURATIONS = frozenset({"elapsed_time", "remaining_time"})
# ASCII digits only; at most 12 of days or hours, so no int() of them fails (Python refuses 4,300+ digits)
DURATION = re.compile(r"(?:([0-9]{1,12}) days?, )?([0-9]{1,12}):([0-5][0-9]):([0-5][0-9])")
# seconds: a fall of elapsed_time this large starts a new run (a resume); two ranks writing one log
# differ by a second or two, and a resumed run logs its first line minutes below where the last stopped
RESUMED_FALLBACK = 60.0
# A value written as text is a number when it is what LLaMA-Factory's "{:.2f}".format(...) prints
# (``throughput``): ASCII digits with an optional minus and fraction, or ``nan``, ``inf``, ``-inf``
# (the format's words for a value that is no finite number, kept as such as a JSON NaN is). Nothing
# else: no spaces, no exponent, no "+", no "NaN"/"Infinity", no "1_000", no other script's digits
# (all of which float() takes).
FORMATTED_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?|nan|-?inf")
# Versions that write ``throughput`` and ``total_tokens`` on every line write them from the token
# count even when the trainer counts no tokens (its default): 0 there is "not counted", not a
# throughput of 0. Newer versions write neither then.
TOKEN_KEYS = frozenset({"throughput", "total_tokens"})
TAIL_BYTES = 64 * 1024  # where the last line read before is looked for


class LlamaFactoryParser(ToolLogParser):
    """A run folder's ``trainer_log.jsonl``, read on from the ledger's offset: the end of the last
    complete line read, or, where the last read ended in a line still being written, where that
    read began (``reads_again``: its lines are read again).

    The log holds no clock time, only each line's elapsed_time, timed from the file's
    modification time as the run found it (the write of the last byte read, ``read``): see
    ``parse``. Only a read from the file's start places the job's start; a later read that finds
    the log resumed since (its elapsed_time falls back, within the new lines or below the last
    line read before) reads the file whole again, as one read of it would, and says the job's
    start is unknown: the earlier reads timed the first run from their own modification times,
    which one read could not.

    The status is the whole log's (``status_final``): ``completed`` when the highest step of its
    lines reaches the ``total_steps`` of its last line that names one, else ``unknown``, replacing
    what earlier reads said; a read from an offset takes the lines before it into account (a run
    continued with a larger ``total_steps`` is no longer completed)."""

    kind = LLAMAFACTORY
    reads_lines = True
    # A read that ends in a line still being written: the modification time is that write's, later
    # than the last complete line's by up to a logging interval, so its lines' times and the start
    # are late. Stored as read, but the offset stays at the read's start: the next run reads them
    # again from the file's time then (their points replaced, the earlier start kept), as one read
    # of the final file has them
    reads_again = True

    def read(self, c: Candidate, data: bytes, offset: int, lines: int, seen: int) -> Chunk:
        # the time of the write that made the size read: the file's time now may be a later line's
        # (appended since the run found it), which would place these lines late for good
        return self._parse(c.path, data, offset, lines, utc_from_ns(c.stat.mtime_ns), (offset, seen))

    def _parse(
        self, path: Path, data: bytes, offset: int, lines: int, written: datetime | None, quiet: tuple[int, int]
    ) -> Chunk:
        chunk, first_elapsed, resumed = _read(data, offset, lines + 1, written, quiet)
        if offset == 0:
            chunk.info.start_unknown = resumed  # a file read whole again (replaced) drops a start stored before
            if chunk.info.current_step is None and chunk.info.total_steps is None:
                # no line tells of the run (a log replaced by garbage, emptied): the status and end
                # stored stand, as a progress.json that breaks leaves its job (inputs.md)
                return _own_status(chunk)
            return _final(chunk, None)
        chunk.info.started_at = None  # placed by the read from the file's start
        if not resumed and first_elapsed is not None:
            before = _elapsed_before(path, offset)
            resumed = before is not None and first_elapsed < before - RESUMED_FALLBACK
        if not resumed and _completes(chunk):  # the last total named is reached: no line before matters
            return _final(chunk, None)
        try:
            with open(path, "rb") as f:
                prefix = f.read(offset)
        except OSError:
            prefix = b""
        if len(prefix) != offset:  # replaced under the read (the next run sees it): these lines' word only
            return _own_status(chunk)
        prefix = as_read(prefix)  # its last line read as final (settled): its own line, as read
        if not resumed:
            return _final(chunk, steps_and_total(prefix))
        whole, _, _ = _read(prefix + data, 0, 1, written, quiet)
        whole.consumed, whole.lines = chunk.consumed, chunk.lines  # where the next read starts: unchanged
        whole.info.start_unknown = True
        return _final(whole, None)


def _completes(chunk: Chunk) -> bool:
    info = chunk.info
    return info.total_steps is not None and info.current_step is not None and info.current_step >= info.total_steps


def _own_status(chunk: Chunk) -> Chunk:
    """``chunk`` with what its own lines say: ``completed`` (then ``ended_at`` the last line's time),
    else no status and no end."""
    if _completes(chunk):
        chunk.info.status = "completed"
    else:
        chunk.info.ended_at = None
    return chunk


def _final(chunk: Chunk, before: tuple[int | None, int | None] | None) -> Chunk:
    """``chunk`` with the whole log's status (``status_final``), ``before`` being the highest step
    and the last ``total_steps`` of the lines before the read (None: the read is the whole log)."""
    info = chunk.info
    step, total = info.current_step, info.total_steps
    if before is not None:
        if before[0] is not None:
            step = max(step if step is not None else before[0], before[0])
        total = total if total is not None else before[1]
    if total is not None and step is not None and step >= total:
        info.status = "completed"  # its ended_at: the last line's time, when this read's lines give one
    else:
        info.status, info.ended_at = "unknown", None
    info.status_final = True
    return chunk


_STEP_TEXT = re.compile(rb'"current_steps"\s*:\s*([0-9][0-9.eE+]*)')


def _step_of(line: bytes) -> tuple[int | None, int | None]:
    """The whole ``current_steps`` and ``total_steps`` of one line that ``parse`` reads, else None."""
    try:
        doc = json_text.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    step = whole(number(doc.get("current_steps")))
    return (step, whole(number(doc.get("total_steps")))) if step is not None else (None, None)


def steps_and_total(data: bytes) -> tuple[int | None, int | None]:
    """The highest ``current_steps`` and the last ``total_steps`` of the complete lines of ``data``
    (the lines ``parse`` reads: JSON objects with a whole ``current_steps``).

    A running job's every run asks this of the lines before its read, so the lines are not all
    parsed: a byte scan finds each line's step, the lines are parsed highest step first until one
    is a line ``parse`` reads, and from the end until one names its ``total_steps`` (a few lines
    where a JSON parse of all took seconds for a log of tens of MB)."""
    end = data.rfind(b"\n") + 1
    candidates = []
    for match in _STEP_TEXT.finditer(data, 0, end):
        try:
            candidates.append((float(match.group(1)), match.start()))
        except ValueError:
            continue
    highest = None
    for _, start in sorted(candidates, reverse=True):
        step, _total = _step_of(_line_at(data, start))
        if step is not None:
            highest = step
            break
    total = None
    if highest is not None:
        for _, start in sorted(candidates, key=lambda c: c[1], reverse=True):
            step, named = _step_of(_line_at(data, start))
            if step is not None and named is not None:
                total = named
                break
    return highest, total


def _line_at(data: bytes, position: int) -> bytes:
    """The line of ``data`` holding ``position``, without its LF or CRLF end."""
    start = data.rfind(b"\n", 0, position) + 1
    return data[start : data.index(b"\n", position)].removesuffix(b"\r")


def _elapsed_before(path: Path, offset: int) -> float | None:
    """The elapsed_time of the last line before ``offset`` that has one (within 64 KiB)."""
    try:
        return elapsed_of_last_line(as_read(bytes_before(path, offset, TAIL_BYTES)))
    except OSError:
        return None


def elapsed_of_last_line(data: bytes) -> float | None:
    """The elapsed_time of the last complete line of ``data`` that has one."""
    end = data.rfind(b"\n")  # from the last complete line back, without splitting every line
    while end >= 0:
        start = data.rfind(b"\n", 0, end) + 1
        line = data[start:end].removesuffix(b"\r")
        end = start - 1
        try:
            doc = json_text.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(doc, dict) and (seconds := duration_seconds(doc.get("elapsed_time"))) is not None:
            return seconds
    return None


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


def _duration_text(seconds: float) -> str:
    try:
        return str(timedelta(seconds=seconds))
    except OverflowError:
        return f"{seconds:g} s"


class _Line(NamedTuple):
    position: int  # the line's byte offset in the file
    step: int
    elapsed: float | None
    figures: list[tuple[str, float]]


def parse(data: bytes, offset: int = 0, first_line: int = 1, written_at: datetime | None = None) -> Chunk:
    """The complete lines of ``data`` (read from the file at byte ``offset``; its first line is line
    ``first_line``), with ``written_at`` the time the file's last line was written (its
    modification time; None: no point has a time).

    A resumed run appends to the same log, and its elapsed_time starts again from 0: where a
    line's elapsed_time falls more than ``RESUMED_FALLBACK`` seconds below the highest of the
    lines before it, a new run begins. Only the last run of the read can be placed in time: it
    started at ``written_at`` less the highest elapsed_time of its lines (the last line's, but
    for two ranks' lines a second or two apart), and each of its points is at that start plus
    its line's elapsed_time, so no point is after the file's last write. The earlier runs ended
    at some unknown time before it: their points have no time (a warning names the line where
    the log falls back), and the read gives no start. A line without elapsed_time has no time.

    A step finished before any later step did: a line written after a line of a higher step (the
    second rank's, a second writer's) is timed no later than that line, so the times of a run's
    steps only grow with the step (its rows' seconds then add up to its span).

    The status is ``completed`` when the lines' highest step reaches their last ``total_steps``
    (``ended_at`` then the last line's time), else None (these lines say nothing of it)."""
    return _own_status(_read(data, offset, first_line, written_at)[0])


def _read(
    data: bytes, offset: int, first_line: int, written_at: datetime | None, quiet: tuple[int, int] = (0, 0)
) -> tuple[Chunk, float | None, bool]:
    """``parse``'s chunk (no status yet; ``ended_at`` the last line's time), the elapsed_time of the
    read's first line that has one, and whether the read holds a resumed run. The lines at file
    offsets in [``quiet[0]``, ``quiet[1]``) give no warnings (read and warned of by the last run)."""
    lines, consumed = complete_lines(data, offset)
    chunk = Chunk(consumed=consumed, lines=len(lines))
    info = chunk.info
    read: list[_Line] = []
    last_run = 0  # index into ``read`` of the last run's first line
    highest: float | None = None  # the highest elapsed_time of the current run
    first_elapsed: float | None = None
    for number_, (position, line) in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        warnings = [] if quiet[0] <= position < quiet[1] else chunk.warnings
        try:
            doc = json_text.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            warnings.append(f"line {number_}: not JSON ({error}), skipped")
            continue
        if not isinstance(doc, dict):
            warnings.append(f"line {number_}: not a JSON object, skipped")
            continue
        if b"\\u" in line:  # a \udcff escape gives a str no UTF-8 holds: metric names must be stored
            doc = clean_strings(doc, f"line {number_}: ", warnings)
        step = whole(number(doc.get("current_steps")))
        if step is None:
            warnings.append(
                f"line {number_}: current_steps {str(doc.get('current_steps'))[:40]!r} is not a step, skipped"
            )
            continue
        total = whole(number(doc.get("total_steps")))
        if total is not None:
            info.total_steps = total
        elif doc.get("total_steps") is not None:
            shown = str(doc["total_steps"])[:40]
            warnings.append(f"line {number_}: total_steps {shown!r} is not a whole number, ignored")
        info.current_step = max(step, info.current_step or 0)
        elapsed = duration_seconds(doc.get("elapsed_time"))
        if elapsed is None and doc.get("elapsed_time") is not None:
            shown = str(doc["elapsed_time"])[:40]
            warnings.append(f"line {number_}: elapsed_time {shown!r} is not a duration, its points untimed")
        if elapsed is not None:
            if first_elapsed is None:
                first_elapsed = elapsed
            if highest is not None and elapsed < highest - RESUMED_FALLBACK:
                warnings.append(
                    f"line {number_}: elapsed_time {doc['elapsed_time'].strip()} falls back from"
                    f" {_duration_text(highest)} (a resumed run): the points of the lines before it"
                    " have no time (when that run ran is unknown)"
                )
                last_run, highest = len(read), None
            highest = elapsed if highest is None else max(highest, elapsed)
        figures: list[tuple[str, float]] = []
        # tokens not counted: no throughput either
        uncounted = number(doc.get("total_tokens"), FORMATTED_NUMBER) == 0
        for key, value in doc.items():
            if key in NOT_METRICS or key in DURATIONS or (uncounted and key in TOKEN_KEYS):
                continue
            figure = number(value, FORMATTED_NUMBER)
            if figure is not None:
                figures.append((key, figure))
            elif value is not None:  # null: not logged at this line (older LogCallbacks write eval_loss: null)
                warnings.append(f"line {number_}: {key} {str(value)[:40]!r} is not a number, dropped")
        read.append(_Line(position, step, elapsed, figures))
    started_at = _shifted(written_at, None if highest is None else -highest)
    caps = _later_steps_first_time(read[last_run:])
    for i, entry in enumerate(read):
        ts = None
        if i >= last_run and entry.elapsed is not None:
            ts = _shifted(started_at, min(entry.elapsed, caps[entry.step]))
            info.ended_at = ts
            info.updated_at = _shifted(started_at, entry.elapsed)  # the line's own time: the run wrote then
        chunk.points.extend(Point(key, entry.step, ts, figure, entry.position) for key, figure in entry.figures)
    if last_run == 0:  # one run: its start is the job's (a later read of a longer log puts it no later)
        info.started_at = started_at
    return chunk, first_elapsed, last_run > 0


def _later_steps_first_time(run: list[_Line]) -> dict[int, float]:
    """Per step of the run, the lowest elapsed_time of the lines of higher steps (inf for none)."""
    lowest: dict[int, float] = {}
    for entry in run:
        if entry.elapsed is not None:
            lowest[entry.step] = min(entry.elapsed, lowest.get(entry.step, math.inf))
    caps: dict[int, float] = {}
    running = math.inf
    for step in sorted({entry.step for entry in run}, reverse=True):
        caps[step] = running
        running = min(running, lowest.get(step, math.inf))
    return caps
