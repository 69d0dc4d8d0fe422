"""The first warehouse: jobs, step facts, per-step GPU readings, checkpoints, ingest ledger, views.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from runlytics.migrations import frozen

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# created from this revision's frozen texts, versions/views/0001/, in this order
VIEWS = (
    "step_metrics",
    "job_performance",
    "job_duration",
    "job_losses",
    "job_resources",
    "checkpoint_scores",
    "job_checkpoints",
    "job_efficiency",
    "job_analytics",
)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String, primary_key=True),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime),
        sa.Column("started_at", sa.DateTime),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("config", sa.JSON),
        sa.Column("model_name", sa.String),
        sa.Column("batch_size", sa.Double),
        sa.Column("save_steps", sa.BigInteger),
        sa.Column("target_samples_per_second", sa.Double),
        sa.Column("gpu_count", sa.BigInteger),
        sa.Column("current_step", sa.BigInteger),
        sa.Column("total_steps", sa.BigInteger),
        sa.Column("source_dir", sa.String),
        sa.Column("source_file", sa.String),
        sa.Column("ingested_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "steps",
        sa.Column("job_id", sa.String, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.DateTime),
        sa.Column("loss", sa.Double),
        sa.Column("eval_loss", sa.Double),
        sa.Column("learning_rate", sa.Double),
        sa.Column("samples_per_second", sa.Double),
        sa.Column("iteration_time", sa.Double),
        sa.Column("samples", sa.BigInteger),
    )
    op.create_table(
        "step_gpus",
        sa.Column("job_id", sa.String, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("gpu_index", sa.Integer, nullable=False),
        sa.Column("gpu_uuid", sa.String),
        sa.Column("utilization_percent", sa.Double),
        sa.Column("memory_used_mb", sa.Double),
        sa.Column("memory_total_mb", sa.Double),
        sa.Column("temperature_c", sa.Double),
        sa.Column("power_w", sa.Double),
    )
    op.create_table(
        "checkpoints",
        sa.Column("job_id", sa.String, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("path", sa.String),
        sa.Column("saved_at", sa.DateTime),
        sa.Column("eval_loss", sa.Double),
        sa.Column("source", sa.String, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "step"),
    )
    op.create_table(
        "ingest_files",
        sa.Column("path", sa.String, primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("job_id", sa.String),
        sa.Column("size", sa.BigInteger),
        sa.Column("mtime_ns", sa.BigInteger),
        sa.Column("fingerprint", sa.String),
        sa.Column("outcome", sa.String, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("warning_count", sa.BigInteger, nullable=False),
        sa.Column("warnings", sa.JSON),
        sa.Column("error", sa.String),
        sa.Column("first_seen_at", sa.DateTime, nullable=False),
        sa.Column("last_read_at", sa.DateTime, nullable=False),
    )
    for view in frozen.views("0001", VIEWS):
        op.execute(view.create_sql())


def downgrade() -> None:
    for view in reversed(frozen.views("0001", VIEWS)):
        op.execute(view.drop_sql())
    for table in ("ingest_files", "checkpoints", "step_gpus", "steps", "jobs"):
        op.drop_table(table)
