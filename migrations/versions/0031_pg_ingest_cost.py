"""No schema change. Reserved for the PostgreSQL ingest cost work (issue #18), which needed none
(no index layout paid for itself: docs/decisions.md); kept as a no-op so that a database stamped
with it stays known.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-05
"""

from __future__ import annotations

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
