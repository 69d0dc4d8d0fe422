"""A job's timing figures come from its progress.json rows; exact seconds between two times; no
negative total (audit findings P4, P2, A1).

P4: a checkpoint's trainer_state.json or a trainer's own log (metrics.csv, trainer_log.jsonl,
TensorBoard, MLflow) in a progress.json job's folder logs at other steps than progress.json; its
rows, merged into the job's rows, cut the progress.json rows' intervals (Δ = step − the previous
row's step over every row): a trainer row at step 5 between the progress rows 0 and 10 halved
row 10's seconds and samples, and made the first row untimed (no start). A job's timing rows are
now its progress.json rows when it has any, else all its rows (a job known from trainer states
or tool logs alone keeps the rules it had): Δ, the previous timestamp, seconds and samples run
over them; the other rows of such a job cover no interval (Δ, seconds and samples null) and keep
their losses; the start comes from the first timing row, the end (a time, no interval) from the
later of the last row's timestamp (by step, of all the job's rows) and the last timing row's; stall
reads the timing rows' gaps, silent_running their median gap and the same latest time; the
running-job ETA (warehouse/health.py) counts its last rows among the timing rows. step_metrics
gains timing_no and timing_count, job_performance timing_rows, insight_rows last_timing_row (each
last).

P2: an end before the start gives a null total_seconds and overhead_seconds, with a warning,
instead of a negative duration.

A1: ``@seconds_between`` subtracts exact microseconds (DuckDB) or takes the interval's exact
epoch (PostgreSQL) and rounds once, where it subtracted two epochs rounded to doubles (1.2690000534
s for 1.269); job_duration's total is the difference of the two times. Every view that uses it is
created again so that its text renders the new snippet (gpu_sample_intervals and insight_gpus
with their texts unchanged). job_results and insight_results are refilled.

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None

# in dependency order: each view's copy after this revision, and before it. The views whose
# columns change (step_metrics, job_performance, insight_rows) and those that read them are
# dropped, last first, and created again: on the way down PostgreSQL replaces no view that loses
# a column. The others keep their columns and are replaced in place.
AFTER = {
    "step_metrics": "0038",
    "job_performance": "0038",
    "job_duration": "0038",
    "gpu_sample_intervals": "0010",
    "job_efficiency": "0029",
    "job_energy": "0030",
    "job_analytics": "0038",
    "insight_rows": "0038",
    "insight_steps": "0038",
    "insight_losses": "0019",
    "insight_speed": "0019",
    "insight_gpus": "0037",
    "insight_lifecycle": "0019",
    "job_insights": "0037",
}
BEFORE = {
    "step_metrics": "0030",
    "job_performance": "0036",
    "job_duration": "0036",
    "gpu_sample_intervals": "0010",
    "job_efficiency": "0029",
    "job_energy": "0030",
    "job_analytics": "0036",
    "insight_rows": "0030",
    "insight_steps": "0030",
    "insight_losses": "0019",
    "insight_speed": "0019",
    "insight_gpus": "0037",
    "insight_lifecycle": "0019",
    "job_insights": "0037",
}
REPLACED_IN_PLACE = ("gpu_sample_intervals", "insight_gpus")  # same columns, read by none dropped


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
