"""Session 17's audit of nulls (revision 0040): a job without GPU samples has no GPU counts in
its energy section (0 idle GPUs would say what was never measured), and the warning of a job
without step rows names the figures it leaves null, not a total_seconds that is known."""

from __future__ import annotations

from pathlib import Path

from conftest import Engine, Lab
from test_damaged_values import settled

T0 = 1_762_423_200  # 2025-11-06T10:00:00Z
IDLE = {"index": 0, "utilization_percent": 0.0, "memory_used_mb": 10.0, "temperature_c": 40.0, "power_w": 60.0}


def test_energy_counts_are_null_without_gpu_samples(tmp_path: Path, ingest_engine: Engine) -> None:
    lab = Lab(tmp_path, ingest_engine)
    history = [{"step": s, "timestamp": T0 + 10 * s, "loss": 1.0, "gpus": [IDLE]} for s in (1, 2, 3)]
    settled(lab.write_job("readings", {"job_id": "readings", "status": "completed", "history": history}))
    lab.ingest()
    figures = lab.analytics("readings")
    assert figures is not None
    assert figures["energy"] == {
        "total_energy_wh": None,
        "energy_per_1000_samples_wh": None,
        "gpus_with_power": None,  # before: 0
        "idle_gpus": None,  # before: 0, for a GPU idle at every reading
        "average_throttled_share": None,
    }
    assert any(w.startswith("energy is null: no GPU samples") for w in figures["warnings"])


def test_no_step_rows_warning_names_what_is_null(tmp_path: Path, ingest_engine: Engine) -> None:
    lab = Lab(tmp_path, ingest_engine)
    settled(lab.write_job("timed", {"status": "completed", "current_step": 7, "started_at": T0, "ended_at": T0 + 60}))
    settled(lab.write_job("started", {"status": "running", "started_at": T0}))
    settled(lab.write_job("queued", {"status": "queued"}))
    lab.ingest()
    figures = {job: lab.analytics(job) for job in ("timed", "started", "queued")}
    common = "no step rows: samples, throughput, iteration time, training_seconds, overhead_seconds and losses are null"
    first = {job: f["warnings"][0] for job, f in figures.items() if f is not None}
    no_iterations = "; total_iterations too (no current_step)"
    no_end = "; end_time and total_seconds too (no ended_at or updated_at)"
    nothing = "; start_time, end_time and total_seconds too (no started_at, ended_at or updated_at)"
    # timed: 7 iterations, 60 s from its own start to end: not called null
    expected = {"timed": common, "started": common + no_iterations + no_end, "queued": common + no_iterations + nothing}
    assert first == expected
    timed = figures["timed"]
    assert timed is not None
    assert (timed["duration"]["total_seconds"], timed["performance"]["total_iterations"]) == (60.0, 7)
