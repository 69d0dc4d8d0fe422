"""`runlytics db copy --to postgresql://…`: a DuckDB warehouse's tables, row for row, on PostgreSQL."""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from conftest import REALDATA, Lab
from insight_generator import clean_job

from runlytics import cli
from runlytics.warehouse import db, migrate, pg_copy, postgres, sidefiles, snapshots

NOW_MS = int(time.time()) * 1000


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated jobs (some GPUs as readings per step, some as sampler samples sealed into Parquet
    parts, a few samples still hot), odd values (NaN and infinite losses, an empty string), the
    real trainer states and tool logs of shared/realdata (one file fails: a Git LFS pointer)."""
    lab = Lab(tmp_path_factory.mktemp("copy"))
    rng = random.Random(18)
    spooled: list[dict[str, Any]] = []
    for i in range(8):
        job = clean_job(rng, f"gen-{i:02d}", NOW_MS)
        doc = job.progress()
        if i == 0:
            doc["history"][3]["loss"] = math.nan
            doc["history"][4]["loss"] = math.inf
            doc["config"]["note"] = ""
            doc["config"]["clip"] = {"max": math.inf, "floor": math.nan, "name": "NaN"}  # JSON as Python writes it
        lab.write_job(job.job_id, doc)
        spooled += job.spool()
    hot = int(time.time()) - 30  # the current hour's samples stay in the hot table
    spooled += [
        {"ts": hot + t, "host": "node-hot", "job_id": "gen-00", "gpu_index": 0, "utilization_percent": 40.0 + t}
        for t in range(5)
    ]
    # a sample of a day retention prunes (the default 30 days): gpu_pruned_days has a row to copy
    old = {"ts": 1735732800, "host": "node-old", "job_id": "gen-01", "gpu_index": 0, "utilization_percent": 7.0}
    spooled.append(old)
    (lab.root.parent / "spool").mkdir()
    (lab.root.parent / "spool" / "a.jsonl").write_text("".join(json.dumps(s) + "\n" for s in spooled))
    shutil.copytree(REALDATA / "hf_trainer_state", lab.root / "hf")
    shutil.copytree(REALDATA / "tool_logs", lab.root / "tools")
    lab.ingest(lab.root, spool_root=lab.root.parent / "spool")
    return lab.db


def _norm(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return tuple(value)
    return value


def _source_rows(path: Path, origin: str, columns: list[str], json_columns: set[str]) -> list[tuple[Any, ...]]:
    con = snapshots.connect_latest(path)
    try:
        names = ", ".join(db.quote_identifier(c) for c in columns)
        rows = con.execute(f"SELECT {names} FROM {origin}").fetchall()
    finally:
        con.close()
    out = []
    for row in rows:
        # DuckDB hands JSON over as its text, psycopg as the value it parses: compare values, with
        # JSON's non-finite numbers as the strings PostgreSQL's json holds instead (docs/postgresql.md)
        values = [
            json.loads(v, parse_constant=str) if c in json_columns and v is not None else v
            for c, v in zip(columns, row, strict=True)
        ]
        out.append(tuple(_norm(v) for v in values))
    return sorted(out, key=repr)


def _target_rows(url: str, table: str) -> tuple[list[str], set[str], list[tuple[Any, ...]]]:
    with psycopg.connect(url) as con:
        described = con.execute(
            "SELECT column_name, udt_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        rows = con.execute(f'SELECT * FROM "{table}"').fetchall()
    columns = [name for name, _ in described]
    json_columns = {name for name, udt in described if udt == "json"}
    return columns, json_columns, sorted((tuple(_norm(v) for v in row) for row in rows), key=repr)


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as con:
        tables = [t for (t,) in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}  # type: ignore[index]


def test_every_table_is_copied_row_for_row(warehouse: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["db", "copy", "--db", str(warehouse), "--to", pg_url]) == 0
    out, err = capsys.readouterr()
    total = 0
    for table, origin in pg_copy.COPIED.items():
        columns, json_columns, copied = _target_rows(pg_url, table)
        source = _source_rows(warehouse, origin, columns, json_columns)
        assert copied == source, table
        assert f"copied {table}: {len(source):,} row" in err  # progress on stderr, a line per table
        total += len(source)
    assert out.strip().endswith(f"(schema at revision {migrate.HEAD_REVISION})")
    assert f"copied {total:,} rows of {len(pg_copy.COPIED)} tables" in out
    counts = _counts(pg_url)
    # what the warehouse holds, so that every table's comparison above meant something
    empty = {"refresh_queue", "insight_results", *pg_copy.NOT_COPIED}  # NOT_COPIED: never filled by a copy
    assert [table for table, n in counts.items() if n == 0 and table not in empty] == []
    # the samples of Parquet parts and of the hot table all went into PostgreSQL's table
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        # gpu_parts lists the minutes' parts too (revision 0021): the samples' alone
        parted = con.execute("SELECT sum(rows) FROM gpu_parts WHERE table_name = 'gpu_samples'").fetchone()[0]
        hot = con.execute("SELECT count(*) FROM gpu_samples_hot").fetchone()[0]
    finally:
        con.close()
    assert parted > 0 and hot == 5
    with psycopg.connect(pg_url) as pg:  # PostgreSQL's view over its packed minutes (revision 0028)
        assert pg.execute("SELECT count(*) FROM gpu_samples").fetchone() == (parted + hot,)
    assert counts["gpu_parts"] == counts["gpu_parts_retired"] == 0
    assert any(sidefiles.parts(warehouse).rglob("*.parquet"))
    with psycopg.connect(pg_url) as con:
        # NaN and infinite losses, to the bit
        losses = con.execute("SELECT loss FROM steps WHERE job_id = 'gen-00' AND NOT loss BETWEEN -1e300 AND 1e300")
        assert sorted(str(v) for (v,) in losses) == ["inf", "nan"]
        assert con.execute("SELECT config->>'note', config->'clip' FROM jobs WHERE job_id = 'gen-00'").fetchone() == (
            "",
            {"max": "Infinity", "floor": "NaN", "name": "NaN"},
        )
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (migrate.HEAD_REVISION,)


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(args) == cli.EXIT_WAREHOUSE
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line for line in err.splitlines() if not line.startswith("copied ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_target_holding_data_is_refused_and_keeps_it(
    warehouse: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["db", "copy", "--db", str(warehouse), "--to", pg_url]) == 0
    capsys.readouterr()
    with psycopg.connect(pg_url) as con:
        con.execute("DELETE FROM jobs WHERE job_id <> 'gen-03'")  # a target that holds one job
        con.execute("UPDATE insight_settings SET value = 7 WHERE name = 'loss_spike.mad_factor'")
    before = _counts(pg_url)
    message = _refused(["db", "copy", "--db", str(warehouse), "--to", pg_url], capsys)
    assert "already holds data" in message and "nothing was copied" in message
    assert _counts(pg_url) == before
    with psycopg.connect(pg_url) as con:
        value = con.execute("SELECT value FROM insight_settings WHERE name = 'loss_spike.mad_factor'").fetchone()
    assert value == (7.0,)


def test_a_target_at_another_revision_is_refused_and_stays_there(
    warehouse: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate.upgrade(db.PostgresUrl(pg_url), "0017")
    message = _refused(["db", "copy", "--db", str(warehouse), "--to", pg_url], capsys)
    assert "schema revision '0017'" in message and "db upgrade" in message
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("0017",)
        assert con.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    # as the message says: upgraded, the empty target takes the copy
    assert cli.main(["db", "upgrade", "--db", pg_url]) == 0
    assert cli.main(["db", "copy", "--db", str(warehouse), "--to", pg_url]) == 0
    assert _counts(pg_url)["jobs"] == len(_source_rows(warehouse, "jobs", ["job_id"], set()))


def test_a_copy_waits_for_an_upgrade_of_the_target(
    warehouse: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(pg_url) as holder:
        holder.execute(f"SELECT pg_advisory_xact_lock({postgres.SCHEMA_LOCK})")
        args = ["db", "copy", "--db", str(warehouse), "--to", pg_url, "--wait", "0.2"]
        assert cli.main(args) == cli.EXIT_BUSY
        assert "waited 0.2 s" in capsys.readouterr().err
    assert _counts(pg_url) == {}


def test_a_database_of_other_tables_is_refused_untouched(
    warehouse: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(pg_url) as con:
        con.execute("CREATE TABLE invoices (n integer)")
        con.execute("INSERT INTO invoices VALUES (1)")
    message = _refused(["db", "copy", "--db", str(warehouse), "--to", pg_url], capsys)
    assert "holds tables of its own (invoices)" in message
    assert _counts(pg_url) == {"invoices": 1}


def test_a_failed_copy_leaves_the_target_as_it_was(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ledger paths that differ only in NUL and U+FFFD are one path on PostgreSQL (NUL copied
    as U+FFFD): the copy fails on the way, after the schema was built and tables were filled,
    and the target is left without a table."""
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    with db.connection(path) as con:
        con.execute("INSERT INTO jobs (job_id, status, ingested_at) VALUES ('a', 'completed', TIMESTAMP '2026-01-01')")
        con.execute(
            "INSERT INTO ingest_files (path, kind, outcome, rows, warning_count, first_seen_at, last_read_at) "
            "SELECT 'p' || c, 'progress', 'failed', 0, 0, TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-01' "
            "FROM (VALUES (chr(0)), (chr(65533))) v(c)"
        )
    snapshots.publish(path)
    message = _refused(["db", "copy", "--db", str(path), "--to", pg_url], capsys)
    target = db.PostgresUrl(pg_url)
    assert message.startswith(f"runlytics db copy: copy into {target} failed at table ingest_files, nothing written:")
    assert _counts(pg_url) == {}


