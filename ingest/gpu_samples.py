"""GPU samples (inputs.md section 2): the sampler's JSON Lines spool, and storing samples.

A spool file is appended to while it is read: it is read up to its last complete line, and
the next run resumes at that byte offset (kept in the ledger's ``read_offset``). A bad line
is skipped with its line number; the others are kept. Samples are keyed by
(job, host, GPU, ts), the GPU being its UUID when the sample has one (schema.gpu_samples): one
ingested twice is stored once.

Two roads read a spool's lines, with the same result (tests/test_spool_parse.py). The fast road
splits and parses them in DuckDB (``FAST_PARSE``: vectorised, on every core) and takes only the
lines whose every field it can check for itself: an object of plain JSON (no escapes, control
characters, NaN, trailing commas or repeated keys), a job id, a GPU index, a Unix or plain ISO
timestamp and every number finite and in range. Every other line (a bad one, one with a value
to drop, anything unusual) goes the careful road, ``parse_line``, which words the warnings.
The fast road reads a whole file with DuckDB's JSON reader (``JSON_PARSE``) when a scan of
its bytes finds nothing that reader takes otherwise than Python (``_json_readable``), else with
its CSV reader as lines (a piece of a file: split from the text); the same field checks follow.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from . import gpu_store, json_text, ledger, sql

COLUMNS = (
    "job_id",
    "host",
    "gpu_index",
    "ts",
    "gpu_uuid",
    "utilization_percent",
    "memory_used_mb",
    "memory_total_mb",
    "temperature_c",
    "power_w",
    "sm_clock_mhz",
    "clocks_event_reasons",
)

# numeric field -> (lowest, highest) accepted; outside is absurd and dropped with a warning
RANGES: dict[str, tuple[float, float]] = {
    "utilization_percent": (0, 100),
    "memory_used_mb": (0, math.inf),
    "memory_total_mb": (0, math.inf),
    "temperature_c": (-273.15, math.inf),
    "power_w": (0, math.inf),
    "sm_clock_mhz": (0, math.inf),
}

STAGE_SELECT = """
SELECT unnest($job_id) AS job_id, unnest($host) AS host, CAST(unnest($gpu_index) AS INTEGER) AS gpu_index,
       CAST(unnest($ts) AS TIMESTAMP) AS ts, CAST(unnest($gpu_uuid) AS VARCHAR) AS gpu_uuid,
       CAST(unnest($utilization_percent) AS DOUBLE) AS utilization_percent,
       CAST(unnest($memory_used_mb) AS DOUBLE) AS memory_used_mb,
       CAST(unnest($memory_total_mb) AS DOUBLE) AS memory_total_mb,
       CAST(unnest($temperature_c) AS DOUBLE) AS temperature_c,
       CAST(unnest($power_w) AS DOUBLE) AS power_w,
       CAST(unnest($sm_clock_mhz) AS DOUBLE) AS sm_clock_mhz,
       CAST(unnest($clocks_event_reasons) AS BIGINT) AS clocks_event_reasons,
       CAST(unnest($seq) AS BIGINT) AS seq
"""
STAGE = "CREATE OR REPLACE TEMP TABLE batch_gpu_samples AS" + STAGE_SELECT
STAGE_MORE = "INSERT INTO batch_gpu_samples" + STAGE_SELECT

# The staged batch, empty, for the spool's two roads to fill (the columns of STAGE).
STAGE_EMPTY = """
CREATE OR REPLACE TEMP TABLE batch_gpu_samples (
    job_id VARCHAR, host VARCHAR, gpu_index INTEGER, ts TIMESTAMP, gpu_uuid VARCHAR,
    utilization_percent DOUBLE, memory_used_mb DOUBLE, memory_total_mb DOUBLE, temperature_c DOUBLE,
    power_w DOUBLE, sm_clock_mhz DOUBLE, clocks_event_reasons BIGINT, seq BIGINT)
