"""Insight messages never contradict their rule once rounded; a job without GPU samples has no
GPU counts; the no-step-rows warning names what is null (session 17 audits).

- A message printed its figure and its limit with a fixed precision, so a GPU idle 50.01 % of its
  time read "50.0 % of its time (limit 50.0 %)", a peak at 39.99 % of memory "40.0 % ... (below
  40.0 %)". Each figure and what it is compared with are now printed with the first of the
  kind's format, %.6g, %.10g and %.17g that tells them apart (the dialect's ``@apart_format``):
  gpu_idle, gpu_throttled, memory_headroom, low_gpu_utilization, gpu_straggler (the mean against
  the median less the points), slow_vs_peers (the throughput against the fraction of the median).
- loss_divergence's message named the last row's smoothed loss "against a lowest" that could be
  higher than it (a loss that diverged, then fell); it now gives the smoothed loss where the job
  diverged, the lowest before, and the last row's. value and reference are unchanged.
- job_energy's gpus_with_power and idle_gpus were 0 for a job without GPU samples (its GPUs
  unmeasured, "never 0 in disguise"): NULL now, as the other energy figures, under the warning
  "energy is null: no GPU samples".
- job_analytics' warning for a job without step rows said its durations were null while
  total_seconds can be known from the job's own start and end: it now names the figures read
  from step rows, then total_iterations, start_time, end_time and total_seconds only when they
  are null, with what was missing.

Every view keeps its columns: each is replaced in place. job_results and insight_results are
refilled.

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0040"
down_revision = "0039"
branch_labels = None
depends_on = None

# in dependency order: each view's copy after this revision, and before it
AFTER = {
    "job_energy": "0040",
    "job_analytics": "0040",
    "insight_steps": "0040",
    "insight_gpus": "0040",
    "insight_peers": "0040",
}
BEFORE = {
    "job_energy": "0030",
    "job_analytics": "0038",
    "insight_steps": "0038",
    "insight_gpus": "0037",
    "insight_peers": "0029",
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
