"""How tool-log points are staged and stored (ingest/formats/tool_log.py): the columns' times and
the last-written choice against per-point Python, and a first ingest (plain insert) against
ingests that merge into stored rows: the same rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest.formats import tool_log
from runlytics.ingest.formats.text_logs import EPOCH, utc_from_wall
from tests.conftest import Lab
from tests.depth import examples
from tests.test_tool_logs import header, records, scalar_event

# --- times: numpy against timedelta ----------------------------------------------------------------

WALLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-7e10, max_value=3e11),
    st.floats(min_value=1.5e9, max_value=1.8e9),
    st.integers(min_value=-(10**12), max_value=10**12).map(lambda k: k * 0.5e-6),  # half microseconds: ties
    st.sampled_from([253402300799.9999995, 253402300799.999999, 253402300800.0, -62135596800.0000005, 9.1e9 + 0.5e-6]),
)


@settings(max_examples=300, deadline=None)
@given(walls=st.lists(WALLS, max_size=30))
def test_wall_seconds_are_the_seconds_of_each_points_datetime(walls: list[float]) -> None:
    got = tool_log.wall_seconds(np.array(walls, dtype=np.float64))
    for wall, seconds in zip(walls, got, strict=True):
        ts = utc_from_wall(wall)
        if ts is None:
            assert math.isnan(seconds), wall
        else:
            assert seconds == (ts - EPOCH).total_seconds(), wall


# --- the last written, against a dict --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 3)), max_size=40
    )  # (group, step, seq step)
)
def test_last_written_keeps_the_highest_seq_then_the_last_read(rows: list[tuple[int, int, int]]) -> None:
    # seq ascending within a group, as the reads give it (a later record or file: a higher seq)
    seqs, last = [], {}
    for group, _, bump in rows:
        last[group] = last.get(group, 0) + bump
        seqs.append(last[group])
    group = np.array([r[0] for r in rows], dtype=np.int64)
    step = np.array([r[1] for r in rows], dtype=np.int64)
    keep = tool_log._last_written(group, step, np.array(seqs, dtype=np.int64))
    best: dict[tuple[int, int], int] = {}
    for i, (g, s, _) in enumerate(rows):
        j = best.get((g, s))
        if j is None or seqs[i] >= seqs[j]:  # a tie: two values of one record, the later wins
            best[(g, s)] = i
    assert sorted(keep.tolist()) == sorted(best.values())
    kept = [(rows[i][0], rows[i][1]) for i in keep]
    assert kept == sorted(kept)  # stored in (group, step) order


# --- a first ingest against merges -----------------------------------------------------------------

# (file, step, tag, value) points; a file's events in the order drawn
POINTS = st.lists(
    st.tuples(
        st.integers(0, 2), st.integers(0, 12), st.sampled_from(["loss", "lr", "eval/loss"]), st.integers(-50, 50)
    ),
    min_size=1,
    max_size=40,
)


def _write(run: Path, points: list[tuple[int, int, str, int]], cut: list[int] | None = None) -> None:
    """One event file per file number (names sorting in that order); ``cut``: the first points of each only."""
    for file in range(3):
        events = [
            scalar_event(tag, step, value / 8, wall=1.7e9 + i * 0.3)
            for i, (f, step, tag, value) in enumerate(points)
            if f == file
        ]
        if cut is not None:
            events = events[: cut[file]]
        (run / f"events.out.tfevents.{1000 + file}.host").write_bytes(header() + records(*events))


def _expected(points: list[tuple[int, int, str, int]]) -> dict[tuple[str, int], float]:
    """(tag, step) -> value: the later file wins, then the later event."""
    out: dict[tuple[str, int], float] = {}
    for _, step, tag, value in sorted(points, key=lambda p: p[0]):  # stable: events in written order
        out[(tag, step)] = value / 8
    return out


ROWS = "SELECT job_id, name, step, ts, value, source FROM metric_values ORDER BY ALL"
# one to three runs (their own job folders, their own points and cuts) in each lab: an ingest's fixed
# cost is most of an example's, so half the examples check about as many runs (docs/testing.md,
# "Deep runs": 8 examples under the deep profile)
CASES = st.lists(st.tuples(POINTS, st.lists(st.integers(0, 40), min_size=3, max_size=3)), min_size=1, max_size=3)


@settings(
    max_examples=examples(2, 8),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cases=CASES)
def test_a_first_ingest_and_a_merged_one_store_the_same_rows(
    tmp_path_factory: pytest.TempPathFactory, cases: list[tuple[list[tuple[int, int, str, int]], list[int]]]
) -> None:
    whole = Lab(tmp_path_factory.mktemp("whole"))
    for i, (points, _) in enumerate(cases):
        (whole.root / f"run{i}").mkdir()
        _write(whole.root / f"run{i}", points)
    whole.ingest()
    first = whole.query(ROWS)
    by_run: dict[str, dict[tuple[str, int], float]] = {}
    for job, n, s, _, v, _ in first:
        by_run.setdefault(job, {})[(n, s)] = v
    assert sorted(by_run) == sorted(f"run{i}" for i in range(len(cases)))  # each run is its own job
    for i, (points, _) in enumerate(cases):
        assert by_run[f"run{i}"] == _expected(points)

    grown = Lab(tmp_path_factory.mktemp("grown"))
    for i, (points, cut) in enumerate(cases):
        (grown.root / f"run{i}").mkdir()
        _write(grown.root / f"run{i}", points, cut)
    grown.ingest()
    for i, (points, _) in enumerate(cases):
        _write(grown.root / f"run{i}", points)  # the rest appended (the same bytes before the cut)
    grown.ingest()
    assert grown.query(ROWS) == first
    grown.ingest()  # nothing new
    assert grown.query(ROWS) == first
