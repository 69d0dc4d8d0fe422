"""`runlytics db upgrade --db postgresql://…`: the same alembic chain builds the same tables on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from alembic import command

from runlytics import cli
from runlytics.warehouse import db, migrate, pg_samples, postgres

# DuckDB's type names (information_schema.columns.data_type) -> PostgreSQL's (format_type)
TYPES = {
    "VARCHAR": "character varying",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "DOUBLE": "double precision",
    "TIMESTAMP": "timestamp without time zone",
    "DATE": "date",
    "BOOLEAN": "boolean",
    "JSON": "json",
    "VARCHAR[]": "character varying[]",
}


def _duckdb_tables(path: Path) -> dict[str, list[tuple[str, str, bool]]]:
    with db.connection(path, read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
            "WHERE table_name IN (SELECT table_name FROM duckdb_tables()) ORDER BY table_name, ordinal_position"
        ).fetchall()
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, kind, nullable in rows:
        out.setdefault(table, []).append((column, TYPES.get(kind, kind), nullable))
    return out


def _postgres_tables(url: str) -> dict[str, list[tuple[str, str, bool]]]:
    with psycopg.connect(url) as con:
        rows = con.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
        ).fetchall()
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, kind, nullable in rows:
        # alembic's own table is varchar(32) on both; sa.String columns carry no length
        out.setdefault(table, []).append((column, kind.removesuffix("(32)"), nullable))
    return out


def _keys_duckdb(path: Path) -> dict[str, list[str]]:
    with db.connection(path, read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    return {table: sorted(columns) for table, columns in rows}


def _keys_postgres(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as con:
        rows = con.execute(
            "SELECT c.relname, array_agg(a.attname::text) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (k.conkey) "
            "WHERE k.contype = 'p' AND c.relnamespace = 'public'::regnamespace GROUP BY c.relname"
        ).fetchall()
    return {table: sorted(columns) for table, columns in rows}


# pg_samples.COLUMNS' COPY types -> format_type's names
PACKED_TYPES = {
    "varchar": "character varying",
    "timestamp": "timestamp without time zone",
    "int4[]": "integer[]",
    "int8[]": "bigint[]",
    "float8[]": "double precision[]",
    "varchar[]": "character varying[]",
}


def _view_columns(url: str, view: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as con:
        rows = con.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 ORDER BY a.attnum",
            (view,),
        ).fetchall()
    return [(name, kind) for name, kind in rows]


def _views(url: str) -> set[str]:
    with psycopg.connect(url) as con:
        return {name for (name,) in con.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")}


def test_the_chain_builds_duckdbs_tables_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """Every table, column (order, type, nullability) and primary key of a new DuckDB warehouse,
    on PostgreSQL; job_results and utilization_minutes too, which DuckDB makes from views."""
    path = tmp_path / "w.duckdb"
    assert migrate.upgrade(path) == migrate.HEAD_REVISION
    assert migrate.upgrade(db.PostgresUrl(pg_url)) == migrate.HEAD_REVISION
    duck, pg = _duckdb_tables(path), _postgres_tables(pg_url)
    # DuckDB keeps gpu_minutes' unsealed rows in gpu_minutes_hot, read with its Parquet parts through the
    # view gpu_minutes (revision 0021); PostgreSQL has the table gpu_minutes (same columns, types, key)
    duck["gpu_minutes"] = duck.pop("gpu_minutes_hot")
    # PostgreSQL packs the raw samples one row per GPU and minute (revision 0028, warehouse/pg_samples.py)
    # and reads them through its view gpu_samples, which has the columns of DuckDB's hot table
    hot = duck.pop("gpu_samples_hot")
    assert [(name, kind) for name, kind, _ in pg.pop("gpu_sample_minutes")] == [
        (name, PACKED_TYPES[kind]) for name, kind in pg_samples.COLUMNS
    ]
    assert _view_columns(pg_url, "gpu_samples") == [(name, kind) for name, kind, _ in hot]
    assert sorted(pg) == sorted(duck)
    for table, columns in duck.items():
        assert pg[table] == columns, table
    keys = _keys_duckdb(path)
    keys["gpu_minutes"] = keys.pop("gpu_minutes_hot")
    # DuckDB's hot samples have no key index (revision 0026: ingest keeps one row per key itself)
    assert "gpu_samples_hot" not in keys
    keys["gpu_sample_minutes"] = ["gpu_key", "host", "job_id", "minute"]
    assert _keys_postgres(pg_url) == keys
    # gpu_samples is a view on both engines (on PostgreSQL over the packed minutes: it has no parts)
    assert "gpu_samples" in _views(pg_url)


def test_before_0018_postgres_gets_the_tables_and_no_view_and_goes_back_down(pg_url: str) -> None:
    target = db.PostgresUrl(pg_url)
    assert migrate.upgrade(target, "0017") == "0017"
    assert _views(pg_url) == {"gpu_samples"}  # revision 0014's view over the hot table, on both engines
    tables = set(_postgres_tables(pg_url))
    assert {"jobs", "steps", "job_results", "utilization_minutes", "gpu_minutes", "metric_values"} <= tables
    with psycopg.connect(pg_url) as con:
        # revision 0011's default thresholds, as on DuckDB
        assert con.execute("SELECT count(*) FROM insight_settings").fetchone() == (25,)
    with postgres.connection(target) as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
        conn.commit()
    assert set(_postgres_tables(pg_url)) == {"alembic_version"} and _views(pg_url) == set()
    assert migrate.upgrade(target) == migrate.HEAD_REVISION


def test_db_upgrade_takes_a_url_from_db_or_the_environment(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["db", "upgrade", "--db", pg_url]) == 0
    assert capsys.readouterr().out == f"{pg_url}: schema at revision {migrate.HEAD_REVISION}\n"
    monkeypatch.setenv(db.ENV_DB, pg_url)
    assert cli.main(["db", "upgrade"]) == 0  # at head already: nothing to do
    assert capsys.readouterr().out == f"{pg_url}: schema at revision {migrate.HEAD_REVISION}\n"
    # the readers take the URL from the environment too: an unknown job is one line, exit 4
    assert cli.main(["analytics", "some-job"]) == cli.EXIT_QUERY
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "some-job" in err


def test_a_password_never_shows(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://runlytics:s3cret@127.0.0.1:1/nowhere"  # port 1: nothing listens
    assert cli.main(["db", "upgrade", "--db", url]) == cli.EXIT_WAREHOUSE
    err = capsys.readouterr().err
    assert "s3cret" not in err and "runlytics:***@127.0.0.1:1/nowhere" in err and len(err.splitlines()) == 1
    assert "s3cret" not in repr(db.PostgresUrl(url))


def test_a_newer_schema_is_refused_and_left_alone(pg_url: str) -> None:
    target = db.PostgresUrl(pg_url)
    migrate.upgrade(target)
    with psycopg.connect(pg_url) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(db.WarehouseError, match="written by a newer version"):
        migrate.upgrade(target)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("9999",)


def test_a_second_upgrade_waits_for_the_first(pg_url: str) -> None:
    target = db.PostgresUrl(pg_url)
    with psycopg.connect(pg_url) as holder:
        holder.execute(f"SELECT pg_advisory_xact_lock({postgres.SCHEMA_LOCK})")
        with pytest.raises(db.WarehouseBusy, match="waited 0.2 s"):
            migrate.upgrade(target, wait=0.2)
    # the holder's transaction ended with its connection: the lock is free
    assert migrate.upgrade(target, wait=5) == migrate.HEAD_REVISION


def test_connections_run_without_jit_in_utc(pg_url: str) -> None:
    with postgres.connection(db.PostgresUrl(pg_url)) as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
        assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"


def test_the_urls_options_stay_a_schema_of_its_own(pg_url: str) -> None:
    """libpq's options in the URL reach the server with ours: here a search_path, so that the
    warehouse is built in a schema of its own."""
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE SCHEMA runs")
    target = db.PostgresUrl(f"{pg_url}?options=-csearch_path%3Druns")
    assert migrate.upgrade(target) == migrate.HEAD_REVISION
    with postgres.connection(target) as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
        assert "jobs" in postgres.tables(conn)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'runs'").fetchone()[0] > 15  # type: ignore[index]


def test_a_failed_upgrade_leaves_the_database_as_it_was(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole chain is one transaction: a table of the same name half-way stops it, in one line."""
    with psycopg.connect(pg_url) as con:
        con.execute("CREATE TABLE gpu_minutes (n integer)")  # revision 0015's table, taken
    assert cli.main(["db", "upgrade", "--db", pg_url]) == cli.EXIT_WAREHOUSE
    err = capsys.readouterr().err
    assert err.startswith(f"runlytics db upgrade: cannot upgrade {pg_url}: ") and '"gpu_minutes" already exists' in err
    assert len(err.splitlines()) == 1
    assert set(_postgres_tables(pg_url)) == {"gpu_minutes"}
