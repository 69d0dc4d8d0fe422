"""Insights of a job's rows in one sort of its facts, and per-job medians only where a rule reads
them, with the same rows (issue 17).

insight_rows read step_metrics, whose window sorts a job's rows, and sorted the same rows again
for its running figures. It now reads step_facts and derives step_metrics' row number, row
count, seconds and samples itself, with step_metrics' formulas, in the one sort that gives every
running figure (tests/test_insights.py checks that the columns equal step_metrics'). Two of its
columns are gone: ``known_no`` (throughput_drop numbers a slow row among the rows with a known
throughput from its row_no less the rows without one before it, those rows, few or none, sorted
with the slow rows) and ``previous_finite_loss`` (nonfinite_loss's reference is the finite loss
whose number is the count of finite losses at its first row, read by a join). insight_steps
computes the median gap g only for the jobs with a gap long enough to be a stall and for the
running jobs, and takes a job's last row as the row whose row_no is the row count, where it
aggregated every job's rows for them.

No figure changes; insight_results is refilled all the same on DuckDB, as every revision that
replaces an insight view does, so that the table is the view's. On PostgreSQL a view cannot lose
a column in place: insight_rows and the views that read it are dropped and created again (those
that do not change from revision 0019's copies); nothing is refilled there, no figure changing.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import dialect, insights

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# insight_rows and the views that read it, in dependency order; the first two change here, the
# others keep revision 0019's copies
READERS = ("insight_rows", "insight_steps", "insight_losses", "insight_speed", "insight_lifecycle", "job_insights")
CHANGED = ("insight_rows", "insight_steps")
BEFORE = "0019"


def _create(revision_of: str) -> None:
    """Create the CHANGED views from ``revision_of``'s copies (on PostgreSQL every one of READERS)."""
    snippets = dialect.for_bind(op.get_bind())
    if engine.on_postgres():
        # CREATE OR REPLACE VIEW can drop no column there
        for name in reversed(READERS):
            op.execute(f"DROP VIEW IF EXISTS {name}")
        for name in READERS:
            op.execute(frozen.copy(revision_of if name in CHANGED else BEFORE, name).create_sql(snippets))
        return
    for name in CHANGED:
        op.execute(frozen.copy(revision_of, name).create_sql(snippets))
    derived.refill(insights.REFILL)


def upgrade() -> None:
    _create(revision)


def downgrade() -> None:
    _create(BEFORE)
