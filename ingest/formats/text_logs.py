"""What the readers of trainers' own logs give: scalar points, run facts and warnings (``Chunk``).

Every tool-log parser (TensorBoard's and the text logs') turns a file's new bytes into a Chunk;
``tool_log.ToolLogFormat`` stores it. The text logs (LLaMA-Factory's ``trainer_log.jsonl``,
Lightning's ``metrics.csv``, MLflow's metric files) only grow, one line at a time: each is read
from the byte offset where the last run stopped up to its last complete line (a line without
its newline is still being written and waits for the next run, unless the file has settled:
then it is the file's last line, ``tool_log``); the helpers for them are here.
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np

from runlytics.ingest.json_text import LONE_SURROGATE, as_float, without_surrogates
from runlytics.ingest.trainer_state import MAX_WHOLE

# a number written as text in an MLflow metric line (Python's str() of a float: "1e-05", "nan", "inf"):
# spaces around it, but no "1_000", no hex. LLaMA-Factory's text values have a stricter rule of their
# own (llamafactory.FORMATTED_NUMBER); ``number`` takes either
NUMERIC_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


# the largest step kept: progress.json's and the trainer states' bound (10^18), inside BIGINT
MAX_STEP = MAX_WHOLE
EPOCH = datetime(1970, 1, 1)  # naive UTC, like every time of the warehouse


class Point(NamedTuple):  # a tuple, not a dataclass: three times cheaper to make, one per scalar
    """One scalar: ``order`` is where it was written (the byte offset of its line in its file), so
    that of a (name, step) logged twice the later line wins."""

    name: str
    step: int
    ts: datetime | None
    value: float
    order: int


@dataclass
class RunInfo:
    """What a file says of its run; None where it says nothing."""

    status: str | None = None  # inputs.md's vocabulary
    config: dict[str, Any] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    model_name: str | None = None
    current_step: int | None = None
    total_steps: int | None = None
    # the run's start is unknown (a LLaMA-Factory log found resumed): a start stored before is dropped
    start_unknown: bool = False
    updated_at: datetime | None = None  # when the run last wrote, when its points' times say less
    # ``status`` is the whole log's answer (a LLaMA-Factory log's), ``unknown`` included: it replaces
    # the status an earlier read stored (and an ``unknown`` one the ``ended_at`` it stored)
    status_final: bool = False
    # ``started_at`` and ``ended_at`` are the run's own record, read whole (an MLflow meta.yaml; a
    # Lightning run's folder): they replace the stored ones, None included, not the earliest seen
    times_final: bool = False


class Events:
    """Points as columns, by event (TensorBoard's reader): a point per value (its name and value),
    the step, wall time and order of each event (``steps``, ``walls``, ``orders``) with how many
    points it holds (``counts``). No object per point: ingest hands the columns to DuckDB as
    arrays, and a Python tuple per point cost more than reading it.

    Names are either a list (``names``, appended to value by value) or codes into a table of
    distinct names (``set_columns``, numpy arrays throughout); ``name_codes`` gives codes either way."""

    __slots__ = ("_names", "_codes", "_table", "values", "counts", "steps", "walls", "orders")

    def __init__(self) -> None:
        self._names: list[str] | None = []
        self._codes: np.ndarray | None = None
        self._table: list[str] = []
        self.values: Any = array("d")
        self.counts: Any = array("q")
        self.steps: Any = array("q")
        self.walls: Any = array("d")  # seconds since the epoch as written (NaN or out of range: no time)
        self.orders: Any = array("q")

    def set_columns(
        self,
        codes: np.ndarray,
        table: list[str],
        values: np.ndarray,
        counts: np.ndarray,
        steps: np.ndarray,
        walls: np.ndarray,
        orders: np.ndarray,
    ) -> None:
        """Every column at once: per point its name's code into ``table`` and its value; per event the rest."""
        self._names, self._codes, self._table = None, codes, table
        self.values, self.counts, self.steps, self.walls, self.orders = values, counts, steps, walls, orders

    @property
    def names(self) -> list[str]:
        if self._names is None:
            assert self._codes is not None
            self._names = [self._table[c] for c in self._codes.tolist()]
        return self._names

    def name_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each point's name as a code into a table of names, and that table."""
        if self._codes is None:
            names = self.names
            table = list(dict.fromkeys(names))
            index = {name: i for i, name in enumerate(table)}
            self._codes, self._table = np.fromiter(map(index.__getitem__, names), np.int64, len(names)), table
        return self._codes, self._table

    def __len__(self) -> int:
        return len(self._codes) if self._names is None and self._codes is not None else len(self.names)

    def points(self) -> list[Point]:
        """The same points as Point tuples (for tests and small reads)."""
        out: list[Point] = []
        at = 0
        names, values = self.names, list(self.values)
        columns = [
            c.tolist() if isinstance(c, np.ndarray) else list(c)
            for c in (self.counts, self.steps, self.walls, self.orders)
        ]
        for count, step, wall, order in zip(*columns, strict=True):
            ts = utc_from_wall(wall)
            out += [Point(names[i], step, ts, float(values[i]), order) for i in range(at, at + count)]
            at += count
        return out


@dataclass
class Chunk:
    """One read of a growing file: its points, warnings (with line numbers), and where to resume.

    A text log's reader appends Point tuples to ``points``; TensorBoard's fills ``events``
    (columns), which ``points`` then gives as tuples too."""

    warnings: list[str] = field(default_factory=list)
    consumed: int = 0  # bytes up to and including the last complete line
    lines: int = 0  # complete lines read
    info: RunInfo = field(default_factory=RunInfo)
    events: Events | None = None
    _points: list[Point] = field(default_factory=list, repr=False)

    @property
    def points(self) -> list[Point]:
        if self.events is not None and len(self.events) and not self._points:
            self._points = self.events.points()
        return self._points

    @property
    def count(self) -> int:
        """How many points the chunk holds (without making tuples of columns)."""
        return len(self.events) if self.events is not None else len(self._points)


def complete_lines(data: bytes, offset: int) -> tuple[list[tuple[int, bytes]], int]:
    """The complete lines of ``data``, read from a file at ``offset``: (the line's offset in the file,
    the line without its LF or CRLF end), and the bytes they take."""
    end = data.rfind(b"\n") + 1
    lines, position = [], 0
    while position < end:
        newline = data.index(b"\n", position)
        lines.append((offset + position, data[position:newline].removesuffix(b"\r")))
        position = newline + 1
    return lines, end


def as_read(before: bytes) -> bytes:
    """The bytes before a read's offset as the reads before took them: a read ends at a line's
    end, or past a settled file's last line without its newline (read as the file's last line,
    ``tool_log``), which then ends there, whatever a writer appended to it since."""
    return before + b"\n" if before and not before.endswith(b"\n") else before


def number(value: Any, numeric_text: bool | re.Pattern[str] = False) -> float | None:
    """A JSON number (not a boolean) as a float; a string as the number it spells where
    ``numeric_text`` allows text: a pattern the whole string matches (LLaMA-Factory's
    ``FORMATTED_NUMBER``), or True for ``NUMERIC_TEXT`` with spaces around it (MLflow's lines); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return as_float(value)  # an integer too large for a double: +-inf
    if numeric_text is False or not isinstance(value, str):
        return None
    if numeric_text is True:
        value, numeric_text = value.strip(), NUMERIC_TEXT
    return float(value) if numeric_text.fullmatch(value) else None


# a whole number as written: digits and a sign
_DIGITS = re.compile(r"[+-]?[0-9]+")


def exact_integer(text: str) -> float | None:
    """An integer's digits (blanks around) exactly, for ``whole`` (through a float, 10^18 + 1 would
    be 10^18, a step in range); past 19 digits +-inf (out of range whatever they say: ``int()``
    refuses more than 4,300 digits); None for any other text."""
    text = text.strip()
    if not _DIGITS.fullmatch(text):
        return None
    if len(text.lstrip("+-").lstrip("0")) > 19:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def step_text(text: str) -> float | None:
    """A step as a log writes it, for ``whole``: an integer exactly (``exact_integer``), any other
    number as ``number`` reads it."""
    exact = exact_integer(text)
    return exact if exact is not None else number(text, numeric_text=True)


def clean_strings(value: Any, where: str, warnings: list[str]) -> Any:
    """``value`` (a str, or a config's dicts and lists) with every lone surrogate of its keys and
    strings (a YAML or JSON ``\\udcff`` escape: no UTF-8 holds it, the warehouse refuses it) replaced
    by U+FFFD; one warning names ``where`` (the file), the first such entry and how many there were."""
    found: list[str] = []
    out = _cleaned(value, "", found)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        first = found[0] if len(found[0]) <= 200 else f"{found[0][:100]}...{found[0][-100:]}"  # a path 600 deep
        warnings.append(
            f"{where}{first}{more} held an escaped lone UTF-16 surrogate (not a character), replaced by U+FFFD"
        )
    return out


def _cleaned(value: Any, path: str, found: list[str]) -> Any:
    """``value`` cleaned, walked with a stack of its own (no recursion limit for a value nested a
    thousand deep): each container copied, its entries in order, found in the order met."""
    root: list[Any] = [None]
    # (value, its path, the container it goes in, its key there, a cleaned key's note)
    todo: list[tuple[Any, str, Any, Any, str | None]] = [(value, path, root, 0, None)]
    while todo:
        item, where, parent, key, note = todo.pop()
        if note is not None:
            found.append(note)
        if isinstance(item, str):
            if LONE_SURROGATE.search(item) is not None:
                item = without_surrogates(item)
                found.append(f"{where} {item[:60]!r}" if where else repr(item[:60]))
            parent[key] = item
        elif isinstance(item, dict):
            out: dict[Any, Any] = {}
            parent[key] = out
            entries = []
            for name, entry in item.items():
                note = None
                if isinstance(name, str) and LONE_SURROGATE.search(name) is not None:
                    name = without_surrogates(name)
                    note = f"key {(where + '.' if where else '') + name!r}"
                out[name] = None  # the key's place in order; its value is set when its turn comes
                entries.append((entry, (where + "." if where else "") + str(name), out, name, note))
            todo.extend(reversed(entries))
        elif isinstance(item, list):
            copy: list[Any] = [None] * len(item)
            parent[key] = copy
            todo.extend(reversed([(entry, f"{where}[{i}]", copy, i, None) for i, entry in enumerate(item)]))
        else:
            parent[key] = item
    return root[0]


def whole(value: float | None) -> int | None:
    """A step: a finite, non-negative, integral number as an int, else None."""
    if value is None or not math.isfinite(value) or not 0 <= value <= MAX_STEP or value != int(value):
        return None
    return int(value)


def utc_from_ms(ms: float) -> datetime | None:
    """Unix epoch milliseconds as a naive UTC datetime, None outside years 1-9999."""
    try:
        return EPOCH + timedelta(milliseconds=ms)
    except (ValueError, OverflowError):
        return None


def utc_from_seconds(seconds: float) -> datetime | None:
    return utc_from_ms(seconds * 1000)


def utc_from_ns(ns: int) -> datetime | None:
    """Unix epoch nanoseconds (a stat's ``st_mtime_ns``) as a naive UTC datetime, to the nearest
    microsecond (exact: a float of the seconds is 0.2 us apart near 2026), None outside years 1-9999."""
    try:
        return EPOCH + timedelta(microseconds=round(ns, -3) // 1000)
    except OverflowError:
        return None


def utc_from_wall(wall_time: float) -> datetime | None:
    """An event's wall time (seconds) as a naive UTC datetime, None outside years 1-9999."""
    try:
        return EPOCH + timedelta(seconds=wall_time)
    except (ValueError, OverflowError):  # NaN, infinite, or outside years 1-9999
        return None
