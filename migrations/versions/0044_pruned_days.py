"""Retention records the (host, day)s whose raw GPU samples it pruned (session 25 audit).

Which days were pruned was read off DuckDB's manifest (a day with sealed minutes and no sealed
samples) and, on PostgreSQL, off a job's first minute (no raw sample left there). A late sample
of such a day, stored because its minute was never rolled up, put a live part (or a raw row)
back on it, and the day no longer counted as pruned: the raw window reached back over it, so a
later sample of a rolled-up minute rebuilt that minute from itself alone (3 samples became 1),
and a job's GPU chart read its kept samples as if they were all of its readings (its pruned
minutes left out, `downsampled` false). gpu_pruned_days is written by every prune, on both
engines, and read by the raw window (retention.open_window) and by ``retention.raw_pruned``.

Filled here from what the warehouse shows now. DuckDB: the (host, day)s its rollups have minutes
on and no part (nor hot sample) of raw samples holds, as the manifest said before. PostgreSQL:
the (host, day)s of its rolled-up minutes without a raw row. A day whose pruning a late sample
already hid stays unknown: its late samples were stored before this revision.

Revision ID: 0044
Revises: 0043
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine

revision = "0044"
down_revision = "0043"
branch_labels = None
depends_on = None

CREATE = (
    "CREATE TABLE gpu_pruned_days (host VARCHAR NOT NULL, day DATE NOT NULL, "
    "pruned_at TIMESTAMP NOT NULL, PRIMARY KEY (host, day))"
)
FILL_DUCKDB = """
INSERT INTO gpu_pruned_days
SELECT host, day, CAST(now() AS TIMESTAMP) FROM (
    SELECT DISTINCT host, CAST(minute AS DATE) AS day FROM gpu_minutes
    EXCEPT SELECT host, day FROM gpu_parts WHERE table_name = 'gpu_samples'
    EXCEPT SELECT DISTINCT host, CAST(ts AS DATE) FROM gpu_samples_hot
) AS pruned
"""
FILL_POSTGRES = """
INSERT INTO gpu_pruned_days
SELECT DISTINCT m.host, CAST(m.minute AS DATE), now() AT TIME ZONE 'UTC' FROM gpu_minutes m
WHERE NOT EXISTS (SELECT 1 FROM gpu_sample_minutes r
                  WHERE r.job_id = m.job_id AND r.host = m.host AND r.gpu_key = m.gpu_key AND r.minute = m.minute)
"""


def upgrade() -> None:
    engine.create_table(CREATE)
    op.execute(FILL_POSTGRES if engine.on_postgres() else FILL_DUCKDB)


def downgrade() -> None:
    op.execute("DROP TABLE gpu_pruned_days")
