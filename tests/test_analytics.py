"""One job's analytics against shared/spec/analytics.md ("One job"), on tiny hand-computed jobs.

Every expected figure is a literal worked out by hand from the spec; the comment beside it
shows the arithmetic. Jobs go through real ingestion (progress.json files on disk).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Engine, Lab

BASE = datetime(2025, 1, 1, tzinfo=UTC)
NAN = float("nan")
INF = float("inf")


def at(seconds: float) -> str:
    """An ISO timestamp `seconds` after BASE, as the API writes it back (with Z)."""
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def gpu(index: int, util: float, mem: float, temp: float) -> dict[str, Any]:
    return {"index": index, "utilization_percent": util, "memory_used_mb": mem, "temperature_c": temp}


def analyze(
    lab: Lab,
    history: list[dict[str, Any]],
    *,
    checkpoint_dirs: tuple[int, ...] = (),
    status: str = "running",
    **top: Any,
) -> dict[str, Any]:
    """Ingest one job (folder and id "job") with this history; return its analytics."""
    lab.write_job("job", {"job_id": "job", "status": status, "history": history, **top})
    for step in checkpoint_dirs:
        (lab.root / "job" / f"checkpoint-{step}").mkdir()
    lab.ingest()
    result = lab.analytics("job")
    assert result is not None
    return result


@pytest.fixture
def lab(lab: Lab, engine: Engine) -> Lab:
    """conftest's lab, whose analytics are read on DuckDB, then (a second run) on PostgreSQL."""
    lab.engine = engine
    return lab


def has_warning(result: dict[str, Any], fragment: str) -> bool:
    return any(fragment in w for w in result["warnings"])


# --- the worked example --------------------------------------------------------------------


def test_worked_example(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "iteration_time": 1.0, "samples": 42, "loss": 2.45, "gpus": [gpu(0, 98.0, 1000, 60)]},
            {"step": 20, "iteration_time": 2.0, "samples": 84, "loss": 0.32, "gpus": [gpu(0, 99.0, 1000, 60)]},
        ],
        config={"target_samples_per_second": 5.0},
    )
    perf, eff, losses = result["performance"], result["efficiency"], result["losses"]
    assert perf["average_samples_per_second"] == pytest.approx(4.2)  # (42 + 84) / (1×10 + 2×10)
    assert result["resource_utilization"]["average_gpu_utilization"] == pytest.approx(98.5)  # (98 + 99) / 2
    assert eff["throughput_score"] == pytest.approx(84.0)  # 100 × 4.2 / 5.0
    assert eff["overall_score"] == pytest.approx(91.25)  # (98.5 + 84.0) / 2
    assert losses["loss_reduction_percent"] == pytest.approx(86.9, abs=0.05)  # 100 × (2.45 − 0.32) / 2.45
    assert losses["loss_reduction_percent"] == pytest.approx(86.938775510)


# --- performance ---------------------------------------------------------------------------


def test_seconds_from_iteration_time_else_timestamps_else_unknown(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "timestamp": at(100)},  # first row, no iteration_time: unknown
            {"step": 30, "timestamp": at(150), "iteration_time": 2.0},  # 2.0 × 20 = 40 (not 150 − 100)
            {"step": 40, "timestamp": at(180)},  # 180 − 150 = 30
        ],
    )
    assert result["duration"]["training_seconds"] == pytest.approx(70.0)  # 40 + 30
    assert result["performance"]["average_iteration_time"] == pytest.approx(70 / 30)  # 70 s / (20 + 10)
    assert has_warning(result, "training time partly unknown: 1 of 3")
    # start: no started_at and the first row's seconds are unknown
    assert result["duration"]["start_time"] is None
    assert result["duration"]["total_seconds"] is None
    assert result["duration"]["overhead_seconds"] is None
    assert has_warning(result, "start unknown")
    # no samples of any kind: unknown, never 0
    assert result["performance"]["total_samples"] is None
    assert result["performance"]["average_samples_per_second"] is None
    assert result["performance"]["peak_samples_per_second"] is None


