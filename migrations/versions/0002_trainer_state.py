"""Hugging Face Trainer states: per-step trainer log (grad norm, epoch, eval metrics) and run summary.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from runlytics.warehouse import views

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS_BEFORE = (
    views.STEP_METRICS_V1,
    views.JOB_PERFORMANCE_V1,
    views.JOB_DURATION_V1,
    views.JOB_LOSSES_V1,
    views.JOB_RESOURCES_V1,
    views.CHECKPOINT_SCORES_V1,
    views.JOB_CHECKPOINTS_V1,
    views.JOB_EFFICIENCY_V1,
    views.JOB_ANALYTICS_V1,
)
VIEWS_AFTER = views.CURRENT_0002


def upgrade() -> None:
    op.create_table(
        "trainer_steps",
        sa.Column("job_id", sa.String, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("loss", sa.Double),
        sa.Column("eval_loss", sa.Double),
        sa.Column("learning_rate", sa.Double),
        sa.Column("grad_norm", sa.Double),
        sa.Column("epoch", sa.Double),
        sa.Column("metrics", sa.JSON),
        sa.Column("state_step", sa.BigInteger),
    )
    op.create_table(
        "trainer_runs",
        sa.Column("job_id", sa.String, primary_key=True),
        sa.Column("global_step", sa.BigInteger),
        sa.Column("max_steps", sa.BigInteger),
        sa.Column("save_steps", sa.BigInteger),
        sa.Column("logging_steps", sa.BigInteger),
        sa.Column("train_batch_size", sa.BigInteger),
        sa.Column("best_model_checkpoint", sa.String),
        sa.Column("best_metric", sa.Double),
        sa.Column("completed", sa.Boolean, nullable=False),
        sa.Column("train_runtime", sa.Double),
        sa.Column("train_samples_per_second", sa.Double),
        sa.Column("train_loss", sa.Double),
        sa.Column("source_file", sa.String),
    )
    for view in reversed(VIEWS_BEFORE):
        op.execute(view.drop_sql())
    for view in VIEWS_AFTER:
        op.execute(view.create_sql())


def downgrade() -> None:
    for view in reversed(VIEWS_AFTER):
        op.execute(view.drop_sql())
    for view in VIEWS_BEFORE:
        op.execute(view.create_sql())
    op.drop_table("trainer_runs")
    op.drop_table("trainer_steps")
