"""`runlytics insights`: one job's or the fleet's insights as a table or as the API's JSON, the
thresholds, and `set NAME VALUE`, which writes under the ingest lock and publishes a snapshot
that the API then reads. The jobs are those of tests/test_api_insights.py (their insights worked
out by hand there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Lab
from fastapi.testclient import TestClient
from test_api_insights import GPUS, JOBS, SPIKES, without_messages

from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.warehouse import insights, snapshots
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


def test_one_jobs_insights_as_json_are_the_apis_answer(lab: Lab) -> None:
    done = runlytics("insights", "gpus", "--json", "--db", str(lab.db))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        api = TestClient(create_app(lab.db)).get("/api/training/gpus/insights").json()
    assert answer == api
    assert without_messages(answer["insights"]) == GPUS


def test_the_fleets_insights_as_a_table(lab: Lab) -> None:
    done = runlytics("insights", "--db", str(lab.db))
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
        "insights", "thresholds", "--json", "--db", str(lab.db)).stdout))  # fmt: skip


def test_filters_and_limit(lab: Lab) -> None:
    done = runlytics("insights", "--kind", "loss_spike", "--status", "completed", "--json", "--db", str(lab.db))
    assert done.returncode == 0, done.stderr
    assert [(i["job_id"], i["first_step"]) for i in json.loads(done.stdout)["insights"]] == [
        ("spiky", 30),
        ("spiky", 35),
    ]
    done = runlytics("insights", "--severity", "critical", "--limit", "2", "--db", str(lab.db))
    assert done.returncode == 0, done.stderr
    assert "(2 rows)" in done.stdout and "raise --limit" in done.stdout


def test_thresholds(lab: Lab) -> None:
    done = runlytics("insights", "thresholds", "--json", "--db", str(lab.db))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {name: float(value) for name, value in insights.DEFAULTS.items()}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nope"], 4, "no job 'nope'"),
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


def test_a_job_named_set_is_reached_with_job(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.write_job("set", {"job_id": "set", "status": "failed", "history": [{"step": 1, "loss": float("nan")}]})
    assert lab.ingest().failed == 0
    done = runlytics("insights", "--job", "set", "--json", "--db", str(lab.db))
    assert done.returncode == 0, done.stderr
    assert [i["kind"] for i in json.loads(done.stdout)["insights"]] == ["nonfinite_loss"]


def test_set_recomputes_and_the_api_sees_it(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.write_job("spiky", {"job_id": "spiky", **JOBS["spiky"]})
    assert lab.ingest().failed == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        client = TestClient(create_app(lab.db))
    assert without_messages(client.get("/api/training/spiky/insights").json()["insights"]) == SPIKES
    before = snapshots.latest(lab.db)
    # a spike must exceed m + max(6·d, relative·|m|): with relative 9, 10 > 1 + 9 is false
    done = runlytics("insights", "set", "loss_spike.relative", "9", "--db", str(lab.db))
    assert done.returncode == 0, done.stderr
    assert "loss_spike.relative = 9" in done.stdout
    assert snapshots.latest(lab.db) != before  # published
    answer = client.get("/api/training/spiky/insights").json()
    assert answer["insights"] == [] and answer["thresholds"]["loss_spike.relative"] == 9.0
    # 8.99: 10 > 1 + 8.99, the spikes are back
    assert runlytics("insights", "set", "loss_spike.relative", "8.99", "--db", str(lab.db)).returncode == 0
    assert without_messages(client.get("/api/training/spiky/insights").json()["insights"]) == SPIKES


def test_set_waits_for_the_ingest_lock(lab: Lab) -> None:
    with run_lock(lab.db, wait=0):
        done = runlytics("insights", "set", "stall.factor", "5", "--wait", "0.2", "--db", str(lab.db))
    assert done.returncode == 75 and "another ingest" in done.stderr
