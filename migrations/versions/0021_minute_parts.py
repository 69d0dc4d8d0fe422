"""GPU per-minute rollups sealed into Parquet parts like the samples (issue #14: bytes at rest).

On DuckDB the table gpu_minutes becomes gpu_minutes_hot (rows not yet sealed, same columns and
key), and gpu_minutes a view over it and the live minute parts (warehouse/parts.py,
GPU_MINUTES: ``<db>.parts/gpu_minutes/day=/host=/``, listed in gpu_parts with table_name
'gpu_minutes'), rebuilt whenever the manifest changes. Every view and reader keeps reading
gpu_minutes, with the same rows. The existing rows stay hot: the next ingest run seals those
before the current hour (and rebuilds the file once mostly free, warehouse/hotfile.py). Nothing
derived changes.

On PostgreSQL nothing changes: gpu_minutes stays a plain table there (no parts on that engine).

Going back folds the minute parts' rows into a table gpu_minutes again; their files are retired
(deleted once no kept snapshot can name them).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_FIGURES = ("utilization_percent", "memory_used_mb", "temperature_c", "power_w", "sm_clock_mhz")
COLUMNS = ", ".join(
    (
        "job_id, host, gpu_key, minute, gpu_index, gpu_uuid, samples, first_ts, last_ts",
        *(f"{f}_n, {f}_sum, {f}_min, {f}_max" for f in _FIGURES),
        "memory_total_mb_max, nonfinite, interval_seconds, utilization_seconds, idle_seconds, reasons_seconds",
        "throttled_seconds, energy_wh",
    )
)
# the view with no part yet (warehouse/parts.py view_sql adds the parts as it writes them)
HOT_ONLY = f"CREATE OR REPLACE VIEW gpu_minutes AS SELECT {COLUMNS} FROM gpu_minutes_hot"

_FIGURE_TYPES = ",\n    ".join(
    f"{figure}_n BIGINT, {figure}_sum DOUBLE, {figure}_min DOUBLE, {figure}_max DOUBLE" for figure in _FIGURES
)
# revision 0015's table, under a temporary name
FOLDED = f"""
CREATE TABLE gpu_minutes_folded (
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_key VARCHAR NOT NULL, minute TIMESTAMP NOT NULL,
    gpu_index INTEGER NOT NULL, gpu_uuid VARCHAR, samples BIGINT NOT NULL,
    first_ts TIMESTAMP NOT NULL, last_ts TIMESTAMP NOT NULL,
    {_FIGURE_TYPES},
    memory_total_mb_max DOUBLE, nonfinite BIGINT,
    interval_seconds DOUBLE, utilization_seconds DOUBLE, idle_seconds DOUBLE, reasons_seconds DOUBLE,
    throttled_seconds DOUBLE, energy_wh DOUBLE,
    PRIMARY KEY (job_id, host, gpu_key, minute)
)
"""
RETIRE_PARTS = """
INSERT INTO gpu_parts_retired (path, table_name, retired_at, after_snapshot)
SELECT path, table_name, CAST(now() AT TIME ZONE 'UTC' AS TIMESTAMP), NULL
FROM gpu_parts WHERE table_name = 'gpu_minutes'
"""


def upgrade() -> None:
    if engine.on_postgres():
        return
    op.execute("ALTER TABLE gpu_minutes RENAME TO gpu_minutes_hot")
    op.execute(HOT_ONLY)


def downgrade() -> None:
    if engine.on_postgres():
        return
    op.execute(FOLDED)
    # ordered as a part is, so a (host, day) keeps its job order
    op.execute(
        f"INSERT INTO gpu_minutes_folded SELECT {COLUMNS} FROM gpu_minutes ORDER BY host, job_id, gpu_key, minute"
    )
    op.execute("DROP VIEW gpu_minutes")
    op.execute("DROP TABLE gpu_minutes_hot")
    op.execute(RETIRE_PARTS)
    op.execute("DELETE FROM gpu_parts WHERE table_name = 'gpu_minutes'")
    op.execute("ALTER TABLE gpu_minutes_folded RENAME TO gpu_minutes")
