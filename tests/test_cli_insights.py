"""`runlytics insights`: one job's or the fleet's insights as a table or as the API's JSON, the
thresholds, and `set NAME VALUE`, which writes under the ingest lock and publishes a snapshot
that the API then reads. The jobs are those of tests/test_api_insights.py (their insights worked
out by hand there).

On both engines (docs/testing.md, "Both engines"): the module's warehouse is read as the DuckDB
file and as a PostgreSQL copy (``module_engine``: `db copy`, then PostgreSQL's own views compute
the insights again), so the table and the JSON printed from ``--db URL`` are PostgreSQL's, checked
against the same hand-worked values. What stays DuckDB's alone: the usage errors found before
the warehouse is opened, a missing file, and the ingest lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Engine, Lab
from fastapi.testclient import TestClient
from test_api_insights import GPUS, JOBS, SPIKES, without_messages

from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.warehouse import db, insights, snapshots
from runlytics.warehouse.lock import run_lock

REPO = Path(__file__).resolve().parent.parent


def runlytics(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runlytics", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("cli-insights"))
    for job_id, doc in JOBS.items():
        lab.write_job(job_id, {"job_id": job_id, **doc})
    assert lab.ingest().failed == 0
    return lab


@pytest.fixture(scope="module")
def warehouse(lab: Lab, module_engine: Engine) -> str:
    """The module's warehouse on each engine, as ``--db`` names it: the file, or its PostgreSQL copy."""
    return str(module_engine.warehouse(lab.db))


def app(warehouse: Path | db.PostgresUrl) -> TestClient:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        return TestClient(create_app(warehouse))


def test_one_jobs_insights_as_json_are_the_apis_answer(lab: Lab, module_engine: Engine, warehouse: str) -> None:
    done = runlytics("insights", "gpus", "--json", "--db", warehouse)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    api = app(module_engine.warehouse(lab.db)).get("/api/training/gpus/insights").json()
    assert answer == api
    assert without_messages(answer["insights"]) == GPUS


def test_the_fleets_insights_as_a_table(warehouse: str) -> None:
    done = runlytics("insights", "--db", warehouse)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("insights as of 20")
    assert lines[1].split() == ["job_id", "severity", "kind", "steps", "gpu", "message"]
    end = lines.index("(7 rows)")
    table = [line.split()[:5] for line in lines[3:end]]
    assert table == [
        ["live", "warning", "silent_running", "NULL", "NULL"],
        ["gpus", "critical", "nonfinite_loss", "4", "NULL"],
        ["gpus", "warning", "gpu_idle", "NULL", "0"],
        ["nan", "critical", "nonfinite_loss", "3-4", "NULL"],
        ["spiky", "warning", "loss_spike", "30", "NULL"],
        ["spiky", "warning", "loss_spike", "35-36", "NULL"],
        ["late", "critical", "nonfinite_loss", "2", "NULL"],
    ]
    # insights.md: the answer lists the thresholds in force (below the table, wrapped)
    shown = " ".join(lines[end + 1 :])
    assert shown.startswith("thresholds in force: ")
    assert "gpu_idle.utilization=10" in shown and shown.count("=") == len(json.loads(runlytics(
        "insights", "thresholds", "--json", "--db", warehouse).stdout))  # fmt: skip


def test_filters_and_limit(warehouse: str) -> None:
    done = runlytics("insights", "--kind", "loss_spike", "--status", "completed", "--json", "--db", warehouse)
    assert done.returncode == 0, done.stderr
    assert [(i["job_id"], i["first_step"]) for i in json.loads(done.stdout)["insights"]] == [
        ("spiky", 30),
        ("spiky", 35),
    ]
    done = runlytics("insights", "--severity", "critical", "--limit", "2", "--db", warehouse)
    assert done.returncode == 0, done.stderr
    assert "(2 rows)" in done.stdout and "raise --limit" in done.stdout


def test_thresholds(warehouse: str) -> None:
    done = runlytics("insights", "thresholds", "--json", "--db", warehouse)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {name: float(value) for name, value in insights.DEFAULTS.items()}


def test_an_unknown_job_is_exit_4(warehouse: str) -> None:
    for args in (["nope"], ["--job", "nope", "--json"]):
        done = runlytics("insights", *args, "--db", warehouse)
        assert done.returncode == 4 and "no job 'nope'" in done.stderr, done.stderr
        assert done.stdout == ""


