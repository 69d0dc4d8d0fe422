"""PostgreSQL's raw GPU samples, packed one row per GPU and minute (issue #18, revision 0028).

A sample as a row of its own cost PostgreSQL about 393 bytes (a 24-byte tuple header, 14
columns with the 40-character GPU UUID twice, and its entry in the primary key). PostgreSQL
stores them instead in ``gpu_sample_minutes``: one row per (job_id, host, gpu_key, minute)
holding, in time order, each sample's offset in microseconds from the minute and every other
column's values as an array (NULL items kept, floats as ``DOUBLE PRECISION``: the same bits),
which TOAST compresses (STORAGE MAIN under a toast_tuple_target of 128: every array compressed
and kept in the row; docs/decisions.md). Readers query the view ``gpu_samples`` (revision 0028),
which unnests the arrays into the same columns, in the same order, as DuckDB's ``gpu_samples``:
every view reading it gives the same rows on both engines.

Writers replace whole minutes: the telemetry publish (warehouse/pg_telemetry.py) deletes the
rows of its ranges, whose bounds are whole minutes (warehouse/rollups.py), and ``copy``s the
stage's samples of them; ``db copy`` (warehouse/pg_copy.py) copies every sample with ``copy``.
"""

from __future__ import annotations

from typing import Any

import duckdb

from . import parts

TABLE = "gpu_sample_minutes"  # PostgreSQL's table (revision 0028)
VIEW = "gpu_samples"  # what readers query on both engines

# the columns of a sample held as arrays (every column but the key, in DuckDB's order), in the
# table's order after its key and offsets
PACKED = tuple(c for c in parts.GPU_SAMPLES.columns if c not in parts.GPU_SAMPLES.key)
# the table's columns with their PostgreSQL types (COPY's binary types), in order
COLUMNS: tuple[tuple[str, str], ...] = (
    ("job_id", "varchar"),
    ("host", "varchar"),
    ("gpu_key", "varchar"),
    ("minute", "timestamp"),
    ("offsets_us", "int4[]"),
    ("gpu_index", "int4[]"),
    ("gpu_uuid", "varchar[]"),
    *((name, "float8[]") for name in PACKED[2:8]),
    ("clocks_event_reasons", "int8[]"),
    ("source", "varchar[]"),
)
OFFSETS = 4  # the index of offsets_us in a packed row

# DuckDB's samples (the view gpu_samples of a warehouse or stage) packed as the table's rows. Each
# minute's samples are gathered as ONE list of whole samples (structs), in the order of ts, and
# its columns taken from that list: the i-th items of every array are one sample's even when two
# samples share a ts (ingest keeps one sample per job, host, GPU and ts, ingest/gpu_store.py, but
# nothing enforces it since revision 0026 dropped DuckDB's key). A tie-break on every column as
# well took 23 % more memory (500,000 samples) for an order only such duplicates would change.
# list() keeps NULL items.
SAMPLE = (
    "struct_pack(offsets_us := CAST(epoch_us(t.ts) - epoch_us(date_trunc('minute', t.ts)) AS INTEGER), "
    + ", ".join(f"{name} := t.{name}" for name in PACKED)
    + ")"
)
STAGE_SELECT = (
    "SELECT job_id, host, gpu_key, minute, "
    + ", ".join(f"list_transform(samples, lambda s: s.{name}) AS {name}" for name in ("offsets_us", *PACKED))
    + " FROM (SELECT t.job_id, t.host, t.gpu_key, date_trunc('minute', t.ts) AS minute, "
    f"list({SAMPLE} ORDER BY t.ts) AS samples "
    "FROM {source} WHERE ({where}){chunk} GROUP BY t.job_id, t.host, t.gpu_key, date_trunc('minute', t.ts)) p "
    "ORDER BY job_id, host, gpu_key, minute"
)
# A list aggregate holds its groups in memory until the query ends (DuckDB does not spill it:
# about 640 bytes a sample), so the samples are packed in chunks of whole minutes of about
# CHUNK_SAMPLES samples each (at most that plus one minute's): CHUNKS gives each chunk's first
# minute, from the samples counted per minute, and a chunk is the samples from its first minute
# to the next chunk's. A minute is never split: its row is whole.
CHUNK_SAMPLES = 500_000
CHUNKS = """
SELECT min(minute) AS first FROM (
    SELECT minute, sum(samples) OVER (ORDER BY minute ROWS UNBOUNDED PRECEDING) - samples AS before
    FROM (SELECT date_trunc('minute', t.ts) AS minute, count(*) AS samples FROM {source} WHERE {where} GROUP BY 1) m
) c
GROUP BY before // $chunk_samples
ORDER BY first
"""
# a chunk's bounds by (has a lower bound, has an upper bound): the first chunk has no lower bound
# and the last none above (a bound past the last minute could be out of Python's datetime range)
CHUNK_BOUNDS = {
    (False, False): "",
    (True, False): " AND t.ts >= $chunk_lo",
    (False, True): " AND t.ts < $chunk_hi",
    (True, True): " AND t.ts >= $chunk_lo AND t.ts < $chunk_hi",
}
BATCH_ROWS = 2_000  # packed rows (each up to a minute of one GPU) per fetch
COPY = f"COPY {TABLE} ({', '.join(name for name, _ in COLUMNS)}) FROM STDIN (FORMAT BINARY)"
STORED = f"SELECT coalesce(sum(cardinality(offsets_us)), 0) FROM {TABLE}"

