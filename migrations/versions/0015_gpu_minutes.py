"""GPU per-minute rollups: ``gpu_minutes``, and the per-job GPU figures computed from them.

One row per job, host, GPU and minute: counts, sums, minima and maxima of each figure and the
time-weighted sums of job_gpus (warehouse/rollups.py), maintained at ingest and backfilled here
from the samples stored. job_gpus, job_resources (its samples' part), insight_gpus and
utilization_minutes read it (versions/views/0015/; gpu_utilization_readings chooses a job's
source by its rollups), so a job's refresh costs its minutes, not its samples, and its figures
stay once raw samples age out. job_results, utilization_minutes and insight_results are
refilled: sums and means may change in the last digit (the minutes' sums are added, not the
samples).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import insights, results, rollups

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# versions/views/0015/, in dependency order, and the revision whose copy each had before
VIEWS_BEFORE = {
    "job_gpus": "0013",
    "job_resources": "0013",
    "gpu_utilization_readings": "0006",
    "insight_gpus": "0011",
}

_FIGURES = ",\n    ".join(
    f"{figure}_n BIGINT, {figure}_sum DOUBLE, {figure}_min DOUBLE, {figure}_max DOUBLE"
    for figure in ("utilization_percent", "memory_used_mb", "temperature_c", "power_w", "sm_clock_mhz")
)
CREATE = f"""
CREATE TABLE gpu_minutes (
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_key VARCHAR NOT NULL, minute TIMESTAMP NOT NULL,
    gpu_index INTEGER NOT NULL, gpu_uuid VARCHAR, samples BIGINT NOT NULL,
    first_ts TIMESTAMP NOT NULL, last_ts TIMESTAMP NOT NULL,
    {_FIGURES},
    memory_total_mb_max DOUBLE, nonfinite BIGINT,
    interval_seconds DOUBLE, utilization_seconds DOUBLE, idle_seconds DOUBLE, reasons_seconds DOUBLE,
    throttled_seconds DOUBLE, energy_wh DOUBLE,
    PRIMARY KEY (job_id, host, gpu_key, minute)
)
"""


def upgrade() -> None:
    engine.create_table(CREATE)
    derived.refill(rollups.REBUILD)
    for view in frozen.views("0015", tuple(VIEWS_BEFORE)):
        op.execute(view.create_sql())
    derived.refill(results.REFILL, results.ROLLUP_UTILIZATION_REFILL, insights.REFILL)


def downgrade() -> None:
    for name, before in VIEWS_BEFORE.items():
        for view in frozen.views(before, (name,)):
            op.execute(view.create_sql())
    op.execute("DROP TABLE gpu_minutes")
    derived.refill(results.REFILL, results.UTILIZATION_REFILL, insights.REFILL)
