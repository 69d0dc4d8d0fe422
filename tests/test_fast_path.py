"""The fast road for histories (ingest/fast.py, ingest/_history.c) against the careful read.

The fast road must only ever be a faster way to the same facts and warnings: every generated
set of files is ingested twice, once as the ingester does and once with the C reader switched
off, and the two warehouses must hold the same rows and the same ledger. The C reader's number
and timestamp readings are also compared with DuckDB's own, and it is fed broken bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import DEEP_ONLY, Lab
from depth import examples
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runlytics.ingest import fast

pytestmark = pytest.mark.skipif(not fast.AVAILABLE and not os.environ.get("CI"), reason="C reader not built")


def test_the_c_reader_is_built_under_ci() -> None:
    # CI installs a compiler: there the fast road must exist, or the tests below prove nothing
    assert fast.AVAILABLE


# --- generated documents: mostly plausible, with the values that must take the careful read -----

ODD = st.sampled_from(["1.5", "abc", True, False, None, [], {}, [1]])
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.sampled_from(
        [0, -0.0, 1e308, 1.5e308, -1e308, 100, 100.0000001, -273.15, -273.16, 5e-324, 1e-320, 2**53 + 1, 1e22, 1e23]
    ),
)
NUMBER = st.one_of(FLOATS, FLOATS, FLOATS, ODD)
WHOLE = st.one_of(
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from([-1, 1.0, 2.5, 10**18, 10**18 + 1, 2**53 + 1, 2**63, 1e18, "3"]),
    ODD,
)


def iso(moment: dt.datetime, sep: str, zone: str, digits: int) -> str:
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}{moment.microsecond % 7}"[:digits]
    return text + zone


ISO = st.builds(
    iso,
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.sampled_from(["T", " "]),
    st.sampled_from(["", "Z", "+00:00", "+05:30", "-08:00", "+0530", "+05", "+23:59", "-14:00"]),
    st.sampled_from([0, 1, 3, 6, 7]),
)
TIMESTAMP = st.one_of(
    ISO,
    ISO,
    st.floats(-2e11, 2e11),
    st.integers(0, 4_000_000_000),
    st.sampled_from(
        [
            "2026-02-30T00:00:00",
            "2024-02-29T00:00:00",
            "2023-02-29T00:00:00",
            "2026-01-01",
            "2026-01-01T24:00:00",
            "2026-01-01T00:00:60",
            "2026-01-01T00:00",
            "0000-01-01T00:00:00",
            "garbage",
            1e11,
            -1e11,
        ]
    ),
    ODD,
)
GPU = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(0, 3), WHOLE),
        "uuid": st.one_of(st.text(max_size=6), ODD),
        "utilization_percent": NUMBER,
        "memory_used_mb": NUMBER,
        "memory_total_mb": NUMBER,
        "temperature_c": NUMBER,
        "power_w": NUMBER,
        "clock_mhz": NUMBER,
    },
)
FIELDS = {
    "timestamp": TIMESTAMP,
    "loss": NUMBER,
    "eval_loss": NUMBER,
    "learning_rate": NUMBER,
    "samples_per_second": NUMBER,
    "iteration_time": NUMBER,
    "samples": WHOLE,
    "gpus": st.one_of(st.lists(GPU, max_size=3), st.lists(GPU, max_size=3), ODD),
    "grad_norm": NUMBER,  # a field the warehouse does not read
    "note": st.one_of(st.text(max_size=5), st.dictionaries(st.text(max_size=3), NUMBER, max_size=2)),
    "Loss": NUMBER,  # differs from a known key in case only
}
ENTRY = st.one_of(
    st.fixed_dictionaries({"step": WHOLE}, optional=FIELDS),
    st.fixed_dictionaries({"step": st.integers(0, 60)}, optional={k: FIELDS[k] for k in ("timestamp", "loss")}),
    st.fixed_dictionaries({}, optional=FIELDS),
)
DOC = st.fixed_dictionaries(
    {"history": st.one_of(st.lists(ENTRY, max_size=6), st.lists(ENTRY, max_size=6), ODD)},
    optional={
        "job_id": st.sampled_from(["a", "b", "team/c"]),
        "status": st.sampled_from(["running", "completed", "RUNNING", "odd"]),
        "updated_at": TIMESTAMP,
        "current_step": WHOLE,
        "latest": ENTRY,
        "checkpoints": st.lists(st.fixed_dictionaries({"step": WHOLE}, optional={"eval_loss": NUMBER}), max_size=2),
        "config": st.fixed_dictionaries({}, optional={"batch_size": NUMBER, "model_name": st.text(max_size=4)}),
        "notes": st.text(max_size=8),
    },
)


def dump(doc: Any, indent: int | None, ascii_only: bool) -> bytes:
    return json.dumps(doc, allow_nan=True, indent=indent, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


FILE = st.builds(dump, DOC, st.sampled_from([None, 1]), st.booleans())


# --- documents the fast road takes: the case the comparison is about -----------------------------
# (what ingest/_history.c reads itself: known keys once each, numbers in range or non-finite, the
# plain ISO form or epoch seconds, ASCII unknown values; anything else goes to the careful read)


def plain_iso(moment: dt.datetime, sep: str, zone: str, digits: int) -> str:
    text = f"{moment.year:04d}-{moment:%m-%d}{sep}{moment:%H:%M:%S}"
    return text + (f".{moment.microsecond:06d}"[: digits + 1] if digits else "") + zone


# every year 1 to 9999, and often a day at either end, where an offset can take the instant out of
# them (0001-01-01T00:30:00+01:00 is in year 0 in UTC, 9999-12-31T23:59:59-01:00 in year 10000):
# the C reader must then give up, and the careful read refuses it with its warning
PLAIN_ISO = st.builds(
    plain_iso,
    st.one_of(
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(1, 1, 2)),
        st.datetimes(min_value=dt.datetime(9999, 12, 31), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
    ),
    st.sampled_from(["T", " "]),
    st.sampled_from(
        ["", "Z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59", "-14:00", "+01:00", "-01:00", " UTC", "GMT"]
    ),
    st.integers(0, 6),
)
NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
# magnitudes from 1e-250 to 1e256: the C reader reads them itself (it leaves the ends of the range to DuckDB)
REAL = st.builds(lambda m, e: m * 10.0**e, st.integers(-(10**6), 10**6), st.integers(-250, 250))
ANY_REAL = st.one_of(REAL, REAL, st.integers(-(10**6), 10**6), NON_FINITE)
RATE = st.one_of(REAL.map(abs), st.integers(0, 10**6), NON_FINITE.map(abs))


def hundredths(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low * 100, high * 100).map(lambda v: v / 100)


FAST_GPU = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(0, 7),
        "uuid": st.text("GPU-0123456789abcdef", max_size=8),
        "utilization_percent": st.one_of(hundredths(0, 100), NON_FINITE),
        "memory_used_mb": hundredths(0, 10**6),
        "memory_total_mb": hundredths(0, 10**6),
        "temperature_c": st.one_of(hundredths(-273, 200), NON_FINITE),
        "power_w": hundredths(0, 1000),
        "clock_mhz": ANY_REAL,  # a key the warehouse does not read
    },
).filter(lambda g: g.get("uuid") or set(g) - {"uuid", "clock_mhz"})  # else no GPU: the careful read drops it
FAST_ENTRY = st.fixed_dictionaries(
    {"step": st.integers(0, 60)},
    optional={
        "timestamp": st.one_of(PLAIN_ISO, st.integers(-(10**13), 10**13).map(lambda ms: ms / 1000)),
        "loss": ANY_REAL,
        "eval_loss": ANY_REAL,
        "learning_rate": ANY_REAL,
        "samples_per_second": RATE,
        "iteration_time": RATE,
        "samples": st.integers(0, 10**6),
        "gpus": st.lists(FAST_GPU, max_size=3),
        "grad_norm": ANY_REAL,  # a key the warehouse does not read
        "note": st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=5),
    },
)
FAST_DOC = st.fixed_dictionaries(
    {"history": st.lists(FAST_ENTRY, max_size=6)},
    optional={"job_id": st.sampled_from(["a", "b", "team/c"]), "status": st.sampled_from(["running", "completed"]),
              "updated_at": TIMESTAMP, "current_step": WHOLE, "latest": FAST_ENTRY, "notes": st.text(max_size=8)},
)  # fmt: skip
FAST_FILE = st.builds(dump, FAST_DOC, st.sampled_from([None, 1]), st.booleans())
# a batch of files: one to four that take the fast road and up to two of any kind, in any order
FILES = st.tuples(st.lists(FAST_FILE, min_size=1, max_size=4), st.lists(FILE, max_size=2)).flatmap(
    lambda parts: st.permutations(parts[0] + parts[1])
)


def facts(lab: Lab) -> dict[str, list[tuple[Any, ...]]]:
    """The lab's facts with its own folder's name taken out (jobs keep their source folder)."""
    root = str(lab.root)
    return {
        table: [tuple(v.replace(root, "ROOT") if isinstance(v, str) else v for v in row) for row in rows]
        for table, rows in lab.facts().items()
    }


def ledger(lab: Lab) -> list[tuple[Any, ...]]:
    rows = lab.query("SELECT path, outcome, rows, warning_count, warnings FROM ingest_files ORDER BY path")
    return [(Path(path).relative_to(lab.root).as_posix(), *rest) for path, *rest in rows]


def both_ways(tmp: Path, files: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Lab, Lab]:
    """The files ingested with the fast road, and again (elsewhere) with the careful read only."""
    labs = []
    for name in ("fast", "careful"):
        (tmp / name).mkdir()
        lab = Lab(tmp / name)
        for i, data in enumerate(files):
            lab.write_job(f"job-{i}", None, raw=data)
        labs.append(lab)
    labs[0].ingest()
    with monkeypatch.context() as m:
        m.setattr(fast, "_history", None)
        labs[1].ingest()
    return labs[0], labs[1]


def taken(files: list[bytes]) -> int:
    return sum(fast.parse(data, 0) is not None for data in files)


# One to three of FILES' batches in one run: an ingest's fixed cost (a warehouse, the refills) is
# most of an example's, so 6 examples of about two batches read as many files as 12 examples of one
# did, in half the runs; a lone batch is still drawn (docs/testing.md, "Deep runs": 12 examples
# under the deep profile)
BATCHES = st.tuples(FILES, st.lists(FILES, max_size=2)).map(lambda parts: parts[0] + sum(parts[1], []))


@settings(
    max_examples=examples(2, 12),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(files=BATCHES)
def test_the_fast_road_gives_what_the_careful_read_gives(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, files: list[bytes]
) -> None:
    on_fast_road = taken(files)
    event("some file on the fast road" if on_fast_road else "no file on the fast road")
    event(f"{on_fast_road} of {len(files)} files on the fast road")
    fast_lab, careful_lab = both_ways(tmp_path_factory.mktemp("both"), files, monkeypatch)
    assert facts(fast_lab) == facts(careful_lab)
    assert ledger(fast_lab) == ledger(careful_lab)


# Documents whose bytes a dict can't express: each must come out of both roads the same.
RAW = {
    "plain": b'{"job_id": "j", "history": [{"step": 1, "loss": 2.5, "gpus": [{"index": 0, "power_w": 1}]}]}',
    "history first, then latest": b'{"history": [{"step": 1}, {"step": 2}], "latest": {"step": 2, "loss": 9},'
    b' "updated_at": "2026-01-01T00:00:00Z"}',
    "duplicate entry key": b'{"history": [{"step": 1, "loss": 1, "loss": 2}]}',
    "duplicate history": b'{"history": [{"step": 1}], "history": [{"step": 2}]}',
    "escaped key": b'{"history": [{"step": 1, "lo\\u0073s": 3}]}',
    "escaped history key": b'{"hist\\u006fry": [{"step": 1}]}',
    "escaped timestamp": b'{"history": [{"step": 1, "timestamp": "2026-01-01T00:00:00\\u005a"}]}',
    "escaped uuid": b'{"history": [{"step": 1, "gpus": [{"uuid": "G\\"1"}]}]}',
    "unicode uuid": '{"history": [{"step": 1, "gpus": [{"uuid": "GPU-ü"}]}]}'.encode(),
    "unicode elsewhere": '{"job_id": "jöb", "notes": "✓", "history": [{"step": 1}]}'.encode(),
    "byte order mark": b'\xef\xbb\xbf{"history": [{"step": 1}]}',
    "trailing value": b'{"history": [{"step": 1}]} {"history": []}',
    "our own key": b'{"__runlytics_file__": 3, "history": [{"step": 1}]}',
    "history null": b'{"history": null, "step": 4}',
    "history empty": b'{"history": []}',
    "numbers spelled oddly": b'{"history": [{"step": 1E1, "loss": 1e-3, "samples": 5.0, "learning_rate": -0}]}',
    "leading zero": b'{"history": [{"step": 01}]}',
    "plus sign": b'{"history": [{"step": +1}]}',
    "lowercase nan": b'{"history": [{"step": 1, "loss": nan}]}',
    "negative NaN": b'{"history": [{"step": 1, "loss": -NaN}]}',
    "infinities": b'{"history": [{"step": 1, "loss": Infinity, "eval_loss": -Infinity, "power": NaN}]}',
    "long mantissa": b'{"history": [{"step": 1, "loss": 0.30000000000000004441, "eval_loss": 123456789012345678901}]}',
    "tiny and huge": b'{"history": [{"step": 1, "loss": 1e-310, "eval_loss": 1e309}]}',
    "control byte in a string": b'{"history": [{"step": 1, "timestamp": "2026\x01"}]}',
    "nested unknowns": b'{"history": [{"step": 1, "x": [[{"a": [1, {"b": null}]}]], "y": "}"}]}',
    "whitespace everywhere": b' \n{ "history" :\t[ { "step" : 1 , "gpus" : [ { "index" : 0 } ] } ] }\r\n',
    # no GPU: dropped with a warning by the careful read (progress.GPUS_SELECT)
    "empty gpu reading": b'{"history": [{"step": 1, "gpus": [{}, {"uuid": " "}, {"x": 1}, {"uuid": "GPU-1"}]}]}',
    "huge whole numbers": b'{"history": [{"step": 9007199254740993, "samples": 1000000000000000000},'
    b' {"step": 1000000000000000001}, {"step": 2, "samples": 1000000000000000001}]}',
    "Z and offsets": b'{"history": [{"step": 1, "timestamp": "2026-06-01T10:00:00.5+02:00"},'
    b' {"step": 2, "timestamp": "2026-06-01 10:00:00Z"}, {"step": 3, "timestamp": 1767225600.0000005}]}',
    # the years' edges with offsets: the instant in UTC within years 1-9999 (the C reader reads it) ...
    "years' edges within": b'{"history": [{"step": 1, "timestamp": "0001-01-01T01:00:00+01:00"},'
    b' {"step": 2, "timestamp": "0001-01-01 00:00:00Z"},'
    b' {"step": 3, "timestamp": "9999-12-31T22:59:59.999999-01:00"},'
    b' {"step": 4, "timestamp": "9999-12-31T23:59:59.999999"},'
    b' {"step": 5, "timestamp": "0001-01-01T14:00:00+14:00"}]}',
    # ... or outside them (year 0, year 10000): refused with the careful read's warning, never stored
    "years' edges beyond": b'{"history": [{"step": 1, "timestamp": "0001-01-01T00:30:00+01:00"},'
    b' {"step": 2, "timestamp": "9999-12-31T23:59:59-01:00"},'
    b' {"step": 3, "timestamp": "0001-01-01T00:59:59.999999+01:00"},'
    b' {"step": 4, "timestamp": "9999-12-31T23:00:00-01:00"},'
    b' {"step": 5, "timestamp": "2026-01-01T00:00:00Z"}]}',
    "truncated": b'{"history": [{"step": 1}',
    # rewritten in place, caught before the truncate: a whole document, then the older one's tail
    "half new, half old": b'{"history": [{"step": 1}]}{"step": 2, "loss": 0.5}]}',
}


def test_odd_bytes_give_the_same_on_both_roads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # one job folder per document, all in one run (the ledger says which document differs)
    fast_lab, careful_lab = both_ways(tmp_path, list(RAW.values()), monkeypatch)
    assert facts(fast_lab) == facts(careful_lab)
    assert ledger(fast_lab) == ledger(careful_lab)


def test_an_offset_that_leaves_the_years_is_refused_as_the_careful_read_refuses_it(lab: Lab) -> None:
    """0001-01-01T00:30:00+01:00 is 0000-12-31T23:30 in UTC, 9999-12-31T23:59:59-01:00 is in year
    10000: the C reader stored them (a BC date, year 10000: no warning; PostgreSQL's publish then
    failed on them) where the careful read drops them with a warning. Now the C reader gives up."""
    assert fast.parse(RAW["years' edges beyond"], 0) is None
    lab.write_job("j", None, raw=RAW["years' edges beyond"])
    lab.ingest()
    assert lab.query("SELECT step, ts FROM steps ORDER BY step") == [
        (1, None), (2, None), (3, None), (4, None), (5, dt.datetime(2026, 1, 1)),
    ]  # fmt: skip
    warnings = json.loads(lab.query("SELECT warnings FROM ingest_files")[0][0])
    assert 'history[0] (step 1): timestamp "0001-01-01T00:30:00+01:00" is not a timestamp, dropped' in warnings
    assert 'history[1] (step 2): timestamp "9999-12-31T23:59:59-01:00" is not a timestamp, dropped' in warnings


# a writer's strftime with a literal zone ("%Y-%m-%d %H:%M:%S UTC"): UTC or GMT (offset 0) is read,
# an abbreviation of many zones is not (CST: US Central, China; IST: India, Ireland, Israel)
NAMED_UTC = (
    b'{"job_id": "u", "status": "running", "started_at": "2026-03-01 10:00:00 UTC",'
    b' "updated_at": "2026-03-01 10:05:00 GMT", "history": [{"step": 1, "timestamp": "2026-03-01 10:00:30 UTC"},'
    b' {"step": 2, "timestamp": "2026-03-01T10:01:00.5UTC"}, {"step": 3, "timestamp": "2026-03-01 10:01:30 GMT"}]}'
)
NAMED_ZONE = (
    b'{"job_id": "c", "status": "running", "started_at": "2026-03-01 10:00:00 CST",'
    b' "history": [{"step": 1, "timestamp": "2026-03-01 10:00:30 UTC"},'
    b' {"step": 2, "timestamp": "2026-03-01 10:01:00 IST"}, {"step": 3, "timestamp": "2026-03-01 10:01:30 utc"},'
    b' {"step": 4, "timestamp": "2026-03-01 10:02:00 Europe/London"}]}'
)


def test_utc_or_gmt_by_name_is_read_on_both_roads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read before session 19 (DuckDB's cast), then refused with every zone's name: a running job's
    next update replaced its row with started_at and updated_at NULL. UTC and GMT say offset 0."""
    assert fast.parse(NAMED_UTC, 0) is not None  # the C reader reads them itself
    moment = dt.datetime(2026, 3, 1, 10)
    for lab in both_ways(tmp_path, [NAMED_UTC, NAMED_ZONE], monkeypatch):
        assert lab.query("SELECT job_id, started_at, updated_at FROM jobs ORDER BY job_id") == [
            ("c", None, None),
            ("u", moment, moment + dt.timedelta(minutes=5)),
        ]
        assert lab.query("SELECT job_id, step, ts FROM steps ORDER BY job_id, step") == [
            ("c", 1, moment + dt.timedelta(seconds=30)), ("c", 2, None), ("c", 3, None), ("c", 4, None),
            ("u", 1, moment + dt.timedelta(seconds=30)), ("u", 2, moment + dt.timedelta(seconds=60.5)),
            ("u", 3, moment + dt.timedelta(seconds=90)),
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plain", True),
        ("history first, then latest", True),
        ("whitespace everywhere", True),
        ("infinities", True),
        ("empty gpu reading", False),
        ("huge whole numbers", False),
        ("duplicate entry key", False),
        ("escaped key", False),
        ("our own key", False),
        ("unicode uuid", False),
        ("lowercase nan", False),
        ("truncated", False),
        ("years' edges within", True),
        ("years' edges beyond", False),
        ("byte order mark", False),
    ],
)
def test_which_documents_the_fast_road_takes(name: str, expected: bool) -> None:
    assert (fast.parse(RAW[name], 0) is not None) is expected


