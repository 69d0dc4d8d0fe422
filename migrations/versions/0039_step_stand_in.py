"""A step row remembers that its time is the snapshot's ``updated_at`` (audit finding N8).

A ``latest`` entry (or a legacy snapshot) without a ``timestamp`` takes its snapshot's
``updated_at`` as its time: when the snapshot was written, not when the step finished.
``steps.ts_stand_in`` is true on such a row, so that a later ingest of the step compares with it
as with an untimed row (inputs.md: "without timestamps, the later ingest wins"), as one ingest of
the final files would; before, the stand-in beat the step's own, earlier history entry in every
later run. Rows stored before this revision are NULL (not known as stand-ins: compared by their
time, as before). No view reads the column.

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE steps ADD COLUMN ts_stand_in BOOLEAN")


def downgrade() -> None:
    op.execute("ALTER TABLE steps DROP COLUMN ts_stand_in")
