"""A config setting that is NaN or infinite, or a batch size or checkpoint frequency of 0, is no
setting: dropped with a warning naming it (docs/ingest.md), so the figures it would enter take
their fallbacks (analytics.md). Before, a NaN batch size made every sample count NaN and the
throughput score 100, a NaN target scored 100, and the fleet's mean throughput was null."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab
from test_damaged_values import settled, warnings_of

TARGET = "target_samples_per_second"
ROWS = [
    {"step": 10, "iteration_time": 1.0, "samples_per_second": 4.0},
    {"step": 20, "iteration_time": 1.0, "samples_per_second": 5.0},
]


def doc(job_id: str, config: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    return {"job_id": job_id, "status": "completed", "config": config or {}, "history": ROWS, **more}


@pytest.mark.parametrize(
    ("config", "warning"),
    [
        ({"batch_size": float("nan")}, "config.batch_size NaN is not a finite number, dropped"),
        ({"batch_size": float("inf")}, "config.batch_size Infinity is not a finite number, dropped"),
        ({"batch_size": 0}, "config.batch_size 0 is not above 0, dropped"),
        ({"batch_size": -2}, "config.batch_size -2 is out of range, dropped"),
        ({"save_steps": float("nan")}, "config.save_steps NaN is not a whole number, dropped"),
        ({"save_steps": float("-inf")}, "config.save_steps -Infinity is not a whole number, dropped"),
        ({TARGET: float("nan")}, f"config.{TARGET} NaN is not a finite number, dropped"),
        ({TARGET: float("inf")}, f"config.{TARGET} Infinity is not a finite number, dropped"),
    ],
)  # fmt: skip
def test_a_setting_no_figure_can_use_is_dropped_with_a_warning(
    tmp_path: Path, ingest_engine: Engine, config: dict[str, Any], warning: str
) -> None:
    lab = Lab(tmp_path, ingest_engine)
    settled(lab.write_job("ok", doc("ok")))
    settled(lab.write_job("odd", doc("odd", config)))
    lab.ingest()
    assert warnings_of(lab)["odd/progress.json"] == [warning]
    odd, ok = lab.analytics("odd"), lab.analytics("ok")
    assert odd is not None and ok is not None
    # samples from samples_per_second x seconds (40 + 50), scored against the peak (5)
    for figures in (odd, ok):
        assert figures["performance"]["total_samples"] == 90
        assert figures["performance"]["average_samples_per_second"] == 4.5
        assert figures["efficiency"]["throughput_score"] == 90.0
    summary = lab.query("SELECT avg(average_samples_per_second) FROM job_analytics")
    assert summary == [(4.5,)]


def test_save_steps_0_is_no_frequency(tmp_path: Path, ingest_engine: Engine) -> None:
    """A checkpoint every 0 steps means nothing: the trainer's save_steps, else the median gap."""
    lab = Lab(tmp_path, ingest_engine)
    checkpoints = [{"step": 10}, {"step": 30}]
    settled(lab.write_job("gap", doc("gap", {"save_steps": 0}, checkpoints=checkpoints)))
    settled(lab.write_job("trainer", doc("trainer", {"save_steps": 0}, checkpoints=checkpoints)))
    # (the trainer's save_steps counts where the checkpoints follow it: revision 0045)
    state = {"global_step": 10, "save_steps": 10, "log_history": [{"step": 10, "loss": 1.0}]}
    state_file = lab.root / "trainer" / "checkpoint-10" / "trainer_state.json"
    state_file.parent.mkdir()
    state_file.write_text(json.dumps(state))
    settled(state_file)
    lab.ingest()
    assert warnings_of(lab)["gap/progress.json"] == ["config.save_steps 0 is not above 0, dropped"]
    frequency = dict(lab.query("SELECT job_id, checkpoint_frequency_steps FROM job_analytics"))
    assert frequency == {"gap": 15.0, "trainer": 10.0}  # gaps 10 and 20 from step 0; the trainer's 10
