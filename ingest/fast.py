"""The fast road for ``history`` lists: a C reader (``_history.c``) that keeps each value's type.

DuckDB's JSON reader can give a value either as a number, casting ``"17200"`` and ``true``
silently, or as JSON text, which must then be parsed again and costs more than reading the
file. inputs.md wants a string or a boolean in a numeric field dropped *with a warning*, so
the careful read (progress.py) takes every value as text. Most files hold no such value: the
C reader proves that of a file's history (every known field has its JSON type and passes the
checks of ``rl_checked``) and hands its entries and GPU readings over as typed columns. The
rest of the document, with ``"history": []`` in place of the list, is then read by DuckDB as
any file is (all rests of a batch from one file: see ``write_rests``), so ``latest``,
checkpoints, the job's fields and their warnings have one reader.

A file the C reader gives up on (for any reason: a value to warn about, an odd byte, an
escape in a key, a ``\\u`` escape DuckDB refuses) is read the careful way whole. So this
module never writes a warning; it is only ever a faster way to the rows the careful read would
give (tests/test_fast_path.py compares the two on generated files).

The careful read of a large file (SPLIT_BYTES or more) takes its history in pieces: the C
reader finds each entry's bytes (``split``), whatever they hold, and the careful read gets the
document without its history plus files of PIECE_BYTES of entries (``Pieces``). DuckDB's
reader holds several times a document's size in memory, so a piece at a time bounds it.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from . import json_text
from .progress import REST_KEY

if TYPE_CHECKING:
    import pyarrow as pa

try:
    from . import _history  # type: ignore[attr-defined]  # a C extension, no stub
except ImportError:  # built without a C compiler: every file takes the careful read
    _history = None

AVAILABLE = _history is not None
THREADS = max(1, min(4, os.cpu_count() or 1))
STRIPES_PER_THREAD = 8  # fast.read's tasks: enough to even out files of different sizes

# The careful read takes a file of SPLIT_BYTES or more in pieces of about PIECE_BYTES of entries.
SPLIT_BYTES = 64 << 20
PIECE_BYTES = 16 << 20

# The C reader's buffers, in its order (ENTRY_BUFFERS and GPU_BUFFERS in _history.c): name,
# Arrow type, nullable (a validity bitmap comes first). pyarrow is imported when first needed:
# an ingest with nothing to read starts faster without it.
ENTRY_COLUMNS = [
    ("file_id", "int32", False),
    ("pos", "int32", False),
    ("step", "int64", False),
    ("ts", "timestamp[us]", True),
    ("loss", "double", True),
    ("eval_loss", "double", True),
    ("learning_rate", "double", True),
    ("samples_per_second", "double", True),
    ("iteration_time", "double", True),
    ("samples", "int64", True),
]
GPU_COLUMNS = [
    ("file_id", "int32", False),
    ("pos", "int32", False),
    ("gpos", "int32", False),
    ("step", "int64", False),
    ("gpu_index", "int64", True),
    ("gpu_uuid", "string", True),
    ("utilization_percent", "double", True),
    ("memory_used_mb", "double", True),
    ("memory_total_mb", "double", True),
    ("temperature_c", "double", True),
    ("power_w", "double", True),
]


@dataclass
class Parsed:
    """A file whose history the C reader took: its rest of the document and its typed rows.

    The rows stay the C reader's buffers until a batch's are joined into one table (``staged``):
    Arrow arrays built per file cost more than the C reader itself for small files.
    """

    file_id: int
    rest: bytes  # the document with "history": [] in place of its list
    history_entries: int
    entry_buffers: tuple[bytes, ...]
    gpu_count: int
    gpu_buffers: tuple[bytes, ...]

    @property
    def entries(self) -> pa.RecordBatch:
        return _batch(ENTRY_COLUMNS, self.history_entries, self.entry_buffers)

    @property
    def gpus(self) -> pa.RecordBatch:
        return _batch(GPU_COLUMNS, self.gpu_count, self.gpu_buffers)


def parse(data: bytes, file_id: int) -> Parsed | None:
    """The typed rows of a document's history, or None when it needs the careful read."""
    if _history is None:
        return None
    result = _history.parse(data, file_id)
    if result is None:
        return None
    start, stop, n_entries, entry_buffers, n_gpus, gpu_buffers = result
    rest = data[:start] + b"[]" + data[stop:]
    if not json_text.is_utf8(rest):
        # DuckDB would refuse the batch's file of rests, and every file of the fast road would be
        # read again the careful way (four times the batch's time); this one alone is, and repaired
        return None
    return Parsed(file_id, rest, n_entries, entry_buffers, n_gpus, gpu_buffers)