def test_a_clean_file_takes_the_fast_road(lab: Lab) -> None:
    lab.write_job("j", {"history": [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}], "latest": {"step": 3}})
    parsed = fast.read([(0, lab.root / "j" / "progress.json")])
    assert parsed[0].history_entries == 2
    assert parsed[0].rest == b'{"history": [], "latest": {"step": 3}}'
    lab.ingest()
    assert lab.query("SELECT step, loss FROM steps ORDER BY step") == [(1, 0.5), (2, 0.25), (3, None)]


# --- the C reader's numbers and timestamps against DuckDB's ------------------------------------


def c_reading(field: str, text: str) -> Any:
    """What the C reader makes of one value of a history entry (None: it gives up)."""
    parsed = fast.parse(b'{"history": [{"step": 0, "%s": %s}]}' % (field.encode(), text.encode()), 0)
    column = "ts" if field == "timestamp" else field
    return None if parsed is None else parsed.entries.column(column)[0].as_py()


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.17g}"),
    st.builds(
        lambda sign, whole, frac, exp: f"{sign}{whole}{'.' + frac if frac else ''}{exp}",
        st.sampled_from(["", "-"]),
        st.integers(0, 10**25),
        st.text("0123456789", max_size=25),
        st.sampled_from(["", "e5", "E-7", "e+22", "e-22", "e300", "e-300", "e-320"]),
    ),
)


