"""Sums and means of floats that do not change between runs.

DuckDB aggregates in parallel: each thread sums its share of the rows and the partial sums are
added in the order the threads finish, so the same rows could give 1013.6999999999998 on one
ingest and 1013.7 on the next. The views' sums and means of DOUBLE columns now add the values
in ascending order (dialect macros ``@ordered_sum`` and ``@ordered_avg``), one order whatever the
threads; so does ``utilization_minutes`` (warehouse/results.py). job_results,
utilization_minutes and insight_results are refilled: their figures may change in the last digit.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import insights, results

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# versions/views/0013/, and the revision whose copy each had before
VIEWS_BEFORE = {
    "job_duration": "0007",
    "job_performance": "0004",
    "job_gpus": "0010",
    "job_resources": "0010",
    "job_energy": "0004",
    "fleet_gpu_hours": "0008",
}


def upgrade() -> None:
    for view in frozen.views("0013", tuple(VIEWS_BEFORE)):
        op.execute(view.create_sql())
    derived.refill(results.REFILL, results.UTILIZATION_REFILL, insights.REFILL)  # some rules read job_results' figures


def downgrade() -> None:
    for name, before in VIEWS_BEFORE.items():
        for view in frozen.views(before, (name,)):
            op.execute(view.create_sql())
    derived.refill(results.REFILL, results.UTILIZATION_REFILL, insights.REFILL)  # some rules read job_results' figures
