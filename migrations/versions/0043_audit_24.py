"""A checkpoint entry's non-finite eval_loss is counted; MLflow's loss is the HF Trainer's per-step
`loss`, not its run average; Lightning's names mean the same in every tool's table; three warnings
give their true reason (session 24 audits).

- inputs.md: a non-finite value is kept out of every average, minimum and maximum, and counted.
  A checkpoint entry's NaN or infinite eval_loss was left out of the best checkpoint but counted
  nowhere: checkpoint_scores has nonfinite_eval_loss, job_checkpoints nonfinite_eval_losses (both
  new last columns) and job_analytics a warning counting them.
- The HF Trainer's MLflowCallback logs the per-step loss as `loss` and, once at the end, the run's
  average as `train_loss`, which ranked first: a finished run's loss was that one value (initial
  = final, reduction 0). `loss` now ranks above `train_loss` in step_facts' MLflow names
  (Lightning, which logs `train_loss`, logs no `loss`). The names Lightning writes to every logger
  (`train/loss_step`, `train/loss_epoch`, `val_loss_epoch`, `ptl/val_loss`, `train/lr`, ...) are
  in the TensorBoard, Lightning CSV and MLflow tables alike, after the names they had.
- job_analytics' warnings: rows with timestamps going backwards were said to have "neither
  iteration_time nor timestamps"; a first row with a timestamp but no seconds was said to have "no
  timestamp or seconds"; GPU samples carrying throttle reasons, but none followed by another of its
  GPU, were said to "carry no throttle reasons".

checkpoint_scores and job_checkpoints gain a column: PostgreSQL replaces a view only with the same
columns (and none dropped on the way down), so they and job_analytics, which reads
job_checkpoints, are dropped, last first, and created again on both engines; step_facts is
replaced in place. job_results and insight_results are refilled.

Revision ID: 0043
Revises: 0042
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0043"
down_revision = "0042"
branch_labels = None
depends_on = None

# in dependency order: each view's copy after this revision, and before it
AFTER = {
    "step_facts": "0043",
    "checkpoint_scores": "0043",
    "job_checkpoints": "0043",
    "job_analytics": "0043",
}
BEFORE = {
    "step_facts": "0018",
    "checkpoint_scores": "0004",
    "job_checkpoints": "0018",
    "job_analytics": "0042",
}
REPLACED_IN_PLACE = ("step_facts",)  # same columns: its readers stay


def _create(copies: dict[str, str]) -> None:
    bound = dialect.for_bind(op.get_bind())
    for name in reversed(copies):
        if name not in REPLACED_IN_PLACE:
            op.execute(f"DROP VIEW IF EXISTS {name}")  # names from the dicts above, never input
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(results.REFILL, insights.REFILL)  # the insight rules read job_results' figures


def upgrade() -> None:
    _create(AFTER)


def downgrade() -> None:
    _create(BEFORE)
