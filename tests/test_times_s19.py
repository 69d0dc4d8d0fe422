"""Times of session 19's audit: the years' edges on every road, ISO-8601 texts, epoch seconds to the
microsecond, and nvidia-smi's local times across the changes of daylight saving time.

Hand-made cases (small files, a real DuckDB in tmp_path); the C reader's side of the years' edges
is in tests/test_fast_path.py (PLAIN_ISO, RAW's "years' edges" documents).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from conftest import Lab
from hypothesis import given, settings
from hypothesis import strategies as st

from runlytics.ingest import fast, gpu_samples
from runlytics.ingest.sql import install_macros
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


# --- an ISO-8601 text on every road: the C reader's grammar and the ISO variants it leaves, nothing else --

# texts DuckDB's TIMESTAMPTZ cast took (the audit's, and their kin): a zone's abbreviation ("CST" is
# US Central to DuckDB, +08:00 to a Chinese host) or name, offsets no zone has, 24:00, "epoch",
# slashes, one-digit fields, blanks around, a blank before the offset
NOT_ISO = [
    "2026-03-01 10:00:00 CST", "2026-03-01 10:00:00 IST", "2026-03-01 10:00:00 UTC",
    "2026-03-01 10:00:00 America/Chicago", "2026-03-01T10:00:00+99", "2026-03-01T10:00:00+24:00",
    "2026-03-01T10:00:00+05:30:15", "2026-03-01T10:00:00 +05:30", "2026-03-01T24:00:00", "epoch",
    "2026/03/01 10:00:00", "2026-3-1 10:00", " 2026-03-01T10:00:00Z", "2026-03-01T10:00:00Z ",
]  # fmt: skip
# ISO-8601 forms every road reads (the C reader reads the first two itself; the rest, the careful read)
ISO = {
    "2026-03-01T10:00:00Z": datetime(2026, 3, 1, 10),
    "2026-03-01 10:00:00.5-08:00": datetime(2026, 3, 1, 18, 0, 0, 500000),
    "2026-03-01T10:00+01:00": datetime(2026, 3, 1, 9),
    "2026-03-01": datetime(2026, 3, 1),
    "20260301T100000,25z": datetime(2026, 3, 1, 10, 0, 0, 250000),
    "2026-03-01T10:00:00+0530": datetime(2026, 3, 1, 4, 30),
    "2026-03-01T10:00:00-05": datetime(2026, 3, 1, 15),
    "2026-03-01T10:00:00.1234567Z": datetime(2026, 3, 1, 10, 0, 0, 123456),
}


def test_rl_iso_reads_iso_8601_and_nothing_else() -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    install_macros(con)
    texts = [*NOT_ISO, *ISO]
    read = con.execute("SELECT list_transform($t, lambda s: rl_iso(s))", {"t": texts}).fetchall()[0][0]
    assert dict(zip(texts, read, strict=True)) == {**dict.fromkeys(NOT_ISO), **ISO}
    # the spool's careful road reads its ts with the same macro
    assert [gpu_samples.ISO_TIMES.read(text) for text in NOT_ISO] == [None] * len(NOT_ISO)


def test_progress_json_and_the_spool_refuse_a_text_that_is_not_iso_8601(lab: Lab, tmp_path: Path) -> None:
    """Each text as a history entry's timestamp (and the job's started_at) and as a spool line's ts:
    the ISO ones stored on both, the others dropped (skipped in the spool) with the usual warning."""
    texts = [*NOT_ISO, *ISO]
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        json.dumps({"ts": t, "job_id": "x", "gpu_index": n, "utilization_percent": 1}) for n, t in enumerate(texts)
    ]
    (spool / "s.jsonl").write_text("\n".join(lines) + "\n")
    history = [{"step": n, "timestamp": t} for n, t in enumerate(texts)]
    lab.write_job("x", {"job_id": "x", "status": "running", "started_at": NOT_ISO[0], "history": history})
    lab.ingest(lab.root, spool_root=spool)
    expected = {n: ISO.get(t) for n, t in enumerate(texts)}
    assert dict(lab.query("SELECT step, ts FROM steps")) == expected
    assert dict(lab.query("SELECT gpu_index, ts FROM gpu_samples")) == {n: ts for n, ts in expected.items() if ts}
    warnings = {kind: json.loads(w) for kind, w in lab.query("SELECT kind, warnings FROM ingest_files")}
    assert f"started_at {json.dumps(NOT_ISO[0])} is not a timestamp, dropped" in warnings["progress"]
    assert [w for w in warnings["progress"] if w.startswith("history")] == [
        f"history[{n}] (step {n}): timestamp {json.dumps(t)} is not a timestamp, dropped" for n, t in enumerate(NOT_ISO)
    ]
    assert warnings["spool"] == [f"line {n + 1}: ts {t!r} is not a timestamp, skipped" for n, t in enumerate(NOT_ISO)]


# --- epoch seconds to the microsecond: one rounding on every road ------------------------------------


@pytest.fixture(scope="module")
def duck() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    install_macros(con)
    return con


def epoch_roads(duck: duckdb.DuckDBPyConnection, seconds: float) -> dict[str, datetime | None]:
    """One epoch time as each road reads it: the spool's careful road (Python's fromtimestamp, the
    reference), progress.json's careful read (rl_epoch) and the C reader (when built)."""
    text = repr(seconds)
    roads: dict[str, datetime | None] = {
        "python": gpu_samples.parse_timestamp(seconds),
        "rl_epoch": duck.execute("SELECT rl_epoch(rl_double(CAST($t AS JSON)))", {"t": text}).fetchall()[0][0],
    }
    parsed = fast.parse(b'{"history": [{"step": 0, "timestamp": %s}]}' % text.encode(), 0) if fast.AVAILABLE else None
    if parsed is not None:  # else it gave up (5e-324: it leaves the ends of the doubles' range to DuckDB)
        roads["c"] = parsed.entries.column("ts")[0].as_py()
    return roads