"""

# One read of a spool file, and the most text one transaction stages: they bound a run's memory
# whatever the size of the spool (DuckDB holds a batch's text about four times while parsing it).
PIECE_BYTES = 64 * 2**20
BATCH_BYTES = 128 * 2**20

# The fields the fast road reads, each as its JSON text (NULL when absent or null).
_FIELDS = ("job_id", "host", "gpu_index", "index", "ts", "gpu_uuid", *RANGES, "clocks_event_reasons")
_SHAPE = json.dumps(dict.fromkeys(_FIELDS, "JSON"))
# Lines left to the careful road whatever their fields: escapes, U+FFFD (where a byte was not
# UTF-8), and what DuckDB's JSON reader accepts where Python's refuses or
# reads otherwise: trailing commas, NaN and infinities in any case, a repeated key (DuckDB takes
# the first, Python the last). Scanning every line for the characters costs more than parsing
# it: a piece is looked at as a whole first (``_plain``), its lines one by one only if needed.
_UNUSUAL = r"[\\\x{FFFD}]|[:\[,]\s*-?(?i:nan|inf)"
_TRAILING_COMMA = r",\s*[\]}]"
_REPEATED = "|".join(f'"{k}"\\s*:.*"{k}"\\s*:' for k in _FIELDS)
_BLANK = r"[ \t\x0b\x0c]*"  # bytes.strip()'s whitespace, less the line breaks
_ISO = r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|\+00:00)?"
# DuckDB's readers expand these in a path: a file whose path holds one is read as text.
_GLOB = frozenset("*?[]{}")
# 3000-01-01: later (and negative) epochs go the careful road, which refuses those outside
# progress.json's rl_epoch (sql.EPOCH_FIRST, sql.EPOCH_END: this road's range lies within them)
_EPOCH_MAX = 32_503_680_000


def _string(raw: str) -> str:
    return f"CASE WHEN starts_with({raw}, '\"') THEN substr({raw}, 2, length({raw}) - 2) END"


def _whole_text(raw: str) -> str:
    """Whether a field's JSON text is a whole number 0 to 2^64 - 1 (parse_line's _whole_id)."""
    return f"(regexp_full_match({raw}, '[0-9]{{1,20}}') AND TRY_CAST({raw} AS UBIGINT) IS NOT NULL)"


def _fast_parse(raw_fields: str, keys: str = "piece, seq") -> str:
    """The fields' checks over ``raw_fields``, a relation of (``keys``, r_<field> for each of
    _FIELDS as JSON text, gi: the GPU index's JSON text)."""
    numbers = ", ".join(f"TRY_CAST(r_{name} AS DOUBLE) AS {name}" for name in RANGES)
    in_range = " AND ".join(
        f"(r_{name} IS NULL OR {name} >= {low}{f' AND {name} <= {high}' if math.isfinite(high) else ''})"
        for name, (low, high) in RANGES.items()
    )
    # ts: epoch seconds as progress.json's rl_epoch reads them (within its bounds: _EPOCH_MAX)
    return f"""
CREATE OR REPLACE TEMP TABLE spool_parsed AS
SELECT {keys}, job_id, host, CAST(gpu_index AS INTEGER) AS gpu_index,
       CASE WHEN iso IS NULL THEN {sql.epoch_timestamp("epoch")} ELSE iso END AS ts,
       gpu_uuid, {", ".join(RANGES)}, CAST(clocks_event_reasons AS BIGINT) AS clocks_event_reasons,
       -- a blank job_id is none (parse_line's _BLANKS): no job can be named so
       coalesce(NOT regexp_full_match(job_id, '[ \t\n\r\f\v]*') AND gpu_index IS NOT NULL
                AND (iso IS NOT NULL OR epoch IS NOT NULL)
                AND {in_range}
                AND (r_clocks_event_reasons IS NULL OR clocks_event_reasons IS NOT NULL)
                -- any other host, and a gpu_uuid that is no string, is dropped with a warning there
                AND (r_host IS NULL OR r_host = 'null' OR starts_with(r_host, '"') OR {_whole_text("r_host")})
                AND (r_gpu_uuid IS NULL OR r_gpu_uuid = 'null' OR starts_with(r_gpu_uuid, '"')), false) AS clean
FROM (
    SELECT *,
           -- a whole number 0 to 2^64 - 1 is the id's text, as progress.json's (parse_line's _whole_id)
           coalesce({_string("r_job_id")},
                    CASE WHEN {_whole_text("r_job_id")} THEN r_job_id END) AS job_id,
           -- a whole number is the host's text (a numbered node), as a job_id's
           coalesce({_string("r_host")}, CASE WHEN {_whole_text("r_host")} THEN r_host END, '') AS host,
           -- an empty or blank UUID is no UUID (parse_line's _BLANKS)
           CASE WHEN NOT regexp_full_match({_string("r_gpu_uuid")}, '[ \t\n\r\f\v]*')
                THEN {_string("r_gpu_uuid")} END AS gpu_uuid,
           CASE WHEN regexp_full_match(gi, '[0-9]{{1,9}}') THEN gi END AS gpu_index,
           CASE WHEN NOT starts_with(r_ts, '"') AND TRY_CAST(r_ts AS DOUBLE) BETWEEN 0 AND {_EPOCH_MAX}
                THEN TRY_CAST(r_ts AS DOUBLE) END AS epoch,
           CASE WHEN regexp_full_match({_string("r_ts")}, '{_ISO}')
                THEN TRY_CAST(regexp_replace({_string("r_ts")}, '(Z|\\+00:00)$', '') AS TIMESTAMP) END AS iso,
           {numbers},
           CASE WHEN regexp_full_match(r_clocks_event_reasons, '-?[0-9]{{1,18}}') THEN r_clocks_event_reasons END
               AS clocks_event_reasons
    FROM ({raw_fields})
)
"""


