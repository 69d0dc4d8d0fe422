"""job_duration: no start_time (instead of an error) where the start lies beyond any timestamp.

A job whose first row claims an absurd iteration time (1e308 seconds is a valid DOUBLE) put
its start epoch out of the TIMESTAMP range, and every query of job_analytics failed, the
ingest's refresh of job_results included.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import frozen

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for view in frozen.views("0007", ("job_duration",)):  # none on PostgreSQL
        op.execute(view.create_sql())


def downgrade() -> None:
    for view in frozen.views("0004", ("job_duration",)):  # as revision 0004 created it
        op.execute(view.create_sql())
