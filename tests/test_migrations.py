"""The alembic revision chain: builds the schema, keeps data across upgrades, refuses newer files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from alembic.script import ScriptDirectory

from runlytics.warehouse import db, migrate, schema, snapshots

REPO = Path(__file__).resolve().parent.parent


def _revisions() -> list[str]:
    """The chain from the first revision to head."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions()))]


FIRST_REVISION_DATA = [
    "INSERT INTO jobs (job_id, status, started_at, ended_at, config, batch_size, ingested_at) VALUES "
    "('j1', 'completed', TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:30', "
    "'{\"batch_size\": 2}', 2, TIMESTAMP '2026-01-02 00:00:00')",
    "INSERT INTO steps (job_id, step, ts, loss, iteration_time) VALUES "
    "('j1', 10, TIMESTAMP '2026-01-01 00:00:10', 2.0, 1.0), ('j1', 20, TIMESTAMP '2026-01-01 00:00:20', 1.0, 1.0)",
    "INSERT INTO step_gpus (job_id, step, gpu_index, utilization_percent, memory_used_mb, temperature_c) VALUES "
    "('j1', 10, 0, 90, 1000, 60), ('j1', 20, 0, 80, 3000, 70)",
    "INSERT INTO checkpoints (job_id, step, source) VALUES ('j1', 20, 'folder')",
    "INSERT INTO ingest_files (path, kind, outcome, rows, warning_count, first_seen_at, last_read_at) VALUES "
    "('/jobs/j1/progress.json', 'progress', 'ingested', 2, 0, now()::TIMESTAMP, now()::TIMESTAMP)",
]


def test_upgrade_from_first_revision_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    revisions = _revisions()
    migrate.upgrade(path, revisions[0])
    with db.connection(path) as con:
        for statement in FIRST_REVISION_DATA:
            con.execute(statement)
    for revision in revisions[1:]:
        assert migrate.upgrade(path, revision) == revision
    assert migrate.upgrade(path) == migrate.head_revision()

    with db.connection(path, read_only=True) as con:
        assert con.execute("SELECT job_id, status, batch_size FROM jobs").fetchall() == [("j1", "completed", 2.0)]
        assert con.execute("SELECT step, loss FROM steps ORDER BY step").fetchall() == [(10, 2.0), (20, 1.0)]
        assert con.execute("SELECT count(*) FROM step_gpus").fetchone() == (2,)
        assert con.execute("SELECT step FROM checkpoints").fetchall() == [(20,)]
        assert con.execute("SELECT outcome, rows FROM ingest_files").fetchall() == [("ingested", 2)]
        # the views of head compute over the old data: 2 samples/iteration x 20 iterations over 20 s
        row = con.execute(
            "SELECT total_seconds, training_seconds, average_samples_per_second, peak_gpu_memory_mb, "
            "final_checkpoint FROM job_analytics"
        ).fetchone()
    assert row == (30.0, 20.0, 2.0, 3000.0, "checkpoint-20")
    with db.connection(path, read_only=True) as con:
        # revision 0002: trainer-state tables, and the merged step rows with grad norm and epoch
        assert con.execute("SELECT count(*) FROM trainer_steps").fetchone() == (0,)
        assert con.execute("SELECT step, loss, grad_norm, epoch, source FROM step_facts ORDER BY step").fetchall() == [
            (10, 2.0, None, None, "progress"),
            (20, 1.0, None, None, "progress"),
        ]


def test_head_matches_schema_module(tmp_path: Path) -> None:
    """warehouse/schema.py describes exactly the tables that the migrations build."""
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    with db.connection(path, read_only=True) as con:
        built = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE') "
            "AND table_name <> 'alembic_version' AND table_name NOT IN (SELECT unnest($derived))",
            {"derived": list(schema.DERIVED_TABLES)},
        ).fetchall()
    declared = {(t.name, c.name) for t in schema.metadata.sorted_tables for c in t.columns}
    assert set(built) == declared


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    engine = create_engine(f"duckdb:///{path}")
    with engine.connect() as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
        conn.commit()
    engine.dispose()
    with db.connection(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'jobs'").fetchone() == (
            0,
        )
    assert migrate.upgrade(path) == migrate.head_revision()


def test_newer_warehouse_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    for copy in (path, snapshots.latest(path)):  # a newer runlytics upgraded and published
        with db.connection(copy) as con:
            con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(db.WarehouseError, match="9999_from_the_future.*newer version"):
        migrate.ensure_current(path)
    with pytest.raises(db.WarehouseError, match="newer version"):
        migrate.ensure_current(path, locked=True)
    with pytest.raises(db.WarehouseError, match="newer version"):
        migrate.upgrade(path)
    # and the file was left as it was
    with db.connection(path, read_only=True) as con:
        assert migrate.current_revision(con) == "9999_from_the_future"


def test_plain_alembic_upgrade_head(tmp_path: Path) -> None:
    path = tmp_path / "plain.duckdb"
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run(
        [str(alembic), "-x", f"db={path}", "upgrade", "head"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert migrate.current_revision(con) == migrate.head_revision()
    finally:
        con.close()


def test_head_constant_matches_the_chain() -> None:
    assert migrate.HEAD_REVISION == migrate.head_revision() == _revisions()[-1]
