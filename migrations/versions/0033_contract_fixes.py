"""Audit findings F4, F7, F12 e: resource figures from the samples alone; no throughput over 0 s; no host ''.

analytics.md, resource_utilization: "over the job's GPU samples (all GPUs, all times) when it has
any; else over the GPU readings embedded in its step rows". job_resources chose figure by figure
(a temperature the samples lack came from the step readings): now a job with samples takes every
figure from them, a figure they lack being null; insight_gpus' memory_headroom total follows the
same choice. average_samples_per_second is Σ samples / Σ seconds over the rows where both are
known, the plain mean only "when no row has both": job_performance gave the plain mean when those
rows' seconds totalled 0; now null (job_analytics' warning says why). GPU insights of readings
without a host (step readings, an nvidia-smi log imported without --host) carry host NULL, not
'' (F12 e; insights.md gives a host to GPU insights where one is known). job_results and
insight_results are refilled on both engines (the views keep their columns: replaced in place).

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

# versions/views/0033/, and the revision whose copy each had before (dependency order)
VIEWS_BEFORE = {
    "job_performance": "0030",
    "job_resources": "0030",
    "insight_gpus": "0030",
}


def _create(copies: dict[str, str]) -> None:
    bound = dialect.for_bind(op.get_bind())
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(results.REFILL, insights.REFILL)  # the insight rules read job_results' figures


def upgrade() -> None:
    _create({name: revision for name in VIEWS_BEFORE})


def downgrade() -> None:
    _create(VIEWS_BEFORE)
