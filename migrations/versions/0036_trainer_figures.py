"""Trainer-state jobs follow analytics.md literally (audit findings F3, F5).

F3: the trainer's train_batch_size is its per-device batch (no gradient accumulation, no other
processes), not the config's batch_size (samples per iteration): a job known only from trainer
states took its samples from it (mistral-translator: 8,660 samples where its own summary implies
about 138,555). Such a job's `jobs.batch_size` is now NULL (ingest writes NULL; this revision
clears the rows stored before it: source_file a trainer_state.json, whose batch_size could only
have come from train_batch_size) and job_settings' batch_size is the config's alone. trainer_runs
keeps train_batch_size.

F5: without a timed step row, the trainer's train_runtime was the training time and the total
(with start and end unknown, overhead 0) and its train_samples_per_second the average throughput.
analytics.md computes them from the step rows: total = end - start, training = Σ known seconds,
overhead = max(0, total - training), average throughput from rows with samples and seconds, else
the plain mean of samples_per_second; so they are null, each with a warning (job_analytics also
names the trainer's own figures, kept in job_settings and trainer_runs).

job_duration and job_performance lose their columns from_trainer_runtime and
throughput_from_trainer; PostgreSQL replaces a view only with the same columns, so the views that
read them (job_efficiency, job_energy, job_analytics) are dropped first and created again, from
their newest copies, on both engines. job_results and insight_results are refilled.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

# in dependency order: each view's copy after this revision, and before it (the views from
# job_performance on are dropped, last first, and created again: their columns change, or they
# read one whose columns do)
AFTER = {
    "job_settings": "0036",
    "job_performance": "0036",
    "job_duration": "0036",
    "job_efficiency": "0029",
    "job_energy": "0030",
    "job_analytics": "0036",
}
BEFORE = {
    "job_settings": "0035",
    "job_performance": "0033",
    "job_duration": "0030",
    "job_efficiency": "0029",
    "job_energy": "0030",
    "job_analytics": "0034",
}
REPLACED_IN_PLACE = ("job_settings",)  # same columns: its readers stay

# a trainer-state job's row: the only batch_size it could hold is the trainer's train_batch_size
CLEAR_TRAINER_BATCH_SIZE = "UPDATE jobs SET batch_size = NULL WHERE source_file LIKE '%trainer_state.json'"
# the earlier revisions' fallback, for a downgrade
RESTORE_TRAINER_BATCH_SIZE = """
UPDATE jobs SET batch_size = (SELECT CAST(r.train_batch_size AS DOUBLE PRECISION) FROM trainer_runs r
                              WHERE r.job_id = jobs.job_id)
WHERE source_file LIKE '%trainer_state.json'
"""


def _create(copies: dict[str, str]) -> None:
    bound = dialect.for_bind(op.get_bind())
    for name in reversed(copies):
        if name not in REPLACED_IN_PLACE:
            op.execute(f"DROP VIEW IF EXISTS {name}")  # names from the dicts above, never input
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(results.REFILL, insights.REFILL)  # the insight rules read job_results' figures


def upgrade() -> None:
    op.execute(CLEAR_TRAINER_BATCH_SIZE)
    _create(AFTER)


def downgrade() -> None:
    op.execute(RESTORE_TRAINER_BATCH_SIZE)
    _create(BEFORE)
