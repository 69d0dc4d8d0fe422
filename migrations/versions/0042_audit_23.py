"""A sum or ratio that overflows a double is no figure; idle_gpus is unknown where no GPU's
idleness is; four insight messages tell their figures apart (session 23 audits).

- A job's figures summed or divided from finite values could overflow to Infinity (a step row's
  samples of 1e308 over 10 s: total_samples, average_samples_per_second; iteration times of
  1e308: training_seconds; losses of 1e-300 then 1e300: loss_reduction_percent). The API read
  Infinity as null, but the job list sorted it as the highest throughput (a keyset page then
  skipped the next job), the throughput score was least(100, Infinity) = 100 and the summary's
  mean was null. job_analytics now gives NULL for each such figure (total_seconds, training,
  overhead, total_samples, average_samples_per_second, average_iteration_time,
  loss_reduction_percent), with a warning naming them; job_efficiency scores no such throughput;
  job_energy gives no Wh per 1000 samples over such a total.
- idle_gpus was 0 for sampled GPUs none of which had time with a finite utilization (an
  nvidia-smi log of power alone): NULL now, with a warning.
- loss_spike, overfitting, throughput_drop and stall printed their figure and its reference with
  %.6g, which read alike at thresholds other than the defaults ("spiked to 1 ... against a median
  of 1"): each is printed with the first format that tells them apart, as silent_running's and
  the GPU kinds' since revisions 0040 and 0041.
- job_analytics' warning of a trainer's unused summary said no step row "has a timestamp or
  iteration_time" where rows had timestamps but none had seconds: it says none has seconds.

Every view keeps its columns: each is replaced in place. job_results and insight_results are
refilled.

Revision ID: 0042
Revises: 0041
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0042"
down_revision = "0041"
branch_labels = None
depends_on = None

# in dependency order: each view's copy after this revision, and before it
AFTER = {
    "job_efficiency": "0042",
    "job_energy": "0042",
    "job_analytics": "0042",
    "insight_steps": "0042",
}
BEFORE = {
    "job_efficiency": "0029",
    "job_energy": "0040",
    "job_analytics": "0041",
    "insight_steps": "0041",
}


def _create(copies: dict[str, str]) -> None:
    bound = dialect.for_bind(op.get_bind())
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(results.REFILL, insights.REFILL)  # the insight rules read job_results' figures


def upgrade() -> None:
    _create(AFTER)


def downgrade() -> None:
    _create(BEFORE)
