"""Insights computed faster, with the same rows.

insight_losses sorts a job's rows once (a materialised CTE that a filter on job_id still
reaches) and computes loss_spike's medians only for the rows, and loss_divergence's running
lowest only for the jobs, that a bound read in that sort leaves possible: the lowest finite loss
before a row is a floor for every median of earlier losses (docs/decisions.md, "Insight rules
computed where they can hold"). insight_rows takes the previous row's step from step_metrics'
delta instead of a window of its own; insight_lifecycle takes a job's last timestamp from its
last row without the row numbers. No figure changes; insight_results is refilled all the same,
as every revision that replaces an insight view does, so that the table is the view's.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import insights

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# versions/views/0016/, in dependency order, and the revision whose copy each had before
VIEWS_BEFORE = {
    "insight_rows": "0011",
    "insight_losses": "0011",
    "insight_lifecycle": "0011",
}


def upgrade() -> None:
    for view in frozen.views("0016", tuple(VIEWS_BEFORE)):
        op.execute(view.create_sql())
    derived.refill(insights.REFILL)


def downgrade() -> None:
    for name, before in VIEWS_BEFORE.items():
        for view in frozen.views(before, (name,)):
            op.execute(view.create_sql())
    derived.refill(insights.REFILL)
