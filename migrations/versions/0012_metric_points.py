"""Metric points: every scalar of trainers' own logs (TensorBoard, Lightning CSV, MLflow,
LLaMA-Factory) and of trainer states, under its own name.

``metric_values`` holds one value per (job, name, step), with its time and the source that
wrote it; the view ``metric_points`` reads it. ``step_facts`` is replaced: the well-known names
of the tools' logs (its mapping table) give step rows too, a progress.json value winning over a
trainer state's, and a trainer state's over a tool log's. The trainer states already stored
are copied into ``metric_values`` (their columns and the numeric keys of ``metrics``, source
``trainer_state``), as ingest writes them from now on. ``ingest_files.read_digest`` keeps a
digest of the bytes before a tool log's read offset: a file replaced by another is read whole.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import derived, engine, frozen
from runlytics.warehouse import results

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

VIEWS = ("metric_points", "step_facts")  # versions/views/0012/
STEP_FACTS_BEFORE = "0004"  # the revision that created step_facts before

CREATE = """
CREATE TABLE metric_values (
    job_id VARCHAR NOT NULL, name VARCHAR NOT NULL, step BIGINT NOT NULL, ts TIMESTAMP, value DOUBLE,
    source VARCHAR NOT NULL, PRIMARY KEY (job_id, name, step)
)
"""
# The trainer states' values as ingest stores them (ingest/trainer_state.py, METRIC_VALUES).
BACKFILL = """
INSERT INTO metric_values (job_id, name, step, ts, value, source)
SELECT job_id, name, step, NULL, value, 'trainer_state'
FROM (
    SELECT job_id, step, 'loss' AS name, loss AS value FROM trainer_steps WHERE loss IS NOT NULL
    UNION ALL SELECT job_id, step, 'eval_loss', eval_loss FROM trainer_steps WHERE eval_loss IS NOT NULL
    UNION ALL SELECT job_id, step, 'learning_rate', learning_rate FROM trainer_steps WHERE learning_rate IS NOT NULL
    UNION ALL SELECT job_id, step, 'grad_norm', grad_norm FROM trainer_steps WHERE grad_norm IS NOT NULL
    UNION ALL SELECT job_id, step, 'epoch', epoch FROM trainer_steps WHERE epoch IS NOT NULL
    UNION ALL
    SELECT job_id, step, unnest(map_keys(m)), unnest(map_values(m))
    FROM (SELECT job_id, step, CAST(metrics AS MAP(VARCHAR, DOUBLE)) AS m FROM trainer_steps WHERE metrics IS NOT NULL)
)
ON CONFLICT (job_id, name, step) DO NOTHING
"""


def upgrade() -> None:
    engine.create_table(CREATE)
    engine.duckdb_only(BACKFILL)
    op.execute("ALTER TABLE ingest_files ADD COLUMN read_digest VARCHAR")
    for view in frozen.views("0012", VIEWS):
        op.execute(view.create_sql())
    derived.refill(results.REFILL)


def downgrade() -> None:
    for view in frozen.views(STEP_FACTS_BEFORE, ("step_facts",)):
        op.execute(view.create_sql())
    op.execute("DROP VIEW IF EXISTS metric_points")
    op.execute("ALTER TABLE ingest_files DROP COLUMN read_digest")
    op.execute("DROP TABLE metric_values")
    derived.refill(results.REFILL)
