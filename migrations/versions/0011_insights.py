"""Insights: the views of insights.md's rules, their thresholds, and their results per job.

insight_settings holds every threshold (name -> value), filled with the defaults of
insights.md; the views (versions/views/0011/) read them through insight_parameters.
insight_results is job_insights materialised with the as_of it was computed at, insight_jobs
one row per job computed (a job without insights keeps its as_of there); both are filled for
the jobs already in the warehouse, and refreshed by ingest from now on
(runlytics.warehouse.insights).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import insights

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# versions/views/0011/, in dependency order
VIEWS = (
    "insight_parameters",
    "insight_rows",
    "insight_losses",
    "insight_speed",
    "insight_peers",
    "insight_gpus",
    "insight_lifecycle",
    "job_insights",
)
DEFAULTS = {
    "loss_spike.mad_factor": 6, "loss_spike.relative": 0.5,
    "loss_divergence.factor": 2, "loss_divergence.rise": 0.1,
    "overfitting.min_evals_after": 3, "overfitting.eval_rise": 1.05, "overfitting.train_window": 10,
    "throughput_drop.min_rows": 10, "throughput_drop.fraction": 0.7,
    "stall.factor": 10, "stall.min_seconds": 60,
    "slow_vs_peers.fraction": 0.7, "slow_vs_peers.min_peers": 3,
    "gpu_idle.utilization": 10, "gpu_idle.share": 0.5,
    "gpu_straggler.min_gpus": 2, "gpu_straggler.points": 20,
    "gpu_throttled.share": 0.1,
    "low_gpu_utilization.percent": 50, "low_gpu_utilization.min_training_seconds": 600,
    "memory_headroom.fraction": 0.4, "memory_headroom.min_training_seconds": 600,
    "work_at_risk.factor": 2,
    "silent_running.min_seconds": 1800, "silent_running.factor": 20,
}  # fmt: skip  # frozen here: a later change of insights.DEFAULTS is a new revision


def upgrade() -> None:
    engine.create_table(insights.CREATE_SETTINGS)
    for name, value in DEFAULTS.items():
        op.execute(f"INSERT INTO insight_settings VALUES ('{name}', {float(value)!r})")
    for view in frozen.views("0011", VIEWS):
        op.execute(view.create_sql())
    engine.create_table(insights.CREATE_RESULTS)
    engine.create_table(insights.CREATE_JOBS)
    derived.refill(insights.REFILL)


def downgrade() -> None:
    for view in reversed(frozen.views("0011", VIEWS)):
        op.execute(view.drop_sql())
    for table in insights.DROP_TABLES:
        op.execute(f"DROP TABLE {table}")