def test_samples_given_beat_batch_size(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "iteration_time": 1.0, "samples": 100, "samples_per_second": 1.0},  # 100 (not 8 × 10)
            {"step": 20, "iteration_time": 1.0, "samples_per_second": 1.0},  # 8 × 10 = 80 (not 1.0 × 10)
        ],
        config={"batch_size": 8},
    )
    assert result["performance"]["total_samples"] == pytest.approx(180)  # 100 + 80
    assert result["performance"]["average_samples_per_second"] == pytest.approx(9.0)  # 180 / 20 s


def test_samples_from_rate_times_seconds_without_batch_size(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "timestamp": at(0), "iteration_time": 1.0, "samples": 50},  # 50 samples in 10 s
            {"step": 20, "timestamp": at(5), "samples_per_second": 3.0},  # 3.0 × (5 − 0) s = 15 in 5 s
            {"step": 30, "samples_per_second": 2.0},  # no seconds: samples unknown
        ],
    )
    perf = result["performance"]
    assert perf["total_samples"] == pytest.approx(65)  # 50 + 15
    assert perf["average_samples_per_second"] == pytest.approx(65 / 15)  # 65 samples / (10 + 5) s
    assert perf["peak_samples_per_second"] == pytest.approx(3.0)
    assert not has_warning(result, "plain mean")


def test_average_throughput_is_time_weighted(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "iteration_time": 1.0, "samples": 100, "samples_per_second": 10.0},  # 100 in 10 s
            {"step": 20, "iteration_time": 0.1, "samples": 100, "samples_per_second": 100.0},  # 100 in 1 s
            {"step": 30, "iteration_time": 0.1, "samples": 100, "samples_per_second": INF},  # 100 in 1 s
        ],
    )
    perf = result["performance"]
    assert perf["average_samples_per_second"] == pytest.approx(300 / 12)  # 25.0, not a mean of rates
    assert perf["peak_samples_per_second"] == pytest.approx(100.0)  # Infinity left out
    assert perf["average_iteration_time"] == pytest.approx(12 / 30)  # (10 + 1 + 1) s / 30 iterations
    assert has_warning(result, "1 non-finite samples_per_second or iteration_time")
    # no target: the peak is the reference
    assert result["efficiency"]["throughput_score"] == pytest.approx(25.0)  # 100 × 25 / 100


def test_plain_mean_fallback_when_no_row_has_samples_and_seconds(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "samples_per_second": 4.0},  # samples 8 × 10, seconds unknown
            {"step": 20, "samples_per_second": 7.0},  # samples 8 × 10, seconds unknown
        ],
        config={"batch_size": 8, "target_samples_per_second": 11.0},
    )
    perf = result["performance"]
    assert perf["total_samples"] == pytest.approx(160)  # 80 + 80
    assert perf["average_samples_per_second"] == pytest.approx(5.5)  # (4 + 7) / 2
    assert perf["peak_samples_per_second"] == pytest.approx(7.0)
    assert perf["average_iteration_time"] is None
    assert result["duration"]["training_seconds"] is None  # no known seconds: unknown, not 0
    assert has_warning(result, "plain mean")
    assert result["efficiency"]["throughput_score"] == pytest.approx(50.0)  # 100 × 5.5 / 11


def test_average_throughput_only_over_rows_with_both_samples_and_seconds(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "iteration_time": 1.0, "samples": 100},  # 100 samples in 10 s: both known
            {"step": 20, "samples": 300},  # 300 samples, seconds unknown
            {"step": 30, "iteration_time": 2.0},  # 20 s, samples unknown
        ],
    )
    perf = result["performance"]
    assert perf["average_samples_per_second"] == pytest.approx(10.0)  # 100 / 10, not (100 + 300) / (10 + 20)
    assert perf["total_samples"] == pytest.approx(400.0)  # 100 + 300: every known sample
    assert perf["average_iteration_time"] == pytest.approx(1.5)  # (10 + 20) s / (10 + 10): Δ of timed rows only
    assert result["duration"]["training_seconds"] == pytest.approx(30.0)  # 10 + 20: every known second
    assert not has_warning(result, "plain mean")
    assert has_warning(result, "training time partly unknown: 1 of 3")


