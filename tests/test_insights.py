"""Insights (shared/spec/insights.md): each rule on small jobs computed by hand, both sides of its
thresholds, NaN/Inf, ties and NULLs; thresholds by name; the tables equal the view, run after run.

The small cases insert facts straight into a migrated warehouse (job_results refreshed as ingest
would) and read the view job_insights; the last tests ingest real progress.json files.

On both engines (``engine``, ``ingest_engine``): on PostgreSQL the small cases' facts are mirrored
into a database of their own (conftest.mirror) and PostgreSQL's job_insights is read; the ingest
tests ingest with ``ingest --db URL``. Tests of DuckDB's materialisation and of the thresholds'
API are DuckDB's alone (``DUCKDB_ONLY``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from alembic import command

from runlytics.ingest import gpu_samples
from runlytics.warehouse import db, insights, migrate, pg_reader, postgres, results
from tests.conftest import DUCKDB_ONLY, Engine, Lab, mirror

T0 = datetime(2026, 1, 1, 0, 0, 0)
NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "w.duckdb"
    migrate.upgrade(path)
    return path


class Facts:
    """A migrated warehouse to insert facts into, and read insights from: on PostgreSQL (``target``)
    the facts are mirrored there before each read, and the views read are PostgreSQL's."""

    def __init__(self, con: duckdb.DuckDBPyConnection, target: db.PostgresUrl | None = None) -> None:
        self.con = con
        self.target = target

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The column names and rows of ``sql`` (portable, ``$name`` parameters) on the facts as they
        are now, job_results refreshed as ingest would."""
        results.refresh(self.con, {r[0] for r in self.con.execute("SELECT job_id FROM jobs").fetchall()})
        if self.target is None:
            cursor: Any = self.con.execute(sql, params)
            return [d[0] for d in cursor.description], cursor.fetchall()
        mirror(self.con, self.target)
        cursor = pg_reader.Cursor(pg_reader.connect(self.target))
        try:
            cursor.execute(sql, params)
            return [d[0] for d in cursor.description or []], cursor.fetchall()
        finally:
            cursor.close()

    def job(self, job_id: str, status: str = "completed", **columns: Any) -> None:
        cols = {"job_id": job_id, "status": status, "ingested_at": T0, **columns}
        names = ", ".join(cols)
        self.con.execute(f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' * len(cols))})", list(cols.values()))

    def steps(self, job_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Step rows: each a dict of steps columns; ``step`` defaults to 10 x (position + 1)."""
        for i, row in enumerate(rows):
            cols = {"job_id": job_id, "step": 10 * (i + 1), **row}
            names = ", ".join(cols)
            self.con.execute(f"INSERT INTO steps ({names}) VALUES ({', '.join('?' * len(cols))})", list(cols.values()))

    def losses(self, job_id: str, losses: Sequence[float | None], **columns: Any) -> None:
        self.job(job_id, **columns)
        self.steps(job_id, [{"loss": loss} for loss in losses])

    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            names = ", ".join(row)
            self.con.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))

    def run_started(self, at: datetime) -> None:
        self.con.execute(
            "INSERT INTO ingest_runs (run_id, started_at, outcome) VALUES (?, ?, 'ok')",
            [int(at.timestamp() * 1e9), at],
        )

    def insights(self, job_id: str, kind: str | None = None) -> list[tuple[Any, ...]]:
        """(kind, first_step, last_step, value, reference) of the job's insights, sorted."""
        _, rows = self.rows(
            "SELECT kind, first_step, last_step, value, reference FROM job_insights "
            "WHERE job_id = $job AND (kind = $kind OR $kind IS NULL) ORDER BY kind, first_step, value",
            {"job": job_id, "kind": kind},
        )
        return [tuple(rows_) for rows_ in rows]

    def full(self, job_id: str, kind: str) -> list[dict[str, Any]]:
        names, rows = self.rows(
            "SELECT * FROM job_insights WHERE job_id = $job AND kind = $kind", {"job": job_id, "kind": kind}
        )
        return [dict(zip(names, row, strict=True)) for row in rows]


@pytest.fixture
def facts(template: Path, tmp_path: Path, engine: Engine) -> Iterator[Facts]:
    path = tmp_path / "w.duckdb"
    shutil.copy(template, path)
    with db.connection(path) as con:
        yield Facts(con, engine.empty() if engine.postgres else None)


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


# --- nonfinite_loss ---------------------------------------------------------------------------


def test_nonfinite_loss_counts_nan_and_both_infinities_not_nulls(facts: Facts) -> None:
    facts.losses("a", [1.0, 2.0, NAN, None, 3.0, INF, -INF])
    assert facts.insights("a") == [("nonfinite_loss", 30, 70, 3.0, 2.0)]
    (row,) = facts.full("a", "nonfinite_loss")
    assert row["severity"] == "critical" and row["host"] is None and row["gpu_index"] is None
    assert "3 training loss" in row["message"] and "2" in row["message"]


def test_nonfinite_loss_without_a_finite_loss_before_has_no_reference(facts: Facts) -> None:
    facts.losses("a", [NAN, 1.0])
    facts.losses("b", [None, 1.0, 2.0])
    assert facts.insights("a") == [("nonfinite_loss", 10, 10, 1.0, None)]
    assert facts.insights("b") == []


def test_times_are_the_rows_at_first_and_last_step(facts: Facts) -> None:
    facts.job("a")
    facts.steps("a", [{"loss": 1.0, "ts": T0}, {"loss": NAN, "ts": T0 + timedelta(seconds=5)}, {"loss": INF}])
    (row,) = facts.full("a", "nonfinite_loss")
    assert (row["first_step"], row["last_step"]) == (20, 30)
    assert (row["start_time"], row["end_time"]) == (T0 + timedelta(seconds=5), None)


# --- loss_spike --------------------------------------------------------------------------------

# 20 losses alternating 1 and 3: median m = 2, deviations all 1 so d = 1; limit m + max(6d, |m|/2) = 8
BASE = [1.0, 3.0] * 10


def test_loss_spike_limit_is_strict(facts: Facts) -> None:
    facts.losses("at", [*BASE, 8.0])
    facts.losses("above", [*BASE, 8.000001])
    assert facts.insights("at") == []
    assert facts.insights("above") == [("loss_spike", 210, 210, 8.000001, 2.0)]


