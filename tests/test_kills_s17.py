"""Session 17's kill audit: the API's CSV export decides its status after its first group's
queries (a read's time limit is a 503, not a 200 cut short)."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from conftest import DUCKDB_ENGINE, Lab
from fastapi.testclient import TestClient
from servers import serving

from runlytics.api.app import create_app
from runlytics.warehouse import db, export

STEPS_API = "/api/training/export/steps"
JOBS = [f"job-{i:02d}" for i in range(12)]
STEPS = 60


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("kills_s17"))
    for job_id in JOBS:
        history = [{"step": s, "loss": 2.0 - s / 100, "timestamp": 1_767_225_600 + s} for s in range(1, STEPS + 1)]
        lab.write_job(job_id, {"job_id": job_id, "status": "completed", "history": history})
    summary = lab.ingest(lab.root)
    assert summary.failed == 0, summary.problems
    return lab


def client_of(lab: Lab) -> TestClient:
    app = create_app(DUCKDB_ENGINE.warehouse(lab.db))
    app.state.token = None
    return TestClient(app, raise_server_exceptions=True)


# --- the streamed CSV export: its status after its first group's queries -------------------


def test_the_first_chunk_holds_the_header_and_the_first_groups_rows(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "GROUP_ROWS", STEPS)  # a group per job
    with DUCKDB_ENGINE.reader(lab.db) as con:
        chunks = export.steps_csv(con, JOBS)
        first = next(chunks).decode()
        rest = b"".join(chunks).decode()
    rows = list(csv.DictReader(io.StringIO(first + rest)))
    assert len(rows) == len(JOBS) * STEPS
    first_rows = list(csv.DictReader(io.StringIO(first)))
    assert first_rows and {r["job_id"] for r in first_rows} == {JOBS[0]}


def test_no_rows_is_the_header_alone(lab: Lab) -> None:
    with DUCKDB_ENGINE.reader(lab.db) as con:
        chunks = list(export.steps_csv(con, ["no-such-job"]))
    assert len(chunks) == 1 and chunks[0].startswith(b"job_id,") and chunks[0].count(b"\n") == 1


def _failing_copy(monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
    """export._copy_to_temp raising as a read past its time limit does, at its ``fail_at``-th call."""
    real, calls = export._copy_to_temp, [0]

    def copy(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == fail_at:
            raise db.WarehouseError("a read took longer than its time limit: 0.01 s on DuckDB")
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "_copy_to_temp", copy)


def test_a_first_group_past_its_time_limit_is_a_503_before_any_byte(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_copy(monkeypatch, 1)
    with client_of(lab) as client:
        answer = client.get(STEPS_API, params={"job_ids": ",".join(JOBS)})
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("warehouse unavailable: a read took longer than its time limit")


def test_a_later_group_past_its_time_limit_cuts_the_stream(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/export.md: a 200 already sent cannot become an error; the body then ends without its
    last chunk, which every HTTP client reports (never a shorter body that looks whole)."""
    monkeypatch.setattr(export, "GROUP_ROWS", STEPS)
    _failing_copy(monkeypatch, 3)
    with (
        client_of(lab) as client,
        pytest.raises(RuntimeError, match="response already started") as cut,
        client.stream("GET", STEPS_API, params={"job_ids": ",".join(JOBS)}) as answer,
    ):
        assert answer.status_code == 200
        b"".join(answer.iter_raw())
    assert isinstance(cut.value.__cause__, db.WarehouseError)  # the server closes the connection


def test_a_real_server_with_a_tiny_read_timeout_answers_503_or_the_whole_export(lab: Lab) -> None:
    """The audit's repro: `serve --read-timeout` so short that some reads run out of time. Each
    answer is a clean 503 or a whole CSV, never a 200 cut short (one group here)."""
    seen: set[int] = set()
    for limit in ("0.002", "0.01"):
        with serving(lab.db, "--read-timeout", limit) as server:
            for _ in range(8):
                answer = httpx.get(f"{server.url}{STEPS_API}", params={"job_ids": ",".join(JOBS)}, timeout=60)
                seen.add(answer.status_code)
                if answer.status_code == 200:
                    assert answer.text.count("\n") == 1 + len(JOBS) * STEPS
                else:
                    assert answer.status_code == 503, answer.text
                    assert "time limit" in answer.json()["detail"]
            assert "Traceback" not in server.log.read_text()
    assert 503 in seen
