"""Times of session 19's audit: the years' edges on every road, ISO-8601 texts, epoch seconds to the
microsecond, and nvidia-smi's local times across the changes of daylight saving time.

Hand-made cases (small files, a real DuckDB in tmp_path); the C reader's side of the years' edges
is in tests/test_fast_path.py (PLAIN_ISO, RAW's "years' edges" documents).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
from conftest import Lab
from hypothesis import given, settings
from hypothesis import strategies as st

from runlytics.ingest import fast, gpu_samples, nvidia_smi
from runlytics.ingest.pipeline import CsvImport
from runlytics.warehouse import pg_copy, rollups

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
# slashes, one-digit fields, blanks around, a blank before the offset; UTC by name but not as
# strftime writes it (lowercase, two blanks, after another zone, after a date alone)
NOT_ISO = [
    "2026-03-01 10:00:00 CST", "2026-03-01 10:00:00 IST", "2026-03-01 10:00:00 utc",
    "2026-03-01 10:00:00 America/Chicago", "2026-03-01T10:00:00+99", "2026-03-01T10:00:00+24:00",
    "2026-03-01T10:00:00+05:30:15", "2026-03-01T10:00:00 +05:30", "2026-03-01T24:00:00", "epoch",
    "2026/03/01 10:00:00", "2026-3-1 10:00", " 2026-03-01T10:00:00Z", "2026-03-01T10:00:00Z ",
    "2026-03-01 10:00:00  UTC", "2026-03-01T10:00:00Z UTC", "2026-03-01 UTC", "2026-03-01 10:00:00 Etc/UTC",
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
    # UTC or GMT by name, offset 0 (strftime's "%Y-%m-%d %H:%M:%S UTC"; the C reader reads these)
    "2026-03-01 10:00:00 UTC": datetime(2026, 3, 1, 10),
    "2026-03-01T10:00:00.25GMT": datetime(2026, 3, 1, 10, 0, 0, 250000),
    "20260301T100000,5 UTC": datetime(2026, 3, 1, 10, 0, 0, 500000),
    "2026-03-01T10:00UTC": datetime(2026, 3, 1, 10),
}


def test_rl_iso_reads_iso_8601_and_nothing_else(duck: duckdb.DuckDBPyConnection) -> None:
    texts = [*NOT_ISO, *ISO]
    read = duck.execute("SELECT list_transform($t, lambda s: rl_iso(s))", {"t": texts}).fetchall()[0][0]
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


# --- nvidia-smi's local times across the changes of daylight saving time ------------------------------

NEW_YORK = "America/New_York"
HEADER = "timestamp, index, utilization.gpu [%]"


def smi(*lines: str) -> bytes:
    return "".join(line + "\n" for line in (HEADER, *lines)).encode()


def times(data: bytes, zone: str = NEW_YORK) -> tuple[list[datetime], list[str]]:
    parsed = nvidia_smi.parse(data, timezone=zone)
    return [r["ts"] for r in parsed.rows], parsed.warnings  # type: ignore[misc]


def utc(*fields: int) -> datetime:
    return datetime(*fields)  # naive UTC, as stored


def test_the_repeated_hour_sampled_hourly_keeps_both_samples() -> None:
    """2026-11-01 in New York: 01:30 happens at 05:30Z (EDT) and 06:30Z (EST). The second sample was
    stored on the first one's instant (the summary counted 4, 3 were stored)."""
    data = smi("2026/11/01 00:30:00.000, 0, 10", "2026/11/01 01:30:00.000, 0, 20", "2026/11/01 01:30:00.000, 0, 30",
               "2026/11/01 02:30:00.000, 0, 40")  # fmt: skip
    assert times(data) == ([utc(2026, 11, 1, h, 30) for h in (4, 5, 6, 7)], [])