@pytest.mark.parametrize(
    ("current_step", "expected"),
    [(25, 25), (5, 20), (None, 20)],  # max(20, current_step) when that is higher
)
def test_total_iterations(lab: Lab, current_step: int | None, expected: int) -> None:
    top = {} if current_step is None else {"current_step": current_step}
    result = analyze(lab, [{"step": 10}, {"step": 20}], **top)
    assert result["performance"]["total_iterations"] == expected


# --- duration ------------------------------------------------------------------------------

ROWS_TO_90 = [
    {"step": 10, "timestamp": at(30), "iteration_time": 2.0},  # 20 s
    {"step": 20, "timestamp": at(90), "iteration_time": 2.0},  # 20 s
]


@pytest.mark.parametrize(
    ("status", "ended_at", "updated_at", "total"),
    [
        ("completed", at(100), at(120), 100.0),  # ended_at: 100 − 0
        ("failed", at(100), at(120), 100.0),
        ("cancelled", at(100), at(120), 100.0),
        ("completed", None, at(120), 120.0),  # no ended_at: max(90, 120) − 0
        ("running", at(100), at(120), 120.0),  # not terminal: max(90, 120) − 0
        ("paused", at(100), at(70), 90.0),  # not terminal: max(90, 70) − 0
        ("running", None, None, 90.0),  # only the last row's timestamp
    ],
    ids=["completed", "failed", "cancelled", "completed-no-ended_at", "running", "paused-row-later", "no-updated_at"],
)
def test_end_of_job(lab: Lab, status: str, ended_at: str | None, updated_at: str | None, total: float) -> None:
    top = {"started_at": at(0), "ended_at": ended_at, "updated_at": updated_at}
    result = analyze(lab, ROWS_TO_90, status=status, **{k: v for k, v in top.items() if v is not None})
    duration = result["duration"]
    assert duration["start_time"] == at(0)
    assert duration["total_seconds"] == pytest.approx(total)
    assert duration["training_seconds"] == pytest.approx(40.0)  # 2.0 × 10 + 2.0 × 10
    assert duration["overhead_seconds"] == pytest.approx(total - 40.0)


def test_start_from_first_row_timestamp_minus_its_seconds(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 20, "timestamp": at(50), "iteration_time": 1.5},  # 1.5 × 20 = 30 s: start 50 − 30 = 20
            {"step": 30, "timestamp": at(70)},  # 70 − 50 = 20 s
        ],
        status="completed",
        ended_at=at(80),
    )
    duration = result["duration"]
    assert duration["start_time"] == at(20)
    assert duration["end_time"] == at(80)
    assert duration["total_seconds"] == pytest.approx(60.0)  # 80 − 20
    assert duration["training_seconds"] == pytest.approx(50.0)  # 30 + 20
    assert duration["overhead_seconds"] == pytest.approx(10.0)  # 60 − 50


def test_started_at_beats_first_row(lab: Lab) -> None:
    result = analyze(
        lab,
        [{"step": 20, "timestamp": at(50), "iteration_time": 1.5}],  # first row would give 20
        started_at=at(5),
    )
    assert result["duration"]["start_time"] == at(5)
    assert result["duration"]["total_seconds"] == pytest.approx(45.0)  # 50 − 5


def test_overhead_is_clamped_at_zero(lab: Lab) -> None:
    result = analyze(
        lab,
        [{"step": 10, "timestamp": at(10), "iteration_time": 2.0}],  # 20 s of training
        status="completed",
        started_at=at(0),
        ended_at=at(10),
    )
    duration = result["duration"]
    assert duration["total_seconds"] == pytest.approx(10.0)
    assert duration["training_seconds"] == pytest.approx(20.0)
    assert duration["overhead_seconds"] == 0  # max(0, 10 − 20): a real 0, not unknown
    assert duration["overhead_seconds"] is not None