@settings(max_examples=500, deadline=None)
@given(text=NUMBER_TEXT)
def test_numbers_read_as_duckdb_reads_them(duck: duckdb.DuckDBPyConnection, text: str) -> None:
    mine = c_reading("loss", text)
    event("read by the C reader" if mine is not None else "left to the careful read")
    theirs = duck.execute("SELECT rl_double(CAST($t AS JSON))", {"t": text}).fetchone()[0]
    if mine is not None:  # where the C reader gives up, the careful read decides
        assert mine == theirs, text


@settings(max_examples=500, deadline=None)
@given(text=PLAIN_ISO)
def test_plain_timestamps_read_as_duckdb_reads_them(duck: duckdb.DuckDBPyConnection, text: str) -> None:
    mine = c_reading("timestamp", json.dumps(text))
    theirs = duck.execute("SELECT rl_iso($t)", {"t": text}).fetchone()[0]
    # the plain form is the fast road's: it gives up on one only where the instant lies outside
    # years 1-9999 in UTC, which the careful read refuses (None) with a warning
    event("read by the C reader" if mine is not None else "outside years 1-9999: left to the careful read")
    assert mine == theirs, text


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(ISO, st.text("0123456789-:T .Z+", max_size=30)))
def test_other_timestamp_texts_are_read_alike_or_left_to_the_careful_read(
    duck: duckdb.DuckDBPyConnection, text: str
) -> None:
    """Texts mostly not in the plain form (other offsets, 7 digits, unpadded years, garbage): the
    case here is the C reader meeting them, and either outcome is the one to test."""
    mine = c_reading("timestamp", json.dumps(text))
    event("read by the C reader" if mine is not None else "left to the careful read")
    if mine is not None:
        assert mine == duck.execute("SELECT rl_iso($t)", {"t": text}).fetchone()[0], text


