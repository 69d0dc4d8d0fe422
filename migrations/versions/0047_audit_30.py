"""A share's message never reads at its limit: memory_headroom, gpu_idle and gpu_throttled
(session 30 audit of insights.md); no throughput of 0 over seconds that overflowed.

The three print a share and its limit in percent, each told apart by the dialect's
@apart_format (revision 0040). But a share and its limit can be two doubles whose percents are
one: memory_headroom computed its percent as 100 x peak / total, not from the share compared
(1.2 MiB of 3 is 0.39999999999999997, below 0.4, and 40.0 %: "40 % ... (below 40 %)"), and 100
times two neighbouring doubles can round to one double (0.39999999999999997 and 0.4 give 40.0).
The percent is now 100 x the share compared, and where it and the limit's are one double the
message gives the two fractions (0.39999999999999997 ... below 0.4).

job_performance (session 30 audit of docs/views.md): a job whose timed seconds add up past the
largest double (iteration times of 1e308) had an average_samples_per_second of Σ samples / inf,
0: a figure, "never 0 in disguise" (analytics.md), where its seconds are unknown. It is NaN there,
which job_analytics shows as null under its overflow warning, as it does when Σ samples overflows.

Both views keep their columns: replaced in place on both engines; job_results and insight_results
refilled.

Revision ID: 0047
Revises: 0046
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, frozen
from runlytics.warehouse import dialect, insights, results

revision = "0047"
down_revision = "0046"
branch_labels = None
depends_on = None

# in dependency order: each view's copy after this revision, and before it
AFTER = {"job_performance": "0047", "insight_gpus": "0047"}
BEFORE = {"job_performance": "0038", "insight_gpus": "0041"}


def _replace(copies: dict[str, str]) -> None:
    bound = dialect.for_bind(op.get_bind())
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(results.REFILL, insights.REFILL)  # the insight rules read job_results


def upgrade() -> None:
    _replace(AFTER)


def downgrade() -> None:
    _replace(BEFORE)