def test_loss_spike_relative_branch_when_the_losses_do_not_vary(facts: Facts) -> None:
    # m = 10, d = 0: limit 10 + max(0, 0.5 x 10) = 15
    facts.losses("at", [10.0] * 20 + [15.0])
    facts.losses("above", [10.0] * 20 + [15.5])
    assert facts.insights("at") == []
    assert facts.insights("above") == [("loss_spike", 210, 210, 15.5, 10.0)]


def test_loss_spike_needs_20_earlier_finite_losses(facts: Facts) -> None:
    facts.losses("short", [*BASE[:19], 1000.0])
    # a row without a finite loss does not count towards the 20
    facts.losses("gap", [*BASE[:19], NAN, 1000.0])
    assert facts.insights("short") == []
    assert facts.insights("gap", "loss_spike") == []


def test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates(facts: Facts) -> None:
    # row 21: m 2, d 1, limit 8 -> 100 spikes. Row 22: window rows 2..21 = 9 ones, 10 threes, 100:
    # m 3, deviations 9x2, 10x0, 97 -> d 1, limit 9 -> 50 spikes (same insight). Row 23 NaN.
    # Row 24: window rows 3..22 = 9 ones, 9 threes, 50, 100: m 3, d 2, limit 15 -> 40 spikes.
    facts.losses("a", [*BASE, 100.0, 50.0, NAN, 40.0])
    assert facts.insights("a", "loss_spike") == [
        ("loss_spike", 210, 220, 100.0, 2.0),
        ("loss_spike", 240, 240, 40.0, 3.0),
    ]
    # a NULL loss separates as well
    facts.losses("b", [*BASE, 100.0, 50.0, None, 40.0])
    assert facts.insights("b", "loss_spike") == [
        ("loss_spike", 210, 220, 100.0, 2.0),
        ("loss_spike", 240, 240, 40.0, 3.0),
    ]


def test_loss_spike_uses_the_20_losses_just_before(facts: Facts) -> None:
    # 5 huge early losses fall out of the window: the 20 before row 26 are BASE
    facts.losses("a", [1000.0] * 5 + BASE + [8.5])
    assert facts.insights("a", "loss_spike") == [("loss_spike", 260, 260, 8.5, 2.0)]


# on PostgreSQL too (revision 0029: its float8 operators raised on this job's 0.5 x 5e-324)
def test_subnormal_losses_are_medians_like_any_other(facts: Facts) -> None:
    # median of ten 5e-324 and ten 1.0 = 5e-324 x 0.5 + 1.0 x 0.5 = 0.5 (the first half underflows
    # to 0); deviations ten 0.5 (roughly) and ten 0.5: d = 0.5, limit 0.5 + max(3, 0.25) = 3.5
    facts.losses("a", [5e-324, 1.0] * 10 + [3.6])
    assert facts.insights("a", "loss_spike") == [("loss_spike", 210, 210, 3.6, 0.5)]


# --- loss_divergence ---------------------------------------------------------------------------


def _divergence_losses(start: float, low: float, rise: float, rise_rows: int = 10) -> list[float]:
    return [start] * 10 + [low] * 10 + [rise] * rise_rows


def test_loss_divergence_at_twice_the_lowest_median(facts: Facts) -> None:
    # r10 = 4; r falls to b = 1 (row 16); from row 21 the loss is 2: r reaches 2 = 2b at row 26
    # (6 twos, 4 ones in rows 17..26); 2 - 1 >= 0.1 x (4 - 1). r of the last row (30) = 2.
    facts.losses("a", _divergence_losses(4.0, 1.0, 2.0))
    assert facts.insights("a") == [("loss_divergence", 260, 300, 2.0, 1.0)]
    (row,) = facts.full("a", "loss_divergence")
    assert row["severity"] == "critical"
    # just below twice the lowest: no divergence
    facts.losses("b", _divergence_losses(4.0, 1.0, 1.999))
    assert facts.insights("b") == []


def test_loss_divergence_rise_must_be_a_tenth_of_the_fall(facts: Facts) -> None:
    # r10 = 21, b = 1: r - b must be >= 0.1 x 20 = 2
    facts.losses("short", _divergence_losses(21.0, 1.0, 2.5))
    facts.losses("enough", _divergence_losses(21.0, 1.0, 3.0))
    assert facts.insights("short") == []
    assert facts.insights("enough") == [("loss_divergence", 260, 300, 3.0, 1.0)]


def test_loss_divergence_at_most_one_and_never_when_b_is_not_positive(facts: Facts) -> None:
    facts.losses("twice", _divergence_losses(4.0, 1.0, 2.0) + [0.5] * 10 + [5.0] * 10)
    assert [(k, f) for k, f, *_ in facts.insights("twice")] == [("loss_divergence", 260)]
    facts.losses("zero", _divergence_losses(4.0, 0.0, 2.0))
    assert facts.insights("zero") == []


def test_loss_divergence_medians_are_over_the_finite_losses_of_the_last_10_rows(facts: Facts) -> None:
    # a NaN row in the window leaves 9 finite losses in it; r is their median
    losses: list[float] = [4.0] * 10 + [1.0] * 10 + [2.0] * 5 + [NAN] + [2.0] * 4
    # row 26 (NaN) has r = median(1,1,1,1,2,2,2,2,2) = 2 >= 2b: the divergence starts there
    facts.losses("a", losses)
    assert [i for i in facts.insights("a") if i[0] == "loss_divergence"] == [("loss_divergence", 260, 300, 2.0, 1.0)]


# --- overfitting -------------------------------------------------------------------------------


def _overfit(facts: Facts, job_id: str, evals: dict[int, float], train: Sequence[float] | None = None) -> None:
    """40 rows (steps 10..400) with a falling training loss, eval losses at the given rows (1-based)."""
    train = train if train is not None else [10.0 - 0.1 * i for i in range(40)]
    facts.job(job_id)
    facts.steps(job_id, [{"loss": train[i], "eval_loss": evals.get(i + 1)} for i in range(40)])