@dataclass
class Pieces:
    """A large file for the careful read in pieces: ``rest``, the document with ``"history": []``
    in place of its list; ``pieces``, files ``{"history": [...]}`` of consecutive entries, each with
    the number of entries before it; ``history_entries``, how many the list had; ``not_utf8``, the
    warning for its bytes that are not UTF-8 (json_text.not_utf8), if any."""

    rest: Path
    pieces: list[tuple[Path, int]]
    history_entries: int
    not_utf8: str | None = None


def split(path: Path, scratch: Path, name: str) -> Pieces | None:
    """Write a file's rest and history pieces into ``scratch`` (names starting with ``name``);
    None when the C reader can't tell its entries apart (the careful read then takes it whole)."""
    if _history is None:
        return None
    data = path.read_bytes()
    result = _history.split(data)
    if result is None:
        return None
    start, stop, raw = result
    spans = array("q")
    spans.frombytes(raw)
    del raw
    view = memoryview(data)
    rest = scratch / f"{name}-rest.json"
    with rest.open("wb") as out:
        out.write(view[:start])
        out.write(b"[]")
        out.write(view[stop:])
    pieces: list[tuple[Path, int]] = []
    count = len(spans) // 2
    first = 0
    while first < count:
        last = first  # the piece's entries are first..last, at least one
        while last + 1 < count and spans[2 * last + 3] - spans[2 * first] <= PIECE_BYTES:
            last += 1
        piece = scratch / f"{name}-{len(pieces)}.json"
        with piece.open("wb") as out:
            out.write(b'{"history": [')
            out.write(view[spans[2 * first] : spans[2 * last + 1]])
            out.write(b"]}")
        pieces.append((piece, first))
        first = last + 1
    view.release()
    # DuckDB refuses a part holding such bytes, and the repair of it reads them as U+FFFD: its
    # warning names their place in the file, which only the whole file's bytes tell (a piece's
    # lines and columns are not the file's); isascii alone for a plain file
    return Pieces(rest, pieces, count, json_text.not_utf8(data))


def _batch(columns: list[tuple[str, str, bool]], rows: int, buffers: tuple[bytes, ...]) -> pa.RecordBatch:
    import pyarrow as pa

    arrays = []
    it = iter(buffers)
    for _, type_, nullable in columns:
        validity = pa.py_buffer(next(it)) if nullable else None
        if type_ == "string":  # offsets, then bytes
            parts = [validity, pa.py_buffer(next(it)), pa.py_buffer(next(it))]
        else:
            parts = [validity, pa.py_buffer(next(it))]
        arrays.append(pa.Array.from_buffers(pa.type_for_alias(type_), rows, parts))
    return pa.RecordBatch.from_arrays(arrays, schema=_schema(columns))


