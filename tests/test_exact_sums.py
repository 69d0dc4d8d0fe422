"""Sums and means of floats give the same last digit on every run, whatever DuckDB's threads.

DuckDB aggregates a table of more than one row group (122,880 rows) in parallel and adds the
threads' partial sums in the order they finish: a plain ``sum`` of the same rows then differs
in the last digit from run to run. The job here has 300,000 step rows, 600,000 step readings and
300,000 GPU samples; every float figure of the views and derived tables is computed many times
with 8 threads and must repeat bit for bit (``repr``), and equal the values added up in
ascending order by Python (an independent reader: ``sum(sorted(...))`` adds left to right); the
GPU samples' figures come from their per-minute rollups (gpu_minutes), so Python adds each GPU
minute's values in ascending order, then those sums in ascending order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from depth import examples

from runlytics.warehouse import db, migrate, results, rollups

STEPS = 300_000
REPEAT = examples(3, 6)  # runs of each figure (depth.py): a figure whose bits vary shows it in 2 of 3

# Decimal-looking values (not exact in binary, so their sum depends on the order of addition),
# from a fixed integer hash of the row number: the same data on every run.
FACTS = f"""
INSERT INTO jobs (job_id, status, config, gpu_count, ingested_at)
VALUES ('big', 'running', '{{}}', 2, TIMESTAMP '2026-01-01'), ('small', 'running', '{{}}', 1, TIMESTAMP '2026-01-01');
INSERT INTO steps (job_id, step, ts, loss, samples_per_second, iteration_time, samples)
SELECT 'big', i, TIMESTAMP '2026-01-01' + to_microseconds(i * 100000 + (i * 7919) % 50000),
       1 + ((i * 104729) % 1000) / 997.0, ((i * 31) % 1000) / 10.0 + 0.1, ((i * 7) % 100) / 1000.0 + 0.001, NULL
FROM range(1, {STEPS} + 1) r(i);
INSERT INTO steps (job_id, step, ts, loss, iteration_time) VALUES ('small', 1, TIMESTAMP '2026-01-01', 2.0, 0.5);
INSERT INTO step_gpus (job_id, step, gpu_index, utilization_percent, memory_used_mb, temperature_c)
SELECT 'big', i, g, ((i * 37 + g * 11) % 1000) / 10.0, ((i * 13) % 8000) / 3.0, 40 + ((i * 17) % 400) / 10.0
FROM range(1, {STEPS} + 1) r(i), range(2) s(g);
INSERT INTO gpu_samples_hot (job_id, host, gpu_index, ts, utilization_percent, memory_used_mb, temperature_c, power_w,
                         clocks_event_reasons, source, gpu_key)
SELECT 'big', 'h', g, TIMESTAMP '2026-01-01' + to_microseconds(i * 200000 + g),
       ((i * 41 + g) % 1000) / 10.0, ((i * 3) % 9000) / 7.0, 30 + ((i * 19) % 500) / 10.0,
       100 + ((i * 23) % 3000) / 10.0, CASE WHEN i % 5 = 0 THEN 4 ELSE 1 END, 'spool', '#' || CAST(g AS VARCHAR)