def test_overfitting_edge_of_the_eval_rise(facts: Facts) -> None:
    _overfit(facts, "at", {10: 2.0, 20: 1.0, 25: 1.02, 30: 1.04, 40: 1.05})
    _overfit(facts, "below", {10: 2.0, 20: 1.0, 25: 1.02, 30: 1.04, 40: 1.0499})
    assert facts.insights("at") == [("overfitting", 250, 400, 1.05, 1.0)]
    assert facts.insights("below") == []


def test_overfitting_needs_three_evals_after_the_best_the_first_on_ties(facts: Facts) -> None:
    _overfit(facts, "two", {20: 1.0, 30: 1.2, 40: 1.3})
    # a tie at rows 20 and 25: the best is row 20's, three evals after it
    _overfit(facts, "tie", {20: 1.0, 25: 1.0, 30: 1.2, 40: 1.3})
    # non-finite evals do not count
    _overfit(facts, "nan", {20: 1.0, 25: NAN, 30: 1.2, 40: 1.3, 35: -INF})
    assert facts.insights("two") == []
    assert facts.insights("tie") == [("overfitting", 250, 400, 1.3, 1.0)]
    assert facts.insights("nan") == []


def test_overfitting_needs_the_training_loss_to_fall(facts: Facts) -> None:
    flat = [5.0] * 40
    _overfit(facts, "flat", {20: 1.0, 25: 1.2, 30: 1.2, 40: 1.3}, train=flat)
    rising = [1.0 + 0.1 * i for i in range(40)]
    _overfit(facts, "rising", {20: 1.0, 25: 1.2, 30: 1.2, 40: 1.3}, train=rising)
    assert facts.insights("flat") == []
    assert facts.insights("rising", "overfitting") == []  # (it diverges)


# --- throughput_drop ---------------------------------------------------------------------------


def _throughputs(facts: Facts, job_id: str, values: Sequence[float | None]) -> None:
    facts.job(job_id)
    facts.steps(job_id, [{"samples_per_second": v} for v in values])


def test_throughput_drop_needs_10_rows_below_0_7_of_the_median(facts: Facts) -> None:
    _throughputs(facts, "ten", [100.0] * 20 + [50.0] * 10 + [100.0] * 5)
    _throughputs(facts, "nine", [100.0] * 20 + [50.0] * 9 + [100.0] * 5)
    # exactly 0.7 x 100 is not below
    _throughputs(facts, "at", [100.0] * 20 + [70.0] * 10 + [100.0] * 5)
    assert facts.insights("ten") == [("throughput_drop", 210, 300, 50.0, 100.0)]
    assert facts.insights("nine") == []
    assert facts.insights("at") == []


def test_throughput_drop_runs_skip_unknown_rows_and_split_at_a_fast_one(facts: Facts) -> None:
    values: list[float | None] = [100.0] * 30 + [50.0] * 5 + [None, NAN] + [60.0] * 5 + [100.0] + [40.0] * 10
    _throughputs(facts, "a", values)
    # rows 31..35 and 38..42 (36, 37 unknown) are one run of 10; row 43 is fast; 44..53 another
    assert facts.insights("a") == [
        ("throughput_drop", 310, 420, 55.0, 100.0),
        ("throughput_drop", 440, 530, 40.0, 100.0),
    ]


def test_throughput_drop_runs_count_unknown_rows_anywhere(facts: Facts) -> None:
    # unknown rows before every run, inside one, right after a fast row and at the end: only
    # known rows count, so each run is whole and its length counts its known rows alone
    unknown: list[float | None] = [None, NAN]
    values = [*unknown, *[100.0] * 30, *unknown, *[50.0] * 4, None, *[50.0] * 6, 100.0, *unknown]
    values += [*[40.0] * 9, *unknown, 100.0, *[30.0] * 10, None]
    _throughputs(facts, "a", values)
    steps = {i: 10 * (i + 1) for i in range(len(values))}
    first = values.index(50.0)
    second = values.index(30.0)
    assert facts.insights("a") == [
        ("throughput_drop", steps[first], steps[first + 10], 50.0, 100.0),
        ("throughput_drop", steps[second], steps[second + 9], 30.0, 100.0),
    ]


def test_throughput_drop_value_is_samples_over_seconds(facts: Facts) -> None:
    facts.job("a")
    fast = [{"samples": 100, "iteration_time": 0.1} for _ in range(20)]  # 10 steps x 0.1 s: 100 samples/s
    slow = [{"samples": 30, "iteration_time": 0.1}] * 5 + [{"samples": 10, "iteration_time": 0.1}] * 5
    facts.steps("a", fast + slow)
    # the run: 5 x 30 + 5 x 10 = 200 samples over 10 rows x 1 s
    (insight,) = facts.insights("a")
    assert insight[:3] == ("throughput_drop", 210, 300)
    assert insight[3] == pytest.approx(20.0) and insight[4] == pytest.approx(100.0)