@DEEP_ONLY  # a check of this module's generators (300 draws, ~11 s): they change with the module only
def test_generated_cases_mostly_exercise_the_fast_road() -> None:
    """The generators above mean the fast road: most of what they draw must take it, else the
    comparisons compare the careful read with itself (hypothesis's statistics show the same)."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None, database=None)
    @given(files=FILES, number=NUMBER_TEXT)
    def draw(files: list[bytes], number: str) -> None:
        seen["examples"] += 1
        seen["with a fast file"] += taken(files) > 0
        seen["files"] += len(files)
        seen["fast files"] += taken(files)
        seen["fast numbers"] += c_reading("loss", number) is not None

    draw()
    assert seen["with a fast file"] >= 0.95 * seen["examples"], seen
    assert seen["fast files"] >= 0.6 * seen["files"], seen
    assert seen["fast numbers"] >= 0.7 * seen["examples"], seen


def test_plain_timestamps_take_the_fast_road() -> None:
    assert c_reading("timestamp", '"2026-01-01T00:00:00.5+02:00"') == dt.datetime(2025, 12, 31, 22, 0, 0, 500000)
    assert c_reading("timestamp", '"2024-02-29 23:59:59"') == dt.datetime(2024, 2, 29, 23, 59, 59)
    assert c_reading("timestamp", "1767225600.25") == dt.datetime(2026, 1, 1, 0, 0, 0, 250000)


# --- broken bytes never crash it -----------------------------------------------------------------


@settings(max_examples=examples(300, 1000), deadline=None)  # and `make fuzz` in CI, under the sanitizers
@given(data=st.one_of(st.binary(max_size=200), FILE), cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_broken_bytes_never_crash_the_c_reader(data: bytes, cut: int, flip: int) -> None:
    damaged = bytearray(data[: max(cut, len(data) // 2)])
    if damaged:
        damaged[flip % len(damaged)] ^= 0x55
    for candidate in (bytes(damaged), data):
        result = fast.parse(candidate, 1)
        if result is not None:  # what it did take is consistent
            assert result.entries.num_rows == result.history_entries
            assert set(result.entries.column("file_id").to_pylist()) <= {1}
