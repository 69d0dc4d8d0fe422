"""No schema change. Reserved for the first spool ingest work (issue #14), which needed none (new
files get 64 KiB blocks from warehouse/head.py); kept as a no-op so that a warehouse stamped with
it stays known.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-05
"""

from __future__ import annotations

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