def test_insight_rows_derive_the_rows_as_step_metrics_does(facts: Facts) -> None:
    # insight_rows computes step_metrics' row number, row count, seconds and samples in its own
    # sort of the facts (revision 0023): the same values, whichever way a row gets them
    t = [T0 + timedelta(seconds=s) for s in (0, 10, 25, 20, 40)]
    facts.job("batch", batch_size=8)
    facts.steps(
        "batch",
        [
            {"step": 0, "ts": t[0], "samples": 16},
            {"step": 5, "ts": t[1], "iteration_time": 0.5},
            {"step": 7, "ts": t[2]},  # seconds from the timestamps, samples from the batch size
            {"step": 9, "ts": t[3]},  # earlier than the row before: no seconds
            {"step": 12, "samples_per_second": 4.0},  # no timestamp
            {"step": 20, "ts": t[4], "samples_per_second": 3.0},
        ],
    )
    facts.job("rate")
    facts.steps(
        "rate",
        [
            {"step": 3, "ts": t[0], "samples_per_second": 2.0},
            {"step": 4, "ts": t[1], "samples_per_second": NAN},
            {"step": 6, "ts": t[2], "samples_per_second": 5.0, "iteration_time": INF},
            {"step": 8, "iteration_time": 2.0, "samples_per_second": 1.5, "samples": 7},
        ],
    )
    # mixed: trainer-state rows between, after and on its progress.json rows; those only from the
    # trainer state are no timing rows (revision 0038): the timing figures skip them
    facts.job("mixed", batch_size=2)
    facts.steps("mixed", [{"step": 10, "ts": t[0]}, {"step": 20, "ts": t[1]}, {"step": 30, "ts": t[2]}])
    facts.insert("trainer_steps", [{"job_id": "mixed", "step": s, "loss": 1.0} for s in (5, 15, 20, 25, 35)])
    # (the last row, revision 0025, is step_metrics' row whose row_no is the row count; the
    # previous step and the last timing row read step_metrics' timing rows, revision 0038)
    columns = "job_id, step, ts, row_no, samples, seconds"
    _, derived = facts.rows(
        f"SELECT {columns}, prev_step, last_row, last_timing_row FROM insight_rows ORDER BY job_id, step"
    )
    _, expected = facts.rows(
        f"SELECT {columns}, CASE WHEN timing_no > 1 THEN step - delta END, row_no = row_count, "
        "coalesce(timing_no = timing_count, FALSE) FROM step_metrics ORDER BY job_id, step"
    )
    assert len(derived) == 17
    assert repr(derived) == repr(expected)
    assert [row[1] for row in derived if row[-2]] == [20, 35, 8]
    assert [row[1] for row in derived if row[-1]] == [20, 30, 8]
    mixed = {row[1]: (row[4], row[5], row[6]) for row in derived if row[0] == "mixed"}
    assert mixed == {
        5: (None, None, None),
        10: (20.0, None, None),
        15: (None, None, None),
        20: (20.0, 10, 10),
        25: (None, None, None),
        30: (20.0, 15, 20),
        35: (None, None, None),
    }
    # and by hand, a few: 16 samples given; 0.5 s x 5 steps and 8 x 5 samples; 15 s by the clock
    batch = {row[1]: row[4:7] for row in derived if row[0] == "batch"}
    assert batch[0] == (16.0, None, None) and batch[5] == (40.0, 2.5, 0) and batch[7] == (16.0, 15.0, 5)
    assert batch[9][1] is None


# --- stall -------------------------------------------------------------------------------------


def _timed(facts: Facts, job_id: str, gaps: Sequence[float], status: str = "completed") -> None:
    facts.job(job_id, status)
    ts, rows = T0, [{"ts": T0}]
    for gap in gaps:
        ts = ts + timedelta(seconds=gap)
        rows.append({"ts": ts})
    facts.steps(job_id, rows)


def test_stall_more_than_ten_median_gaps(facts: Facts) -> None:
    _timed(facts, "at", [10.0] * 20 + [100.0] + [10.0] * 5)
    _timed(facts, "above", [10.0] * 20 + [100.5] + [10.0] * 5)
    assert facts.insights("at") == []
    assert facts.insights("above") == [("stall", 210, 220, 100.5, 10.0)]
    (row,) = facts.full("above", "stall")
    assert row["start_time"] == T0 + timedelta(seconds=200) and row["end_time"] == T0 + timedelta(seconds=300.5)


def test_stall_at_least_60_seconds_and_zero_gaps_ignored_in_the_median(facts: Facts) -> None:
    # median positive gap 1 s (the zero gaps do not count): limit max(10, 60) = 60
    _timed(facts, "at", [1.0, 0.0, 0.0, 0.0, 0.0, 0.0] * 4 + [60.0])
    _timed(facts, "above", [1.0, 0.0, 0.0, 0.0, 0.0, 0.0] * 4 + [61.0])
    assert facts.insights("at") == []
    assert facts.insights("above") == [("stall", 250, 260, 61.0, 1.0)]


def test_stall_needs_both_rows_timestamped(facts: Facts) -> None:
    facts.job("a")
    rows = [{"ts": T0 + timedelta(seconds=10 * i)} for i in range(10)] + [{}]
    rows += [{"ts": T0 + timedelta(seconds=10_000)}]
    facts.steps("a", rows)
    assert facts.insights("a") == []


# --- slow_vs_peers -----------------------------------------------------------------------------


def _paced(facts: Facts, job_id: str, throughput: float, model: str = "m", gpus: int | None = 2, **kw: Any) -> None:
    facts.job(job_id, kw.pop("status", "completed"), model_name=model, gpu_count=gpus, **kw)
    facts.steps(job_id, [{"samples": int(throughput), "iteration_time": 0.1}] * 2)  # 10 steps x 0.1 s each


def test_slow_vs_peers_below_0_7_of_the_peers_median(facts: Facts) -> None:
    for job_id in ("p1", "p2", "p3"):
        _paced(facts, job_id, 100)
    _paced(facts, "slow", 69)
    _paced(facts, "edge", 70, model="n")
    for job_id in ("n1", "n2", "n3"):
        _paced(facts, job_id, 100, model="n")
    assert facts.insights("slow") == [("slow_vs_peers", None, None, 69.0, 100.0)]
    assert facts.insights("edge") == []
    assert facts.insights("p1") == []


def test_slow_vs_peers_needs_three_completed_peers_of_the_same_model_and_gpus(facts: Facts) -> None:
    _paced(facts, "p1", 100)
    _paced(facts, "p2", 100)
    _paced(facts, "other-gpus", 100, gpus=4)
    _paced(facts, "other-model", 100, model="x")
    _paced(facts, "running", 100, status="running")
    _paced(facts, "slow", 10)
    assert facts.insights("slow", "slow_vs_peers") == []
    _paced(facts, "p3", 100)
    assert facts.insights("slow", "slow_vs_peers") == [("slow_vs_peers", None, None, 10.0, 100.0)]


def test_slow_vs_peers_gpu_count_from_readings_without_config(facts: Facts) -> None:
    for job_id in ("p1", "p2", "p3", "slow"):
        _paced(facts, job_id, 10 if job_id == "slow" else 100, gpus=None)
        facts.insert("step_gpus", [{"job_id": job_id, "step": 10, "gpu_index": g} for g in (0, 1)])
    _paced(facts, "configured", 100, gpus=2)  # gpu_count 2 = two GPUs in readings: a peer as well
    (row,) = facts.insights("slow", "slow_vs_peers")
    assert row[3:] == (10.0, 100.0)


# --- GPUs --------------------------------------------------------------------------------------


