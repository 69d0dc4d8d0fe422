"""The health of the ingest itself: recorded runs, `runlytics status`, /api/ingest/runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from runlytics.ingest import journal
from runlytics.warehouse import ingest_status, migrate
from tests.conftest import Engine, Lab

REPO = Path(__file__).resolve().parent.parent


def _job(lab: Lab, name: str, step: int) -> None:
    path = lab.write_job(name, {"status": "running", "history": [{"step": step, "loss": 1.0}]})
    os.utime(path, (1_700_000_000, 1_700_000_000))


def test_runs_are_recorded_and_a_failing_file_is_reported(tmp_path: Path, ingest_engine: Engine) -> None:
    lab = Lab(tmp_path, ingest_engine)
    _job(lab, "a", 1)
    bad = lab.write_job("broken", None, raw="version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    os.utime(bad, (1_700_000_000, 1_700_000_000))
    lab.ingest()
    _job(lab, "b", 2)
    os.utime(lab.root / "b" / "progress.json", (1_700_000_100, 1_700_000_100))
    lab.ingest()
    recorded = lab.query("SELECT outcome, ingested, unchanged, failed FROM ingest_runs ORDER BY run_id")
    assert recorded == [("files_failed", 1, 0, 1), ("ok", 1, 2, 0)]  # the bad file is not re-read unchanged

    heartbeat = journal.read_heartbeat(lab.db)  # on PostgreSQL: the stage's (docs/postgresql.md, "status")
    assert heartbeat is not None and heartbeat["outcome"] == "ok" and heartbeat["summary"]["ingested"] == 1

    # on PostgreSQL: the database the ingest published to, whose ledger paths are the ingester's
    warehouse = lab.warehouse()
    result = subprocess.run(
        [sys.executable, "-m", "runlytics", "status", "--db", str(warehouse), "--json"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["schema_revision"] == migrate.HEAD_REVISION == "0047" and status["jobs"] == 2
    assert [(f["path"], f["outcome"]) for f in status["problem_files"]] == [(lab.ledger_path(bad), "failed")]
    assert "Git LFS pointer" in status["problem_files"][0]["error"]
    assert [r["outcome"] for r in status["recent_runs"]] == ["ok", "files_failed"]

    client = TestClient(create_app(warehouse, token=None))
    first = client.get("/api/ingest/runs", params={"limit": 1})
    assert first.status_code == 200
    body = first.json()
    assert [r["outcome"] for r in body["runs"]] == ["ok"]
    assert body["problem_files"][0]["path"] == f"{bad.parent.name}/{bad.name}"  # no server folder
    assert str(lab.root) not in json.dumps(body)
    second = client.get(body["next"]).json()
    assert [r["outcome"] for r in second["runs"]] == ["files_failed"] and second["next_cursor"] is None
    assert client.get("/api/ingest/runs", params={"cursor": "nope"}).status_code == 422


def test_problem_paths_are_shown_from_their_job_folder() -> None:
    assert ingest_status.shown_path("/srv/jobs/runs/run0/events.out.tfevents.1", "runs/run0") == (
        "runs/run0/events.out.tfevents.1"
    )
    assert (
        ingest_status.shown_path("/srv/a/x/a/checkpoint-5/trainer_state.json", "a")
        == "a/checkpoint-5/trainer_state.json"
    )
    assert ingest_status.shown_path("/var/spool/gpu/h-2026120101.jsonl", None) == "gpu/h-2026120101.jsonl"
    assert ingest_status.shown_path("/srv/jobs/b/progress.json", "other") == "b/progress.json"