def test_an_absurd_first_iteration_time_gives_no_start_time(lab: Lab) -> None:
    # 1e308 s before the first row is no date at all: the job's start is unknown, and neither
    # the ingest (which refreshes job_results) nor the view fails
    result = analyze(lab, [{"step": 1, "timestamp": at(10), "iteration_time": 1e308}, {"step": 2, "timestamp": at(11)}])
    duration = result["duration"]
    assert duration["start_time"] is None
    assert duration["training_seconds"] == pytest.approx(1e308)


# --- losses --------------------------------------------------------------------------------


def test_losses_ignore_non_finite_values(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "loss": NAN},
            {"step": 20, "loss": 2.0},
            {"step": 30, "loss": 0.4},
            {"step": 40, "loss": -INF},
            {"step": 50, "loss": 0.5},
            {"step": 60, "loss": INF},
        ],
    )
    losses = result["losses"]
    assert losses["initial_loss"] == pytest.approx(2.0)  # lowest step with a finite loss
    assert losses["final_loss"] == pytest.approx(0.5)  # highest step with a finite loss
    assert losses["best_loss"] == pytest.approx(0.4)  # -Infinity is not the best
    assert losses["loss_reduction_percent"] == pytest.approx(75.0)  # 100 × (2.0 − 0.5) / 2.0
    assert has_warning(result, "3 non-finite loss value(s)")


def test_initial_loss_zero_gives_null_reduction(lab: Lab) -> None:
    result = analyze(lab, [{"step": 10, "loss": 0.0}, {"step": 20, "loss": 0.5}])
    losses = result["losses"]
    assert losses["initial_loss"] == 0
    assert losses["final_loss"] == pytest.approx(0.5)
    assert losses["best_loss"] == 0
    assert losses["loss_reduction_percent"] is None
    assert has_warning(result, "initial loss is 0")


@pytest.mark.parametrize(
    ("initial", "final", "expected"),
    [
        (-2.0, -1.0, 50.0),  # 100 × (−2 − (−1)) / −2 = 100 × −1 / −2: divided by initial, not |initial|
        (-2.0, -3.0, -50.0),  # 100 × (−2 − (−3)) / −2 = 100 × 1 / −2
        (4.0, 5.0, -25.0),  # 100 × (4 − 5) / 4: a loss that grew
    ],
)
def test_loss_reduction_of_a_negative_or_growing_loss(lab: Lab, initial: float, final: float, expected: float) -> None:
    # a negative initial loss (reward-style objectives log them) has a reduction: null only for 0
    result = analyze(lab, [{"step": 10, "loss": initial}, {"step": 20, "loss": final}])
    losses = result["losses"]
    assert losses["initial_loss"] == initial and losses["final_loss"] == final
    assert losses["loss_reduction_percent"] == pytest.approx(expected)
    assert not has_warning(result, "loss_reduction_percent is null")


# --- resource utilization ------------------------------------------------------------------


def test_resource_utilization_over_all_gpus_and_steps(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "gpus": [gpu(0, 90, 1000, 60), gpu(1, 70, 3000, 70)]},
            {"step": 20, "gpus": [gpu(0, 100, 2000, 65), gpu(1, 80, 4000, 75)]},
        ],
    )
    res = result["resource_utilization"]
    assert res["average_gpu_utilization"] == pytest.approx(85.0)  # (90 + 70 + 100 + 80) / 4
    assert res["average_gpu_memory_mb"] == pytest.approx(2500.0)  # (1000 + 3000 + 2000 + 4000) / 4
    assert res["peak_gpu_memory_mb"] == pytest.approx(4000.0)
    assert res["average_gpu_temp_celsius"] == pytest.approx(67.5)  # (60 + 70 + 65 + 75) / 4
    assert res["peak_gpu_temp_celsius"] == pytest.approx(75.0)
    eff = result["efficiency"]
    assert eff["gpu_utilization_score"] == pytest.approx(85.0)
    assert eff["throughput_score"] is None  # no samples_per_second at all
    assert eff["overall_score"] == pytest.approx(85.0)  # the mean of the one known score


