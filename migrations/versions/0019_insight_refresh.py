"""Insights computed in fewer passes over a job's rows, with the same rows (issue 17).

The rules that read a job's rows (insight_losses, insight_speed, insight_lifecycle) are one view,
insight_steps, over insight_rows, which now derives and sorts the rows once with every running
figure of the row order (the previous timestamp, the last and lowest finite loss before, the
finite-loss and known-throughput counts, the 10-row median); the three views are its kinds by
family. A job's T, g and last row are per-job aggregates instead of windows over every row.
insight_gpus computes the ordered mean utilization of logged GPU readings only for the jobs
where a GPU can be a straggler. No figure changes; insight_results is refilled all the same, as
every revision that replaces an insight view does, so that the table is the view's.

Their texts are portable too (``@printf``, ``@last_known``, ``generate_series``, DOUBLE
PRECISION; DuckDB renders them to the same SQL as before): revision 0018 left the insight views
off PostgreSQL, and this one creates all of them there (insight_parameters as 0011 froze it, the
others from this revision's copies). A PostgreSQL database at 0018 holds no facts (``db copy``
fills one at head), so nothing is refilled there.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import dialect, insights

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

# versions/views/0019/, in dependency order, and the revision whose copy each had before (None:
# new here)
VIEWS_BEFORE = {
    "insight_rows": "0016",
    "insight_steps": None,
    "insight_losses": "0016",
    "insight_speed": "0011",
    "insight_peers": "0011",
    "insight_lifecycle": "0016",
    "insight_gpus": "0015",
    "job_insights": "0011",
}


# on PostgreSQL, every insight view in dependency order (views.ORDER) and the copy it is made from
ON_POSTGRES = (
    ("0011", "insight_parameters"),
    ("0019", "insight_rows"),
    ("0019", "insight_steps"),
    ("0019", "insight_losses"),
    ("0019", "insight_speed"),
    ("0019", "insight_peers"),
    ("0019", "insight_gpus"),
    ("0019", "insight_lifecycle"),
    ("0019", "job_insights"),
)


def upgrade() -> None:
    snippets = dialect.for_bind(op.get_bind())
    if engine.on_postgres():
        for revision_of, name in ON_POSTGRES:
            op.execute(frozen.copy(revision_of, name).create_sql(snippets))
        return
    for view in frozen.views("0019", tuple(VIEWS_BEFORE)):
        op.execute(view.create_sql(snippets))
    derived.refill(insights.REFILL)


def downgrade() -> None:
    if engine.on_postgres():
        for _, name in reversed(ON_POSTGRES):
            op.execute(f"DROP VIEW IF EXISTS {name}")
        return
    snippets = dialect.for_bind(op.get_bind())
    for name, before in VIEWS_BEFORE.items():
        if before is not None:
            for view in frozen.views(before, (name,)):
                op.execute(view.create_sql(snippets))
    # the views of before no longer read it
    op.execute("DROP VIEW IF EXISTS insight_steps")
    derived.refill(insights.REFILL)
