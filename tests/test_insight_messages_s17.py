"""An insight's message never contradicts its rule once its figures are rounded (session 17
audit; revision 0040): each figure and what it is compared with are printed apart, with more
digits only where the kind's usual precision would print them alike. loss_divergence names the
smoothed loss where the job diverged. On both engines (the Facts of tests/test_insights.py)."""

from __future__ import annotations

from tests.test_insights import Facts, _divergence_losses, _samples, _trained, facts, template

__all__ = ["facts", "template"]  # fixtures, used by name


def message(facts: Facts, job_id: str, kind: str) -> str:
    (row,) = facts.full(job_id, kind)
    return str(row["message"])


def test_a_figure_just_past_its_limit_reads_past_it(facts: Facts) -> None:
    _trained(facts, "low", 600, [49.999])
    assert message(facts, "low", "low_gpu_utilization") == (
        "The GPUs averaged 49.999 % utilization over 600 s of training, below 50 %."
    )  # before: "averaged 50 % ... below 50 %"
    _trained(facts, "mem", 600, [90.0], used=39.99, total=100.0)
    assert message(facts, "mem", "memory_headroom") == (
        "Peak GPU memory was 39.99 MiB, 39.99 % of the 100 MiB the GPU has (below 40 %)."
    )  # before: "40.0 % of ... (below 40.0 %)"
    _trained(facts, "room", 600, [90.0], used=30.0, total=100.0)
    assert message(facts, "room", "memory_headroom") == (
        "Peak GPU memory was 30 MiB, 30.0 % of the 100 MiB the GPU has (below 40.0 %)."
    )  # apart at the kind's own precision: unchanged


def test_gpu_shares_and_stragglers_just_past_their_limits(facts: Facts) -> None:
    facts.job("idle")
    _samples(facts, "idle", 0, [5.0] * 501 + [90.0] * 501)  # 501 of 1001 intervals idle: 0.5005
    assert message(facts, "idle", "gpu_idle") == (
        "GPU 0 on h was below 10 % utilization for 50.05 % of its time (limit 50 %)."
    )  # before: "50.0 % of its time (limit 50.0 %)"
    facts.job("strag")
    for gpu, utilization in enumerate([90.0, 90.0, 69.999]):
        _samples(facts, "strag", gpu, [utilization] * 3)
    assert message(facts, "strag", "gpu_straggler") == (
        "GPU 2 on h averaged 69.999 % utilization, more than 20 points below the median 90 % of the job's GPUs."
    )  # before: "averaged 70 % ..., more than 20 points below the median 90 %"


def test_slow_vs_peers_just_below_the_fraction(facts: Facts) -> None:
    for job_id, seconds in (("p1", 1.0), ("p2", 1.0), ("p3", 1.0), ("slow", 1000 / 699.99999)):
        facts.job(job_id, "completed", model_name="m", gpu_count=2)
        facts.steps(job_id, [{"samples": 1000, "iteration_time": seconds / 10}] * 2)
    (row,) = facts.full("slow", "slow_vs_peers")
    assert row["value"] < 700.0 and row["reference"] == 1000.0  # 1000 samples a second each peer
    assert row["message"] == (
        "Throughput 699.99999 samples/s is below 0.7 x the median 1000 samples/s of 3 peer jobs"
        " (same model and GPU count)."
    )  # before: "Throughput 700 samples/s is below 0.7 x the median 1000"


def test_loss_divergence_names_where_it_diverged(facts: Facts) -> None:
    # r10 = 1, b = 1 ... the loss rises to 2 (r = 2 = 2b at row 26), then falls to 0.5 (r of the
    # last row 0.5: below the lowest before, which the message called "against a lowest 1")
    facts.losses("a", _divergence_losses(4.0, 1.0, 2.0) + [0.5] * 10)
    (row,) = facts.full("a", "loss_divergence")
    assert (row["first_step"], row["value"], row["reference"]) == (260, 0.5, 1.0)
    assert row["message"] == (
        "The smoothed loss (median of 10 rows) diverged at step 260: 2 there, against a lowest 1 before;"
        " 0.5 at the last step."
    )
