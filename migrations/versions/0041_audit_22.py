"""A -Infinity utilization is no idle time; silent_running's message tells its figures apart; two
warnings of job_analytics give their true reason (session 22 audits).

- gpu_idle's share counted a -Infinity utilization reading as time below the threshold while the
  time with a reading (its denominator) leaves non-finite readings out: a GPU read at -Infinity
  twice and at 50 % once was idle for "200.0 % of its time". Idle time is now time with a finite
  reading below the threshold, in insight_gpus (samples at a threshold other than 10 %, step
  readings) as in the per-minute rollups (warehouse/rollups.py, from this revision's ingests on;
  minutes rolled up before keep what they counted).
- silent_running printed the silence and its limit with %.6g, so 1800.000001 s read "1800 s,
  longer than 1800 s": each is printed with the first format that tells them apart, as the
  other rules' messages since revision 0040.
- job_analytics' "end unknown" warning said the job had no step timestamps where only its last
  row lacks one; its energy warning said the samples carry no power where one sample does, but
  no sample and the next of its GPU both carry a finite one (what the energy integrates).

Every view keeps its columns: each is replaced in place. job_results and insight_results are
refilled.

Revision ID: 0041
Revises: 0040
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0041"
down_revision = "0040"
branch_labels = None
depends_on = None

# in dependency order: each view's copy after this revision, and before it
AFTER = {
    "job_analytics": "0041",
    "insight_steps": "0041",
    "insight_gpus": "0041",
}
BEFORE = {
    "job_analytics": "0040",
    "insight_steps": "0040",
    "insight_gpus": "0040",
}


def _create(copies: dict[str, str]) -> None:
    bound = dialect.for_bind(op.get_bind())
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(results.REFILL, insights.REFILL)  # the insight rules read job_results' figures


def upgrade() -> None:
    _create(AFTER)


def downgrade() -> None:
    _create(BEFORE)
