"""job_results: the job_analytics view materialised per job, refreshed by ingest for changed jobs.

The view stays the definition; the table makes one job's analytics and the fleet summary
fast at thousands of jobs. A later revision that changes the views must refill it
(``warehouse.results.REFILL``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived
from runlytics.warehouse import results

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(results.CREATE)
    derived.refill(results.REFILL)


def downgrade() -> None:
    op.execute("DROP TABLE job_results")