def test_the_repeated_hour_with_drift_is_not_read_an_hour_early() -> None:
    """nvidia-smi -l 3600 drifts some ms a sample: the second 01:30 was put an hour early (05:30Z)."""
    data = smi("2026/11/01 00:30:00.000, 0, 10", "2026/11/01 01:30:00.011, 0, 20", "2026/11/01 01:30:00.023, 0, 30",
               "2026/11/01 02:30:00.035, 0, 40")  # fmt: skip
    assert times(data)[0] == [utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 5, 30, 0, 11000),
                              utc(2026, 11, 1, 6, 30, 0, 23000), utc(2026, 11, 1, 7, 30, 0, 35000)]  # fmt: skip


def test_a_log_that_starts_in_the_repeated_hour_is_read_from_its_first_unambiguous_time() -> None:
    """Started at 01:58 EST (06:58Z): read as EDT (05:58Z), then a gap of an hour before 02:00."""
    data = smi("2026/11/01 01:58:00.000, 0, 10", "2026/11/01 01:59:00.000, 0, 20", "2026/11/01 02:00:00.000, 0, 30")
    assert times(data) == ([utc(2026, 11, 1, 6, 58), utc(2026, 11, 1, 6, 59), utc(2026, 11, 1, 7)], [])
    # started at 01:58 EDT: the log goes through 01:00 again before 02:00
    data = smi("2026/11/01 01:58:00.000, 0, 1", "2026/11/01 01:59:00.000, 0, 1", "2026/11/01 01:00:00.000, 0, 1",
               "2026/11/01 01:01:00.000, 0, 1", "2026/11/01 02:00:00.000, 0, 1")  # fmt: skip
    assert times(data)[0] == [utc(2026, 11, 1, 5, 58), utc(2026, 11, 1, 5, 59), utc(2026, 11, 1, 6),
                              utc(2026, 11, 1, 6, 1), utc(2026, 11, 1, 7)]  # fmt: skip


def test_a_time_the_clocks_skipped_is_skipped_with_a_warning() -> None:
    """2026-03-08 02:30 does not exist in New York: it was stored on 01:30 EST's instant (06:30Z),
    over that sample."""
    data = smi("2026/03/08 01:30:00.000, 0, 10", "2026/03/08 02:30:00.000, 0, 20", "2026/03/08 03:30:00.000, 0, 30")
    assert times(data) == (
        [utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)],
        [
            "line 3: local time '2026/03/08 02:30:00.000' does not exist in America/New_York (its clocks skipped it)"
            "; skipped"
        ],
    )


def test_a_log_all_in_the_repeated_hour_is_read_as_the_first_pass_saying_so() -> None:
    data = smi("2026/11/01 01:10:00.000, 0, 1", "2026/11/01 01:20:00.000, 0, 1", "2026/11/01 01:30:00.000, 0, 1")
    assert times(data) == (
        [utc(2026, 11, 1, 5, m) for m in (10, 20, 30)],
        [
            "line 2: local time '2026/11/01 01:10:00.000' happens twice in America/New_York (its clocks were set"
            " back) and no time of the log tells which: read as the first, and the log on from it"
        ],
    )


def test_berlin_out_of_order_lines_in_the_repeated_hour() -> None:
    """The audit's case it found right (2026-10-25, Berlin: 02:00-02:59 twice), kept right."""
    data = smi("2026/10/25 02:40:00.000, 0, 10", "2026/10/25 02:20:00.000, 0, 20", "2026/10/25 02:40:00.000, 0, 30",
               "2026/10/25 03:00:00.000, 0, 40")  # fmt: skip
    assert times(data, "Europe/Berlin") == (
        [utc(2026, 10, 25, 0, 40), utc(2026, 10, 25, 1, 20), utc(2026, 10, 25, 1, 40), utc(2026, 10, 25, 2)],
        [],
    )


