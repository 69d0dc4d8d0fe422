"""Each GPU insight carries its GPU's key: the fleet's keyset pages neither skip nor repeat rows
when two GPUs of one job share host and index (audit finding G6).

Inside containers and Slurm cgroups each task numbers its GPUs from 0, so two GPUs of one job on
one host can both be index 0, told apart by UUID only (gpu_samples.gpu_key, revision 0010). Two
such idle GPUs gave two gpu_idle insights equal in every field, and so in every column of the
order a fleet page's cursor compares (warehouse/insight_list.py): a page that ended between them
skipped the second (23 of 46 rows in pages of 1). insight_gpus and job_insights now carry gpu_key
(the UUID, else '#<index>'; NULL for the other kinds) after gpu_index, and insight_results holds
it in the same place, so that ``INSERT INTO insight_results SELECT i.*, as_of`` stays the same
text at every revision. insight_results is derived: it is dropped and created again with the
column (on PostgreSQL with its job_id index, revision 0022), and refilled.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import dialect, insights

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None

# in dependency order, each view's copy after this revision and before it; both are dropped (last
# first) and created again: their columns change, which PostgreSQL does not replace in place
AFTER = {"insight_gpus": "0037", "job_insights": "0037"}
BEFORE = {"insight_gpus": "0033", "job_insights": "0019"}

CREATE_RESULTS = (
    "CREATE TABLE insight_results (job_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, severity VARCHAR NOT NULL, "
    "first_step BIGINT, last_step BIGINT, start_time TIMESTAMP, end_time TIMESTAMP, host VARCHAR, "
    "gpu_index INTEGER, gpu_key VARCHAR, value DOUBLE, reference DOUBLE, message VARCHAR, "
    "as_of TIMESTAMP NOT NULL)"
)
# revision 0022's index on PostgreSQL (a publish deletes a job's rows by job_id)
PG_INDEX = "CREATE INDEX insight_results_job_id ON insight_results (job_id)"


def _rebuild(create_results: str, copies: dict[str, str]) -> None:
    for name in reversed(copies):
        op.execute(f"DROP VIEW IF EXISTS {name}")  # names from the dicts above, never input
    op.execute("DROP TABLE insight_results")
    engine.create_table(create_results)
    if engine.on_postgres():
        op.execute(PG_INDEX)
    bound = dialect.for_bind(op.get_bind())
    for name, revision_of in copies.items():
        op.execute(frozen.copy(revision_of, name).create_sql(bound))
    derived.refill(insights.REFILL)


def upgrade() -> None:
    _rebuild(CREATE_RESULTS, AFTER)


def downgrade() -> None:
    _rebuild(insights.CREATE_RESULTS, BEFORE)
