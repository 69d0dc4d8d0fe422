"""The alembic revision chain: builds the schema, keeps data across upgrades, refuses newer files."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from alembic.script import ScriptDirectory

from runlytics.warehouse import db, migrate, results, schema, snapshots, views
from tests.conftest import REALDATA, Lab

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


# --- an old warehouse with data, upgraded, computes what a new one does ----------------------

SPOOL_T0 = 1_793_610_000  # 2026-11-02T09:00:00Z, when the sample job llama-sft-001 starts

# The tables each revision adds, filled as soon as that revision exists (as ingest would have).
FILLED_AT = {
    "0001": ("jobs", "steps", "step_gpus", "checkpoints", "ingest_files"),
    "0002": ("trainer_steps", "trainer_runs"),
    "0004": ("gpu_samples",),
    "0005": ("ingest_runs",),
}


def _filled_lab(lab: Lab) -> None:
    """The sample jobs, every real trainer state, and GPU samples of two GPUs for one job."""
    shutil.copytree(REPO / "samples" / "jobs", lab.root, dirs_exist_ok=True)
    hf = REALDATA / "hf_trainer_state"
    for job in hf.iterdir():
        if job.is_dir() and job.name != "lfs-pointer":
            shutil.copytree(job, lab.root / job.name)
    spool = lab.root.parent / "spool"
    spool.mkdir()
    samples = [
        {"ts": SPOOL_T0 + t, "host": "node-01", "job_id": "llama-sft-001", "gpu_index": gpu,
         "utilization_percent": util, "memory_used_mb": 1000.0 + t, "temperature_c": 60.0 + gpu,
         "power_w": 300.0 - 10 * t, "clocks_event_reasons": 0x4 if t == 10 else 0}
        for t in (0, 5, 10, 15, 20, 25) for gpu, util in ((0, 90.0 - t), (1, 5.0))
    ]  # fmt: skip
    (spool / "node-01.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.failed == 0


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def _copy(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...]) -> None:
    """Copy these tables' rows from the attached warehouse ``src``, in the columns they have now."""
    for table in tables:
        cols = ", ".join(_columns(con, table))
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM src.{table}")


def _normal(value: Any) -> Any:
    """A value comparable across warehouses: floats to 12 digits (summation order), NaN as text."""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else float(f"{value:.12g}")
    if isinstance(value, list | tuple):
        return tuple(_normal(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _normal(v)) for k, v in value.items()))
    return value


def _contents(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every view of the head revision and the tables derived from them: columns and rows."""
    out = {}
    with db.connection(path, read_only=True) as con:
        for name in (*views.ORDER, "job_results", "utilization_minutes", "insight_results", "insight_jobs"):
            cursor = con.execute(f"SELECT * FROM {name}")
            rows = [_normal(row) for row in cursor.fetchall()]
            out[name] = ([d[0] for d in cursor.description], sorted(rows, key=repr))
    return out


def test_upgrade_from_first_revision_with_data_equals_a_new_warehouse(lab: Lab, tmp_path: Path) -> None:
    _filled_lab(lab)  # a new warehouse at head, filled by ingest
    old = tmp_path / "old.duckdb"
    for revision in _revisions():
        assert migrate.upgrade(old, revision) == revision
        tables = FILLED_AT.get(revision, ())
        if not tables:
            continue
        with db.connection(old) as con:
            con.execute(f"ATTACH '{lab.db}' AS src (READ_ONLY)")
            _copy(con, tables)
            if "gpu_samples" in tables:  # ingest refreshes the results of the jobs it gave samples
                jobs = {"job_ids": [r[0] for r in con.execute("SELECT DISTINCT job_id FROM gpu_samples").fetchall()]}
                con.execute(results.DELETE_JOBS, jobs)
                con.execute(results.INSERT_JOBS, jobs)
            con.execute("DETACH src")

    new, upgraded = _contents(lab.db), _contents(old)
    assert set(upgraded) == set(new)
    for name in new:
        assert upgraded[name] == new[name], name
    # the data reaches every view: jobs of all three sources, GPU samples, trainer states
    assert len(new["job_analytics"][1]) == 11
    assert len(new["job_gpus"][1]) == 2
    assert {r[0] for r in new["gpu_utilization_readings"][1]} >= {"llama-sft-001", "mistral-lora-002"}
    assert len(new["step_facts"][1]) > 1000


def _derived_equal_their_views(path: Path) -> None:
    with db.connection(path, read_only=True) as con:
        for table, select in (
            ("job_results", "SELECT * FROM job_analytics"),
            ("utilization_minutes", results.UTILIZATION_SELECT.format(where="")),
        ):
            stored = sorted(map(repr, con.execute(f"SELECT * FROM {table}").fetchall()))
            computed = sorted(map(repr, con.execute(select).fetchall()))
            assert stored == computed, table


def test_0010_down_and_up_with_two_gpus_under_one_index_keeps_derived_tables_equal(lab: Lab, tmp_path: Path) -> None:
    """Keyed by index again, two GPUs' samples at the same times collapse: both derived tables follow."""
    from alembic import command
    from sqlalchemy import create_engine

    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        {"ts": 1767225600 + t, "host": "h", "job_id": "j", "gpu_index": 0, "gpu_uuid": uuid, "utilization_percent": u}
        for uuid, u in (("GPU-aaaa", 90.0), ("GPU-bbbb", 10.0)) for t in range(0, 180, 10)
    ]  # fmt: skip
    (spool / "h-2026010100.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    lab.write_job("j", {"job_id": "j", "status": "running", "history": [{"step": 1, "loss": 1.0}]})
    lab.ingest(lab.root, spool_root=spool)
    assert lab.query("SELECT gpus_seen FROM job_resources") == [(2,)]
    _derived_equal_their_views(lab.db)

    def alembic(action: str, revision: str) -> None:
        engine = create_engine(f"duckdb:///{lab.db}")
        with engine.connect() as conn:
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            getattr(command, action)(config, revision)
            conn.commit()
        engine.dispose()

    alembic("downgrade", "0009")
    assert lab.query("SELECT count(*), count(DISTINCT gpu_index) FROM gpu_samples") == [(18, 1)]
    _derived_equal_their_views(lab.db)
    alembic("upgrade", "head")
    _derived_equal_their_views(lab.db)