def wall_log(zone: str, instants: list[datetime], gpus: int, stagger_ms: int) -> bytes:
    """The log a host in ``zone`` writes at these instants (UTC), a line per GPU, each GPU stamped
    ``stagger_ms`` after the one before (nvidia-smi queries them in turn)."""
    lines = []
    for moment in instants:
        for gpu in range(gpus):
            at = (moment + timedelta(milliseconds=gpu * stagger_ms)).replace(tzinfo=UTC).astimezone(ZoneInfo(zone))
            lines.append(f"{at:%Y/%m/%d %H:%M:%S}.{at.microsecond // 1000:03d}, {gpu}, 50")
    return smi(*lines)


# the changes of 2026: New York (an hour), Berlin, Sydney (southern), Lord Howe (half an hour)
CHANGES = [
    ("America/New_York", utc(2026, 11, 1, 6)), ("America/New_York", utc(2026, 3, 8, 7)),
    ("Europe/Berlin", utc(2026, 10, 25, 1)), ("Europe/Berlin", utc(2026, 3, 29, 1)),
    ("Australia/Sydney", utc(2026, 4, 4, 16)), ("Australia/Lord_Howe", utc(2026, 4, 4, 15)),
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    change=st.sampled_from(CHANGES),
    interval=st.sampled_from([timedelta(seconds=s) for s in (1, 30, 60, 300, 900, 1800, 3600, 5400, 7200)]),
    start=st.integers(-8, 3),
    count=st.integers(3, 12),  # (of two samples, a step across the change is the only one: no usual step)
    gpus=st.integers(1, 3),
    stagger_ms=st.sampled_from([0, 3, 40]),
)
def test_a_log_across_a_change_reads_back_its_instants(
    change: tuple[str, datetime], interval: timedelta, start: int, count: int, gpus: int, stagger_ms: int
) -> None:
    """Whatever its sampling interval, GPUs and start around the change, a log of three samples or
    more with one time that happens once reads back the instants it was written at (the 1- and
    5-minute logs the audit found right among them)."""
    zone, at = change
    instants = [at + (start + i) * interval for i in range(count)]
    data = wall_log(zone, instants, gpus, stagger_ms)
    read, warnings = times(data, zone)
    expected = [m + timedelta(milliseconds=g * stagger_ms) for m in instants for g in range(gpus)]
    if not warnings:  # the log had a time that happens once (else it says it read the first pass)
        assert read == expected
    else:
        assert len(warnings) == 1 and "happens twice" in warnings[0]


def test_an_import_across_the_changes_stores_every_sample(lab: Lab, tmp_path: Path) -> None:
    """Through the import, on a real warehouse: the summary's count is the rows stored, and the
    skipped line is the file's warning."""
    hourly = tmp_path / "hourly.csv"
    hourly.write_bytes(smi("2026/11/01 00:30:00.000, 0, 10", "2026/11/01 01:30:00.000, 0, 20",
                           "2026/11/01 01:30:00.000, 0, 30", "2026/11/01 02:30:00.000, 0, 40"))  # fmt: skip
    spring = tmp_path / "spring.csv"
    spring.write_bytes(smi("2026/03/08 01:30:00.000, 0, 10", "2026/03/08 02:30:00.000, 0, 20",
                           "2026/03/08 03:30:00.000, 0, 30"))  # fmt: skip
    # (keep_raw_days=0: March's samples lie months before November's, past the raw window)
    imports = [CsvImport(hourly, "h", NEW_YORK), CsvImport(spring, "s", NEW_YORK)]
    summary = lab.ingest(csv_imports=imports, keep_raw_days=0)
    stored = lab.query("SELECT job_id, ts, utilization_percent FROM gpu_samples ORDER BY job_id, ts")
    assert stored == [
        *[("h", utc(2026, 11, 1, h, 30), u) for h, u in ((4, 10.0), (5, 20.0), (6, 30.0), (7, 40.0))],
        ("s", utc(2026, 3, 8, 6, 30), 10.0), ("s", utc(2026, 3, 8, 7, 30), 30.0),
    ]  # fmt: skip
    assert summary.gpu_samples == len(stored)
    warnings = dict(lab.query("SELECT job_id, warnings FROM ingest_files"))
    assert json.loads(warnings["h"]) == []
    assert json.loads(warnings["s"]) == [
        "line 3: local time '2026/03/08 02:30:00.000' does not exist in America/New_York"
        " (its clocks skipped it); skipped"
    ]


