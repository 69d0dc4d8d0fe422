"""The alembic revision chain: builds the schema, keeps data across upgrades, refuses newer files;
a new warehouse built directly at head (warehouse/head.py) is the one the chain builds."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from alembic.script import ScriptDirectory
from test_crash import KILL_AT

from runlytics.migrations import derived
from runlytics.warehouse import db, head, insights, migrate, results, schema, snapshots, views
from tests.conftest import DEEP_ONLY, REALDATA, Lab, deep_case

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


@DEEP_ONLY  # its rule in every run: test_upgrade_from_first_revision_with_data_equals_a_new_warehouse
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
    migrate.upgrade(path, chain=True)
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


@DEEP_ONLY  # alembic by hand in every run: test_audit_s26.py (a moved warehouse); the chain: the tests above
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


def test_the_written_tables_are_the_schemas() -> None:
    """A new warehouse takes its CREATE TABLEs from warehouse/tables.sql: schema.py compiled."""
    stale = "warehouse/tables.sql is stale: run `python -m runlytics.warehouse.head`"
    assert head.written_ddl() == head.table_ddl(), stale
    assert len(head.written_ddl()) == len(schema.metadata.tables) + 1  # and alembic_version


# --- a new warehouse built directly at head (warehouse/head.py) is the chain's ---------------

# The catalog, every column of each DuckDB listing but the ids and the database's own name. Table
# order, object ids and the running constraint_index depend on the order of creation, not on
# the schema: rows are compared sorted, constraints per table as a set.
_CATALOG = {
    "tables": "SELECT * EXCLUDE (database_name, database_oid, schema_oid, table_oid, estimated_size) "
    "FROM duckdb_tables() WHERE database_name = current_database()",
    "columns": "SELECT * EXCLUDE (database_name, database_oid, schema_oid, table_oid, data_type_id) "
    "FROM duckdb_columns() WHERE database_name = current_database()",
    "constraints": "SELECT * EXCLUDE (database_name, database_oid, schema_oid, table_oid, constraint_index) "
    "FROM duckdb_constraints() WHERE database_name = current_database()",
    "indexes": "SELECT * EXCLUDE (database_name, database_oid, schema_oid, index_oid, table_oid) "
    "FROM duckdb_indexes() WHERE database_name = current_database()",
    "sequences": "SELECT * EXCLUDE (database_name, database_oid, schema_oid, sequence_oid) "
    "FROM duckdb_sequences() WHERE database_name = current_database()",
    "views": "SELECT * EXCLUDE (database_name, database_oid, schema_oid, view_oid) "
    "FROM duckdb_views() WHERE database_name = current_database()",
    "macros": "SELECT * EXCLUDE (database_name, database_oid, function_oid) "
    "FROM duckdb_functions() WHERE database_name = current_database() AND NOT internal",
    "types": "SELECT * EXCLUDE (database_name, database_oid, schema_oid, type_oid) "
    "FROM duckdb_types() WHERE database_name = current_database() AND NOT internal",
    "schemas": "SELECT * EXCLUDE (oid, database_name, database_oid, parent_schema_oid) "
    "FROM duckdb_schemas() WHERE database_name = current_database()",
}
# DuckDB writes back a one-column primary key as it was declared: in its column's definition
# ("job_id VARCHAR PRIMARY KEY", the revisions' CREATE TABLE texts) or as a table constraint
# ("PRIMARY KEY(job_id)", SQLAlchemy's). The same key either way (duckdb_constraints shows it
# once, with the column's NOT NULL): the only difference in a table's text that the comparison
# allows.
_INLINE_KEY = re.compile(r"(?P<column>\"?\w+\"?) (?P<type>[A-Z]+) PRIMARY KEY")


def _key_as_constraint(sql: str) -> str:
    found = _INLINE_KEY.search(sql)
    if found is None:
        return sql
    assert sql.endswith(");"), sql
    return f"{sql[: found.end('type')]}{sql[found.end() : -2]}, PRIMARY KEY({found['column']}));"


def _catalog(path: Path) -> dict[str, list[str]]:
    """Every object of the warehouse as DuckDB's catalog lists it, and every table's rows."""
    out: dict[str, list[str]] = {}
    with db.connection(path, read_only=True) as con:
        for name, query in _CATALOG.items():
            cursor = con.execute(query)
            columns = [d[0] for d in cursor.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            if name == "tables":
                for row in rows:
                    row["sql"] = _key_as_constraint(row["sql"])
            out[name] = sorted(repr(sorted(row.items())) for row in rows)
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall()]
        for table in tables:  # names from the catalog itself
            out[f"rows of {table}"] = sorted(repr(row) for row in con.execute(f"SELECT * FROM {table}").fetchall())
    return out


def test_new_warehouse_at_head_equals_the_chains(tmp_path: Path) -> None:
    """The same tables (columns, types, defaults, nullability, order), keys, indexes, sequences,
    views (their SQL), macros and rows (seed thresholds, alembic_version), whichever way built."""
    chain, direct = tmp_path / "chain.duckdb", tmp_path / "direct.duckdb"
    assert migrate.upgrade(chain, chain=True) == migrate.upgrade(direct) == migrate.HEAD_REVISION
    built, expected = _catalog(direct), _catalog(chain)
    assert built.keys() == expected.keys()
    for name in expected:
        only_built = sorted(set(built[name]) - set(expected[name]))
        only_chain = sorted(set(expected[name]) - set(built[name]))
        assert built[name] == expected[name], (
            f"{name}: only built directly {only_built}; only by the chain {only_chain}"
        )
    # what the comparison covers is there to compare
    assert len(expected["views"]) == len(views.ORDER) + 2  # and gpu_samples, gpu_minutes over their parts
    assert expected["rows of alembic_version"] == [repr((migrate.HEAD_REVISION,))]
    assert len(expected["rows of insight_settings"]) == len(insights.DEFAULTS)


def test_new_warehouse_is_built_without_the_chain(tmp_path: Path) -> None:
    """`runlytics db upgrade` on a new file neither imports alembic nor leaves anything beside the
    warehouse but its lock and snapshots; an existing file still upgrades through the chain."""
    path = tmp_path / "w.duckdb"
    code = (
        "import sys; from pathlib import Path; from runlytics.warehouse import migrate; "
        "print(migrate.upgrade(Path(sys.argv[1]))); print('alembic' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [migrate.HEAD_REVISION, "False"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb", "w.duckdb.ingest.lock", "w.duckdb.snapshots"]
    assert path.stat().st_mode & 0o077 == 0  # private, as every warehouse db.connect creates
    # at an older revision, the chain takes it to head
    old = tmp_path / "old.duckdb"
    assert migrate.upgrade(old, "0024") == "0024"
    assert migrate.upgrade(old) == migrate.HEAD_REVISION


# test_crash.KILL_AT runs `runlytics db upgrade` killed with SIGKILL right before or after the
# n-th call of module.function (argv: "module:function:before|after" n, then the arguments)


@pytest.mark.parametrize(
    ("kill_at", "complete"),
    [
        # every object created, not committed (deep runs: os:replace:before is a kill before the rename too)
        deep_case("runlytics.warehouse.insights:fill_defaults:after", False),
        ("os:replace:before", False),  # committed and checkpointed under the temporary name
        ("os:replace:after", True),  # renamed into place, the folder not synced yet
    ],
)
def test_new_warehouse_killed_while_built_is_whole_or_absent(tmp_path: Path, kill_at: str, complete: bool) -> None:
    path = tmp_path / "w.duckdb"
    args = [sys.executable, "-c", KILL_AT, kill_at, "1", "db", "upgrade", "--db", str(path)]
    killed = subprocess.run(args, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert path.exists() == complete
    if complete:
        with db.connection(path, read_only=True) as con:
            assert migrate.current_revision(con) == migrate.HEAD_REVISION
    # the next run builds it (or finds it at head) and clears what the killed one left
    assert migrate.upgrade(path) == migrate.HEAD_REVISION
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb", "w.duckdb.ingest.lock", "w.duckdb.snapshots"]
    reference = tmp_path / "reference" / "w.duckdb"
    migrate.upgrade(reference)
    assert _catalog(path) == _catalog(reference)


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


@contextmanager
def _statements_run() -> Iterator[list[str]]:
    """Within: every statement SQLAlchemy sends to a database, in order."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    ran: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        ran.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield ran
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


