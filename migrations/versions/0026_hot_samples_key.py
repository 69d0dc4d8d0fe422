"""gpu_samples_hot without its primary-key index on DuckDB (issue #14: bytes at rest).

The ART index of the hot samples' key was ~100 bytes a sample (24 MB of a 42 MB file with an
hour of 64 GPUs hot), in the DuckDB file that every snapshot copies. Ingest now replaces a sample
seen again by a delete and an insert (ingest/gpu_store.py): one row per key as before. The table
is created again without the key, its rows copied over (the view gpu_samples reads it by name).

On PostgreSQL nothing changes: the table keeps its key there (its publish replaces ranges).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

SAMPLE_COLUMNS = (
    "job_id, host, gpu_index, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, "
    "temperature_c, power_w, sm_clock_mhz, clocks_event_reasons, source, gpu_key"
)
UNKEYED = """
CREATE TABLE gpu_samples_hot_new (
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_index INTEGER NOT NULL, ts TIMESTAMP NOT NULL,
    gpu_uuid VARCHAR, utilization_percent DOUBLE, memory_used_mb DOUBLE, memory_total_mb DOUBLE,
    temperature_c DOUBLE, power_w DOUBLE, sm_clock_mhz DOUBLE, clocks_event_reasons BIGINT,
    source VARCHAR NOT NULL, gpu_key VARCHAR NOT NULL
)"""
KEY = "job_id, host, gpu_key, ts"
KEYED = UNKEYED.replace("\n)", f",\n    PRIMARY KEY ({KEY})\n)")


def upgrade() -> None:
    if engine.on_postgres():
        return
    _hot_samples(UNKEYED)


def downgrade() -> None:
    if engine.on_postgres():
        return
    _hot_samples(KEYED)


def _hot_samples(create: str) -> None:
    """gpu_samples_hot created again from ``create``, with its rows (in key order)."""
    op.execute(create)
    op.execute(f"INSERT INTO gpu_samples_hot_new SELECT {SAMPLE_COLUMNS} FROM gpu_samples_hot ORDER BY {KEY}")
    op.execute("DROP TABLE gpu_samples_hot")
    op.execute("ALTER TABLE gpu_samples_hot_new RENAME TO gpu_samples_hot")
