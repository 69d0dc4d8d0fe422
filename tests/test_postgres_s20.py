"""A PostgreSQL warehouse in a schema of its own, named by the URL's options
(``?options=-csearch_path%3Druns``, docs/postgresql.md "Naming a PostgreSQL warehouse"): every
command works in that schema (session 20).

The readers (`sql`, `status`, `analytics`, `insights`, `export`, the API of `serve`) and
`insights set` once opened their psycopg connections with an ``options`` keyword, which replaced
the URL's own: they looked for the tables in ``public`` ("relation "jobs" does not exist", a
traceback, "schema at revision None") while `db upgrade` and `ingest` had built and filled
``runs``. Every connection is now opened by ``postgres.connect``, the URL's options first.

The database's ``public`` schema holds a runlytics warehouse too (empty, another threshold): a
command that read there would answer, wrongly, instead of failing. Each reader's answer is
compared with the same command's on the ingest's stage (the DuckDB warehouse whose rows the
publish copied to PostgreSQL), or checked against the schema's rows.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from fastapi.testclient import TestClient
from pg_server import PgServer

from runlytics.api.app import create_app
from runlytics.cli import EXIT_BUSY, EXIT_OK, EXIT_WAREHOUSE, main
from runlytics.warehouse import db, insights, migrate, postgres
from tests.insight_generator import clean, inject

SCHEMA = "runs"
# the threshold the decoy warehouse in ``public`` holds: never shown for ``runs``
DECOY = ("stall.factor", 7.0)
READ = "read_parquet($glob, hive_partitioning = true, hive_types_autocast = false)"


@dataclass(frozen=True)
class Setup:
    url: str  # the warehouse: the database, its search_path the schema runs
    plain: str  # the same database without options: public
    stage: Path  # the ingest's DuckDB stage, holding what it published


def _generate(root: Path, spool: Path) -> None:
    """A few jobs, GPU samples in a spool for some (the telemetry's publish), a slow job and its
    peers (slow_vs_peers: recomputed on PostgreSQL), a loss spike."""
    rng = random.Random(20)
    now_ms = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
    jobs = [
        *inject(rng, "gpu_throttled", "throttled-0", now_ms).jobs,
        *inject(rng, "slow_vs_peers", "slow-1", now_ms).jobs,
        *inject(rng, "loss_spike", "spike-2", now_ms).jobs,
        *clean(rng, "clean-3", now_ms).jobs,
    ]
    for job in jobs:
        folder = root / job.job_id
        folder.mkdir(parents=True)
        (folder / "progress.json").write_text(json.dumps(job.progress(), allow_nan=True))
        if job.samples:
            (spool / f"{job.job_id}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in job.spool()))


@pytest.fixture(scope="module")
def setup(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("pg_schema")
    plain = pg_server.new_database()
    with psycopg.connect(plain, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {db.quote_identifier(SCHEMA)}")
    url = f"{plain}?options=-csearch_path%3D{SCHEMA}"
    # the decoy: a warehouse in public, empty, with another threshold
    assert main(["db", "upgrade", "--db", plain]) == EXIT_OK
    assert main(["insights", "set", DECOY[0], str(DECOY[1]), "--db", plain]) == EXIT_OK
    assert main(["db", "upgrade", "--db", url]) == EXIT_OK
    root, spool, stage = tmp / "jobs", tmp / "spool", tmp / "stage.duckdb"
    root.mkdir()
    spool.mkdir()
    _generate(root, spool)
    assert main(["ingest", str(root), "--spool", str(spool), "--db", url, "--stage", str(stage), "--quiet"]) == EXIT_OK
    yield Setup(url, plain, stage)


def _rows(plain: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a connection of no options (schemas named in the text)."""
    with psycopg.connect(plain) as con:
        return con.execute(sql).fetchall()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == EXIT_OK, (argv, captured.err)
    return code, captured.out


def _same(setup: Setup, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The command's stdout on the schema, equal to its stdout on the stage."""
    on_stage, on_schema = (_run(capsys, *argv, "--db", name) for name in (str(setup.stage), setup.url))
    assert on_schema == on_stage, argv
    return on_stage[1]


def _job_ids(setup: Setup) -> list[str]:
    with duckdb.connect(str(setup.stage), read_only=True) as con:
        return [job_id for (job_id,) in con.execute("SELECT job_id FROM jobs ORDER BY job_id").fetchall()]


def test_upgrade_and_ingest_fill_the_schema(setup: Setup) -> None:
    ids = _job_ids(setup)
    assert len(ids) > 4
    assert _rows(setup.plain, f"SELECT version_num FROM {SCHEMA}.alembic_version") == [(migrate.HEAD_REVISION,)]
    assert _rows(setup.plain, f"SELECT job_id FROM {SCHEMA}.jobs ORDER BY job_id") == [(j,) for j in ids]
    assert _rows(setup.plain, f"SELECT count(DISTINCT job_id) > 0 FROM {SCHEMA}.gpu_sample_minutes") == [(True,)]
    assert _rows(setup.plain, f"SELECT count(*) FROM {SCHEMA}.insight_results WHERE kind = 'slow_vs_peers'") != [(0,)]
    assert _rows(setup.plain, "SELECT count(*) FROM public.jobs") == [(0,)]  # the decoy untouched


def test_db_copy_into_a_schema(setup: Setup) -> None:
    with psycopg.connect(setup.plain, autocommit=True) as con:
        con.execute("CREATE SCHEMA copied")
    assert (
        main(["db", "copy", "--db", str(setup.stage), "--to", f"{setup.plain}?options=-csearch_path%3Dcopied"])
        == EXIT_OK
    )
    assert _rows(setup.plain, "SELECT job_id FROM copied.jobs ORDER BY job_id") == [(j,) for j in _job_ids(setup)]
    assert _rows(setup.plain, "SELECT count(*) FROM public.jobs") == [(0,)]


def test_sql(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = _run(
        capsys, "sql", "--format", "json", "SELECT current_schema() AS s, count(*) AS n FROM jobs", "--db", setup.url
    )
    assert json.loads(out) == [{"s": SCHEMA, "n": len(_job_ids(setup))}]
    _same(setup, capsys, "sql", "--format", "json", "SELECT job_id, status, model_name FROM jobs ORDER BY job_id")
    # the URL's settings that runlytics sets too: runlytics' own win (they come after)
    theirs = f"{setup.url}%20-cjit%3Don%20-cstatement_timeout%3D5%20-cdefault_transaction_read_only%3Doff"
    settings = "jit, statement_timeout, default_transaction_read_only, TimeZone"
    shown = ", ".join(f"current_setting('{name}') AS {name}" for name in settings.split(", "))
    _, out = _run(capsys, "sql", "--format", "json", "--timeout", "7", f"SELECT {shown}", "--db", theirs)
    assert json.loads(out) == [
        {"jit": "off", "statement_timeout": "7s", "default_transaction_read_only": "on", "timezone": "UTC"}
    ]


def test_status(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    on_stage, on_schema = (
        json.loads(_run(capsys, "status", "--json", "--db", name)[1]) for name in (str(setup.stage), setup.url)
    )
    counted = ("schema_revision", "jobs", "step_rows", "gpu_samples")
    assert {k: on_schema[k] for k in counted} == {k: on_stage[k] for k in counted}
    assert on_schema["jobs"] > 4 and on_schema["gpu_samples"] > 0
    # the files: the ledger's rows published (the spool's stay the stage's)
    assert [(on_schema["files"],)] == _rows(setup.plain, f"SELECT count(*) FROM {SCHEMA}.ingest_files") != [(0,)]


def test_analytics_and_insights(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    for job_id in _job_ids(setup):
        _same(setup, capsys, "analytics", job_id)
        _same(setup, capsys, "insights", job_id, "--json")
    fleet = json.loads(_same(setup, capsys, "insights", "--json", "--limit", "1000"))
    assert {"slow_vs_peers", "loss_spike", "gpu_throttled"} <= {i["kind"] for i in fleet["insights"]}
    shown = json.loads(_same(setup, capsys, "insights", "thresholds", "--json"))
    assert shown[DECOY[0]] == insights.DEFAULTS[DECOY[0]] != DECOY[1]


def test_insights_set(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    name = "gpu_idle.utilization"
    settings = "SELECT value FROM {}.insight_settings WHERE name = %s"
    before = json.loads(_same(setup, capsys, "insights", "--json", "--limit", "1000"))
    try:
        for where in (str(setup.stage), setup.url):
            _run(capsys, "insights", "set", name, "95", "--db", where)
        with psycopg.connect(setup.plain) as con:
            assert con.execute(settings.format(SCHEMA), (name,)).fetchall() == [(95.0,)]
            assert con.execute(settings.format("public"), (name,)).fetchall() != [(95.0,)]
        after = json.loads(_same(setup, capsys, "insights", "--json", "--limit", "1000"))
        assert after["thresholds"][name] == 95
        idle = [[i for i in answer["insights"] if i["kind"] == "gpu_idle"] for answer in (before, after)]
        assert len(idle[1]) > len(idle[0])  # recomputed, in the schema
    finally:
        for where in (str(setup.stage), setup.url):
            main(["insights", "set", name, str(insights.DEFAULTS[name]), "--db", where])
    assert json.loads(_same(setup, capsys, "insights", "--json", "--limit", "1000")) == before


def test_insights_set_waits_for_the_schema_locks(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    """A writer of the schema's insight tables holds them: `set` gives up after --wait (its lock
    timeout, a bound value), and `db upgrade` behind another's schema lock (its advisory lock's
    key bound) too."""
    with psycopg.connect(setup.url) as holder:
        holder.execute("LOCK TABLE insight_jobs IN SHARE MODE")
        began = time.monotonic()
        code = main(["insights", "set", "stall.factor", "5", "--wait", "0.2", "--db", setup.url])
        assert code == EXIT_BUSY and "stayed locked" in capsys.readouterr().err
        assert time.monotonic() - began < 10
    with psycopg.connect(setup.url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (postgres.SCHEMA_LOCK,))
        code = main(["db", "upgrade", "--wait", "0.2", "--db", setup.url])
        assert code == EXIT_BUSY and "being upgraded" in capsys.readouterr().err


def _exported(out: Path, fmt: str) -> dict[str, Any]:
    """An export's manifest (less its time) and every table's column types and rows, sorted."""
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("exported_at")
    tables: dict[str, Any] = {}
    with duckdb.connect() as con:
        for table, entry in manifest["tables"].items():
            if fmt == "csv":
                lines = (out / entry["path"]).read_text().splitlines()
                tables[table] = (lines[:1], sorted(lines[1:]))
            else:
                glob = str(out / entry["path"] / "**" / "*.parquet")
                relation = con.sql(f"SELECT * FROM {READ}", params={"glob": glob})
                tables[table] = (relation.columns, relation.types, sorted(repr(row) for row in relation.fetchall()))
    return {"manifest": manifest, "tables": tables}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export(setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str) -> None:
    outs = [tmp_path / "stage", tmp_path / "schema"]
    for where, out in zip((str(setup.stage), setup.url), outs, strict=True):
        _run(capsys, "export", str(out), "--format", fmt, "--db", where)
    on_stage, on_schema = (_exported(out, fmt) for out in outs)
    assert on_schema == on_stage
    assert on_stage["manifest"]["jobs"] > 4 and on_stage["manifest"]["tables"]["gpu_samples"]["rows"] > 0


def test_the_api_reads_the_schema(setup: Setup) -> None:
    """`serve --db URL`'s app: its pooled readers (pg_reader.Reader) in the schema."""
    stage, schema = TestClient(create_app(setup.stage)), TestClient(create_app(db.PostgresUrl(setup.url)))

    def both(path: str) -> Any:
        a, b = stage.get(path), schema.get(path)
        assert (b.status_code, b.json()) == (a.status_code, a.json()), path
        return a.json()

    assert both("/api/training/jobs?limit=1000")["total"] == len(_job_ids(setup))
    for job_id in _job_ids(setup):
        both(f"/api/training/{job_id}/analytics")
        both(f"/api/training/{job_id}/insights")
    assert both("/api/training/analytics/summary")["total_jobs"] > 4
    both("/api/training/analytics/fleet")


def test_pgoptions_when_the_url_names_none(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq takes a connection's options from $PGOPTIONS when its URL names none: runlytics' own
    options are added to those too, not put in their place."""
    monkeypatch.setenv(postgres.OPTIONS_VARIABLE, f"-csearch_path={SCHEMA}")
    _, out = _run(
        capsys, "sql", "--format", "json", "SELECT current_schema() AS s, count(*) AS n FROM jobs", "--db", setup.plain
    )
    assert json.loads(out) == [{"s": SCHEMA, "n": len(_job_ids(setup))}]
    shown = json.loads(_run(capsys, "insights", "thresholds", "--json", "--db", setup.plain)[1])
    assert shown[DECOY[0]] == insights.DEFAULTS[DECOY[0]]
    # the URL's own options, when it has some, are those libpq uses: $PGOPTIONS is not
    _, out = _run(
        capsys, "sql", "--format", "json", "SELECT current_schema() AS s", "--db", f"{setup.plain}?options=-cjit%3Doff"
    )
    assert json.loads(out) == [{"s": "public"}]


def test_the_lock_key_is_bound() -> None:
    """The advisory lock's key goes as a bound value, as every other value sent."""
    sent: list[tuple[str, tuple[Any, ...]]] = []
    postgres.wait_for_lock(lambda sql, values: sent.append((sql, values)) or True, postgres.SCHEMA_LOCK, 1, "busy")
    assert sent == [(postgres.TRY_LOCK, (postgres.SCHEMA_LOCK,))] and "%s" in postgres.TRY_LOCK


def test_a_url_libpq_refuses(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A URL libpq cannot parse is the warehouse's error on one line (exit 3), its password hidden
    (libpq's message quotes the URL), not a traceback."""
    url = "postgresql://x:secret@[::1/d"
    stage = tmp_path / "stage.duckdb"
    for argv in (
        ["db", "upgrade"],
        ["sql", "SELECT 1"],
        ["status"],
        ["insights"],
        ["insights", "set", "stall.factor", "3"],
        ["export", str(tmp_path / "out")],
        ["ingest", str(tmp_path), "--stage", str(stage)],
    ):
        capsys.readouterr()
        assert main([*argv, "--db", url]) == EXIT_WAREHOUSE, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "postgresql://x:***@[::1/d is not a URL libpq takes" in err, err
        assert "secret" not in err
    assert not stage.exists() and not (tmp_path / "out").exists()