def test_upgrade_from_first_revision_with_data_equals_a_new_warehouse(lab: Lab, tmp_path: Path) -> None:
    _filled_lab(lab)  # a new warehouse at head, filled by ingest
    old = tmp_path / "old.duckdb"
    # one upgrade per revision that gets rows, then one to head: every revision after the last of
    # them runs on the data all the same (each upgrade call costs ~0.25 s of its own, 40 s in all)
    for revision in sorted(FILLED_AT):
        assert migrate.upgrade(old, revision) == revision
        tables = FILLED_AT[revision]
        with db.connection(old) as con:
            con.execute(f"ATTACH '{lab.db}' AS src (READ_ONLY)")
            _copy(con, tables)
            if "gpu_samples" in tables:  # ingest refreshes the results of the jobs it gave samples
                jobs = {"job_ids": [r[0] for r in con.execute("SELECT DISTINCT job_id FROM gpu_samples").fetchall()]}
                con.execute(results.DELETE_JOBS, jobs)
                con.execute(results.INSERT_JOBS, jobs)
            con.execute("DETACH src")
    with _statements_run() as ran:
        assert migrate.upgrade(old, "head") == _revisions()[-1]
    # of the ~20 revisions since 0005 that ask to refill job_results and insight_results, the
    # upgrade refills each once, at its end (migrations/derived.py)
    assert [ran.count(statement) for statement in derived.DEFERRABLE] == [1, 1]

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


