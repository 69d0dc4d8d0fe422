"""Insight bounds before medians and sorts: the same rows for less CPU (issue 17).

insight_rows computed loss_divergence's r (the median of the finite losses of each row's 10
rows) for every row, in the one sort of a job's rows: its costliest window. It now gives
``recent_max``, the highest finite loss of those 10 rows, instead; r lies below it and b (the
lowest earlier r) above the lowest finite loss before the row, so insight_steps computes r only
at the rows where recent_max leaves a divergence possible, from the losses its spike join
already reads, and r for every row (with its second sort) only for the jobs where one of those
r does. The job's last row is the row without a next one (``last_row``, no count of the rows:
``row_count`` is gone), and the finite-loss count uses the default frame. throughput_drop sorts
the slow rows into runs only for the jobs where slow rows (with the rows without a throughput)
fill a whole block of (min_rows + 1) / 2 consecutive rows, which every run of min_rows does.
The join of the spike and divergence candidates with their losses builds its hash table on the
candidates (DuckDB built it on every finite loss).

No figure changes; insight_results is refilled all the same on DuckDB, as every revision that
replaces an insight view does, so that the table is the view's. On PostgreSQL a view cannot
change its columns in place: insight_rows and the views that read it are dropped and created
again (those that do not change from revision 0019's copies), as revision 0023 did; nothing is
refilled there, no figure changing.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import dialect, insights

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

# insight_rows and the views that read it, in dependency order; the first two change here, the
# others keep revision 0019's copies
READERS = ("insight_rows", "insight_steps", "insight_losses", "insight_speed", "insight_lifecycle", "job_insights")
CHANGED = ("insight_rows", "insight_steps")
PREVIOUS = "0023"  # the revision that froze CHANGED before this one
UNCHANGED_FROM = "0019"


def _create(revision_of: str) -> None:
    """Create the CHANGED views from ``revision_of``'s copies (on PostgreSQL every one of READERS)."""
    snippets = dialect.for_bind(op.get_bind())
    if engine.on_postgres():
        # CREATE OR REPLACE VIEW can neither drop nor rename a column there
        for name in reversed(READERS):
            op.execute(f"DROP VIEW IF EXISTS {name}")
        for name in READERS:
            op.execute(frozen.copy(revision_of if name in CHANGED else UNCHANGED_FROM, name).create_sql(snippets))
        return
    for name in CHANGED:
        op.execute(frozen.copy(revision_of, name).create_sql(snippets))
    derived.refill(insights.REFILL)


def upgrade() -> None:
    _create(revision)


def downgrade() -> None:
    _create(PREVIOUS)
