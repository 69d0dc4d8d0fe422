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

# bound as $name in every statement here
_THE_MARK = {"name": MARK}
_MARKED = "EXISTS (SELECT 1 FROM publish_marks WHERE name = $name)"


def recording(rows: str) -> str:
    """The statement that, in a stage, owes PostgreSQL the minutes [lo, hi) of each GPU of ``rows``
    (a SELECT of job_id, host, gpu_key, lo, hi from one relation, without a WHERE); ``record`` runs it."""
    return f"INSERT INTO {TABLE} {rows} WHERE {_MARKED}"


# rollup_ranges: rollups.update's temporary table of the batch's minutes [lo, hi) per GPU
RECORD = recording("SELECT job_id, host, gpu_key, lo, hi FROM rollup_ranges")
# every GPU's whole span: a warehouse that becomes a stage owes what it holds
RECORD_ALL = recording(
    "SELECT job_id, host, gpu_key, first_minute, last_minute + INTERVAL 1 MINUTE FROM job_gpu_series"
)
MARKED = f"SELECT {_MARKED}"
SET_MARK = "INSERT INTO publish_marks (name, value) VALUES ($name, 1)"


def record(con: duckdb.DuckDBPyConnection, statement: str = RECORD) -> None:
    """In a stage, owe PostgreSQL the minutes of ``rollup_ranges``, or those of another
    ``recording`` statement (in the caller's transaction)."""
    con.execute(statement, _THE_MARK)


def marked(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(MARKED, _THE_MARK).fetchone()
    return bool(row and row[0])


def mark(con: duckdb.DuckDBPyConnection) -> bool:
    """Make ``con``'s warehouse a stage whose GPU minutes are owed to PostgreSQL from now on,
    owing those it holds already (in the caller's transaction); False if it was one."""
    if marked(con):
        return False
    con.execute(SET_MARK, _THE_MARK)
    record(con, RECORD_ALL)
    return True
