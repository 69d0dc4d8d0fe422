"""slow_vs_peers when GPU samples change a job's GPU count (issue #18), on both engines.

A job whose config has no ``gpu_count`` compares with the peers of the GPU count seen in its
readings (insight_peers: ``coalesce(gpu_count, gpus_seen)``). On PostgreSQL the samples arrive by
the stage's telemetry publish (warehouse/pg_telemetry.py), after the jobs' publish: the peers must
be recomputed from them there too, in the run that brought them, as DuckDB's ingest does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Lab

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
STEPS = 10
FAST, SLOW = 100, 25  # samples per step, a step a second: samples per second


def _job(lab: Lab, job_id: str, index: int, per_step: int) -> None:
    """A completed job of model m without gpu_count and without step GPU readings (0 GPUs seen)."""
    began = START + timedelta(hours=index)
    history = [
        {"step": s, "timestamp": (began + timedelta(seconds=s)).isoformat(), "loss": 2.0 - s / 100,
         "samples": per_step, "samples_per_second": float(per_step), "iteration_time": 1.0}
        for s in range(1, STEPS + 1)
    ]  # fmt: skip
    ended = began + timedelta(seconds=STEPS)
    lab.write_job(job_id, {
        "job_id": job_id, "status": "completed", "created_at": began.isoformat(), "started_at": began.isoformat(),
        "updated_at": ended.isoformat(), "ended_at": ended.isoformat(),
        "config": {"model_name": "m", "batch_size": per_step}, "current_step": STEPS, "total_steps": STEPS,
        "history": history,
    })  # fmt: skip


def _samples(spool: Path, job_id: str, index: int) -> None:
    """Two GPUs' samples every 5 s during the job."""
    spool.mkdir(exist_ok=True)
    began = (START + timedelta(hours=index)).timestamp()
    lines = [
        {"ts": began + 5 * k, "host": "h", "job_id": job_id, "gpu_index": gpu, "utilization_percent": 90.0,
         "memory_used_mb": 1000.0, "temperature_c": 60.0}
        for k in range(3) for gpu in range(2)
    ]  # fmt: skip
    (spool / f"{job_id}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _slow_vs_peers(lab: Lab) -> list[tuple[str, float, float]]:
    return lab.query(
        "SELECT job_id, value, reference FROM insight_results WHERE kind = 'slow_vs_peers' ORDER BY job_id"
    )


def test_samples_that_change_a_jobs_gpu_count_recompute_its_peers(ingest_engine: object, tmp_path: Path) -> None:
    lab = Lab(tmp_path, ingest_engine)  # type: ignore[arg-type]
    spool = tmp_path / "spool"
    for index, job_id in enumerate(("a", "b", "c", "d", "slow")):
        _job(lab, job_id, index, SLOW if job_id == "slow" else FAST)
    # one run, the slow job's 2 GPUs sampled: it has no peer of 2 GPUs (the 4 others have 0)
    _samples(spool, "slow", 4)
    assert lab.ingest(spool_root=spool, keep_raw_days=0).failed == 0
    assert lab.query("SELECT job_id, average_samples_per_second FROM job_results ORDER BY job_id") == [
        ("a", FAST), ("b", FAST), ("c", FAST), ("d", FAST), ("slow", SLOW)
    ]  # fmt: skip
    assert _slow_vs_peers(lab) == []
    # a later run samples 3 of its peers with 2 GPUs: now 3 peers, their median 4x its speed
    for index, job_id in enumerate(("a", "b", "c")):
        _samples(spool, job_id, index)
    assert lab.ingest(spool_root=spool, keep_raw_days=0).failed == 0
    assert lab.query("SELECT job_id FROM job_resources WHERE gpus_seen = 2 ORDER BY job_id") == [
        ("a",), ("b",), ("c",), ("slow",)
    ]  # fmt: skip
    assert _slow_vs_peers(lab) == [("slow", SLOW, FAST)]