_RAWS = ", ".join(f"CAST(s.{name} AS VARCHAR) AS r_{name}" for name in _FIELDS)
# The fields of spool_lines' lines, parsed by from_json; a line it can't take has none (not clean).
LINE_FIELDS = f"""
SELECT piece, seq, {_RAWS},
       -- "gpu_index": null is no index (Python's doc.get), not a reason to read "index"
       coalesce(r_gpu_index, CASE WHEN NOT contains(line, '"gpu_index"') THEN r_index END) AS gi
FROM (
    SELECT piece, seq, line, plain,
           CASE WHEN (plain OR NOT regexp_matches(line, '{_UNUSUAL}'))
                     AND NOT regexp_matches(line, '{_TRAILING_COMMA}|{_REPEATED}')
                THEN try(from_json(line, '{_SHAPE}')) END AS s
    FROM spool_lines
    WHERE NOT regexp_full_match(line, '{_BLANK}')  -- the CSV reader reads an empty line as NULL
)
"""
# The fields of whole files read by DuckDB's JSON reader ($paths: those _json_readable takes), by
# the index of their file (file_index). A JSON null reads as NULL there, as if absent: "index" is
# read only in a file that never names "gpu_index" ($no_gpu_index). Parsed straight into
# spool_parsed (JSON_PARSE): the fields' texts are never stored, which would cost more than the
# parse; a row's line is its rank in spool_parsed's insertion order, which is the files' (as the
# CSV road's).
_JSON_COLUMNS = ", ".join(f"'{name}': 'JSON'" for name in _FIELDS)
JSON_FIELDS = f"""
SELECT file_index, {_RAWS},
       coalesce(CAST(s.gpu_index AS VARCHAR),
                CASE WHEN list_extract($no_gpu_index, CAST(file_index AS BIGINT) + 1)
                     THEN CAST(s.index AS VARCHAR) END) AS gi
FROM read_json($paths, format = 'newline_delimited', records = true, auto_detect = false,
               columns = {{{_JSON_COLUMNS}}}) s
"""


# The lines of the pieces given as text ($texts, each without its last newline), numbered in
# read order: seq counts on from $bases, the seq before each piece's first line.
SPLIT = """
CREATE OR REPLACE TEMP TABLE spool_lines AS
SELECT piece, plain, base + generate_subscripts(lines, 1) AS seq, unnest(lines) AS line
FROM (SELECT unnest($pieces) AS piece, unnest($bases) AS base, unnest($plain) AS plain,
             string_split(unnest($texts), chr(10)) AS lines)
"""
# The lines of whole files, read by DuckDB's CSV reader (in parallel, several times faster than
# splitting a text) as one column: no quotes, a delimiter the files don't hold. A file's lines
# come in file order (insertion order is kept); those past what Python read (appended since)
# are left for the next run.
READ_FILES = """
CREATE OR REPLACE TEMP TABLE spool_csv AS
SELECT filename, line
FROM read_csv($paths, columns = {'line': 'VARCHAR'}, header = false, delim = chr(1), quote = '', escape = '',
              new_line = '\\n', auto_detect = false, filename = true)
"""
FILE_PIECES = """
CREATE OR REPLACE TEMP TABLE spool_files AS
SELECT unnest($paths) AS filename, unnest($pieces) AS piece, unnest($bases) AS base, unnest($lines) AS lines,
       unnest($plain) AS plain
"""
FILE_LINES = """
CREATE OR REPLACE TEMP VIEW spool_lines AS
SELECT f.piece, f.plain, f.base + c.rowid - s.first + 1 AS seq, c.line
FROM spool_csv c
JOIN (SELECT filename, min(rowid) AS first FROM spool_csv GROUP BY filename) s USING (filename)
JOIN spool_files f USING (filename)
WHERE c.rowid - s.first < f.lines
"""
FAST_PARSE = _fast_parse(LINE_FIELDS)
JSON_PARSE = _fast_parse(JSON_FIELDS, "file_index")
# {parsed}: spool_parsed, or the JSON road's view of it (JSON_LINES)
STAGE_FAST = f"""
INSERT INTO batch_gpu_samples
SELECT {", ".join(COLUMNS)}, seq FROM {{parsed}} WHERE clean
"""
FAST_COUNTS = """
SELECT piece, count(*) FILTER (WHERE clean), list(seq ORDER BY seq) FILTER (WHERE NOT clean)
FROM {parsed}
GROUP BY piece
"""
DROP_FAST = "DROP TABLE IF EXISTS spool_parsed"
DROP_LINES = {"table": "DROP TABLE IF EXISTS spool_lines", "view": "DROP VIEW IF EXISTS spool_lines"}
DROP_FILES = "DROP TABLE IF EXISTS spool_csv; DROP TABLE IF EXISTS spool_files"
# What each file gave: a file gave a row per line when its count is its lines (a blank line gives
# none) and it still has the bytes Python read; then its lines are numbered from its first row on.
JSON_READ = "SELECT file_index, min(rowid), count(*) FROM spool_parsed GROUP BY file_index"
JSON_PIECES = """
CREATE OR REPLACE TEMP TABLE spool_json_files AS
SELECT unnest($indexes) AS file_index, unnest($pieces) AS piece, unnest($bases) - unnest($firsts) + 1 AS delta
"""
# spool_parsed as the CSV road's (piece, seq), for STAGE_FAST and FAST_COUNTS; the files not taken
# are left out by the join
JSON_LINES = """
CREATE OR REPLACE TEMP VIEW spool_json_lines AS
SELECT f.piece, p.rowid + f.delta AS seq, p.* EXCLUDE (file_index)
FROM spool_parsed p JOIN spool_json_files f USING (file_index)
"""
DROP_JSON = "DROP VIEW IF EXISTS spool_json_lines; DROP TABLE IF EXISTS spool_json_files"


