"""Hugging Face Trainer states: per-step trainer log (grad norm, epoch, eval metrics) and run summary.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from runlytics.migrations import frozen

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# the views of 0001 (versions/views/0001/) and those this revision creates (versions/views/0002/)
VIEWS_BEFORE = (
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
VIEWS_AFTER = (
    "step_facts",
    "job_settings",
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
    for view in reversed(frozen.views("0001", VIEWS_BEFORE)):
        op.execute(view.drop_sql())
    for view in frozen.views("0002", VIEWS_AFTER):
        op.execute(view.create_sql())


def downgrade() -> None:
    for view in reversed(frozen.views("0002", VIEWS_AFTER)):
        op.execute(view.drop_sql())
    for view in frozen.views("0001", VIEWS_BEFORE):
        op.execute(view.create_sql())
    op.drop_table("trainer_runs")
    op.drop_table("trainer_steps")
