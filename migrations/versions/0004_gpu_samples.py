"""GPU samples from the NVML sampler's spool and nvidia-smi logs, and the views that use them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import results
from runlytics.warehouse.views import View

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# the views of 0002 (versions/views/0002/) and those this revision creates (versions/views/0004/)
VIEWS_BEFORE = (
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
VIEWS_AFTER = (
    "step_facts",
    "job_settings",
    "step_metrics",
    "job_performance",
    "job_duration",
    "job_losses",
    "gpu_sample_intervals",
    "job_gpus",
    "job_resources",
    "checkpoint_scores",
    "job_checkpoints",
    "job_efficiency",
    "job_energy",
    "step_gpu_alignment",
    "job_analytics",
)


def upgrade() -> None:
    op.create_table(
        "gpu_samples",
        sa.Column("job_id", sa.String, nullable=False),
        sa.Column("host", sa.String, nullable=False),
        sa.Column("gpu_index", sa.Integer, nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("gpu_uuid", sa.String),
        sa.Column("utilization_percent", sa.Double),
        sa.Column("memory_used_mb", sa.Double),
        sa.Column("memory_total_mb", sa.Double),
        sa.Column("temperature_c", sa.Double),
        sa.Column("power_w", sa.Double),
        sa.Column("sm_clock_mhz", sa.Double),
        sa.Column("clocks_event_reasons", sa.BigInteger),
        sa.Column("source", sa.String, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "host", "gpu_index", "ts"),
    )
    op.add_column("ingest_files", sa.Column("read_offset", sa.BigInteger))
    _replace_views(frozen.views("0002", VIEWS_BEFORE), frozen.views("0004", VIEWS_AFTER))


def downgrade() -> None:
    _replace_views(frozen.views("0004", VIEWS_AFTER), frozen.views("0002", VIEWS_BEFORE))
    op.drop_column("ingest_files", "read_offset")
    op.drop_table("gpu_samples")


def _replace_views(old: tuple[View, ...], new: tuple[View, ...]) -> None:
    # job_results has the columns of job_analytics: rebuilt with it
    op.execute("DROP TABLE job_results")
    for view in reversed(old):
        op.execute(view.drop_sql())
    for view in new:
        op.execute(view.create_sql())
    op.execute(results.CREATE)
    derived.refill(results.REFILL)
