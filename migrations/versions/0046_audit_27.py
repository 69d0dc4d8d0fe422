"""A trainer state's save_steps is the checkpoint frequency only where every checkpoint follows
it, but for a last one at the trainer's end; a name two tools logged gives all its points
(session 27 audits).

Revision 0045 took a trainer state's save_steps (the Trainer writes its default 500 whatever its
save_strategy) only where every checkpoint below the last was a multiple of it, and let the
last one off as the Trainer's save at the end of training. A run saved once an epoch that failed
after its first save (one checkpoint, at 30 of its 150 steps) had nothing below its last: its
frequency was 500, and work_at_risk, which reads it, did not fire. The last checkpoint is let off
now only where it is at or past the trainer state's max_steps; a job with no checkpoint keeps
the trainer's save_steps, as analytics.md takes a configured one before the first checkpoint.

step_facts (audit of the tools' logs): of the names that map to one column, the best-ranked
one a job logged gives the column's values, all of them. A name ranked by (rank, tool) split in
two where two tools wrote it into one folder (Lightning's TensorBoard and CSV loggers both write
train_loss): each (job, name, step) is kept by the tool that wrote it last, and only the better
ranked tool's points were read, so a killed run's event file ahead of its CSV lost its last
steps, and the figures depended on which file an ingest read last. A name now ranks as the best
of its tools rank it, with all its points; names of one rank go by name.

Both views keep their columns: replaced in place on both engines. job_results and
insight_results are refilled.

Revision ID: 0046
Revises: 0045
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0046"
down_revision = "0045"
branch_labels = None
depends_on = None


# each view's copy after this revision, and before it (same columns: replaced in place)
AFTER = {"step_facts": "0046", "job_checkpoints": "0046"}
BEFORE = {"step_facts": "0043", "job_checkpoints": "0045"}


def _replace(copies: dict[str, str]) -> None:
    bound = dialect.for_bind(op.get_bind())
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(results.REFILL, insights.REFILL)  # the figures and work_at_risk read both


def upgrade() -> None:
    _replace(AFTER)


def downgrade() -> None:
    _replace(BEFORE)
