"""GPU reads at fleet scale: a job's GPUs counted from a few rows, not from every minute.

``job_gpu_series`` holds each (job, host, GPU) of ``gpu_minutes`` with its first and last
minute, kept with it by warehouse/rollups.py and backfilled here (a GPU chart reads its span
there); job_gpu_hours (versions/views/0020/) counts a job's
sampled GPUs there instead of reading job_resources, which grouped every minute of the fleet on
each request of the fleet endpoint. The figures are the same (a count of the same keys), so
nothing derived is refilled. Both engines: the view is rendered for the connection's.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine, frozen
from runlytics.warehouse import dialect, rollups
from runlytics.warehouse.views import View

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# versions/views/0020/, and the revision whose copy each had before (on PostgreSQL too: 0018
# created it there from that copy)
VIEWS_BEFORE = {"job_gpu_hours": "0008"}

CREATE = """
CREATE TABLE job_gpu_series (
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_key VARCHAR NOT NULL,
    first_minute TIMESTAMP NOT NULL, last_minute TIMESTAMP NOT NULL,
    PRIMARY KEY (job_id, host, gpu_key)
)
"""


def upgrade() -> None:
    engine.create_table(CREATE)
    op.execute(rollups.SERIES_FILL)
    snippets = dialect.for_bind(op.get_bind())
    for name in VIEWS_BEFORE:
        op.execute(View.load(frozen.FROZEN / "0020", name).create_sql(snippets))


def downgrade() -> None:
    snippets = dialect.for_bind(op.get_bind())
    for name, before in VIEWS_BEFORE.items():
        op.execute(View.load(frozen.FROZEN / before, name).create_sql(snippets))
    op.execute("DROP TABLE job_gpu_series")