Progress = Any  # pg_copy.Progress: (table, done, total) -> None


def copy(
    con: duckdb.DuckDBPyConnection,
    raw: Any,
    *,
    source: str = "gpu_samples t",
    where: str = "true",
    params: dict[str, Any] | None = None,
    total: int = 0,
    on_progress: Progress | None = None,
    chunk_samples: int | None = None,
) -> int:
    """COPY (binary) DuckDB's samples of ``source`` (a FROM clause whose samples are ``t``) that
    match ``where`` into PostgreSQL's ``gpu_sample_minutes``, packed per GPU and minute, on the
    psycopg connection ``raw`` (in its transaction); the number of samples. ``source`` and
    ``where`` are SQL text put into the query as they are: pass module constants only, with any
    values as named parameters in ``params``. The minutes must hold none of these samples'
    minutes yet (the caller deleted them): a minute is one row. The samples are packed in chunks
    of whole minutes of about ``chunk_samples`` (default CHUNK_SAMPLES) samples, so that its memory
    stays bounded."""
    bound = dict(params or {})
    cursor = con.cursor()  # reads of its own: the caller may hold a cursor of con open
    try:
        cursor.execute(
            CHUNKS.format(source=source, where=where),
            {**bound, "chunk_samples": max(1, chunk_samples or CHUNK_SAMPLES)},
        )
        firsts = [first for (first,) in cursor.fetchall()]
    finally:
        cursor.close()
    done = 0
    with raw.cursor() as pg, pg.copy(COPY) as out:
        out.set_types([kind for _, kind in COLUMNS])
        for i in range(len(firsts)):
            lo = firsts[i] if i > 0 else None
            hi = firsts[i + 1] if i + 1 < len(firsts) else None
            chunk = {**({"chunk_lo": lo} if lo is not None else {}), **({"chunk_hi": hi} if hi is not None else {})}
            select = STAGE_SELECT.format(source=source, where=where, chunk=CHUNK_BOUNDS[lo is not None, hi is not None])
            cursor = con.cursor()
            try:
                cursor.execute(select, {**bound, **chunk} or None)
                while batch := cursor.fetchmany(BATCH_ROWS):
                    for row in batch:
                        out.write_row(row)
                        done += len(row[OFFSETS])
                    if on_progress is not None:
                        on_progress(VIEW, done, total)
            finally:
                cursor.close()
    if on_progress is not None and done == 0:
        on_progress(VIEW, 0, total)
    return done


def stored_samples(raw: Any) -> int:
    """The samples PostgreSQL holds (the arrays' lengths, without unnesting them)."""
    row = raw.execute(STORED).fetchone()
    return int(row[0]) if row else 0
