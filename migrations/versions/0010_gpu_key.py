"""gpu_samples keyed by GPU, not by index: two GPUs two samplers both call index 0 stay two GPUs.

Inside containers and Slurm cgroups NVML numbers the visible GPUs from 0, so two tasks on one
host can report different GPUs under the same (job, host, gpu_index). gpu_key is the sample's
GPU UUID (a MIG instance's own) when it has one, else '#<index>' (logs without UUIDs); the
table is rebuilt with it in the primary key, and the views that tell GPUs apart group by it.
job_results and utilization_minutes are refilled: a job's gpus_seen and averages may change.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import results

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

VIEWS = ("gpu_sample_intervals", "job_gpus", "job_resources", "step_gpu_alignment")  # versions/views/0010/
VIEWS_BEFORE = "0004"  # the revision that created them before

COLUMNS = """
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_index INTEGER NOT NULL, ts TIMESTAMP NOT NULL,
    gpu_uuid VARCHAR, utilization_percent DOUBLE, memory_used_mb DOUBLE, memory_total_mb DOUBLE,
    temperature_c DOUBLE, power_w DOUBLE, sm_clock_mhz DOUBLE, clocks_event_reasons BIGINT,
    source VARCHAR NOT NULL"""
KEYED = f"CREATE TABLE gpu_samples_keyed ({COLUMNS}, gpu_key VARCHAR NOT NULL, PRIMARY KEY (job_id, host, gpu_key, ts))"
FILL_KEYED = """
INSERT INTO gpu_samples_keyed
SELECT *, coalesce(gpu_uuid, '#' || CAST(gpu_index AS VARCHAR)) AS gpu_key FROM gpu_samples
"""
BY_INDEX = f"CREATE TABLE gpu_samples_by_index ({COLUMNS}, PRIMARY KEY (job_id, host, gpu_index, ts))"
# going back, samples of GPUs that shared an index collapse to one (the greatest key's)
FILL_BY_INDEX = """
INSERT INTO gpu_samples_by_index
SELECT * EXCLUDE (gpu_key) FROM gpu_samples
QUALIFY row_number() OVER (PARTITION BY job_id, host, gpu_index, ts ORDER BY gpu_key DESC) = 1
"""


def upgrade() -> None:
    _swap(KEYED, FILL_KEYED, "gpu_samples_keyed")
    for view in frozen.views("0010", VIEWS):
        op.execute(view.create_sql())
    derived.refill(results.REFILL, results.UTILIZATION_REFILL)


def downgrade() -> None:
    _swap(BY_INDEX, FILL_BY_INDEX, "gpu_samples_by_index", fill_portable=False)
    for view in frozen.views(VIEWS_BEFORE, VIEWS):
        op.execute(view.create_sql())
    # samples of GPUs that shared an index collapsed: both derived tables follow
    derived.refill(results.REFILL, results.UTILIZATION_REFILL)


def _swap(create: str, fill: str, name: str, *, fill_portable: bool = True) -> None:
    engine.create_table(create)
    if fill_portable:
        op.execute(fill)
    else:
        engine.duckdb_only(fill)
    op.execute("DROP TABLE gpu_samples")
    op.execute(f"ALTER TABLE {name} RENAME TO gpu_samples")
