"""The GPU minutes a stage's ingest changed and PostgreSQL has not yet received (issue #18).

``runlytics ingest --db postgresql://…`` ingests into a local DuckDB warehouse (the stage) and
publishes from it (warehouse/pg_telemetry.py). What to send of the GPU telemetry is what the
stage's rollups recomputed: each batch's ``rollup_ranges`` (per GPU, the minutes [lo, hi) whose
samples and rollups may have changed: new samples, late ones for past minutes, replaced ones).
``rollups.update`` appends them to ``pg_telemetry_outbox`` (revision 0024) in the transaction
that stores the samples, so a kill between the stage's commit and PostgreSQL's loses nothing;
the publish deletes them after PostgreSQL's commit. A publish costs these ranges, not what is
stored.

Only a stage records: one whose ``publish_marks`` holds the mark ``telemetry_outbox``, set by
its first publish (``mark``), which also owes PostgreSQL every GPU's minutes stored before. Any
other warehouse's ingest runs the same statement, which inserts nothing.
"""

from __future__ import annotations

import duckdb

TABLE = "pg_telemetry_outbox"
MARK = "telemetry_outbox"  # in publish_marks (revision 0022): this warehouse is a stage

_MARKED = f"EXISTS (SELECT 1 FROM publish_marks WHERE name = '{MARK}')"
# rollup_ranges: rollups.update's temporary table of the batch's minutes [lo, hi) per GPU
RECORD = f"INSERT INTO {TABLE} SELECT job_id, host, gpu_key, lo, hi FROM rollup_ranges WHERE {_MARKED}"
# every GPU's whole span: a warehouse that becomes a stage owes what it holds
RECORD_ALL = f"""
INSERT INTO {TABLE}
SELECT job_id, host, gpu_key, first_minute, last_minute + INTERVAL 1 MINUTE FROM job_gpu_series WHERE {_MARKED}
"""
MARKED = f"SELECT {_MARKED}"
SET_MARK = "INSERT INTO publish_marks (name, value) VALUES ($name, 1)"


def record(con: duckdb.DuckDBPyConnection) -> None:
    """In a stage, owe PostgreSQL the minutes of ``rollup_ranges`` (in the caller's transaction)."""
    con.execute(RECORD)


def record_all(con: duckdb.DuckDBPyConnection) -> None:
    """In a stage, owe PostgreSQL every GPU's minutes (after the rollups were rebuilt)."""
    con.execute(RECORD_ALL)


def marked(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(MARKED).fetchone()
    return bool(row and row[0])


def mark(con: duckdb.DuckDBPyConnection) -> bool:
    """Make ``con``'s warehouse a stage whose GPU minutes are owed to PostgreSQL from now on,
    owing those it holds already (in the caller's transaction); False if it was one."""
    if marked(con):
        return False
    con.execute(SET_MARK, {"name": MARK})
    con.execute(RECORD_ALL)
    return True
