"""gpu_utilization_readings (view) and utilization_minutes (it, summed per job and minute).

The dashboard's fleet summary charts GPU utilization over time across every job; summing the
readings per job and minute at ingest makes that a scan of thousands of rows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import results

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

VIEWS = ("gpu_utilization_readings",)  # versions/views/0006/
# utilization_minutes on PostgreSQL, where no view exists before 0018 to create it from
POSTGRES_CREATE = """
CREATE TABLE utilization_minutes (job_id VARCHAR, minute TIMESTAMP, readings BIGINT, utilization_sum DOUBLE)
"""


def upgrade() -> None:
    for view in frozen.views("0006", VIEWS):
        op.execute(view.create_sql())
    if engine.on_postgres():
        engine.create_table(POSTGRES_CREATE)
    else:
        op.execute(results.UTILIZATION_CREATE)
    derived.refill(results.UTILIZATION_REFILL)


def downgrade() -> None:
    op.execute("DROP TABLE utilization_minutes")
    for view in frozen.views("0006", VIEWS):
        op.execute(view.drop_sql())
