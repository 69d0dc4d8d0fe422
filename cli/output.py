"""What the commands print: rows as a table, CSV or JSON, doubles in full, progress lines on a terminal."""

from __future__ import annotations

import itertools
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runlytics.warehouse import queries

if TYPE_CHECKING:  # a type only
    from runlytics.ingest.formats.base import Phase


LISTED_WARNINGS = 20  # warnings the text summary and status list; --json lists every one kept
ETA_AFTER_SECONDS = 2.0  # a run that has taken this long shows how long it has left
JSON_BATCH = 1000  # records encoded at a time
CSV_QUOTED = re.compile(r'[,"\r\n]')  # what makes a CSV field quoted (and an empty text)
# a table cell's (and column name's) C0 control characters, DEL and line separators as Python's
# escapes: a row stays one line whatever its text holds (every break of str.splitlines)
CELL_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, 0x85]} | {
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def _write_rows(columns: list[str], rows: Iterable[Sequence[Any]], fmt: str) -> None:
    """``rows`` under ``columns`` on stdout. CSV and JSON are written as the rows come (a result
    of any size, a batch at a time: ``sql``); a table needs every row first, for its widths."""
    if fmt == "json":
        _write_json(columns, rows)
    elif fmt == "csv":
        for row in itertools.chain([columns], rows):
            sys.stdout.write(",".join(map(_csv_field, row)) + "\n")
    else:
        cells = [[_cell(v) for v in row] for row in rows]
        columns = [c.translate(CELL_ESCAPES) for c in columns]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        print(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")


def _write_json(columns: list[str], rows: Iterable[Sequence[Any]]) -> None:
    """The rows as one JSON array of objects, JSON_BATCH records at a time, byte for byte as
    ``json.dumps(records, indent=2)`` writes the whole list."""
    encoder = json.JSONEncoder(indent=2, default=str, allow_nan=False)  # json.dumps' own, so made
    remaining = iter(rows)
    opened = False
    while batch := list(itertools.islice(remaining, JSON_BATCH)):
        text = encoder.encode([{c: queries.plain(v) for c, v in zip(columns, row, strict=True)} for row in batch])
        sys.stdout.write(("[\n" if not opened else ",\n") + text[2:-2])  # the batch's records, without "[\n", "\n]"
        opened = True
    print("\n]" if opened else "[]")


def _csv_field(value: Any) -> str:
    """A CSV field as export's CSV (DuckDB's) writes one: NULL an empty field, an empty text a
    quoted one (``,"",``: two values, docs/export.md), a text with a comma, quote or line break
    quoted; a double as Python's shortest text (as the csv module writes it)."""
    if value is None:
        return ""
    text = repr(value) if isinstance(value, float) else str(value)
    if not text or CSV_QUOTED.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return _float(value)
    return str(value).translate(CELL_ESCAPES)


def _float(value: float) -> str:
    """A double in full: a whole one below 2**53 as its digits (``1645323``, ``90``), any other as
    Python's shortest text that reads back as the same double (``26.666666666666668``, ``1e+300``,
    ``nan``, ``inf``); never rounded to fewer digits (docs/views.md)."""
    if value.is_integer() and abs(value) < 2**53:
        return f"{value:.0f}"
    return repr(value)


class ProgressLine:
    """Draws an ingest run's progress on one terminal line: "read [###...] 12/40 files, ETA 0:12"."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.began = time.monotonic()

    def __call__(self, phase: Phase, done: int, total: int) -> None:
        filled = self.WIDTH * done // max(total, 1)
        count = "" if phase == "publish" else f" {done}/{total} files"
        elapsed = time.monotonic() - self.began
        eta = (
            f", ETA {_clock(elapsed * (total - done) / done)}"
            if 0 < done < total and elapsed >= ETA_AFTER_SECONDS
            else ""
        )
        # \x1b[K clears what a longer line before this one left
        self.stream.write(f"\r{phase:<8} [{'#' * filled}{'.' * (self.WIDTH - filled)}]{count}{eta}\x1b[K")
        self.stream.flush()


class CopyProgress:
    """``db copy``'s progress on stderr: a line per table copied; on a terminal, also its rows as
    they go ("copying gpu_samples: 120,000/2,000,000 rows")."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def __call__(self, table: str, done: int, total: int) -> None:
        back, clear = ("\r", "\x1b[K") if self.live else ("", "")
        if done >= total:
            self.stream.write(f"{back}copied {table}: {done:,} row{'' if done == 1 else 's'}{clear}\n")
        elif self.live:
            self.stream.write(f"\rcopying {table}: {done:,}/{total:,} rows{clear}")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _points(n: int) -> str:
    """The metric points of trainers' own logs read, when any (they are not step rows)."""
    return f"{_plural(n, 'metric point')}, " if n else ""


def _nul_job(job_id: str) -> str:
    """A job whose id PostgreSQL's text cannot hold, named as Python writes it (NUL shown as \\x00)."""
    return f"job {job_id!r} has a NUL character in its id, which PostgreSQL cannot hold"