BOM = b"\xef\xbb\xbf"


@dataclass
class Piece:
    """Whole lines of a spool file read from byte ``offset``, the first of them line ``first_line``."""

    offset: int
    first_line: int
    data: bytes  # ends with a newline
    path: Path | None = None  # when the piece is the whole file as it was read, from its start
    # the file's last line, which has no newline: ``data`` ends with one added (every road splits
    # lines at it), which the file does not hold
    unterminated: bool = False
    lines: int = field(init=False)  # as bytes.splitlines counts them, the careful road's count

    def __post_init__(self) -> None:
        self.lines = len(self.data.splitlines()) if b"\r" in self.data else self.data.count(b"\n")

    @property
    def raw(self) -> bytes:
        """The bytes read from the file."""
        return self.data[:-1] if self.unterminated else self.data

    @property
    def end(self) -> int:
        return self.offset + len(self.raw)


@dataclass
class Staged:
    """What a piece gave to the staged batch: its samples and its warnings, in line order."""

    rows: int = 0
    warnings: list[str] = field(default_factory=list)
    road: str = "careful"  # where its lines were parsed: "json", "csv" or "text" (then careful for some)


def store(
    con: duckdb.DuckDBPyConnection,
    rows: list[dict[str, Any]],
    source: str,
    on_skipped: Callable[[list[int]], None] = lambda indexes: None,
) -> set[str]:
    """Upsert samples (in the caller's transaction); returns the jobs they belong to.
    ``on_skipped`` hears the index in ``rows`` of each sample not stored (gpu_store.store_staged:
    of a minute already rolled up and past the raw window), so that the caller can say which."""
    if not rows:
        return set()
    columns: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in COLUMNS}
    columns["seq"] = list(range(len(rows)))
    con.execute(STAGE, columns)
    return gpu_store.store_staged(con, source, on_skipped)


def remove(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> int:
    """Remove the samples with these rows' keys (in the caller's transaction); the count removed."""
    if not rows:
        return 0
    columns: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in COLUMNS}
    columns["seq"] = list(range(len(rows)))
    con.execute(STAGE, columns)
    return gpu_store.remove_staged(con)


def read_pieces(
    path: Path, offset: int, first_line: int, size: int = PIECE_BYTES, stat: ledger.Stat | None = None
) -> Iterator[Piece]:
    """The complete lines of a spool file from ``offset`` on, about ``size`` bytes a piece.

    A last line without its newline is still being written: it is left for the next run (the
    read offset stays before it, so that the line is read once, whole). Unless the file is
    ``ledger.final`` under ``stat``, the stat the run found it with (settled, and no writer came
    back while it was read, which could have written half a line), or dated ahead of this
    machine's clock and unchanged while read (``ledger.ahead``: its time, which never looks
    settled, tells nothing of its writer): then it is yielded as any other line, marked
    ``unterminated``, and the caller reads it only if it is whole (a cut one waits until the
    file's record has kept its size and time long enough by this machine's clock, ``spool._quiet``).
    """
    with path.open("rb") as f:
        f.seek(offset)
        carry = b""
        while block := f.read(size):
            data = carry + block if carry else block
            end = data.rfind(b"\n") + 1
            if end:
                whole = offset == 0 and end == len(data) and len(block) < size
                piece = Piece(offset, first_line, data[:end], path if whole else None)
                yield piece
                offset, first_line = piece.end, first_line + piece.lines
            carry = data[end:]
    if carry and stat is not None and offset + len(carry) == stat.size and _may_be_last(path, stat):
        yield Piece(offset, first_line, carry + b"\n", unterminated=True)


def _may_be_last(path: Path, stat: ledger.Stat) -> bool:
    """Whether a file's last line without its newline may be its last line for good (``read_pieces``)."""
    return ledger.final(path, stat) or (ledger.ahead(stat) and ledger.unchanged_since(path, stat))


