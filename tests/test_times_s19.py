"""Times of session 19's audit: the years' edges on every road, ISO-8601 texts, epoch seconds to the
microsecond, and nvidia-smi's local times across the changes of daylight saving time.

Hand-made cases (small files, a real DuckDB in tmp_path); the C reader's side of the years' edges
is in tests/test_fast_path.py (PLAIN_ISO, RAW's "years' edges" documents).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from runlytics.warehouse import pg_copy

# --- a time outside years 1-9999 never stops a copy to PostgreSQL -----------------------------------


def test_the_copy_to_postgresql_leaves_out_a_time_outside_years_1_to_9999() -> None:
    """DuckDB hands such a time to Python as text ("0001-12-31 (BC) 23:30:00"), on which psycopg's
    binary COPY raised a TypeError and the whole publish stopped; the copy's select (pg_copy.select_list,
    which the publish and db copy both use) now makes it NULL, and keeps every other time as it is."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (ts TIMESTAMP, note VARCHAR)")
    con.execute(
        "INSERT INTO t VALUES (TIMESTAMP '0001-12-31 (BC) 23:30:00', 'bc'), (TIMESTAMP '10000-01-01 00:59:59', 'y10k'),"
        " (TIMESTAMP '0001-01-01 00:00:00', 'first'), (TIMESTAMP '9999-12-31 23:59:59.999999', 'last'), (NULL, 'none')"
    )
    columns = [("ts", "timestamp"), ("note", "varchar")]
    rows = con.execute(f"SELECT {pg_copy.select_list(columns)} FROM t ORDER BY note", pg_copy.NUL_PARAMS).fetchall()
    assert rows == [
        (None, "bc"),
        (datetime(1, 1, 1), "first"),
        (datetime(9999, 12, 31, 23, 59, 59, 999999), "last"),
        (None, "none"),
        (None, "y10k"),
    ]