def test_step_readings_leave_out_non_finite_values_and_peak_at_the_maxima(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "gpus": [gpu(0, 90, 3000, 80), gpu(1, 10, 500, 40)]},  # the peaks come first
            {"step": 20, "gpus": [gpu(0, 70, 1000, 60), gpu(1, NAN, INF, NAN)]},  # GPU 1: nothing finite
            {"step": 30, "gpus": [gpu(0, 50, 2000, 50)]},  # the last readings are not the peaks
        ],
    )
    # the four finite readings, each weighing the same: GPU 0 three times, GPU 1 once
    assert result["resource_utilization"] == {
        "average_gpu_utilization": pytest.approx(55.0),  # (90 + 10 + 70 + 50) / 4, not (70 + 10) / 2 per GPU
        "average_gpu_memory_mb": pytest.approx(1625.0),  # (3000 + 500 + 1000 + 2000) / 4
        "peak_gpu_memory_mb": pytest.approx(3000.0),  # step 10's, not the last reading's 2000
        "average_gpu_temp_celsius": pytest.approx(57.5),  # (80 + 40 + 60 + 50) / 4
        "peak_gpu_temp_celsius": pytest.approx(80.0),  # step 10's, not the last reading's 50
    }
    assert has_warning(result, "1 GPU reading(s) with non-finite values left out")
    assert result["efficiency"]["gpu_utilization_score"] == pytest.approx(55.0)


def test_no_gpu_readings_gives_null_utilization(lab: Lab) -> None:
    result = analyze(
        lab,
        [{"step": 10, "iteration_time": 1.0, "samples": 30, "samples_per_second": 3.0}],
        config={"target_samples_per_second": 4.0},
    )
    assert all(v is None for v in result["resource_utilization"].values())
    assert has_warning(result, "no GPU readings")
    eff = result["efficiency"]
    assert eff["gpu_utilization_score"] is None
    assert eff["throughput_score"] == pytest.approx(75.0)  # 100 × (30 / 10) / 4
    assert eff["overall_score"] == pytest.approx(75.0)  # the mean of the one known score


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoints_from_list_and_folders(lab: Lab) -> None:
    result = analyze(
        lab,
        [{"step": 250, "loss": 1.0}],
        checkpoints=[{"step": 50}, {"step": 250}],
        checkpoint_dirs=(100, 250),
    )
    ckpt = result["checkpoints"]
    assert ckpt["total_checkpoints"] == 3  # {50, 100, 250}: 250 counted once
    assert ckpt["checkpoint_frequency_steps"] == pytest.approx(50.0)  # median(50 − 0, 100 − 50, 250 − 100)
    assert ckpt["final_checkpoint"] == "checkpoint-250"


def test_save_steps_is_the_frequency_even_before_any_checkpoint(lab: Lab) -> None:
    result = analyze(lab, [{"step": 10, "loss": 1.0}], config={"save_steps": 500})
    ckpt = result["checkpoints"]
    assert ckpt["checkpoint_frequency_steps"] == pytest.approx(500.0)
    assert ckpt["total_checkpoints"] == 0
    assert ckpt["final_checkpoint"] is None
    assert ckpt["best_checkpoint"] is None
    assert has_warning(result, "no checkpoints")


def test_save_steps_beats_the_median_gap(lab: Lab) -> None:
    result = analyze(lab, [{"step": 10}], config={"save_steps": 30}, checkpoint_dirs=(10, 20))
    assert result["checkpoints"]["checkpoint_frequency_steps"] == pytest.approx(30.0)  # not median(10, 10)


def test_no_checkpoints_no_save_steps_gives_null_frequency(lab: Lab) -> None:
    result = analyze(lab, [{"step": 10, "loss": 1.0}])
    assert result["checkpoints"]["checkpoint_frequency_steps"] is None
    assert result["checkpoints"]["total_checkpoints"] == 0