def stage(con: duckdb.DuckDBPyConnection, pieces: list[Piece]) -> list[Staged]:
    """Stage the pieces' samples in ``batch_gpu_samples`` (seq: read order), one Staged per piece.

    Not in a transaction of the caller's: a file DuckDB's readers can't read (a line over the CSV
    reader's size limit, a line the JSON reader refuses) fails a statement, which would spoil the
    transaction; it is read another way instead.
    """
    con.execute(STAGE_EMPTY)
    staged = [Staged() for _ in pieces]
    text: list[_Fast] = []
    files: list[_Fast] = []
    documents: list[_Fast] = []
    careful: list[tuple[int, int, int, bytes]] = []  # (piece, seq, line number, line)
    seq = 0
    for i, piece in enumerate(pieces):
        raw = piece.data
        marked = piece.offset == 0 and raw.startswith(BOM)
        if marked:
            # a byte order mark opening the file (UTF-8 as Windows tools write it) is no part of its
            # first line: blanks in its place keep every line's place, and the piece takes the text
            # road (DuckDB's readers of the file would see the mark, or not, by reader). The piece
            # itself keeps the file's bytes (the spool's record of the file digests them).
            raw = b"   " + raw[len(BOM) :]
        data = raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw
        if b"\r" in data:  # a lone carriage return breaks a line for Python, not for DuckDB
            lines = raw.splitlines()  # not data's: CR CR LF is two breaks, CR LF after the replace one
            careful.extend((i, seq + k, piece.first_line + k - 1, line) for k, line in enumerate(lines, start=1))
        else:
            whole = piece.path is not None and not marked and data is raw and not _GLOB.intersection(str(piece.path))
            if whole and _csv_readable(data) and _json_readable(data):
                documents.append(_Fast(i, data, seq, True))
            elif whole and _csv_readable(data):
                files.append(_Fast(i, data, seq, _plain(data)))
            else:
                text.append(_Fast(i, data, seq, _plain(data)))
        seq += piece.lines
    if documents:
        refused: list[_Fast] = []
        careful += _stage_json(con, pieces, staged, documents, refused)
        files += [_Fast(f.piece, f.data, f.base, _plain(f.data)) for f in refused]
    if files:
        try:
            con.execute(READ_FILES, {"paths": [str(pieces[f.piece].path) for f in files]})
        except sql.READ_ERRORS:
            text += files
        else:
            con.execute(
                FILE_PIECES,
                {
                    "paths": [str(pieces[f.piece].path) for f in files],
                    "pieces": [f.piece for f in files],
                    "bases": [f.base for f in files],
                    "lines": [pieces[f.piece].lines for f in files],
                    "plain": [f.plain for f in files],
                },
            )
            con.execute(FILE_LINES)
            for f in files:
                staged[f.piece].road = "csv"
            careful += _stage_fast(con, pieces, staged, files, DROP_LINES["view"])
            con.execute(DROP_FILES)
    if text:
        texts = [f.data[:-1].decode("utf-8", "replace") for f in text]
        pieces_at = [f.piece for f in text]
        con.execute(
            SPLIT,
            {"texts": texts, "pieces": pieces_at, "bases": [f.base for f in text], "plain": [f.plain for f in text]},
        )
        del texts
        for f in text:
            staged[f.piece].road = "text"
        careful += _stage_fast(con, pieces, staged, text, DROP_LINES["table"])
    careful.sort(key=lambda item: item[1])
    _stage_careful(con, staged, careful)
    return staged


def _stage_json(
    con: duckdb.DuckDBPyConnection, pieces: list[Piece], staged: list[Staged], fast: list[_Fast], refused: list[_Fast]
) -> list[tuple[int, int, int, bytes]]:
    """The fast road over whole files read by DuckDB's JSON reader; returns the lines it leaves
    to the careful road, and adds to ``refused`` the files it can't take (they go the CSV road)."""
    # a file appended to since Python read it would give more lines: the CSV road cuts them off
    ready = _keep(fast, lambda f: _size(pieces[f.piece]) == len(f.data), refused)
    if not ready:
        return []
    try:
        con.execute(
            JSON_PARSE,
            {
                "paths": [str(pieces[f.piece].path) for f in ready],
                "no_gpu_index": [b'"gpu_index"' not in f.data for f in ready],
            },
        )
    except sql.READ_ERRORS:
        con.execute(DROP_FAST)
        refused += ready
        return []
    read = {index: (first, rows) for index, first, rows in con.execute(JSON_READ).fetchall()}
    first: dict[int, int] = {}
    for index, f in enumerate(ready):
        got, rows = read.get(index, (0, 0))
        if rows == pieces[f.piece].lines and _size(pieces[f.piece]) == len(f.data):
            first[f.piece] = got
            staged[f.piece].road = "json"
        else:
            refused.append(f)
    taken = [(index, f) for index, f in enumerate(ready) if f.piece in first]
    if not taken:
        con.execute(DROP_FAST)
        return []
    con.execute(
        JSON_PIECES,
        {
            "indexes": [index for index, _ in taken],
            "pieces": [f.piece for _, f in taken],
            "bases": [f.base for _, f in taken],
            "firsts": [first[f.piece] for _, f in taken],
        },
    )
    con.execute(JSON_LINES)
    left = _stage_parsed(con, pieces, staged, [f for _, f in taken], "spool_json_lines")
    con.execute(DROP_JSON)
    con.execute(DROP_FAST)
    return left