FROM range(1, {STEPS // 2} + 1) r(i), range(2) s(g);
"""

FIGURES = {
    "job_analytics": "SELECT * FROM job_analytics ORDER BY job_id",
    "job_gpus": "SELECT * FROM job_gpus ORDER BY job_id, host, gpu_index",
    "fleet_gpu_hours": "SELECT * FROM fleet_gpu_hours",
    "utilization_minutes": results.ROLLUP_UTILIZATION_SELECT.format(where="") + " ORDER BY job_id, minute",
    "gpu_minutes": rollups.SELECT_ALL + " ORDER BY job_id, host, gpu_key, minute",
}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("sums") / "w.duckdb"
    migrate.upgrade(path)
    with db.connection(path) as con:
        con.execute(FACTS)
        con.execute(rollups.REBUILD_HOT)  # ingest rolls the samples up per minute as it stores them
        con.execute(results.REFILL)
        con.execute(results.ROLLUP_UTILIZATION_REFILL)
    yield path


def _exact(rows: list[tuple[Any, ...]]) -> list[tuple[str, ...]]:
    return [tuple(repr(v) for v in row) for row in rows]


def _threaded(path: Path, threads: int = 8) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path), read_only=True)
    con.execute(f"SET threads = {threads}")
    return con


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_run_gives_the_same_bits(warehouse: Path, name: str) -> None:
    con = _threaded(warehouse)
    try:
        seen = {str(_exact(con.execute(FIGURES[name]).fetchall())) for _ in range(REPEAT)}
        con.execute("SET threads = 1")
        single = str(_exact(con.execute(FIGURES[name]).fetchall()))
    finally:
        con.close()
    assert len(seen) == 1, f"{name}: {len(seen)} different results in {REPEAT} runs"
    assert seen == {single}


def test_sums_are_the_values_added_in_ascending_order(warehouse: Path) -> None:
    """The figures equal Python's left-to-right sum of the sorted values, to the last bit."""
    con = _threaded(warehouse)
    try:
        seconds = [r[0] for r in con.execute("SELECT seconds FROM step_metrics WHERE job_id = 'big'").fetchall()]
        samples = [r[0] for r in con.execute("SELECT samples FROM step_metrics WHERE job_id = 'big'").fetchall()]
        # the samples grouped as the rollups group them: per GPU and minute
        per_gpu_minute: dict[tuple[Any, ...], list[float]] = {}
        for gpu_key, minute, util in con.execute(
            "SELECT gpu_key, date_trunc('minute', ts), utilization_percent FROM gpu_samples"
        ).fetchall():
            per_gpu_minute.setdefault((gpu_key, minute), []).append(util)
        training, rate, average_util = con.execute(
            "SELECT training_seconds, p.average_samples_per_second, average_gpu_utilization"
            " FROM job_analytics a JOIN job_performance p USING (job_id) WHERE job_id = 'big'"
        ).fetchone() or (None, None, None)
        (minute_sum,) = con.execute(
            "SELECT utilization_sum FROM utilization_minutes WHERE job_id = 'big' AND minute = TIMESTAMP '2026-01-01'"
        ).fetchone() or (None,)
    finally:
        con.close()
    assert repr(training) == repr(sum(sorted(seconds)))
    # samples are samples_per_second x seconds: the throughput is Σ samples ÷ Σ seconds
    assert repr(rate) == repr(sum(sorted(samples)) / sum(sorted(seconds)))
    # a mean of GPU samples: each GPU-minute's values added in ascending order, then those sums
    # in ascending order, over the count (the rollups' grouping of the same terms)
    sums = {key: sum(sorted(values)) for key, values in per_gpu_minute.items()}
    count = sum(len(values) for values in per_gpu_minute.values())
    assert repr(average_util) == repr(sum(sorted(sums.values())) / count)
    first_minute = [total for (_, minute), total in sums.items() if minute == datetime(2026, 1, 1)]
    assert len(first_minute) == 2
    assert repr(minute_sum) == repr(sum(sorted(first_minute)))
    # and the grouping is as good as any: within a few ulps of the exact mean
    values = [v for vs in per_gpu_minute.values() for v in vs]
    assert math.isclose(average_util, math.fsum(values) / count, rel_tol=1e-12)
    # and the order chosen is as good as any: within a few ulps of the exact sum
    assert math.isclose(training, math.fsum(seconds), rel_tol=1e-12)


def test_refills_store_the_same_bits(warehouse: Path) -> None:
    """Ingest's refresh of the derived tables, run again and again, stores the same figures."""
    stored = set()
    with db.connection(warehouse) as con:
        con.execute("SET threads = 8")
        for _ in range(REPEAT):
            con.execute(results.REFILL)
            con.execute(results.ROLLUP_UTILIZATION_REFILL)
            rows = con.execute("SELECT * FROM job_results ORDER BY job_id").fetchall()
            minutes = con.execute("SELECT * FROM utilization_minutes ORDER BY job_id, minute").fetchall()
            stored.add(str(_exact(rows)) + str(_exact(minutes)))
    assert len(stored) == 1
