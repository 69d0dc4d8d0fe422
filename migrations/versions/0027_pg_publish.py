"""PostgreSQL publish (issue #18): which models' slow_vs_peers a publish made stale.

``runlytics ingest --db postgresql://…`` recomputes slow_vs_peers on PostgreSQL (it compares a
job with other ingesters' jobs) for the models of the completed jobs it published. Each batch
records those models in ``peer_changes`` in its own transaction; a recompute, under the models'
advisory locks, removes the marks it sees and computes from every job committed. A run whose
marks another ingester's recompute already removed has nothing left to compute (four ingesters
publishing the same models at once recompute them once or twice, not four times), and a run
killed between its batches and its recompute leaves its marks for the next recompute. No key:
two ingesters' batches of one model insert without waiting for each other.

Both engines get the table, so that the schema stays one (tests/test_postgres_schema.py);
DuckDB leaves it empty.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

CREATE = (
    "CREATE TABLE peer_changes (model_name VARCHAR NOT NULL, ingester VARCHAR NOT NULL, changed_at TIMESTAMP NOT NULL)"
)


def upgrade() -> None:
    engine.create_table(CREATE)


def downgrade() -> None:
    op.execute("DROP TABLE peer_changes")
