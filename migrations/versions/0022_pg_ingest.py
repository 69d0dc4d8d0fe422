"""Ingest into PostgreSQL through a local stage (issue #18): what a stage owes PostgreSQL, and who
owns each job there.

``runlytics ingest --db postgresql://…`` ingests into a local DuckDB warehouse (the stage) and
then publishes what the run changed (ingest/postgres.py). On the stage, ``publish_queue`` holds
the jobs whose rows changed and are not yet on PostgreSQL (filled in the transaction before the
refresh that empties refresh_queue, emptied after PostgreSQL's commit), and ``publish_marks``
named marks (the newest ingest run published). On PostgreSQL, ``job_owners`` names the ingester
that published each job: another one's job is not overwritten. Both engines get all three
tables, so that the schema stays one (tests/test_postgres_schema.py); each engine leaves the
other's empty.

On PostgreSQL only, an index on job_id of each per-job table without a key that starts with it:
a publish deletes a job's rows before copying the stage's, which would otherwise read the whole
table (DuckDB finds a job's rows by its blocks' min/max, and an index there costs more than it saves).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

CREATE = (
    "CREATE TABLE publish_queue (job_id VARCHAR PRIMARY KEY)",
    "CREATE TABLE publish_marks (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL)",
    "CREATE TABLE job_owners (job_id VARCHAR PRIMARY KEY, ingester VARCHAR NOT NULL, published_at TIMESTAMP NOT NULL)",
)
TABLES = ("publish_queue", "publish_marks", "job_owners")
# PostgreSQL: the per-job tables whose key does not start with job_id (or that have no key)
JOB_INDEXED = (
    "steps", "step_gpus", "trainer_steps", "metric_values", "job_results", "utilization_minutes",
    "insight_results", "ingest_files",
)  # fmt: skip


def upgrade() -> None:
    for statement in CREATE:
        engine.create_table(statement)
    if engine.on_postgres():
        for table in JOB_INDEXED:
            op.execute(f"CREATE INDEX {table}_job_id ON {table} (job_id)")


def downgrade() -> None:
    if engine.on_postgres():
        for table in JOB_INDEXED:
            op.execute(f"DROP INDEX {table}_job_id")
    for table in TABLES:
        op.execute(f"DROP TABLE {table}")
