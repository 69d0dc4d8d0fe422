"""GPU samples from the NVML sampler's spool and nvidia-smi logs, and the views that use them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from runlytics.migrations import derived, engine, frozen
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
# job_results on PostgreSQL, where no view exists before 0018 to create it from: the columns of
# job_analytics as this revision's views give them (tests/test_postgres_schema.py compares them
# with DuckDB's table)
POSTGRES_JOB_RESULTS = """
CREATE TABLE job_results (
    job_id VARCHAR, status VARCHAR, model_name VARCHAR, created_at TIMESTAMP,
    started_at TIMESTAMP, ended_at TIMESTAMP, updated_at TIMESTAMP, start_time TIMESTAMP,
    end_time TIMESTAMP, total_seconds DOUBLE, training_seconds DOUBLE, overhead_seconds DOUBLE,
    total_iterations BIGINT, total_samples DOUBLE, average_samples_per_second DOUBLE,
    peak_samples_per_second DOUBLE, average_iteration_time DOUBLE, initial_loss DOUBLE,
    final_loss DOUBLE, best_loss DOUBLE, loss_reduction_percent DOUBLE, final_eval_loss DOUBLE,
    best_eval_loss DOUBLE, average_gpu_utilization DOUBLE, average_gpu_memory_mb DOUBLE,
    peak_gpu_memory_mb DOUBLE, average_gpu_temp_celsius DOUBLE, peak_gpu_temp_celsius DOUBLE,
    gpu_source VARCHAR, total_energy_wh DOUBLE, energy_per_1000_samples_wh DOUBLE,
    gpus_with_power BIGINT, idle_gpus BIGINT, average_throttled_share DOUBLE,
    total_checkpoints BIGINT, checkpoint_frequency_steps DOUBLE, final_checkpoint VARCHAR,
    best_checkpoint VARCHAR, gpu_utilization_score DOUBLE, throughput_score DOUBLE,
    overall_score DOUBLE, step_rows BIGINT, timed_rows BIGINT, nonfinite_losses BIGINT,
    warnings VARCHAR[]
)
"""


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
    if engine.on_postgres():
        engine.create_table(POSTGRES_JOB_RESULTS)
    else:
        _replace_views(frozen.views("0002", VIEWS_BEFORE), frozen.views("0004", VIEWS_AFTER))


def downgrade() -> None:
    if engine.on_postgres():
        op.execute("DROP TABLE job_results")
    else:
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
