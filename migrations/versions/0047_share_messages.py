"""A share's message never reads at its limit: memory_headroom, gpu_idle and gpu_throttled
(session 30 audit of insights.md).

The three print a share and its limit in percent, each told apart by the dialect's
@apart_format (revision 0040). But a share and its limit can be two doubles whose percents are
one: memory_headroom computed its percent as 100 x peak / total, not from the share compared
(1.2 MiB of 3 is 0.39999999999999997, below 0.4, and 40.0 %: "40 % ... (below 40 %)"), and 100
times two neighbouring doubles can round to one double (0.39999999999999997 and 0.4 give 40.0).
The percent is now 100 x the share compared, and where it and the limit's are one double the
message gives the two fractions (0.39999999999999997 ... below 0.4).

insight_gpus keeps its columns: replaced in place on both engines; insight_results refilled.

Revision ID: 0047
Revises: 0046
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights

revision = "0047"
down_revision = "0046"
branch_labels = None
depends_on = None

AFTER = {"insight_gpus": "0047"}
BEFORE = {"insight_gpus": "0041"}


def _replace(copies: dict[str, str]) -> None:
    bound = dialect.for_bind(op.get_bind())
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(insights.REFILL)


def upgrade() -> None:
    _replace(AFTER)


def downgrade() -> None:
    _replace(BEFORE)
