"""Audit 18's parity findings (issue #18, "same answers"): what DuckDB and PostgreSQL answered
differently for the same inputs.

- `runlytics sql` on PostgreSQL runs only a SELECT, as on DuckDB: `COPY … TO STDOUT` left the
  connection in COPY mode (a traceback, exit 1); LISTEN, SET, ANALYZE, LOCK TABLE, COMMIT, … ran
  in the read-only transaction.
- JSON's NaN and infinities (a config, a trainer state's metrics) read as DuckDB reads them: the
  API's JSON null, an export's JSON text `NaN`; on PostgreSQL they were the strings "NaN" and
  "Infinity", and a config's string "NaN" could not be told from them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import duckdb
import psycopg
import pytest
from conftest import Engine, Lab
from fastapi.testclient import TestClient
from test_damaged_values import settled

from runlytics.api.app import create_app
from runlytics.cli import EXIT_OK, EXIT_QUERY, main
from runlytics.ingest import postgres as pg_ingest
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, pg_copy, pg_reader

REFUSAL = "runlytics sql: only one read-only SELECT per call; refused: {}\n"


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("COPY (SELECT 1) TO STDOUT", "COPY"),  # left the connection in COPY mode: a traceback, exit 1
        ("copy jobs from stdin", "COPY"),
        ("/* a /* nested */ SELECT */ COPY (SELECT 1) TO STDOUT", "COPY"),  # PostgreSQL's comments nest
        ("LISTEN x", "LISTEN"),
        ("SET work_mem = '1MB'", "SET"),
        ("ANALYZE jobs", "ANALYZE"),
        ("LOCK TABLE jobs IN ROW EXCLUSIVE MODE", "LOCK"),
        ("DECLARE c CURSOR FOR SELECT 1", "DECLARE"),
        ("COMMIT", "COMMIT"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),  # as on DuckDB: EXPLAIN ANALYZE runs what it explains
        ("-- nothing", "no statement"),
        ("DELETE FROM nonexistent", "DELETE"),  # as DuckDB refuses it (was: relation does not exist)
        ("COPY (SELECT 1) TO STDOUT; SELECT 1", "several statements"),
    ],
)  # fmt: skip
def test_sql_on_postgresql_runs_only_a_select(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], query: str, refused: str
) -> None:
    assert main(["sql", "--db", pg_url, query]) == EXIT_QUERY
    out, err = capsys.readouterr()
    assert (out, err) == ("", REFUSAL.format(refused))
    if query == "COPY (SELECT 1) TO STDOUT":  # DuckDB's refusal, word for word
        assert main(["sql", "--db", str(tmp_path / "w.duckdb"), query]) == EXIT_QUERY
        assert capsys.readouterr().err == REFUSAL.format(refused)


def test_sql_on_postgresql_reads_and_tells_a_syntax_error(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    reads = ("(SELECT 1 AS a)", "WITH t AS (SELECT 1 AS a) SELECT a FROM t", "VALUES (1)", "SHOW TimeZone", ";SELECT 1")
    for query in reads:  # `;SELECT 1`: an empty statement before it, which DuckDB runs too (was: no statement)
        assert main(["sql", "--db", pg_url, "--format", "csv", query]) == EXIT_OK, query
        assert capsys.readouterr().out.splitlines()[1] in ("1", "UTC"), query
    # not refused: PostgreSQL's own error, as DuckDB gives its parser's
    assert main(["sql", "--db", pg_url, "SELEC 1"]) == EXIT_QUERY
    assert capsys.readouterr().err == 'runlytics sql: syntax error at or near "SELEC"\n'


# --- JSON's non-finite numbers -----------------------------------------------------------------

# a config as DuckDB holds it (its JSON text: minified, as written here); the strings "NaN",
# "Infinity" and "-Infinity" are strings, a key "NaN" too
CONFIG = (
    '{"model_name":"m","target_samples_per_second":Infinity,"low":-Infinity,"max_steps":NaN,'
    '"word":"NaN","NaN":"Infinity","list":["-Infinity",NaN,"x\\"NaN"]}'
)
CONFIG_JSON = {  # the API's rendering: null for a number JSON cannot hold
    "model_name": "m",
    "target_samples_per_second": None,
    "low": None,
    "max_steps": None,
    "word": "NaN",
    "NaN": "Infinity",
    "list": ["-Infinity", None, 'x"NaN'],
}
METRICS = '{"custom": NaN, "other": -Infinity}'  # a trainer state's metrics (json.dumps)
LEGACY = '{"NaN":"NaN","Infinity":["-Infinity",{"x":"Infinity"}]}'  # written before the escapes
LEGACY_DUCKDB = '{"NaN":NaN,"Infinity":[-Infinity,{"x":Infinity}]}'
LEGACY_JSON = {"NaN": None, "Infinity": [None, {"x": None}]}
TRAINER_STATE = '{"global_step":1,"max_steps":1,"log_history":[{"step":1,"loss":1.0,"custom":NaN,"other":-Infinity}]}'


def _write(root: Path) -> None:
    progress = (
        f'{{"job_id":"j1","status":"completed","config":{CONFIG},'
        '"history":[{"step":1,"timestamp":"2026-11-20T10:00:00Z","loss":1.0}]}'
    )
    for folder, name, text in (("j1", "progress.json", progress), ("hf", "trainer_state.json", TRAINER_STATE)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text(text)
        settled(root / folder / name)


def _csv_cell(text: str, column: str, where: tuple[str, str]) -> str:
    rows = [row for row in csv.DictReader(io.StringIO(text)) if row[where[0]] == where[1]]
    assert len(rows) == 1, text
    return rows[0][column]


def test_non_finite_json_numbers_read_as_on_duckdb(
    tmp_path: Path, ingest_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = Lab(tmp_path, ingest_engine)
    _write(lab.root)
    lab.ingest()
    warehouse = lab.warehouse()
    client = TestClient(create_app(warehouse))
    assert client.get("/api/training/j1").json()["config"] == CONFIG_JSON  # was "Infinity", "NaN"
    steps = client.get("/api/training/export/steps?job_ids=hf")
    assert _csv_cell(steps.text, "metrics", ("job_id", "hf")) == METRICS  # was {"custom": "NaN", …}
    # runlytics export (CSV): the JSON text DuckDB holds
    out = tmp_path / "export"
    assert main(["export", "--db", str(warehouse), "--format", "csv", "--quiet", str(out)]) == EXIT_OK
    assert _csv_cell((out / "jobs.csv").read_text(), "config", ("job_id", "j1")) == CONFIG
    assert _csv_cell((out / "steps.csv").read_text(), "metrics", ("job_id", "hf")) == METRICS
    # runlytics sql: the column's text
    capsys.readouterr()
    query = "SELECT config, (SELECT metrics FROM trainer_steps) AS metrics FROM jobs WHERE job_id = 'j1'"
    assert main(["sql", "--db", str(warehouse), "--format", "json", query]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == [{"config": CONFIG, "metrics": METRICS}]
    if ingest_engine.postgres:  # what SQL on PostgreSQL reads: the words, as strings, both kinds alike
        with pg_reader.connect(db.PostgresUrl(str(warehouse))) as conn:
            got = conn.execute("SELECT config->>'max_steps', config->>'word', config->'list'->>0 FROM jobs").fetchone()
        assert got == ("NaN", "NaN", "-Infinity")


def test_a_copy_reads_and_seeds_non_finite_json_numbers_as_numbers(tmp_path: Path, pg_url: str) -> None:
    # db copy (the publish's COPY too: pg_copy.copy_rows); its readers give DuckDB's text (the
    # [postgresql] case above, in deep runs only, reads a publish on every surface)
    root = tmp_path / "jobs"
    _write(root)
    # DuckDB's JSON reader takes (and keeps) nan and -INF: PostgreSQL's json refused the copy, and
    # every publish of its stage (invalid input syntax for type json)
    (root / "lc").mkdir()
    lc = root / "lc" / "progress.json"
    lc.write_text(
        '{"job_id":"lc","status":"completed","config":{"lr":nan,"floor":-INF,"layers":[1,2,]},'
        '"history":[{"step":1,"timestamp":"2026-11-20T10:00:00Z","loss":1.0}]}'
    )
    settled(lc)
    warehouse = tmp_path / "w.duckdb"
    ingest(warehouse, [root], wait=10)
    pg_copy.copy(warehouse, db.PostgresUrl(pg_url), wait=10)
    client = TestClient(create_app(db.PostgresUrl(pg_url)))
    assert client.get("/api/training/j1").json()["config"] == CONFIG_JSON
    assert client.get("/api/training/lc").json()["config"] == {"lr": None, "floor": None, "layers": [1, 2]}
    with pg_reader.connect(db.PostgresUrl(pg_url)) as conn:
        assert conn.execute("SELECT config FROM jobs WHERE job_id = 'j1'").fetchone() == (CONFIG,)
        assert conn.execute("SELECT metrics FROM step_facts WHERE job_id = 'hf'").fetchone() == (METRICS,)
    # a new stage's first run takes PostgreSQL's rows (ingest/postgres.py, seed): the stage holds
    # DuckDB's text again, so that its next publish writes them as numbers
    # a config a copy or publish before audit 18 wrote (or another tool): its words unescaped, keys
    # too. A value reads as the number; a key stays a string (it read as {NaN: …}: no JSON, a 500)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET config = %s WHERE job_id = 'hf'", [LEGACY])
    assert TestClient(create_app(db.PostgresUrl(pg_url))).get("/api/training/hf").json()["config"] == LEGACY_JSON
    with pg_reader.connect(db.PostgresUrl(pg_url)) as conn:
        assert conn.execute("SELECT config FROM jobs WHERE job_id = 'hf'").fetchone() == (LEGACY_DUCKDB,)
    stage = tmp_path / "stage.duckdb"
    assert pg_ingest.seed(stage, db.PostgresUrl(pg_url), "h", wait=10) == 3
    query = "SELECT CAST(config AS VARCHAR) FROM jobs UNION ALL SELECT CAST(metrics AS VARCHAR) FROM trainer_steps"
    with duckdb.connect(str(stage), read_only=True) as con:
        got = sorted(con.execute(query).fetchall(), key=repr)
    lower = '{"lr":NaN,"floor":-Infinity,"layers":[1,2]}'  # Python's spelling of the words
    assert got == sorted([(CONFIG,), (METRICS,), (LEGACY_DUCKDB,), (lower,)], key=repr)


def test_the_json_loader_reads_keys_as_strings() -> None:
    # pg_reader.duckdb_json, applied to every JSON column read from PostgreSQL: only a value is a number
    text = '{"NaN":"NaN", "Infinity" :["-Infinity",{"-Infinity"\n:"\\u004eaN"}],"-\\u0049nfinity":"x\\"NaN"}'
    read = '{"NaN":NaN, "Infinity" :[-Infinity,{"-Infinity"\n:"NaN"}],"-Infinity":"x\\"NaN"}'
    assert pg_reader.duckdb_json(text) == read
    parsed = json.loads(read)
    assert math.isnan(parsed.pop("NaN"))
    assert parsed == {"Infinity": [-math.inf, {"-Infinity": "NaN"}], "-Infinity": 'x"NaN'}
    # what the copy and publish write: DuckDB's JSON (any case, a trailing comma) as PostgreSQL's json takes it
    portable = pg_copy.portable_json('{"a":[nan,-INF,Infinity, ],"NaN":"inf, ]","info":-nan,}')
    assert portable == '{"a":["NaN","-Infinity","Infinity" ],"\\u004eaN":"inf, ]","info":"NaN"}'
    assert pg_reader.duckdb_json(portable) == '{"a":[NaN,-Infinity,Infinity ],"NaN":"inf, ]","info":NaN}'


# --- stored insights after the prune ------------------------------------------------------------

HOUR = 3600
DAY = 86_400


def _job_with_samples(lab: Lab, spool: Path, job_id: str, start: int) -> None:
    """A completed job of 10 minutes from ``start`` (epoch seconds), and a minute of its GPU at
    50 % utilization in a spool file of its own."""
    history = [{"step": s, "timestamp": start + 60 * s, "loss": 1.0 / s} for s in range(1, 11)]
    doc = {"job_id": job_id, "status": "completed", "started_at": start, "ended_at": start + 600, "history": history}
    settled(lab.write_job(job_id, doc))
    spool.mkdir(exist_ok=True)
    sample = {"host": "n1", "job_id": job_id, "gpu_index": 0, "gpu_uuid": f"GPU-{job_id}", "utilization_percent": 50.0}
    lines = (json.dumps({"ts": start + 10 * i, **sample}) for i in range(6))
    (spool / f"{job_id}.jsonl").write_text("\n".join(lines) + "\n")


def test_stored_insights_are_the_views_after_the_prune(tmp_path: Path, ingest_engine: Engine) -> None:
    # At a gpu_idle.utilization other than 10 the idle share reads the raw samples still kept
    # (docs/insights.md): once a prune retires a job's samples its view has no gpu_idle, and
    # the stored insights (what the API and `insights` serve) must say the same, on both engines
    lab = Lab(tmp_path, ingest_engine)
    where = str(lab.warehouse())
    assert main(["db", "upgrade", "--db", where]) == EXIT_OK
    assert main(["insights", "set", "gpu_idle.utilization", "90", "--db", where]) == EXIT_OK
    now = int(time.time()) // 60 * 60 - HOUR
    spool = tmp_path / "spool"
    _job_with_samples(lab, spool, "recent", now)
    _job_with_samples(lab, spool, "old", now - 40 * DAY)
    lab.ingest(spool_root=spool, keep_raw_days=60)
    stored = "SELECT job_id FROM insight_results WHERE kind = 'gpu_idle' ORDER BY job_id"
    view = "SELECT job_id FROM job_insights WHERE kind = 'gpu_idle' ORDER BY job_id"
    assert lab.query(stored) == lab.query(view) == [("old",), ("recent",)]
    # a later run keeps 30 days: its prune retires "old"'s samples (a job this run did not read)
    # and those of "older", which it reads (its refresh ran before the prune: gpu_idle stored)
    _job_with_samples(lab, spool, "older", now - 45 * DAY)
    lab.ingest(spool_root=spool, keep_raw_days=30)
    assert lab.query("SELECT count(*) FROM gpu_samples WHERE job_id <> 'recent'") == [(0,)]
    assert lab.query(stored) == lab.query(view) == [("recent",)]
