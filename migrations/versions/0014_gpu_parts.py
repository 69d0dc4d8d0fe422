"""GPU samples in a small hot table plus sealed Parquet parts, read through the view gpu_samples.

The table gpu_samples becomes gpu_samples_hot (rows not yet sealed, same columns and key); the
manifest gpu_parts lists the live Parquet parts (warehouse/parts.py) and gpu_parts_retired the
replaced ones whose files wait for the snapshots that may name them. gpu_samples is now a view
over the hot table and the live parts, rebuilt whenever the manifest changes; every view and
query keeps reading gpu_samples. The existing rows stay in the hot table: the next ingest run
seals those before the current hour into parts. Nothing derived changes.

Going back folds the parts' rows into a table gpu_samples again (their files are left on disk:
snapshots may still name them).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = (
    "job_id, host, gpu_index, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, "
    "temperature_c, power_w, sm_clock_mhz, clocks_event_reasons, source, gpu_key"
)
MANIFEST = """
CREATE TABLE gpu_parts (
    path VARCHAR PRIMARY KEY, table_name VARCHAR NOT NULL, day DATE NOT NULL, host VARCHAR NOT NULL,
    min_ts TIMESTAMP NOT NULL, max_ts TIMESTAMP NOT NULL, rows BIGINT NOT NULL, bytes BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL
)"""
RETIRED = """
CREATE TABLE gpu_parts_retired (
    path VARCHAR PRIMARY KEY, table_name VARCHAR NOT NULL, retired_at TIMESTAMP NOT NULL, after_snapshot BIGINT
)"""
# the view with no part yet (warehouse/parts.py view_sql adds the parts as it writes them)
HOT_ONLY = f"CREATE OR REPLACE VIEW gpu_samples AS SELECT {COLUMNS} FROM gpu_samples_hot"

FOLDED = """
CREATE TABLE gpu_samples_folded (
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_index INTEGER NOT NULL, ts TIMESTAMP NOT NULL,
    gpu_uuid VARCHAR, utilization_percent DOUBLE, memory_used_mb DOUBLE, memory_total_mb DOUBLE,
    temperature_c DOUBLE, power_w DOUBLE, sm_clock_mhz DOUBLE, clocks_event_reasons BIGINT,
    source VARCHAR NOT NULL, gpu_key VARCHAR NOT NULL, PRIMARY KEY (job_id, host, gpu_key, ts)
)"""


def upgrade() -> None:
    op.execute("ALTER TABLE gpu_samples RENAME TO gpu_samples_hot")
    op.execute(MANIFEST)
    op.execute(RETIRED)
    op.execute(HOT_ONLY)


def downgrade() -> None:
    engine.create_table(FOLDED)
    op.execute(f"INSERT INTO gpu_samples_folded SELECT {COLUMNS} FROM gpu_samples")
    op.execute("DROP VIEW gpu_samples")
    op.execute("DROP TABLE gpu_samples_hot")
    op.execute("DROP TABLE gpu_parts_retired")
    op.execute("DROP TABLE gpu_parts")
    op.execute("ALTER TABLE gpu_samples_folded RENAME TO gpu_samples")
