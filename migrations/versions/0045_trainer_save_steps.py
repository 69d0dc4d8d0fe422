"""A trainer state's save_steps is the checkpoint frequency only where the checkpoints follow it
(session 26 audit).

analytics.md: the frequency is the config's save_steps when set, else the median gap between
consecutive checkpoints. A job without a config (trainer states alone), or whose config has no
save_steps, took the trainer state's save_steps, which the Hugging Face Trainer writes (default
500) whatever its save_strategy: a run saved once an epoch (checkpoints 30, 60, 90) had a
frequency of 500, and work_at_risk, which reads it, did not fire. A trainer state's save_steps
counts now only where every checkpoint below the last (the Trainer also saves at its end) is a
multiple of it; the config's is taken as before.

job_checkpoints keeps its columns: replaced in place on both engines. job_results and
insight_results are refilled.

Revision ID: 0045
Revises: 0044
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0045"
down_revision = "0044"
branch_labels = None
depends_on = None


def _replace(revision_of: str) -> None:
    op.execute(frozen.copy(revision_of, "job_checkpoints").create_sql(dialect.for_bind(op.get_bind())))
    derived.refill(results.REFILL, insights.REFILL)  # work_at_risk reads the frequency


def upgrade() -> None:
    _replace("0045")


def downgrade() -> None:
    _replace("0043")