def _samples(facts: Facts, job_id: str, gpu: int, utils: Sequence[float], reasons: Sequence[int] | None = None) -> None:
    # through ingest's own path: it keeps the per-minute rollups the GPU views read
    rows = [
        {"job_id": job_id, "host": "h", "gpu_index": gpu, "ts": T0 + timedelta(seconds=10 * i),
         "utilization_percent": u, "clocks_event_reasons": reasons[i] if reasons else None}
        for i, u in enumerate(utils)
    ]  # fmt: skip
    gpu_samples.store(facts.con, rows, "spool")


def test_gpu_idle_more_than_half_the_time_below_10(facts: Facts) -> None:
    facts.job("a")
    # 11 samples, 10 intervals (the last sample stands for none): 6 of 10 idle -> 0.6; 5 of 10 -> 0.5
    _samples(facts, "a", 0, [5.0] * 6 + [90.0] * 5)
    _samples(facts, "a", 1, [5.0] * 5 + [90.0] * 5 + [5.0])
    rows = facts.full("a", "gpu_idle")
    assert [(r["host"], r["gpu_index"], r["value"], r["reference"]) for r in rows] == [("h", 0, 0.6, 0.5)]
    assert rows[0]["first_step"] is None and rows[0]["severity"] == "warning"
    # the same share as job_gpus, the GPU view
    assert facts.rows("SELECT idle_share FROM job_gpus WHERE job_id = 'a' AND gpu_index = 0")[1] == [(0.6,)]


def test_gpu_straggler_more_than_20_points_below_the_median(facts: Facts) -> None:
    facts.job("a")
    _samples(facts, "a", 0, [90.0] * 3)
    _samples(facts, "a", 1, [90.0] * 3)
    _samples(facts, "a", 2, [70.0] * 3)  # exactly 20 below: not a straggler
    _samples(facts, "a", 3, [69.5] * 3)  # median of 90, 90, 70, 69.5 = 80: 69.5 is not 20 below
    assert facts.insights("a", "gpu_straggler") == []
    facts.job("b")
    _samples(facts, "b", 0, [90.0] * 3)
    _samples(facts, "b", 1, [90.0] * 3)
    _samples(facts, "b", 2, [45.0] * 3)
    _samples(facts, "b", 3, [5.0] * 3)  # idle: counts in the median (67.5), is not a straggler itself
    rows = facts.full("b", "gpu_straggler")
    assert [(r["gpu_index"], r["value"], r["reference"]) for r in rows] == [(2, 45.0, 67.5)]


def test_gpu_straggler_whose_idleness_is_unknown_is_not_idle(facts: Facts) -> None:
    """One sample covers no time: no idle share, so not idle, and a mean of 0 is a straggler."""
    facts.job("a")
    _samples(facts, "a", 0, [95.0] * 2)
    _samples(facts, "a", 1, [0.0])
    rows = facts.full("a", "gpu_straggler")
    assert [(r["gpu_index"], r["value"], r["reference"]) for r in rows] == [(1, 0.0, 47.5)]
    assert facts.insights("a", "gpu_idle") == []


def test_gpu_straggler_needs_two_gpus_with_utilization(facts: Facts) -> None:
    facts.job("a")
    _samples(facts, "a", 0, [50.0] * 3)
    _samples(facts, "a", 1, [NAN] * 3)
    assert facts.insights("a", "gpu_straggler") == []


def test_gpu_throttled_more_than_a_tenth_of_the_time(facts: Facts) -> None:
    facts.job("a")
    _samples(facts, "a", 0, [90.0] * 11, reasons=[0x4] + [0] * 10)  # 1 of 10 intervals: 0.1, not above
    _samples(facts, "a", 1, [90.0] * 10, reasons=[0x40] + [0] * 9)  # 1 of 9
    _samples(facts, "a", 2, [90.0] * 10, reasons=[0x1] * 10)  # idle reason: not throttling
    rows = facts.full("a", "gpu_throttled")
    assert [(r["gpu_index"], r["value"], r["reference"]) for r in rows] == [(1, 1 / 9, 0.1)]


def test_gpu_kinds_from_step_readings_without_samples(facts: Facts) -> None:
    facts.job("a")
    facts.steps("a", [{"loss": 1.0}] * 4)
    # each reading counts once: GPU 2 reads 5, 5, 5, 95 (idle 3 of 4); means 90, 90, 27.5, 49: median 69.5
    readings = {0: [90.0] * 4, 1: [90.0] * 4, 2: [5.0, 5.0, 5.0, 95.0], 3: [49.0] * 4}
    facts.insert(
        "step_gpus",
        [{"job_id": "a", "step": 10 * (s + 1), "gpu_index": g, "utilization_percent": u[s]}
         for s in range(4) for g, u in readings.items()],
    )  # fmt: skip
    found = facts.full("a", "gpu_idle") + facts.full("a", "gpu_straggler")
    assert sorted((r["kind"], r["host"], r["gpu_index"], r["value"], r["reference"]) for r in found) == [
        ("gpu_idle", None, 2, 0.75, 0.5),
        ("gpu_straggler", None, 3, 49.0, 69.5),
    ]


def test_gpu_straggler_from_step_readings_at_the_edge(facts: Facts) -> None:
    # per GPU means 70, 70 and: 50 (exactly 20 below the median 70: no straggler), 49.5 (one),
    # 60 (10 below: the GPUs' means too close for a straggler, so their plain means stand)
    for job_id, low in (("edge", 50.0), ("below", 49.5), ("close", 60.0)):
        facts.job(job_id)
        facts.steps(job_id, [{"loss": 1.0}] * 2)
        readings = {0: [60.0, 80.0], 1: [70.0, 70.0], 2: [low, low]}
        facts.insert(
            "step_gpus",
            [{"job_id": job_id, "step": 10 * (s + 1), "gpu_index": g, "utilization_percent": u[s]}
             for s in range(2) for g, u in readings.items()],
        )  # fmt: skip
    assert facts.full("edge", "gpu_straggler") == []
    assert facts.full("close", "gpu_straggler") == []
    found = facts.full("below", "gpu_straggler")
    assert [(r["host"], r["gpu_index"], r["value"], r["reference"]) for r in found] == [(None, 2, 49.5, 70.0)]


