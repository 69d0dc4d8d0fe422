"""The GPU views' figures (docs/views.md: job_gpus, job_energy) that the mutation check
(tests/mutations.py, its GPU view mutations) found untested: the idle share and ``idle`` of a GPU,
its throttled share, and the job's idle GPUs and mean throttled share, on one hand-made job.

DuckDB alone: the samples are stored through ingest's own path (gpu_samples.store, which keeps
the per-minute rollups the views read) into a migrated warehouse, as tests/test_insights.py does.
"""

from __future__ import annotations

from pathlib import Path

from runlytics.warehouse import db, migrate
from tests.test_insight_mutants_s19 import _store
from tests.test_insights import NAN, Facts


def test_idle_and_throttled_shares_count_the_time_they_are_known(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    with db.connection(path) as con:
        facts = Facts(con)
        facts.job("a")
        # samples 10 s apart; each stands for the time to the next (the last for none)
        # GPU 0: 5, 5, NaN, NaN, 90 %: idle 20 s of the 20 s of known utilization (not of the 40 s);
        # a reasons mask of 0 on every sample: throttled 0 of 40 s, a share of 0 (not unknown)
        # GPU 1: idle 5 of 10 intervals, exactly half: not idle; SW power cap all along: 1.0
        # GPU 2: busy, no reasons mask: its throttled share is unknown, and not in the job's mean
        utilization = {0: [5.0, 5.0, NAN, NAN, 90.0], 1: [5.0] * 5 + [90.0] * 5 + [5.0], 2: [90.0] * 3}
        _store(facts, "a", utilization, {0: [0] * 5, 1: [0x4] * 11})
        _, gpus = facts.rows(
            "SELECT gpu_index, idle_share, idle, throttled_share FROM job_gpus WHERE job_id = 'a' ORDER BY gpu_index"
        )
        _, energy = facts.rows("SELECT idle_gpus, average_throttled_share FROM job_energy WHERE job_id = 'a'")
    assert gpus == [(0, 1.0, True, 0.0), (1, 0.5, False, 1.0), (2, 0.0, False, None)]
    assert energy == [(1, 0.5)]  # GPU 0 alone idle; (0 + 1) / 2, GPU 2 without a share
