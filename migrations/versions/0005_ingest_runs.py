"""ingest_runs: every ingest run, its counts and outcome (the health of the ingest itself).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_runs",
        sa.Column("run_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("outcome", sa.String, nullable=False),
        sa.Column("files_seen", sa.BigInteger),
        sa.Column("ingested", sa.BigInteger),
        sa.Column("unchanged", sa.BigInteger),
        sa.Column("pending", sa.BigInteger),
        sa.Column("failed", sa.BigInteger),
        sa.Column("rows", sa.BigInteger),
        sa.Column("warnings", sa.BigInteger),
        sa.Column("jobs_changed", sa.BigInteger),
        sa.Column("seconds", sa.Double),
        sa.Column("error", sa.String),
        sa.Column("host", sa.String),
        sa.Column("pid", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("ingest_runs")