def _keep(fast: list[_Fast], test: Callable[[_Fast], bool], refused: list[_Fast]) -> list[_Fast]:
    """The pieces that pass ``test``; the others are added to ``refused``."""
    kept: list[_Fast] = []
    for f in fast:
        (kept if test(f) else refused).append(f)
    return kept


def _size(piece: Piece) -> int:
    try:
        return os.stat(str(piece.path)).st_size
    except OSError:
        return -1


@dataclass
class _Fast:
    """A piece on the fast road: its text with CRLF as LF, and the seq before its first line."""

    piece: int
    data: bytes
    base: int
    plain: bool  # no line of it needs the scan for _UNUSUAL


def _plain(data: bytes) -> bool:
    """Whether no line of the piece holds what _UNUSUAL finds (and its text decodes as UTF-8 as is)."""
    if b"\\" in data:
        return False
    lower = data.lower()
    if b"nan" in lower or b"inf" in lower:
        return False
    return json_text.is_utf8(data)


def _csv_readable(data: bytes) -> bool:
    """Whether the CSV reader reads the same lines: UTF-8 without its delimiter or NUL."""
    if b"\x01" in data or b"\x00" in data:
        return False
    return json_text.is_utf8(data)


# _json_readable's marks: a separator after which a value may start (bytes.translate: one pass in C)
_SEPARATORS = bytes(1 if chr(byte) in ",:[" else 0 for byte in range(256))
_COMMA, _SPACE, _MINUS = b", -"


def _json_readable(data: bytes) -> bool:
    """Whether DuckDB's JSON reader reads every line of the piece as Python's json does, as far
    as the fields' checks (JSON_PARSE) can't see: UTF-8 without escapes, a byte order mark,
    vertical tab or form feed, and no value that DuckDB takes and Python refuses or reads
    otherwise (NaN or an infinity in any spelling, a trailing comma), wherever it lies (keys the
    fields' checks don't read included).

    Vectorised over the piece (a regex per piece costs several times more): after each comma,
    colon or bracket, a value starts at the next byte or after one space; any other spacing there
    leaves the piece to the CSV road, whose per-line checks are exact. A match inside a string
    only sends the piece there too.
    """
    if b"\\" in data or b"\x0b" in data or b"\x0c" in data:  # the reader takes these two for spaces
        return False
    if not json_text.is_utf8(data) or (not data.isascii() and b"\xef\xbb\xbf" in data):
        return False
    b = np.frombuffer(data, np.uint8)
    at = np.flatnonzero(np.frombuffer(data.translate(_SEPARATORS), bool))
    # the piece ends with a newline, never a separator: each has two more bytes, or one and the end
    first = b[at + 1]
    second = b[np.minimum(at + 2, len(b) - 1)]
    spaced = first == _SPACE
    value = np.where(spaced, second, first)
    if (((first >= 9) & (first <= 13)) | (spaced & ((second == _SPACE) | ((second >= 9) & (second <= 13))))).any():
        return False  # a tab, line break, vertical tab, form feed or CR, or a second space
    if ((b[at] == _COMMA) & ((value == ord("]")) | (value == ord("}")))).any():
        return False  # a trailing comma
    # the few values that start with a minus sign or a letter n or i: read on
    odd = np.flatnonzero((value == _MINUS) | ((value | 0x20) == ord("n")) | ((value | 0x20) == ord("i")))
    start = at[odd] + 1 + spaced[odd]
    start += b[start] == _MINUS
    letter, then = b[np.minimum(start, len(b) - 1)] | 0x20, b[np.minimum(start + 1, len(b) - 1)] | 0x20
    return not (((letter == ord("n")) & (then == ord("a"))) | ((letter == ord("i")) & (then == ord("n")))).any()


def _stage_fast(
    con: duckdb.DuckDBPyConnection, pieces: list[Piece], staged: list[Staged], fast: list[_Fast], drop: str
) -> list[tuple[int, int, int, bytes]]:
    """The fast road over ``spool_lines`` (FAST_PARSE), which ``drop`` drops; returns the lines it
    leaves to the careful road."""
    con.execute(FAST_PARSE)
    con.execute(drop)
    left = _stage_parsed(con, pieces, staged, fast, "spool_parsed")
    con.execute(DROP_FAST)
    return left