# the CLI refuses these before it opens the warehouse (the same code whatever --db names): DuckDB's alone
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--kind", "nope"], 2, "unknown kind 'nope'"),
        (["--severity", "fatal"], 2, "unknown severity 'fatal'"),
        (["--status", "done"], 2, "unknown status 'done'"),
        (["--limit", "0"], 2, "--limit must be at least 1"),
        (["a", "b"], 2, "name one job"),
        (["set", "loss_spike.mad_factor"], 2, "give NAME VALUE"),
        (["set", "nope", "1"], 2, "unknown insight threshold 'nope'"),
        (["set", "loss_spike.mad_factor", "many"], 2, "loss_spike.mad_factor must be a number, not 'many'"),
        (["set", "loss_spike.mad_factor", "-1"], 2, "must be a finite number of at least 0"),
        (["set", "overfitting.train_window", "2.5"], 2, "whole number"),
    ],
)
def test_usage_errors(lab: Lab, args: list[str], code: int, message: str) -> None:
    done = runlytics("insights", *args, "--db", str(lab.db))
    assert done.returncode == code, done.stderr
    assert message in done.stderr


def test_a_missing_warehouse_is_exit_3_and_creates_nothing(tmp_path: Path) -> None:
    for args in (["insights"], ["insights", "thresholds"], ["insights", "set", "stall.factor", "5"]):
        done = runlytics(*args, "--db", str(tmp_path / "none.duckdb"))
        assert done.returncode == 3 and "no warehouse at" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_job_named_set_is_reached_with_job(tmp_path: Path, engine: Engine) -> None:
    lab = Lab(tmp_path)
    lab.write_job("set", {"job_id": "set", "status": "failed", "history": [{"step": 1, "loss": float("nan")}]})
    assert lab.ingest().failed == 0
    done = runlytics("insights", "--job", "set", "--json", "--db", str(engine.warehouse(lab.db)))
    assert done.returncode == 0, done.stderr
    assert [i["kind"] for i in json.loads(done.stdout)["insights"]] == ["nonfinite_loss"]


def test_set_recomputes_and_the_api_sees_it(tmp_path: Path, engine: Engine) -> None:
    """On PostgreSQL `set` recomputes with PostgreSQL's views (warehouse/pg_thresholds.py), in the database
    the API reads; on DuckDB under the ingest lock, then a new snapshot."""
    lab = Lab(tmp_path)
    lab.write_job("spiky", {"job_id": "spiky", **JOBS["spiky"]})
    assert lab.ingest().failed == 0
    target = engine.warehouse(lab.db)
    client = app(target)
    assert without_messages(client.get("/api/training/spiky/insights").json()["insights"]) == SPIKES
    before = snapshots.latest(lab.db)
    # a spike must exceed m + max(6·d, relative·|m|): with relative 9, 10 > 1 + 9 is false
    done = runlytics("insights", "set", "loss_spike.relative", "9", "--db", str(target))
    assert done.returncode == 0, done.stderr
    assert "loss_spike.relative = 9" in done.stdout
    if not engine.postgres:
        assert snapshots.latest(lab.db) != before  # published
    answer = client.get("/api/training/spiky/insights").json()
    assert answer["insights"] == [] and answer["thresholds"]["loss_spike.relative"] == 9.0
    # 8.99: 10 > 1 + 8.99, the spikes are back
    done = runlytics("insights", "set", "loss_spike.relative", "8.99", "--json", "--db", str(target))
    assert done.returncode == 0, done.stderr  # --json: the change, not the text line
    assert json.loads(done.stdout) == {
        "warehouse": str(target), "name": "loss_spike.relative", "value": 8.99, "recomputed": True,
    }  # fmt: skip
    assert without_messages(client.get("/api/training/spiky/insights").json()["insights"]) == SPIKES


def test_set_waits_for_the_ingest_lock(lab: Lab) -> None:  # DuckDB's file lock (PostgreSQL: test_postgres_ingest.py)
    with run_lock(lab.db, wait=0):
        done = runlytics("insights", "set", "stall.factor", "5", "--wait", "0.2", "--db", str(lab.db))
    assert done.returncode == 75 and "another ingest" in done.stderr
