"""GPU telemetry published from a stage to PostgreSQL (issue #18): what a stage owes.

A stage (the local DuckDB warehouse of an ingester writing PostgreSQL, ingest/postgres.py) lists
in ``pg_telemetry_outbox`` the GPU minutes its ingest recomputed and PostgreSQL has not received
yet (warehouse/telemetry_outbox.py, warehouse/pg_telemetry.py). Both engines get the table, so
that the schema stays one (tests/test_postgres_schema.py); PostgreSQL leaves it empty, and so
does a DuckDB warehouse that is not a stage (no ``telemetry_outbox`` mark in publish_marks).
PostgreSQL's deletes of a publish find their rows by the samples' and rollups' primary keys and
by revision 0022's index on utilization_minutes (job_id): no index of its own.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

CREATE = """
CREATE TABLE pg_telemetry_outbox (
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_key VARCHAR NOT NULL,
    lo TIMESTAMP NOT NULL, hi TIMESTAMP NOT NULL
)
"""


def upgrade() -> None:
    engine.create_table(CREATE)


def downgrade() -> None:
    op.execute("DROP TABLE pg_telemetry_outbox")