def _trained(
    facts: Facts, job_id: str, seconds: float, utils: Sequence[float], used: float = 0, total: float = 0
) -> None:
    facts.job(job_id)
    facts.steps(job_id, [{"iteration_time": seconds / 10}])  # step 10: 10 iterations
    facts.insert(
        "step_gpus",
        [{"job_id": job_id, "step": 10, "gpu_index": i, "utilization_percent": u,
          "memory_used_mb": used or None, "memory_total_mb": total or None} for i, u in enumerate(utils)],
    )  # fmt: skip


def test_low_gpu_utilization_below_50_after_600_seconds(facts: Facts) -> None:
    _trained(facts, "low", 600, [49.0])
    _trained(facts, "at", 600, [50.0])
    _trained(facts, "short", 599, [10.0])
    assert facts.insights("low", "low_gpu_utilization") == [("low_gpu_utilization", None, None, 49.0, 50.0)]
    assert facts.insights("at", "low_gpu_utilization") == []
    assert facts.insights("short", "low_gpu_utilization") == []


def test_memory_headroom_below_40_percent_of_the_total(facts: Facts) -> None:
    _trained(facts, "roomy", 600, [90.0], used=30.0, total=100.0)
    _trained(facts, "at", 600, [90.0], used=40.0, total=100.0)
    _trained(facts, "no-total", 600, [90.0], used=30.0)
    (row,) = facts.full("roomy", "memory_headroom")
    assert (row["severity"], row["value"], row["reference"], row["gpu_index"]) == ("info", 0.3, 0.4, None)
    assert facts.insights("at", "memory_headroom") == []
    assert facts.insights("no-total", "memory_headroom") == []


# --- jobs --------------------------------------------------------------------------------------


def test_work_at_risk_more_than_twice_the_checkpoint_frequency(facts: Facts) -> None:
    for job_id, last, status in (("at", 300, "failed"), ("past", 301, "cancelled"), ("done", 400, "completed")):
        facts.job(job_id, status, save_steps=100)
        facts.steps(job_id, [{"step": 100}, {"step": last}])
        facts.insert("checkpoints", [{"job_id": job_id, "step": 100, "source": "folder"}])
    facts.job("none", "failed", save_steps=100)
    facts.steps("none", [{"step": 201}])
    facts.job("unknown", "failed")
    facts.steps("unknown", [{"step": 10_000}])
    assert facts.insights("at") == []
    assert facts.insights("past") == [("work_at_risk", None, None, 201.0, 100.0)]
    assert facts.insights("done") == []
    assert facts.insights("none") == [("work_at_risk", None, None, 201.0, 100.0)]
    assert facts.insights("unknown") == []


def test_silent_running_at_as_of(facts: Facts) -> None:
    as_of = T0 + timedelta(hours=2)
    facts.run_started(T0)  # an earlier run: only the latest counts
    facts.run_started(as_of)
    _timed(facts, "silent", [10.0] * 5, status="running")  # last row at T0 + 50 s; limit max(1800, 200)
    _timed(facts, "updated", [10.0] * 5, status="running")
    facts.con.execute("UPDATE jobs SET updated_at = ? WHERE job_id = 'updated'", [as_of - timedelta(seconds=1800)])
    _timed(facts, "slow-steps", [400.0] * 5, status="running")  # g 400: limit 8000 s; silent 7200 - 2000
    _timed(facts, "done", [10.0] * 5)
    facts.job("no-times", "running")
    assert facts.insights("silent") == [("silent_running", None, None, 7150.0, 1800.0)]
    assert facts.insights("updated") == []  # exactly the limit
    assert facts.insights("slow-steps") == []
    assert facts.insights("done") == []
    assert facts.insights("no-times") == []


# --- thresholds --------------------------------------------------------------------------------


@DUCKDB_ONLY  # DuckDB's insight_results refill (PostgreSQL's thresholds: test_postgres_ingest.py)
def test_thresholds_have_every_default_and_change_by_name(facts: Facts) -> None:
    assert insights.thresholds(facts.con) == {k: float(v) for k, v in sorted(insights.DEFAULTS.items())}
    _timed(facts, "a", [10.0] * 20 + [150.0])
    facts.insights("a")
    insights.refill(facts.con)
    assert facts.con.execute("SELECT kind, value FROM insight_results").fetchall() == [("stall", 150.0)]
    changed = insights.set_threshold(facts.con, "stall.min_seconds", 200)
    assert changed["stall.min_seconds"] == 200.0
    # every job's insights recomputed at once
    assert facts.con.execute("SELECT count(*) FROM insight_results").fetchone() == (0,)
    assert facts.con.execute("SELECT job_id FROM insight_jobs").fetchall() == [("a",)]
    insights.reset_threshold(facts.con, "stall.min_seconds")
    assert facts.con.execute("SELECT kind FROM insight_results").fetchall() == [("stall",)]
    insights.set_threshold(facts.con, "stall.factor", 20)
    insights.set_threshold(facts.con, "stall.min_seconds", 0)
    assert facts.con.execute("SELECT kind FROM insight_results").fetchall() == []
    assert insights.reset_threshold(facts.con) == insights.thresholds(facts.con)
    assert insights.thresholds(facts.con)["stall.factor"] == 10.0


def test_overfitting_thresholds_change_its_rule(facts: Facts) -> None:
    _overfit(facts, "two", {20: 1.0, 30: 1.2, 40: 1.3})
    assert facts.insights("two") == []
    insights.set_threshold(facts.con, "overfitting.min_evals_after", 2)
    assert facts.insights("two") == [("overfitting", 300, 400, 1.3, 1.0)]
    insights.set_threshold(facts.con, "overfitting.eval_rise", 1.31)
    assert facts.insights("two") == []
    # a training window of 1: the loss at the last eval (6.1) against that at the best (7.1)
    insights.reset_threshold(facts.con, "overfitting.eval_rise")
    insights.set_threshold(facts.con, "overfitting.train_window", 1)
    assert facts.insights("two") == [("overfitting", 300, 400, 1.3, 1.0)]
    _overfit(facts, "up-at-the-end", {20: 1.0, 30: 1.2, 40: 1.3}, train=[10.0 - 0.1 * i for i in range(39)] + [9.0])
    assert facts.insights("up-at-the-end", "overfitting") == []