# the audit's float (its fraction times 1e6 is 870919.49999... in one multiplication of the whole
# float, 870919.5 rounded away), exact halves of a microsecond (2^-7 s: half to even, as Python),
# negative times and the ends of the range
EPOCH_CASES = {
    1767377550.8709195: datetime(2026, 1, 2, 18, 12, 30, 870919),
    1762423200.0000005: datetime(2025, 11, 6, 10),
    1767377550.0078125: datetime(2026, 1, 2, 18, 12, 30, 7812),
    1767377550.0234375: datetime(2026, 1, 2, 18, 12, 30, 23438),
    -86400.5: datetime(1969, 12, 30, 23, 59, 59, 500000),
    -0.0078125: datetime(1969, 12, 31, 23, 59, 59, 992188),
    -62135596800.0: datetime(1, 1, 1),
    99999999999.99998: datetime(5138, 11, 16, 9, 46, 39, 999985),
}


def test_epoch_seconds_are_rounded_once_on_every_road(duck: duckdb.DuckDBPyConnection) -> None:
    for seconds, expected in EPOCH_CASES.items():
        roads = epoch_roads(duck, seconds)
        assert "c" in roads or not fast.AVAILABLE
        assert set(roads.values()) == {expected}, seconds


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.floats(1.5e9, 2e9),  # time.time() of these years: ~12% were a microsecond off
        st.floats(-62135596800, 1e11, exclude_max=True),
        st.builds(lambda s, k: s + k / 128, st.integers(-(10**9), 4 * 10**9), st.integers(0, 127)),  # halves
    )
)
def test_every_road_reads_an_epoch_time_as_python_does(duck: duckdb.DuckDBPyConnection, seconds: float) -> None:
    roads = epoch_roads(duck, seconds)
    assert set(roads.values()) == {roads["python"]}, (seconds, roads)