def _table(columns: list[tuple[str, str, bool]], parts: list[tuple[int, tuple[bytes, ...]]]) -> pa.Table:
    """One table of the rows of many files (``parts``: each file's row count and C buffers), built
    with a few numpy operations per column whatever the number of files."""
    import numpy as np
    import pyarrow as pa

    if not parts:
        return pa.Table.from_batches([], schema=_schema(columns))  # empty_table() would import pandas
    rows = np.array([n for n, _ in parts], dtype=np.int64)
    total = int(rows.sum())
    row_starts = np.cumsum(rows) - rows
    # A file's validity bitmap has (rows + 7) // 8 bytes: laid end to end, file i's bits start at
    # 8 * (its bitmap's byte offset); `keep` picks each row's bit out of them.
    bitmap_bytes = (rows + 7) // 8
    keep = np.arange(total, dtype=np.int64) + np.repeat(8 * (np.cumsum(bitmap_bytes) - bitmap_bytes) - row_starts, rows)
    # A string column's offsets: rows + 1 per file, each list starting at 0.
    leading = np.cumsum(rows + 1) - (rows + 1)

    def joined(k: int) -> bytes:
        return b"".join([buffers[k] for _, buffers in parts])

    def validity(k: int) -> pa.Buffer:
        bits = np.unpackbits(np.frombuffer(joined(k), dtype=np.uint8), bitorder="little")
        return pa.py_buffer(np.packbits(bits[keep], bitorder="little"))

    def offsets(k: int) -> pa.Buffer:
        lengths = np.array([len(buffers[k + 1]) for _, buffers in parts], dtype=np.int64)
        each = np.frombuffer(joined(k), dtype=np.int32).astype(np.int64)
        after = np.delete(each, leading) + np.repeat(np.cumsum(lengths) - lengths, rows)
        # a batch holds at most FAST_BATCH_BYTES of JSON (progress formats): far below int32's range
        return pa.py_buffer(np.concatenate([np.zeros(1, dtype=np.int64), after]).astype(np.int32))

    arrays = []
    k = 0
    for _, type_, nullable in columns:
        valid = None
        if nullable:
            valid = validity(k)
            k += 1
        if type_ == "string":
            buffers = [valid, offsets(k), pa.py_buffer(joined(k + 1))]
            k += 2
        else:
            buffers = [valid, pa.py_buffer(joined(k))]
            k += 1
        arrays.append(pa.Array.from_buffers(pa.type_for_alias(type_), total, buffers))
    return pa.Table.from_arrays(arrays, schema=_schema(columns))


def write_rests(parsed: dict[int, Parsed], path: Path) -> dict[int, str]:
    """Write the rests of the documents into one file; the name of each (``path#file_id``).

    Each rest gets the key ``progress.REST_KEY`` with its file's id (the C reader gives up on a
    document that has that key already), so that one read of one file gives every document.
    """
    with path.open("wb") as out:
        for file_id, p in parsed.items():
            brace = p.rest.index(b"{")  # the C reader saw only whitespace before it
            out.write(b'{"%s": %d, ' % (REST_KEY.encode(), file_id) + p.rest[brace + 1 :] + b"\n")
    return {file_id: f"{path}#{file_id}" for file_id in parsed}


def read(files: list[tuple[int, Path]]) -> dict[int, Parsed]:
    """Read and parse these (file_id, path) files in threads; the ones the C reader took, in the
    order given.

    A file that can't be read is left out: the careful read meets the same error and says so.
    """
    if _history is None or not files:
        return {}

    def some(items: list[tuple[int, Path]]) -> list[Parsed]:
        found = []
        for file_id, path in items:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            parsed = parse(data, file_id)
            if parsed is not None:
                found.append(parsed)
        return found

    # a task per stripe of files, not per file: for small files a task's own cost was more than
    # the file's read and parse
    stripes = [files[i :: THREADS * STRIPES_PER_THREAD] for i in range(min(len(files), THREADS * STRIPES_PER_THREAD))]
    with ThreadPoolExecutor(THREADS) as pool:
        found = {p.file_id: p for stripe in pool.map(some, stripes) for p in stripe}
    return {file_id: found[file_id] for file_id, _ in files if file_id in found}