@DUCKDB_ONLY  # the setter's checks, before any engine
def test_bad_threshold_names_and_values_are_refused(facts: Facts) -> None:
    with pytest.raises(insights.UnknownThreshold, match=r"stall\.typo.*loss_spike\.mad_factor.*stall\.min_seconds"):
        insights.set_threshold(facts.con, "stall.typo", 1)
    for name, value in (("stall.factor", -1), ("stall.factor", math.nan), ("stall.factor", math.inf),
                        ("overfitting.train_window", 2.5), ("overfitting.train_window", 0),
                        ("gpu_straggler.min_gpus", 1),
                        ("stall.factor", "ten")):  # fmt: skip
        with pytest.raises(insights.BadThreshold, match=name.replace(".", r"\.")):
            insights.set_threshold(facts.con, name, value)  # type: ignore[arg-type]
    assert insights.thresholds(facts.con) == {k: float(v) for k, v in sorted(insights.DEFAULTS.items())}


def test_every_threshold_is_read_by_the_views(template: Path) -> None:
    """Each threshold has its column in insight_parameters, and that column is read by a rule."""
    from runlytics.warehouse import views

    with db.connection(template, read_only=True) as con:
        columns = [r[0] for r in con.execute("DESCRIBE insight_parameters").fetchall()]
    assert columns == ["as_of", *(name.replace(".", "_") for name in insights.DEFAULTS)]
    rules = " ".join(
        v.template for v in views.CURRENT if v.name.startswith("insight_") and v.name != "insight_parameters"
    )
    for column in columns:
        assert re.search(rf"\b{column}\b", rules), column


# --- materialised, through real ingests ---------------------------------------------------------


def _table_equals_view(lab: Lab) -> list[tuple[Any, ...]]:
    def norm(rows: list[tuple[Any, ...]]) -> list[str]:
        return sorted(repr(tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in r)) for r in rows)

    names, _ = lab.columns("SELECT * FROM job_insights")
    stored = lab.query(f"SELECT {', '.join(names)} FROM insight_results")
    assert norm(stored) == norm(lab.query("SELECT * FROM job_insights"))
    assert lab.query("SELECT job_id FROM insight_jobs ORDER BY 1") == lab.query("SELECT job_id FROM jobs ORDER BY 1")
    return stored


def _history(losses: Sequence[float], t0: float = 1_767_225_600, gap: float = 10.0) -> list[dict[str, Any]]:
    return [{"step": 10 * (i + 1), "timestamp": t0 + gap * i, "loss": loss} for i, loss in enumerate(losses)]


def test_job_ranges_span_a_few_others_and_fall_back_to_one() -> None:
    ordered = [f"j{i:04d}" for i in range(1000)]
    gap = insights.RANGE_GAP
    assert insights.job_ranges(ordered, {"j0005"}) == [("j0005", "j0005")]
    # up to RANGE_GAP jobs not asked for between two asked for: one range; one more: two
    assert insights.job_ranges(ordered, {"j0000", ordered[gap + 1]}) == [("j0000", ordered[gap + 1])]
    assert insights.job_ranges(ordered, {"j0000", ordered[gap + 2]}) == [
        ("j0000", "j0000"),
        (ordered[gap + 2], ordered[gap + 2]),
    ]
    # more than MAX_RANGES ranges: one from the first asked for to the last
    apart = [ordered[i * (gap + 2) + 3] for i in range(insights.MAX_RANGES + 1)]
    assert len(insights.job_ranges(ordered, set(apart[:-1]))) == insights.MAX_RANGES
    assert insights.job_ranges(ordered, set(apart)) == [(apart[0], apart[-1])]
    assert insights.job_ranges(ordered, set()) == []


@DUCKDB_ONLY  # DuckDB's refresh by job ranges (a PostgreSQL publish copies the stage's rows)
def test_a_refresh_of_jobs_far_apart_equals_the_view(facts: Facts) -> None:
    # jobs in several ranges, a changed job between unchanged ones, and a running one
    for i in range(3 * (insights.RANGE_GAP + 2)):
        facts.losses(f"j{i:03d}", [1.0] * 25 + [9.0] + [1.0] * 5 if i % 5 == 0 else [1.0, NAN, 1.0])
    facts.job("r", status="running")
    every = {r[0] for r in facts.con.execute("SELECT job_id FROM jobs").fetchall()}
    results.refresh(facts.con, every)
    insights.refresh(facts.con, every)
    # a changed job: its old insights replaced, its neighbours' left as they are
    facts.con.execute("DELETE FROM steps WHERE job_id IN ('j000', 'j040') AND loss = 9.0")
    changed = {"j000", "j040", f"j{2 * (insights.RANGE_GAP + 2):03d}"}
    results.refresh(facts.con, changed)
    assert insights.refresh(facts.con, changed) == changed | {"r"}
    stored = facts.con.execute("SELECT * EXCLUDE (as_of) FROM insight_results ORDER BY ALL").fetchall()
    view = facts.con.execute("SELECT * FROM job_insights ORDER BY ALL").fetchall()
    assert repr(stored) == repr(view)
    assert ("j000", "loss_spike") not in {(r[0], r[1]) for r in stored}
    assert ("j005", "loss_spike") in {(r[0], r[1]) for r in stored}


def test_the_tables_follow_every_ingest(lab: Lab) -> None:
    lab.write_job("spiky", {"status": "completed", "history": _history([*BASE, 100.0])})
    calm = lab.write_job("calm", {"status": "completed", "history": _history(BASE)})
    os.utime(calm, (1_700_000_000, 1_700_000_000))  # settled: the second run does not read it again
    lab.ingest()
    assert [r[:4] for r in _table_equals_view(lab)] == [("spiky", "loss_spike", "warning", 210)]
    as_of = lab.query("SELECT max(started_at) FROM ingest_runs")[0][0]
    assert lab.query("SELECT DISTINCT as_of FROM insight_jobs UNION SELECT DISTINCT as_of FROM insight_results") == [
        (as_of,)
    ]
    # a new snapshot: the spike is gone, NaN comes in; the calm job stays as computed
    lab.write_job("spiky", {"status": "completed", "history": _history([*BASE, 2.0, NAN])})
    lab.ingest()
    rows = _table_equals_view(lab)
    assert [r[:5] for r in rows] == [("spiky", "nonfinite_loss", "critical", 220, 220)]
    second = lab.query("SELECT max(started_at) FROM ingest_runs")[0][0]
    assert dict(lab.query("SELECT job_id, as_of FROM insight_jobs")) == {"spiky": second, "calm": as_of}


