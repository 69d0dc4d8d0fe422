"""Every null figure of job_analytics comes with a warning that says why (audit finding F16).

analytics.md: "A figure that cannot be computed from the data at hand is null, and the job's
warnings say why". total_samples, average and peak samples per second, average_iteration_time
(timed rows covering no iteration), the eval losses, the GPU figures a reading lacks, energy
(no GPU samples, no samples to divide by), average_throttled_share, best_checkpoint, and the
throughput and overall scores were null without one. job_analytics gains those warnings
(appended: the earlier warnings keep their texts and order); no figure changes. job_results is
refilled on both engines (on PostgreSQL the view keeps its columns, so it is replaced in place).

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, results

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None

VIEW = "job_analytics"
BEFORE = "0004"  # the revision whose copy job_analytics had before this one


def _create(revision_of: str) -> None:
    op.execute(frozen.copy(revision_of, VIEW).create_sql(dialect.for_bind(op.get_bind())))
    derived.refill(results.REFILL)


def upgrade() -> None:
    _create(revision)


def downgrade() -> None:
    _create(BEFORE)