# The batch's rows as the merge reads them: the careful read's (progress.py's batch tables, and
# split tables for the pieces of large files) and the fast road's, which are never copied into
# those. The join leaves out files that left the batch. `is_latest` and `stand_in` (a latest
# whose timestamp is the snapshot's updated_at) let the merge rank `latest` against its history.
STAGED_STEPS = """
CREATE OR REPLACE TEMP VIEW staged_steps AS
SELECT file_id, seq, job_id, pos, step, ts, loss, eval_loss, learning_rate, samples_per_second,
       iteration_time, samples, place IS NOT DISTINCT FROM 'latest' AS is_latest, stand_in
FROM batch_steps
UNION ALL
SELECT j.file_id, j.seq, j.job_id, s.pos, s.step, s.ts, s.loss, s.eval_loss, s.learning_rate,
       s.samples_per_second, s.iteration_time, s.samples, false, false
FROM fast_entries s JOIN batch_jobs j ON j.file_id = s.file_id
UNION ALL
SELECT j.file_id, j.seq, j.job_id, s.pos, s.step, s.ts, s.loss, s.eval_loss, s.learning_rate,
       s.samples_per_second, s.iteration_time, s.samples, false, false
FROM split_steps s JOIN batch_jobs j ON j.file_id = s.file_id
"""
STAGED_GPUS = """
CREATE OR REPLACE TEMP VIEW staged_gpus AS
-- an empty or blank uuid is no uuid, as in the spool (ingest/gpu_samples.py)
SELECT file_id, seq, job_id, step, pos, gpos, gpu_index,
       CASE WHEN NOT regexp_full_match(gpu_uuid, '[ \t\n\r\f\v]*') THEN gpu_uuid END AS gpu_uuid,
       utilization_percent, memory_used_mb, memory_total_mb, temperature_c, power_w
FROM (
SELECT file_id, seq, job_id, step, pos, gpos, gpu_index, gpu_uuid, utilization_percent, memory_used_mb,
       memory_total_mb, temperature_c, power_w
FROM batch_gpus
WHERE unusable IS NULL  -- no GPU reading (progress.GPUS_SELECT): dropped, with a warning
UNION ALL
SELECT j.file_id, j.seq, j.job_id, g.step, g.pos, g.gpos, CAST(coalesce(g.gpu_index, g.gpos - 1) AS INTEGER),
       g.gpu_uuid, g.utilization_percent, g.memory_used_mb, g.memory_total_mb, g.temperature_c, g.power_w
FROM fast_gpus g JOIN batch_jobs j ON j.file_id = g.file_id
UNION ALL
SELECT j.file_id, j.seq, j.job_id, g.step, g.pos, g.gpos, g.gpu_index, g.gpu_uuid, g.utilization_percent,
       g.memory_used_mb, g.memory_total_mb, g.temperature_c, g.power_w
FROM split_gpus g JOIN batch_jobs j ON j.file_id = g.file_id
WHERE g.unusable IS NULL
)
"""


@contextmanager
def staged(con: duckdb.DuckDBPyConnection, parsed: dict[int, Parsed]) -> Iterator[None]:
    """Within: ``staged_steps`` and ``staged_gpus`` hold the batch's rows, these files' included."""

    entries = _table(ENTRY_COLUMNS, [(p.history_entries, p.entry_buffers) for p in parsed.values()])
    gpus = _table(GPU_COLUMNS, [(p.gpu_count, p.gpu_buffers) for p in parsed.values()])
    if hasattr(con, "complete"):  # DuckDB 2 registers nothing while an earlier result is unread
        con.complete()
    con.register("fast_entries", entries)
    con.register("fast_gpus", gpus)
    try:
        con.execute(STAGED_STEPS)
        con.execute(STAGED_GPUS)
        yield
    finally:
        if hasattr(con, "complete"):
            con.complete()
        con.unregister("fast_entries")
        con.unregister("fast_gpus")


def _schema(columns: list[tuple[str, str, bool]]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(name, pa.type_for_alias(type_), nullable) for name, type_, nullable in columns])