def test_running_jobs_are_recomputed_by_every_run(lab: Lab) -> None:
    path = lab.write_job("live", {"status": "running", "history": _history([1.0, 1.0])})
    os.utime(path, (1_700_000_000, 1_700_000_000))  # settled: the next run finds it unchanged
    lab.ingest()
    first = dict(lab.query("SELECT kind, value FROM insight_results"))
    summary = lab.ingest()
    assert summary.ingested == 0
    later = dict(lab.query("SELECT kind, value FROM insight_results"))
    # silent since 2026-01-01: the silence grows with the run's start
    assert set(first) == set(later) == {"silent_running"}
    assert later["silent_running"] > first["silent_running"]
    runs = lab.query("SELECT started_at FROM ingest_runs ORDER BY started_at")
    assert lab.query("SELECT as_of FROM insight_jobs") == [runs[-1]]
    _table_equals_view(lab)


def test_an_unchanged_running_job_keeps_its_other_insights(lab: Lab) -> None:
    # a NaN loss and a silence: a run that changes nothing recomputes the silence alone
    path = lab.write_job("live", {"status": "running", "history": _history([1.0, math.nan, 1.0])})
    os.utime(path, (1_700_000_000, 1_700_000_000))
    lab.ingest()
    first = dict(lab.query("SELECT kind, value FROM insight_results"))
    assert lab.ingest().ingested == 0
    later = dict(lab.query("SELECT kind, value FROM insight_results"))
    assert set(first) == set(later) == {"nonfinite_loss", "silent_running"}
    assert later["nonfinite_loss"] == first["nonfinite_loss"] == 1.0
    assert later["silent_running"] > first["silent_running"]
    runs = lab.query("SELECT started_at FROM ingest_runs ORDER BY started_at")
    assert set(lab.query("SELECT as_of FROM insight_results")) == {runs[-1]}
    _table_equals_view(lab)


def test_peers_of_a_changed_job_are_recomputed(lab: Lab) -> None:
    def job(throughput: int, model: str = "m") -> dict[str, Any]:
        rows = [{"step": 10 * i, "samples": throughput * 10, "iteration_time": 1.0, "loss": 1.0} for i in (1, 2)]
        return {"status": "completed", "config": {"model_name": model, "gpu_count": 1}, "history": rows}

    for name in ("p1", "p2", "p3"):
        lab.write_job(name, job(100))
    lab.write_job("slow", job(60))
    lab.ingest()
    assert lab.query("SELECT job_id, kind FROM insight_results") == [("slow", "slow_vs_peers")]
    # the peers slow down: "slow" is no longer slow although its own file is unchanged
    for name in ("p1", "p2", "p3"):
        lab.write_job(name, job(80))
    lab.ingest()
    assert lab.query("SELECT job_id, kind FROM insight_results") == []
    # one peer moves to another model: two peers are left, too few
    lab.write_job("p3", job(200))
    lab.ingest()
    lab.write_job("p3", job(200, model="other"))
    lab.write_job("slow", job(10))
    lab.ingest()
    assert lab.query("SELECT job_id, kind FROM insight_results") == []
    _table_equals_view(lab)


def test_a_killed_run_leaves_insights_owed_and_the_next_run_pays(lab: Lab) -> None:
    path = lab.write_job("a", {"status": "completed", "history": _history([1.0, NAN])})
    os.utime(path, (1_700_000_000, 1_700_000_000))  # settled: the next run does not read it again
    lab.ingest()
    # facts changed and queued, the refresh never ran (as if the run was killed before it)
    with db.connection(lab.db) as con:
        con.execute("UPDATE steps SET loss = 1.0 WHERE job_id = 'a'")
        results.enqueue(con, {"a"})
    assert lab.query("SELECT kind FROM insight_results") == [("nonfinite_loss",)]
    lab.ingest()
    assert lab.query("SELECT kind FROM insight_results") == []
    _table_equals_view(lab)


# --- revision 0023 on PostgreSQL ------------------------------------------------------------


def _view_columns(con: Any, name: str) -> list[str]:
    query = "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position"
    return [column for (column,) in con.execute(query, [name]).fetchall()]


def test_revision_0023_goes_down_and_up_on_postgres(pg_url: str) -> None:
    # PostgreSQL cannot drop insight_rows' known_no in place: the views that read it are dropped
    # and created again, both ways
    target = db.PostgresUrl(pg_url)
    assert migrate.upgrade(target) == migrate.HEAD_REVISION
    with psycopg.connect(pg_url) as con:
        assert "known_no" not in _view_columns(con, "insight_rows")
        assert con.execute("SELECT count(*) FROM job_insights").fetchone() == (0,)
    with postgres.connection(target) as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0022")
        conn.commit()
    with psycopg.connect(pg_url) as con:
        assert "known_no" in _view_columns(con, "insight_rows")
        assert con.execute("SELECT count(*) FROM job_insights").fetchone() == (0,)
    assert migrate.upgrade(target) == migrate.HEAD_REVISION


def test_revision_0025_goes_down_and_up_on_postgres(pg_url: str) -> None:
    # revision 0025 replaces insight_rows' r and row_count with recent_max and last_row: on
    # PostgreSQL the views that read it are dropped and created again, both ways
    target = db.PostgresUrl(pg_url)
    assert migrate.upgrade(target) == migrate.HEAD_REVISION
    with psycopg.connect(pg_url) as con:
        columns = _view_columns(con, "insight_rows")
        assert {"recent_max", "last_row"} <= set(columns) and not {"r", "row_count"} & set(columns)
    with postgres.connection(target) as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0024")
        conn.commit()
    with psycopg.connect(pg_url) as con:
        columns = _view_columns(con, "insight_rows")
        assert {"r", "row_count"} <= set(columns) and not {"recent_max", "last_row"} & set(columns)
        assert con.execute("SELECT count(*) FROM job_insights").fetchone() == (0,)
    assert migrate.upgrade(target) == migrate.HEAD_REVISION
