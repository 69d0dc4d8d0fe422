"""refresh_queue: the jobs whose derived rows (job_results, utilization_minutes) are owed a refresh.

A job enters it in the same transaction as the facts that changed it, and leaves it in the
transaction that refreshes its rows. A run killed between the two leaves the job queued, and
the next run refreshes it, even though it finds every file unchanged. The jobs whose rows a
killed run of an older runlytics may have left stale are queued here once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from runlytics.migrations import derived
from runlytics.warehouse import results

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("refresh_queue", sa.Column("job_id", sa.String, primary_key=True))
    # an older run killed before its refresh left some jobs' rows stale or missing: refresh every job
    # once (the jobs of GPU samples too: utilization_minutes covers them)
    op.execute("INSERT INTO refresh_queue SELECT job_id FROM jobs UNION SELECT job_id FROM gpu_samples")


def downgrade() -> None:
    # the refreshes still owed are paid before the queue goes
    derived.refill(results.REFILL, results.UTILIZATION_REFILL)
    op.drop_table("refresh_queue")