def _stage_parsed(
    con: duckdb.DuckDBPyConnection, pieces: list[Piece], staged: list[Staged], fast: list[_Fast], parsed: str
) -> list[tuple[int, int, int, bytes]]:
    """Stage the clean rows of ``parsed`` (piece, seq, ..., clean); returns the others' lines."""
    con.execute(STAGE_FAST.format(parsed=parsed))
    by_piece = {f.piece: f for f in fast}
    left: list[tuple[int, int, int, bytes]] = []
    for i, clean, unclean in con.execute(FAST_COUNTS.format(parsed=parsed)).fetchall():
        staged[i].rows += clean
        if unclean:
            f = by_piece[i]
            lines = f.data.split(b"\n")
            left.extend((i, s, pieces[i].first_line + s - f.base - 1, lines[s - f.base - 1]) for s in unclean)
    return left


def _stage_careful(
    con: duckdb.DuckDBPyConnection, staged: list[Staged], lines: list[tuple[int, int, int, bytes]]
) -> None:
    """The careful road: Python's parser, which words the warnings."""
    rows: list[dict[str, Any]] = []
    ISO_TIMES.prime(_ts_texts(line for _, _, _, line in lines))
    try:
        for i, seq, number, line in lines:
            if not line.strip():
                continue
            try:
                row, problems = parse_line(line)
            except ValueError as error:
                staged[i].warnings.append(f"line {number}: {error}, skipped")
                continue
            row["seq"] = seq
            rows.append(row)
            staged[i].rows += 1
            staged[i].warnings.extend(f"line {number}: {problem}, dropped" for problem in problems)
    finally:
        ISO_TIMES.forget()
    if rows:
        con.execute(STAGE_MORE, {c: [r.get(c) for r in rows] for c in (*COLUMNS, "seq")})


