"""job_results: the job_analytics view materialised per job, refreshed by ingest for changed jobs.

The view stays the definition; the table makes one job's analytics and the fleet summary
fast at thousands of jobs. A later revision that changes the views must refill it
(``warehouse.results.REFILL``). On PostgreSQL the table is created by revision 0004, in the
shape it has had since (this revision's view does not exist there).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from runlytics.migrations import derived, engine
from runlytics.warehouse import results

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    engine.duckdb_only(results.CREATE)
    derived.refill(results.REFILL)


def downgrade() -> None:
    engine.duckdb_only("DROP TABLE job_results")
