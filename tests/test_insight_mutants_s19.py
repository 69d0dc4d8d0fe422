"""Insights (shared/spec/insights.md): the hand-worked cases that the mutation check
(tests/mutations.py, its insight mutations) found missing: each test tells the rule apart from
plausible wrong ones that tests/test_insights.py let pass (its comments say which).

DuckDB alone (the rules are the same SQL on PostgreSQL, whose cases test_insights.py runs): the
small jobs' facts are inserted into a migrated warehouse, as test_insights.py does, and the view
job_insights is read.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runlytics.ingest import gpu_samples
from runlytics.warehouse import db, insights, migrate
from tests.test_insights import (
    BASE,
    NAN,
    T0,
    Facts,
    _divergence_losses,
    _overfit,
    _paced,
    _throughputs,
    _timed,
    _trained,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "w.duckdb"
    migrate.upgrade(path)
    return path


@pytest.fixture
def facts(template: Path, tmp_path: Path) -> Iterator[Facts]:
    path = tmp_path / "w.duckdb"
    shutil.copy(template, path)
    with db.connection(path) as con:
        yield Facts(con)


def _store(
    facts: Facts, job_id: str, utilization: dict[int, list[float]], reasons: dict[int, list[int | None]] | None = None
) -> None:
    """GPU samples 10 s apart on host h, each GPU's utilization (and clocks-event reasons) by index:
    one store through ingest's own path (gpu_samples.store keeps the per-minute rollups)."""
    rows = [
        {"job_id": job_id, "host": "h", "gpu_index": gpu, "ts": T0 + timedelta(seconds=10 * i),
         "utilization_percent": u, "clocks_event_reasons": (reasons or {}).get(gpu, [None] * len(values))[i]}
        for gpu, values in utilization.items() for i, u in enumerate(values)
    ]  # fmt: skip
    gpu_samples.store(facts.con, rows, "spool")


ROWS = "first_step, last_step, value, reference"  # a row kind's figures
GPUS = "gpu_index, value, reference"  # a GPU kind's
JOBS = "value, reference"  # a job kind's
ROW_KINDS = ("nonfinite_loss", "loss_spike", "loss_divergence", "overfitting", "throughput_drop", "stall")