# --- a growing log that starts in the repeated hour: its earlier reading goes when later lines settle it --


def settled(path: Path, *lines: str) -> None:
    """A log of these lines, its time a minute ago (a log changed within 2 s is read again next run)."""
    path.write_bytes(smi(*lines))
    moment = time.time() - 60
    os.utime(path, (moment, moment))


def test_a_growing_log_from_the_repeated_hour_ends_as_one_import_of_the_final_log(lab: Lab, tmp_path: Path) -> None:
    """Written in the second pass of the repeated hour, a log's first lines are read as the first
    pass (an hour early, said) until a time that happens once follows; the import that settled them
    an hour later kept the rows the first import stored beside them (11 samples where one import of
    the final log stores 7, each in gpu_minutes). Now they go, and their minutes are recomputed;
    where their day was pruned past the raw window, the minutes' rollups stand and the import says so."""
    ny, berlin = tmp_path / "ny.csv", tmp_path / "berlin.csv"
    # 2025-11-02 in New York, the second 01:xx (EST): 06:40Z-06:55Z, read alone as 05:40Z-05:55Z
    repeated = [f"2025/11/02 01:{m:02d}:00.000, 0, {m}" for m in range(40, 60, 5)]
    after = [f"2025/11/02 02:{m:02d}:00.000, 0, {m}" for m in range(0, 15, 5)]
    # 2025-10-26 in Berlin, the second 02:xx (CET), a week before: past the window of --keep-raw-days 1
    berlin_repeated = [f"2025/10/26 02:{m:02d}:00.000, 0, {m}" for m in range(40, 60, 5)]
    settled(ny, *repeated)
    settled(berlin, *berlin_repeated)
    imports = [CsvImport(ny, "j", NEW_YORK), CsvImport(berlin, "b", "Europe/Berlin")]
    lab.ingest(csv_imports=imports, keep_raw_days=1)
    samples = "SELECT ts, utilization_percent FROM gpu_samples WHERE job_id = 'j' ORDER BY ts"
    assert [ts for ts, _ in lab.query(samples)] == [utc(2025, 11, 2, 5, m) for m in range(40, 60, 5)]
    assert lab.query("SELECT count(*) FROM gpu_samples WHERE job_id = 'b'") == [(0,)]  # pruned
    settled(ny, *repeated, *after)
    settled(berlin, *berlin_repeated, "2025/10/26 03:00:00.000, 0, 0")
    summary = lab.ingest(csv_imports=imports, keep_raw_days=1)
    assert lab.query(samples) == [
        (utc(2025, 11, 2, 6, 40) + timedelta(minutes=5 * i), 40.0 + 5 * i) for i in range(4)
    ] + [(utc(2025, 11, 2, 7, m), float(m)) for m in (0, 5, 10)]
    minutes = " WHERE job_id = 'j' ORDER BY minute"
    assert lab.query("SELECT * FROM gpu_minutes" + minutes) == lab.query(
        f"SELECT * FROM ({rollups.SELECT_ALL})" + minutes
    )
    assert [m for (m,) in lab.query("SELECT minute FROM gpu_minutes" + minutes)] == [ts for ts, _ in lab.query(samples)]
    warnings = {job: json.loads(w) for job, w in lab.query("SELECT job_id, warnings FROM ingest_files")}
    assert warnings == {
        "j": [],
        "b": [
            "4 sample(s) an earlier import of this log stored at times its later lines settle otherwise"
            " (the hour the clocks go back) lie before the raw window: their minutes' rollups stay"
        ],
    }
    assert (summary.gpu_samples, summary.warnings) == (3 + 1, 1)
