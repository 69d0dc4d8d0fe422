"""job_gpu_hours and fleet_gpu_hours: the one definition of GPU hours, as views.

GPU hours were computed by the fleet endpoint's own query (total_seconds x GPUs) while the
analysts' example summed training_seconds x gpus_seen. The views hold the endpoint's definition
(a job holds its GPUs for its whole duration); the endpoint and the docs now read them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import frozen

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

VIEWS = ("job_gpu_hours", "fleet_gpu_hours")  # versions/views/0008/; job_gpu_hours reads job_results


def upgrade() -> None:
    for view in frozen.views("0008", VIEWS):
        op.execute(view.create_sql())


def downgrade() -> None:
    for view in reversed(frozen.views("0008", VIEWS)):
        op.execute(view.drop_sql())