def found(facts: Facts, kind: str, columns: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every job's insights of this kind (``columns`` of each, in their order): one read of
    job_insights for all the jobs of a test."""
    sql = f"SELECT job_id, {columns} FROM job_insights WHERE kind = $kind ORDER BY job_id, {columns}"
    if kind in ROW_KINDS:  # these read the step facts alone, not job_results (no refresh)
        rows = facts.con.execute(sql, {"kind": kind}).fetchall()
    else:
        _, rows = facts.rows(sql, {"kind": kind})
    by_job: dict[str, list[tuple[Any, ...]]] = {}
    for job_id, *figures in rows:
        by_job.setdefault(job_id, []).append(tuple(figures))
    return by_job


def test_each_kind_has_the_severity_insights_md_gives(facts: Facts) -> None:
    facts.losses("nonfinite", [1.0, NAN])
    facts.losses("spike", [*BASE, 100.0])
    facts.losses("diverging", _divergence_losses(4.0, 1.0, 2.0))
    _overfit(facts, "overfit", {20: 1.0, 25: 1.2, 30: 1.2, 40: 1.3})
    _throughputs(facts, "drop", [100.0] * 20 + [50.0] * 10)
    _timed(facts, "stall", [10.0] * 20 + [200.0])
    for job_id in ("p1", "p2", "p3"):
        _paced(facts, job_id, 100)
    _paced(facts, "slow", 10)
    facts.job("gpus")
    # means 90, 90, 45, 5: median 67.5; GPU 2 a straggler, GPU 3 idle, GPU 0 throttled
    _store(facts, "gpus", {0: [90.0] * 3, 1: [90.0] * 3, 2: [45.0] * 3, 3: [5.0] * 3}, {0: [0x4] * 3})
    _trained(facts, "idle-job", 600, [20.0], used=10.0, total=100.0)  # low utilization, memory headroom
    facts.job("lost", "failed", save_steps=100)
    facts.steps("lost", [{"step": 301}])
    facts.run_started(T0 + timedelta(hours=2))
    _timed(facts, "silent", [10.0] * 5, status="running")
    _, rows = facts.rows("SELECT DISTINCT kind, severity FROM job_insights")
    assert dict(rows) == {
        "nonfinite_loss": "critical",
        "loss_spike": "warning",
        "loss_divergence": "critical",
        "overfitting": "warning",
        "throughput_drop": "warning",
        "stall": "warning",
        "slow_vs_peers": "warning",
        "gpu_idle": "warning",
        "gpu_straggler": "warning",
        "gpu_throttled": "warning",
        "low_gpu_utilization": "warning",
        "memory_headroom": "info",
        "work_at_risk": "warning",
        "silent_running": "warning",
    }
    assert len(rows) == len(insights.KINDS)


# --- loss_spike ----------------------------------------------------------------------------------


def test_loss_spike_relative_limit_is_half_the_absolute_median(facts: Facts) -> None:
    # m = -10, d = 0: limit -10 + max(0, 0.5 x |-10|) = -5 (with 0.5 x m it would be -10)
    facts.losses("neg-at", [-10.0] * 20 + [-5.0])
    facts.losses("neg-above", [-10.0] * 20 + [-4.5])
    # a lower loss before the window (1, row 1): row 22's m = 10, d = 0, limit 10 + 5 = 15, while
    # the lowest loss before it is 1
    facts.losses("below", [1.0] + [10.0] * 20 + [14.0])
    facts.losses("at", [1.0] + [10.0] * 20 + [15.0])
    facts.losses("above", [1.0] + [10.0] * 20 + [15.5])
    assert found(facts, "loss_spike", ROWS) == {
        "above": [(220, 220, 15.5, 10.0)],
        "neg-above": [(210, 210, -4.5, -10.0)],
    }


def test_loss_spike_value_is_the_highest_of_its_rows(facts: Facts) -> None:
    # row 21: m 2, d 1, limit 8 -> 20 spikes. Row 22: window 9 ones, 10 threes, 20: m 3,
    # deviations 10x0, 9x2, 17 -> d 1, limit 9 -> 100 spikes. One insight: the highest, 100
    facts.losses("a", [*BASE, 20.0, 100.0])
    assert found(facts, "loss_spike", ROWS) == {"a": [(210, 220, 100.0, 2.0)]}


# --- loss_divergence -----------------------------------------------------------------------------


def test_loss_divergence_r_b_and_its_figures(facts: Facts) -> None:
    # r10 = median(0.6, 9 x 4) = 4; r falls to b = 1 and reaches 2 = 2b at row 26. A median of
    # fewer than 10 losses (r1 = 0.6, r2 = 2.3) would make a divergence at row 2 from b = 0.6
    facts.losses("tenth", [0.6] + [4.0] * 9 + [1.0] * 10 + [2.0] * 10)
    # diverges at row 26 (r 2, b 1); r then falls to 0.5 (rows 36..45, so b 0.5 from row 37) and
    # rises to 3 (r 3 from row 46, past 2 x 0.5 too): still the one insight of row 26, its b 1,
    # and r of the last row (rows 41..50: 3), not the 2 where it diverged
    facts.losses("again", _divergence_losses(4.0, 1.0, 2.0) + [0.5] * 10 + [3.0] * 10)
    assert found(facts, "loss_divergence", ROWS) == {"again": [(260, 500, 3.0, 1.0)], "tenth": [(260, 300, 2.0, 1.0)]}


# --- overfitting ---------------------------------------------------------------------------------


def test_overfitting_reads_the_last_finite_eval(facts: Facts) -> None:
    # the last eval 1.01 < 1.05 x 1.0, though 1.2 came before it: no overfitting
    _overfit(facts, "fell", {20: 1.0, 25: 1.2, 30: 1.1, 40: 1.01})
    # its value is the last eval loss (1.1), not the highest (1.3)
    _overfit(facts, "rose", {20: 1.0, 25: 1.3, 30: 1.2, 40: 1.1})
    # after the best (row 20) two finite evals: a NaN one would have made the three needed
    _overfit(facts, "nan", {20: 1.0, 25: 1.2, 30: NAN, 40: 1.3})
    assert found(facts, "overfitting", ROWS) == {"rose": [(250, 400, 1.1, 1.0)]}


def test_overfitting_training_medians_are_of_the_last_10_finite_losses(facts: Facts) -> None:
    evals = {20: 1.0, 25: 1.2, 30: 1.2, 40: 1.3}
    # window: the 10 losses up to the best (rows 11..20: 1) and up to the last eval (rows 31..40:
    # 2): no fall. Over every loss so far it would be 5.5 (rows 1..20), then 2 (rows 1..40)
    _overfit(facts, "window", evals, train=[10.0] * 10 + [1.0] * 10 + [2.0] * 20)
    # median, not mean: rows 11..20 all 5; rows 31..40 six 1s and four 100s: median 1, mean 40.6
    _overfit(facts, "median", evals, train=[5.0] * 30 + [1.0] * 6 + [100.0] * 4)
    # at or before the eval, its own row included: rows 31..40 = 4 x 4, 5 x 5.5, 1 -> (4 + 5.5) / 2
    # = 4.75 < 5; without row 40 (rows 31..39) the median would be 5.5
    _overfit(facts, "own-row", evals, train=[5.0] * 30 + [4.0] * 4 + [5.5] * 5 + [1.0])
    assert found(facts, "overfitting", ROWS) == {"median": [(250, 400, 1.3, 1.0)], "own-row": [(250, 400, 1.3, 1.0)]}


# --- throughput_drop -----------------------------------------------------------------------------


def test_throughput_drop_median_and_value(facts: Facts) -> None:
    # T = median of 15 x 100 and 10 x 50 = 100 (with the 20 unknown rows as 0 it would be 50)
    _throughputs(facts, "unknown", [None] * 20 + [100.0] * 15 + [50.0] * 10)
    facts.job("value")
    fast = [{"samples": 100, "iteration_time": 0.1}] * 20  # 10 steps x 0.1 s = 1 s: 100 samples/s
    # the run: 5 rows of 30 samples in 1 s, 5 of 10 samples in 3 s, one of 1000 samples without
    # seconds (its throughput the 5 samples/s it gives): 200 samples / 20 s = 10 (the rows'
    # mean would be 15.6; adding the 1000 samples, 60)
    slow = [{"samples": 30, "iteration_time": 0.1}] * 5 + [{"samples": 10, "iteration_time": 0.3}] * 5
    facts.steps("value", [*fast, *slow, {"samples": 1000, "samples_per_second": 5.0}])
    # a row's throughput is its samples / its seconds (100, then 10), before the 50 it reports
    facts.job("reported")
    fast = [{"samples": 100, "iteration_time": 0.1, "samples_per_second": 50.0}] * 20
    slow = [{"samples": 10, "iteration_time": 0.1, "samples_per_second": 50.0}] * 10
    facts.steps("reported", fast + slow)
    assert found(facts, "throughput_drop", ROWS) == {
        "reported": [(210, 300, pytest.approx(10.0), pytest.approx(100.0))],
        "unknown": [(360, 450, 50.0, 100.0)],
        "value": [(210, 310, pytest.approx(10.0), pytest.approx(100.0))],
    }


# --- slow_vs_peers -------------------------------------------------------------------------------


def test_slow_vs_peers_median_not_mean_and_the_configs_gpu_count_first(facts: Facts) -> None:
    # peers 100, 100, 40: median 100 (mean 80): 60 < 70 is slow (not below 0.7 x 80 = 56); and
    # 40, against 100, 100, 60
    for job_id, pace in (("p1", 100), ("p2", 100), ("p3", 40), ("slow", 60)):
        _paced(facts, job_id, pace)
    # four GPUs by config: peers of each other, though "logged"'s readings show two GPUs
    for job_id, pace in (("q1", 100), ("q2", 100), ("q3", 100), ("logged", 10)):
        _paced(facts, job_id, pace, model="q", gpus=4)
    facts.insert("step_gpus", [{"job_id": "logged", "step": 10, "gpu_index": g} for g in (0, 1)])
    assert found(facts, "slow_vs_peers", JOBS) == {
        "logged": [(10.0, 100.0)],
        "p3": [(40.0, 100.0)],
        "slow": [(60.0, 100.0)],
    }


# --- GPUs ----------------------------------------------------------------------------------------


def test_gpu_idle_is_strictly_below_the_utilization_threshold(facts: Facts) -> None:
    facts.job("a")
    # GPU 0 at 10 %: not idle; GPU 1 6 of 10 intervals below 10 %
    _store(facts, "a", {0: [10.0] * 6 + [90.0] * 5, 1: [9.5] * 6 + [90.0] * 5})
    facts.job("b")
    _store(facts, "b", {0: [20.0] * 6 + [90.0] * 5, 1: [19.0] * 6 + [90.0] * 5})
    facts.job("logged")
    facts.steps("logged", [{"loss": 1.0}] * 4)
    facts.insert(
        "step_gpus",
        [{"job_id": "logged", "step": 10 * (s + 1), "gpu_index": 0, "utilization_percent": u}
         for s, u in enumerate([10.0, 10.0, 10.0, 95.0])],
    )  # fmt: skip
    assert found(facts, "gpu_idle", GPUS) == {"a": [(1, 0.6, 0.5)]}
    _, shares = facts.rows("SELECT job_id, gpu_index, idle_share FROM job_gpus ORDER BY job_id, gpu_index")
    assert shares == [("a", 0, 0.0), ("a", 1, 0.6), ("b", 0, 0.0), ("b", 1, 0.0)]
    # another threshold (from the raw samples, and the step readings): below 20, not at it
    facts.con.execute("UPDATE insight_settings SET value = 20 WHERE name = 'gpu_idle.utilization'")
    assert found(facts, "gpu_idle", GPUS) == {
        "a": [(0, 0.6, 0.5), (1, 0.6, 0.5)],
        "b": [(1, 0.6, 0.5)],
        "logged": [(0, 0.75, 0.5)],
    }


def test_gpu_kinds_read_the_samples_of_a_job_that_has_them(facts: Facts) -> None:
    # busy in its samples; idle (and far below the others) in its step readings: the samples count
    facts.job("a")
    _store(facts, "a", {0: [90.0] * 3, 1: [80.0] * 3})
    facts.steps("a", [{"loss": 1.0}] * 2)
    facts.insert(
        "step_gpus",
        [{"job_id": "a", "step": 10 * (s + 1), "gpu_index": g, "utilization_percent": u}
         for s in range(2) for g, u in ((0, 5.0), (1, 5.0), (2, 90.0))],
    )  # fmt: skip
    _, kinds = facts.rows("SELECT kind FROM job_insights WHERE job_id = 'a'")
    assert kinds == []


def test_gpu_straggler_counts_only_gpus_with_utilization(facts: Facts) -> None:
    facts.con.execute("UPDATE insight_settings SET value = 3 WHERE name = 'gpu_straggler.min_gpus'")
    facts.job("a")
    # GPU 1 is 35 below the median 55, but only 2 GPUs have utilization
    _store(facts, "a", {0: [90.0] * 3, 1: [20.0] * 3, 2: [NAN] * 3})
    assert found(facts, "gpu_straggler", GPUS) == {}


def test_gpu_throttled_reasons_are_the_0xec_mask_over_time_with_a_mask(facts: Facts) -> None:
    facts.job("a")
    # GPU 0 sync boost: not throttling; GPU 1 HW power brake: throttling; GPU 2 2 intervals with
    # a mask (both SW thermal), 8 without: throttled 2 of 2
    _store(facts, "a", {g: [90.0] * 11 for g in range(3)}, {0: [0x10] * 11, 1: [0x80] * 11, 2: [0x20] * 2 + [None] * 9})
    assert found(facts, "gpu_throttled", GPUS) == {"a": [(1, 1.0, 0.1), (2, 1.0, 0.1)]}


def test_memory_headroom_reads_the_samples_largest_total_and_the_peak(facts: Facts) -> None:
    # samples: peak 30 of the largest total 100 (0.3); the mean memory (13.3), the smaller GPU's
    # total (50) and the step readings' (50) are none of its figures
    _trained(facts, "a", 600, [90.0], used=10.0, total=50.0)
    used = {0: [30.0, 10.0, 10.0], 1: [10.0, 10.0, 10.0]}
    total = {0: 100.0, 1: 50.0}
    rows = [
        {"job_id": "a", "host": "h", "gpu_index": g, "ts": T0 + timedelta(seconds=10 * i),
         "utilization_percent": 90.0, "memory_used_mb": u, "memory_total_mb": total[g]}
        for g, values in used.items() for i, u in enumerate(values)
    ]  # fmt: skip
    gpu_samples.store(facts.con, rows, "spool")
    assert found(facts, "memory_headroom", JOBS) == {"a": [(0.3, 0.4)]}


# --- jobs ----------------------------------------------------------------------------------------


def test_work_at_risk_counts_from_the_last_checkpoint(facts: Facts) -> None:
    for job_id, last in (("safe", 301), ("risky", 501)):
        facts.job(job_id, "failed", save_steps=100)
        facts.steps(job_id, [{"step": 100}, {"step": last}])
        facts.insert("checkpoints", [{"job_id": job_id, "step": s, "source": "folder"} for s in (100, 250)])
    # safe: 51 steps past step 250 (201 past the first checkpoint); risky: 251
    assert found(facts, "work_at_risk", JOBS) == {"risky": [(251.0, 100.0)]}


def test_silent_running_latest_time_median_gap_and_status(facts: Facts) -> None:
    as_of = T0 + timedelta(hours=2)
    facts.run_started(as_of)
    # updated_at before its last row (T0 + 50 s): the row's time counts
    _timed(facts, "early-update", [10.0] * 5, status="running")
    facts.con.execute("UPDATE jobs SET updated_at = ? WHERE job_id = 'early-update'", [T0 + timedelta(seconds=10)])
    # g = median of the positive gaps (100) though most gaps are 0: limit 2000 s; silent 7200 -
    # 5300 = 1900 s. With the zero gaps, g 0 and the limit 1800 s
    _timed(facts, "zeros", [0.0] * 10 + [100.0] * 3 + [5000.0], status="running")
    _timed(facts, "paused", [10.0] * 5, status="paused")
    assert found(facts, "silent_running", JOBS) == {"early-update": [(7150.0, 1800.0)]}