def test_best_checkpoint_by_eval_loss(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 100, "loss": 0.1},
            {"step": 200, "loss": 0.9, "eval_loss": 0.7},  # checkpoint-200 (a folder) takes 0.7
            {"step": 300, "loss": 0.1, "eval_loss": 0.1},  # checkpoint-300's own entry (0.8) wins
        ],
        checkpoints=[{"step": 100, "eval_loss": 0.9}, {"step": 300, "eval_loss": 0.8}],
        checkpoint_dirs=(200,),
    )
    # eval losses: 100 → 0.9, 200 → 0.7, 300 → 0.8; training losses are not consulted
    assert result["checkpoints"]["best_checkpoint"] == "checkpoint-200"


def test_best_checkpoint_by_training_loss_at_or_before(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "loss": 3.0},
            {"step": 20, "loss": 2.0},
            {"step": 30, "loss": 1.0},
            {"step": 45, "loss": 5.0},
        ],
        checkpoint_dirs=(25, 40),
    )
    # checkpoint-25 reads step 20 (2.0); checkpoint-40 reads step 30 (1.0), not step 45 (5.0)
    assert result["checkpoints"]["best_checkpoint"] == "checkpoint-40"
    assert result["checkpoints"]["final_checkpoint"] == "checkpoint-40"


@pytest.mark.parametrize(
    "checkpoints",
    [
        [{"step": 300, "eval_loss": 0.5}, {"step": 100, "eval_loss": 0.5}, {"step": 200, "eval_loss": 0.6}],
        [{"step": 300}, {"step": 100}, {"step": 200}],  # training losses 0.5, 0.5, 0.6
    ],
    ids=["eval_loss", "training_loss"],
)
def test_best_checkpoint_ties_go_to_the_earlier(lab: Lab, checkpoints: list[dict[str, Any]]) -> None:
    history = [{"step": 100, "loss": 0.5}, {"step": 200, "loss": 0.6}, {"step": 300, "loss": 0.5}]
    result = analyze(lab, history, checkpoints=checkpoints)
    assert result["checkpoints"]["best_checkpoint"] == "checkpoint-100"  # 100 and 300 tie at 0.5


# --- efficiency ----------------------------------------------------------------------------


def test_throughput_score_is_capped_at_100(lab: Lab) -> None:
    result = analyze(
        lab,
        [{"step": 10, "iteration_time": 1.0, "samples": 42, "gpus": [gpu(0, 60, 1000, 50)]}],
        config={"target_samples_per_second": 2.0},
    )
    eff = result["efficiency"]
    assert eff["throughput_score"] == pytest.approx(100.0)  # min(100, 100 × 4.2 / 2.0 = 210)
    assert eff["overall_score"] == pytest.approx(80.0)  # (60 + 100) / 2


def test_zero_target_falls_back_to_peak(lab: Lab) -> None:
    result = analyze(
        lab,
        [
            {"step": 10, "iteration_time": 1.0, "samples": 40, "samples_per_second": 4.0},  # 40 in 10 s
            {"step": 20, "iteration_time": 0.5, "samples": 80, "samples_per_second": 16.0},  # 80 in 5 s
        ],
        config={"target_samples_per_second": 0},
    )
    # average 120 / 15 = 8.0 against the peak 16.0
    assert result["efficiency"]["throughput_score"] == pytest.approx(50.0)  # 100 × 8 / 16
    assert result["efficiency"]["overall_score"] == pytest.approx(50.0)  # no GPU readings


def test_job_without_step_rows_has_nulls_not_zeros(lab: Lab) -> None:
    result = analyze(lab, [], status="queued", created_at=at(0))
    for section in ("performance", "losses", "resource_utilization", "efficiency"):
        for name, value in result[section].items():
            assert value is None, f"{section}.{name} should be null, is {value!r}"
    for name in ("start_time", "total_seconds", "training_seconds", "overhead_seconds"):
        assert result["duration"][name] is None, name
    assert has_warning(result, "no step rows")
