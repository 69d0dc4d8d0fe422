"""job_results (the materialised job_analytics) always equals the view, run after run.

On both engines (``ingest_engine``): on PostgreSQL the lab ingests with ``ingest --db URL``, and
the published job_results must equal PostgreSQL's own view.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Engine, Lab


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def _rows(lab: Lab, source: str) -> list[tuple[Any, ...]]:
    rows = lab.query(f"SELECT * FROM {source} ORDER BY job_id")
    return [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in r) for r in rows]


def _job(step: int, loss: float) -> dict[str, Any]:
    return {"status": "running", "config": {"batch_size": 2}, "history": [{"step": step, "loss": loss}]}


def test_results_follow_every_run(lab: Lab) -> None:
    lab.write_job("a", _job(10, 2.0))
    lab.write_job("b", _job(5, 3.0))
    lab.ingest()
    assert _rows(lab, "job_results") == _rows(lab, "job_analytics")
    assert lab.query("SELECT job_id, total_iterations FROM job_results ORDER BY job_id") == [("a", 10), ("b", 5)]

    # a later snapshot of one job changes only that job's row; a new checkpoint folder counts too
    lab.write_job("a", {**_job(20, 1.0), "history": [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.0}]})
    (lab.root / "b" / "checkpoint-5").mkdir()
    summary = lab.ingest()
    assert summary.job_ids == {"a", "b"}
    assert _rows(lab, "job_results") == _rows(lab, "job_analytics")
    assert lab.query("SELECT job_id, total_iterations, final_loss, total_checkpoints FROM job_results ORDER BY 1") == [
        ("a", 20, 1.0, 0),
        ("b", 5, 3.0, 1),
    ]


def test_readers_see_the_published_snapshot(tmp_path: Path) -> None:
    """DuckDB's snapshots (a stage publishes none): DuckDB only."""
    from runlytics.warehouse import snapshots

    lab = Lab(tmp_path)
    path = lab.write_job("a", _job(10, 2.0))
    os.utime(path, (1_700_000_000, 1_700_000_000))  # settled: an unchanged re-run skips it
    lab.ingest()
    first = snapshots.latest(lab.db)
    assert first is not None
    unchanged = lab.ingest()
    assert unchanged.ingested == 0 and snapshots.latest(lab.db) == first  # nothing new: no new copy
    lab.write_job("a", json.loads(json.dumps(_job(30, 0.5))))
    lab.ingest()
    newer = snapshots.latest(lab.db)
    assert newer is not None and newer != first
    con = snapshots.connect_latest(lab.db)
    try:
        assert con.execute("SELECT total_iterations FROM job_results").fetchall() == [(30,)]
    finally:
        con.close()


def test_utilization_minutes_follow_every_run(lab: Lab) -> None:
    """utilization_minutes = gpu_utilization_readings summed per job and minute, after each run;
    a job's step readings give way to its GPU samples when samples arrive."""
    t0 = 1_767_225_600  # 2026-01-01T00:00:00Z

    def entry(step: int, seconds: float, util: float) -> dict[str, Any]:
        return {"step": step, "timestamp": t0 + seconds, "gpus": [{"index": 0, "utilization_percent": util}]}

    # three readings in minute 0 and one in minute 1; a NaN reading is left out
    lab.write_job(
        "a", {"history": [entry(1, 10, 50.0), entry(2, 20, 70.0), entry(3, 50, math.nan), entry(4, 70, 90.0)]}
    )
    lab.ingest()
    expected = "SELECT job_id, minute, readings, utilization_sum FROM utilization_minutes ORDER BY job_id, minute"
    assert lab.query(expected) == [
        ("a", datetime(2026, 1, 1, 0, 0), 2, 120.0),
        ("a", datetime(2026, 1, 1, 0, 1), 1, 90.0),
    ]
    spool = lab.root.parent / "spool"
    spool.mkdir()
    sample = {"ts": t0 + 125, "host": "n1", "job_id": "a", "gpu_index": 0, "utilization_percent": 30.0}
    (spool / "n1-2026010100.jsonl").write_text(json.dumps(sample) + "\n")
    lab.ingest(lab.root, spool_root=spool)
    assert lab.query(expected) == [("a", datetime(2026, 1, 1, 0, 2), 1, 30.0)]
    # finite: NaN sorts above every number on both engines
    assert lab.query(expected) == lab.query(
        "SELECT job_id, date_trunc('minute', ts), count(*), sum(utilization_percent) FROM gpu_utilization_readings "
        "WHERE utilization_percent BETWEEN -1e308 AND 1e308 GROUP BY 1, 2 ORDER BY 1, 2"
    )
