"""Metric values stored without an index: ``metric_values`` loses its PRIMARY KEY.

The key (an ART index on job_id, name and step) cost more than reading the points: a first
ingest of 481k TensorBoard points spent 1.2 s of its time building it (the rows alone take
0.24 s). Ingest keeps one value per (job, name, step) itself (tool_log.py deletes the stored rows
a batch logs again before inserting it; trainer_state.py the same), so the table is rebuilt
without the key, its rows in (job_id, name, step) order so that a metric's history is stored
together. No value changes; the views read the table by name and stay as they are. Downgrade
rebuilds it with the key.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = """
    job_id VARCHAR NOT NULL, name VARCHAR NOT NULL, step BIGINT NOT NULL, ts TIMESTAMP, value DOUBLE,
    source VARCHAR NOT NULL"""
KEY = ", PRIMARY KEY (job_id, name, step)"


def _rebuild(key: str) -> None:
    engine.create_table(f"CREATE TABLE metric_values_rebuilt ({COLUMNS}{key})")
    op.execute(
        "INSERT INTO metric_values_rebuilt (job_id, name, step, ts, value, source) "
        "SELECT job_id, name, step, ts, value, source FROM metric_values ORDER BY job_id, name, step"
    )
    op.execute("DROP TABLE metric_values")
    op.execute("ALTER TABLE metric_values_rebuilt RENAME TO metric_values")


def upgrade() -> None:
    _rebuild("")


def downgrade() -> None:
    _rebuild(KEY)
