"""The trainer's train_batch_size stands in for the batch size only of a job without progress.json
(audit finding F3b).

analytics.md: a row's samples are `batch_size x delta` "when the config has batch_size", else
`samples_per_second x seconds`. The trainer state's train_batch_size is the per-device batch (no
gradient accumulation, no other processes); a progress.json job without a config batch_size that
kept a Trainer checkpoint beside it took its samples from that per-device batch instead of its own
samples_per_second x seconds (16 samples/s became 1). job_settings keeps the fallback for jobs whose
facts are the trainer's own; job_results and insight_results are refilled on both engines (the view
keeps its columns: replaced in place).

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None

VIEW = "job_settings"
BEFORE = "0018"  # the revision whose copy job_settings had before this one


def _create(revision_of: str) -> None:
    op.execute(frozen.copy(revision_of, VIEW).create_sql(dialect.for_bind(op.get_bind())))
    derived.refill(results.REFILL, insights.REFILL)  # samples feed the figures and the speed insights


def upgrade() -> None:
    _create(revision)


def downgrade() -> None:
    _create(BEFORE)