@DEEP_ONLY  # every revision's down and up runs in every run (test_downgrade_to_base_and_back), without data
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


def test_a_moved_warehouse_names_its_own_parts_before_the_chain(tmp_path: Path) -> None:
    """The views over sealed parts name them by absolute path: after a move, the chain would bind
    them to the old place (an error, or another warehouse's files). relink_parts, run by every
    upgrade before the chain, makes them name the moved warehouse's own parts."""
    from runlytics.ingest.formats.nvidia_smi import CsvImport
    from runlytics.ingest.pipeline import ingest

    old = tmp_path / "old"
    (old / "jobs" / "j1").mkdir(parents=True)
    (old / "jobs" / "j1" / "progress.json").write_text('{"job_id": "j1", "history": [{"step": 1}]}')
    log = old / "gpu.csv"
    log.write_text(
        "timestamp, index, utilization.gpu [%], memory.used [MiB]\n"
        "2024/01/01 00:00:00.000, 0, 50 %, 100 MiB\n2024/01/01 00:00:01.000, 0, 70 %, 300 MiB\n"
    )
    ingest(old / "w.duckdb", [old / "jobs"], csv_imports=[CsvImport(log, "j1")], wait=10)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    shutil.rmtree(old / "w.duckdb.parts")  # the old place has no parts any more
    with db.connection(new / "w.duckdb") as con:
        with pytest.raises(duckdb.IOException, match="No files found"):
            con.execute("SELECT count(*) FROM gpu_samples").fetchone()
        migrate.relink_parts(con)
        assert con.execute("SELECT count(*), max(utilization_percent) FROM gpu_samples").fetchone() == (2, 70.0)
        assert con.execute("SELECT count(*) FROM gpu_minutes").fetchone() == (1,)  # both in one minute
        views = con.execute("SELECT sql FROM duckdb_views() WHERE view_name IN ('gpu_samples', 'gpu_minutes')")
        for (sql,) in views.fetchall():
            assert str(new / "w.duckdb.parts") in sql and str(old) + "/" not in sql
