"""Audit 22's two tests that tests/mutations.py names, in every run (test_audit_s22 itself runs in
deep runs only): a -Infinity utilization is no idle time, in step readings and in GPU samples
(revision 0041; before, a GPU read at -Infinity twice and at 50 % once was idle "200.0 % of its time").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import Lab
from file_times import write


def insights_of(lab: Lab, kind: str) -> list[tuple[Any, ...]]:
    return lab.query("SELECT job_id, value, message FROM insight_results WHERE kind = $k ORDER BY job_id", {"k": kind})


def test_negative_infinity_is_no_idle_time_in_step_readings(lab: Lab) -> None:
    def gpus(u: float) -> list[dict[str, Any]]:
        return [{"index": 0, "utilization_percent": u, "memory_used_mb": 100}]

    history = [
        {"step": 1, "iteration_time": 400, "gpus": gpus(float("-inf"))},
        {"step": 2, "iteration_time": 400, "gpus": gpus(float("-inf"))},
        {"step": 3, "iteration_time": 400, "gpus": gpus(50)},
    ]
    lab.write_job("ninf", {"job_id": "ninf", "status": "completed", "history": history})
    # idle twice out of three finite readings: 2/3 > 0.5
    history2 = [{**e, "gpus": gpus(u)} for e, u in zip(history, [5, 5, 50], strict=True)]
    lab.write_job("idle", {"job_id": "idle", "status": "completed", "history": history2})
    lab.ingest()
    assert [(j, round(v, 9)) for j, v, _ in insights_of(lab, "gpu_idle")] == [("idle", round(2 / 3, 9))]


def test_negative_infinity_is_no_idle_time_in_samples(lab: Lab, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    lines = [
        f'{{"ts": {1767607200 + 10 * i}, "host": "h", "job_id": "s", "gpu_index": 0, '
        f'"utilization_percent": {u}, "memory_used_mb": 10}}'
        for i, u in enumerate(["-Infinity", "-Infinity", "50", "50"])
    ]
    write(spool / "a.jsonl", "\n".join(lines) + "\n")
    lab.write_job("s", {"job_id": "s", "status": "completed", "history": [{"step": 1, "iteration_time": 700.0}]})
    assert lab.ingest(spool_root=spool, keep_raw_days=0).failed == 0
    assert insights_of(lab, "gpu_idle") == []
    # 10 s with a finite reading (50 -> 50), none of it idle
    assert lab.query("SELECT utilization_seconds, idle_seconds FROM gpu_minutes") == [(10.0, None)]
    assert lab.query("SELECT idle_share FROM job_gpus") == [(0.0,)]