def test_nul_characters_are_copied_as_replacement_characters(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL's text holds no NUL character (JSON may escape one in any string): the copied
    strings carry U+FFFD instead, as ingest --db publishes them; a job whose id holds one is not
    copied (nor its samples), and named on stderr."""
    lab = Lab(tmp_path)
    history = [{"step": 1, "loss": 1.0, "gpus": [{"index": 0, "uuid": "GPU-\u0000", "utilization_percent": 50.0}]}]
    lab.write_job("nul-id", {"job_id": "nul\u0000id", "status": "completed", "history": history})
    lab.write_job("j", {"job_id": "j", "status": "completed", "history": history, "config": {"model_name": "m\u0000"}})
    spool = tmp_path / "spool"
    spool.mkdir()
    samples = [{"ts": 1_767_225_600 + t, "host": "h\u0000", "job_id": job_id, "gpu_index": 0, "utilization_percent": 1}
               for job_id in ("j", "nul\u0000id") for t in range(3)]  # fmt: skip
    (spool / "a.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    lab.ingest(lab.root, spool_root=spool)
    assert cli.main(["db", "copy", "--db", str(lab.db), "--to", pg_url]) == 0
    assert capsys.readouterr().err.count("warning: job 'nul\\x00id' has a NUL character in its id") == 1
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT job_id, model_name FROM jobs").fetchall() == [("j", "m\ufffd")]
        assert con.execute("SELECT job_id, gpu_uuid FROM step_gpus").fetchall() == [("j", "GPU-\ufffd")]
        assert con.execute("SELECT DISTINCT job_id, host FROM gpu_samples").fetchall() == [("j", "h\ufffd")]
        assert con.execute("SELECT count(*) FROM gpu_samples").fetchone() == (3,)
        assert con.execute("SELECT count(*) FROM ingest_files WHERE job_id <> 'j'").fetchone() == (0,)


def test_an_empty_warehouse_copies_and_the_thresholds_are_the_sources(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    with db.connection(path) as con:
        con.execute("UPDATE insight_settings SET value = 9 WHERE name = 'loss_spike.mad_factor'")
    snapshots.publish(path)
    result = pg_copy.copy(path, db.PostgresUrl(pg_url))
    assert result.rows["jobs"] == 0 and result.rows["insight_settings"] == 25
    with psycopg.connect(pg_url) as con:
        settings = dict(con.execute("SELECT name, value FROM insight_settings").fetchall())
    assert len(settings) == 25 and settings["loss_spike.mad_factor"] == 9.0


def test_the_copied_and_not_copied_tables_are_every_table(pg_url: str, tmp_path: Path) -> None:
    """A table a later revision adds must be classified: copied, or left out for a reason."""
    migrate.upgrade(db.PostgresUrl(pg_url))
    with postgres.connection(db.PostgresUrl(pg_url)) as conn:
        on_postgres = set(postgres.tables(conn))
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    with db.connection(path, read_only=True) as con:
        on_duckdb = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    # DuckDB keeps gpu_minutes' unsealed rows in the table gpu_minutes_hot, read with the sealed
    # Parquet parts through the view gpu_minutes (revision 0021); PostgreSQL has the table gpu_minutes
    on_duckdb = {"gpu_minutes" if t == "gpu_minutes_hot" else t for t in on_duckdb}
    # the samples: DuckDB's hot table (with its parts) and PostgreSQL's packed minutes (revision 0028)
    # are each read through the view gpu_samples, which the copy fills
    on_duckdb = {"gpu_samples" if t == "gpu_samples_hot" else t for t in on_duckdb}
    on_postgres = {"gpu_samples" if t == "gpu_sample_minutes" else t for t in on_postgres}
    assert on_postgres == on_duckdb == set(pg_copy.COPIED) | set(pg_copy.NOT_COPIED)