def parse_line(line: bytes) -> tuple[dict[str, Any], list[str]]:
    """One spool line as a sample row and the values it dropped; ValueError if it can't be one."""
    try:
        doc = json_text.loads(line)  # (an integer of 4,300+ digits is a float: +-inf)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"not JSON ({error})") from None
    except RecursionError:
        raise ValueError("not JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    problems: list[str] = []
    job_id = _text(doc.get("job_id"), "job_id", problems)
    if _whole_id(job_id):
        job_id = str(job_id)  # a scheduler's numeric id: its text, as progress.json's job_id reads
    if job_id is None or (isinstance(job_id, str) and not job_id.strip(_BLANKS)):
        raise ValueError("no job_id")
    if not isinstance(job_id, str):
        raise ValueError(f"job_id {_shown(job_id)} is not a string or a whole number 0 to 2^64 - 1")
    written = doc.get("gpu_index", doc.get("index"))
    if written is None:  # absent or null: said as such, not as the text "None"
        raise ValueError("no gpu_index")
    if doc.get("ts") is None:
        raise ValueError("no ts")
    # 2.0 is GPU 2, as progress.json reads an index
    gpu_index = int(written) if isinstance(written, float) and written.is_integer() else written
    if isinstance(gpu_index, bool) or not isinstance(gpu_index, int) or not 0 <= gpu_index <= INT_MAX:
        raise ValueError(f"gpu_index {_shown(written)} is not a GPU index")
    host = doc.get("host")
    if _whole_id(host):
        host = str(host)  # a numbered node: its text, as a job_id's (two hosts never become one)
    elif host is not None and not isinstance(host, str):
        problems.append(f"host {_shown(host)} is not a string or a whole number")
    host = _text(host, "host", problems)
    uuid = doc.get("gpu_uuid")
    if uuid is not None and not isinstance(uuid, str):
        problems.append(f"gpu_uuid {_shown(uuid)} is not a string")
    uuid = _text(uuid, "gpu_uuid", problems)
    row: dict[str, Any] = {
        "job_id": job_id,
        "host": host if isinstance(host, str) else "",
        "gpu_index": gpu_index,
        "ts": parse_timestamp(doc.get("ts")),
        # an empty or blank UUID is no UUID: the GPU is then keyed by its index (as the fast road does)
        "gpu_uuid": uuid if isinstance(uuid, str) and uuid.strip(_BLANKS) else None,
    }
    for name, (low, high) in RANGES.items():
        row[name] = _number(doc.get(name), low, high)
        if row[name] is None and doc.get(name) is not None:
            problems.append(f"{name} {_shown(doc.get(name))} is not a number in range")
    reasons = doc.get("clocks_event_reasons")
    bitmask = isinstance(reasons, int) and not isinstance(reasons, bool) and BIGINT_MIN <= reasons <= BIGINT_MAX
    row["clocks_event_reasons"] = reasons if bitmask else None
    if row["clocks_event_reasons"] is None and reasons is not None:
        problems.append(f"clocks_event_reasons {_shown(reasons)} is not a bitmask")
    return row, problems


# The bounds of the stored columns' types: gpu_index is an INTEGER, clocks_event_reasons a BIGINT.
INT_MAX = 2**31 - 1
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
# the blanks an empty gpu_uuid may hold (the fast road's test is the same: FAST_PARSE)
_BLANKS = " \t\n\r\f\v"


def _whole_id(value: Any) -> bool:
    """A job id written as a JSON integer that progress.json takes as its text (0 to 2^64 - 1,
    the integers DuckDB's reader holds exactly: BATCH_JOBS), as the fast road's check does."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _shown(value: Any) -> str:
    """A value for a warning: its first 40 characters, quoted (never a huge int's every digit)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"'{str(value)[:20]}...' ({len(str(abs(value)))} digits)"
    return repr(str(value)[:40])


def _text(value: Any, name: str, problems: list[str]) -> Any:
    """A string field as it can be stored: lone surrogates (a ``\\udcff`` escape, which UTF-8
    can't encode) replaced by U+FFFD, with a warning; anything else as is."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        fixed = json_text.without_surrogates(value)
        # (the caller adds ", dropped": the surrogate is)
        problems.append(f"{name} {value[:40]!r} is not valid Unicode: U+FFFD in place of its lone surrogate")
        return fixed
    return value


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 (no offset = UTC) or Unix epoch seconds, as a naive UTC datetime of years 1-9999.

    Both are read as progress.json's are: an ISO-8601 string by ``ISO_TIMES``, epoch seconds
    within ``sql.rl_epoch``'s bounds (from year 1, below 1e11). ValueError for anything else,
    out-of-range times included (Python's own errors there are OverflowError and OSError, which
    would stop the run instead of skipping the line).
    """
    try:
        if isinstance(value, int | float) and not isinstance(value, bool) and _epoch_in_range(value):
            return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
        if isinstance(value, str) and (moment := ISO_TIMES.read(value)) is not None:
            return moment
    except (ValueError, OverflowError, OSError):
        pass
    raise ValueError(f"ts {str(value)[:40]!r} is not a timestamp")


def _epoch_in_range(value: float) -> bool:
    """Whether epoch seconds are within rl_epoch's bounds (NaN and infinities are not)."""
    return sql.EPOCH_FIRST <= value < sql.EPOCH_END


class IsoTimes:
    """ISO-8601 texts read as progress.json reads a timestamp: by DuckDB, with the same macro
    (``sql.rl_iso``: its TIMESTAMPTZ cast, plus a lowercase z, the basic format and a decimal
    comma), on a connection of its own in UTC. inputs.md gives the spool's ``ts`` that definition;
    Python's ``fromisoformat`` takes other forms (ISO week dates, a lowercase t) and refuses some
    (a lowercase z, a zone name), so it can't stand in for it.

    A query costs a hundred times a line's parse: the careful road reads its lines' texts in one
    (``prime``), and ``read`` queries alone only a text it did not find (``parse_line`` called
    outside a staging, or a ``ts`` the scan for them missed).
    """

    QUERY = "SELECT list_transform($texts, lambda s: rl_iso(s))"

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one DuckDB connection, used by one thread at a time
        self._con: duckdb.DuckDBPyConnection | None = None
        self._known: dict[str, datetime | None] = {}

    def prime(self, texts: Iterable[str]) -> None:
        """Read these texts at once, for ``read`` to find until ``forget``."""
        unique = [text for text in dict.fromkeys(texts) if json_text.encodable(text)]
        with self._lock:
            self._known = dict(zip(unique, self._query(unique), strict=True))

    def forget(self) -> None:
        with self._lock:
            self._known = {}

    def read(self, text: str) -> datetime | None:
        """The text's time (naive UTC), or None where progress.json's reader finds none."""
        if not json_text.encodable(text):  # a lone surrogate: no time, and DuckDB takes no such text
            return None
        with self._lock:
            if text in self._known:
                return self._known[text]
            return self._query([text])[0]

    def _query(self, texts: list[str]) -> list[datetime | None]:
        if not texts:
            return []
        if self._con is None:
            self._con = duckdb.connect()
            self._con.execute("SET TimeZone = 'UTC'")  # a time without an offset is UTC
            sql.install_macros(self._con)
        row = self._con.execute(self.QUERY, {"texts": texts}).fetchone()
        assert row is not None
        return list(row[0])


ISO_TIMES = IsoTimes()

# a line's "ts" string, for IsoTimes.prime: a scan, not a parse (a text it misses is read alone)
_TS_STRING = re.compile(rb'"ts"\s*:\s*("(?:[^"\\]|\\.)*")')


def _ts_texts(lines: Iterable[bytes]) -> Iterator[str]:
    for line in lines:
        found = _TS_STRING.search(line)
        if found is None:
            continue
        try:
            text = json.loads(found.group(1))
        except ValueError:  # not UTF-8, or a bad escape: the line's parse says why
            continue
        yield text


def _number(value: Any, low: float, high: float) -> float | None:
    """A finite number in range, a non-finite one as is, anything else None (dropped)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = json_text.as_float(value)  # an int past the largest double: +-inf, as `1e400` and the fast road read
    if math.isfinite(value) and not low <= value <= high:
        return None
    return value
