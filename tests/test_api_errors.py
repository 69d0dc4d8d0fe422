"""Errors to answers (api/errors.py): each domain error is mapped once, with the body
``{"detail": …}``; a warehouse that can't be read is a 503, and a SQL bug is a 500, not an outage.

The answers of a warehouse that is there run on both engines (on PostgreSQL the job published by
``ingest --db``); the 503s of a missing snapshot are DuckDB's (PostgreSQL's refused connection:
tests/test_postgres_api.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from conftest import Engine, Lab
from fastapi import FastAPI
from fastapi.testclient import TestClient

from runlytics.api import errors
from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.warehouse import db, snapshots

JOB = {
    "status": "completed",
    "started_at": "2025-01-01T00:00:00Z",
    "ended_at": "2025-01-01T00:10:00Z",
    "history": [{"step": s, "loss": 2.0 - s / 10, "iteration_time": 0.5} for s in (1, 2, 3)],
    "checkpoints": [{"step": 3}],
}


def app_over(warehouse: Path | db.PostgresUrl, token: str | None = None) -> FastAPI:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        return create_app(warehouse, token=token)


@pytest.fixture
def broken(tmp_path: Path, ingest_engine: Engine) -> Lab:
    """A warehouse whose newest snapshot (or PostgreSQL database) lacks the view checkpoint_scores
    (on PostgreSQL with job_checkpoints, which reads it): a query of it fails in SQL."""
    lab = Lab(tmp_path, ingest_engine)
    lab.write_job("a", JOB)
    assert lab.ingest().failed == 0
    if ingest_engine.ingests:
        import psycopg

        with psycopg.connect(lab.target().libpq_url) as pg:
            pg.execute("DROP VIEW checkpoint_scores CASCADE")
        return lab
    con = duckdb.connect(str(lab.db))
    try:
        con.execute("DROP VIEW checkpoint_scores")
    finally:
        con.close()
    snapshots.publish(lab.db)
    return lab


def test_a_sql_bug_is_a_500_not_a_503(broken: Lab) -> None:
    client = TestClient(app_over(broken.warehouse()), raise_server_exceptions=False)
    assert client.get("/readyz").status_code == 200  # the warehouse is there: no outage
    assert client.get("/api/training/a").status_code == 200
    assert client.get("/api/training/nope/checkpoints").status_code == 404  # the job check comes first
    response = client.get("/api/training/a/checkpoints")
    assert response.status_code == 500, response.text
    assert "warehouse unavailable" not in response.text


def test_in_tests_a_sql_bug_raises_with_its_traceback(broken: Lab) -> None:
    client = TestClient(app_over(broken.warehouse()))
    missing: type[Exception] = duckdb.CatalogException
    if broken.engine.ingests:
        import psycopg

        missing = psycopg.errors.UndefinedTable
    with pytest.raises(missing, match="checkpoint_scores"):
        client.get("/api/training/a/checkpoints")


def test_no_duckdb_error_is_mapped() -> None:
    mapped = [key for key in errors.HANDLERS if isinstance(key, type)]
    assert not [key for key in mapped if issubclass(key, duckdb.Error) or issubclass(duckdb.Error, key)]


GUARDED_ROUTES = [
    "/api/training/jobs",
    "/api/training/a",
    "/api/training/jobs/a",
    "/api/training/a/analytics",
    "/api/training/a/steps",
    "/api/training/a/gpus",
    "/api/training/a/checkpoints",
    "/api/training/a/insights",
    "/api/training/insights",
    "/api/training/a/metrics",
    "/api/training/a/metrics/history?name=loss",
    "/api/training/analytics/summary",
    "/api/training/analytics/fleet",
    "/api/training/analytics/compare?job_ids=a",
    "/api/training/export/steps?job_ids=a",
    "/api/ingest/runs",
]


@pytest.mark.parametrize("url", GUARDED_ROUTES)
def test_without_a_snapshot_every_data_route_is_503(tmp_path: Path, url: str) -> None:
    response = TestClient(app_over(tmp_path / "missing.duckdb")).get(url)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith("warehouse unavailable: no snapshot of ") and "runlytics ingest" in detail


@pytest.mark.parametrize("url", GUARDED_ROUTES)
def test_the_token_is_checked_before_the_warehouse(tmp_path: Path, url: str) -> None:
    response = TestClient(app_over(tmp_path / "missing.duckdb", token="s3cret")).get(url)
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or wrong bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> TestClient:
    """The API over one job, ingested into a file or published to PostgreSQL (one per module: the
    tests only read)."""
    lab = Lab(tmp_path_factory.mktemp("errors"), module_ingest_engine)
    lab.write_job("a", JOB)
    assert lab.ingest().failed == 0
    return TestClient(app_over(lab.warehouse()))


@pytest.mark.parametrize(
    ("url", "status", "detail"),
    [
        ("/api/training/nope", 404, "no job 'nope'"),
        ("/api/training/jobs/nope", 404, "no job 'nope'"),
        ("/api/training/nope/analytics", 404, "no job 'nope'"),
        ("/api/training/nope/steps", 404, "no job 'nope'"),
        ("/api/training/nope/gpus", 404, "no job 'nope'"),
        ("/api/training/nope/checkpoints", 404, "no job 'nope'"),
        ("/api/training/nope/insights", 404, "no job 'nope'"),
        ("/api/training/nope/metrics", 404, "no job 'nope'"),
        ("/api/training/nope/metrics/history?name=loss", 404, "no job 'nope'"),
        ("/api/training/a/metrics/history?name=nope", 404, "job 'a' has no metric 'nope'"),
        ("/api/training/insights?kind=nope", 422, None),
        ("/api/training/insights?cursor=nope", 422, "bad cursor: cursor is not one this API handed out"),
        ("/api/training/a/metrics/history?name=loss&cursor=nope", 422,
         "bad cursor: cursor is not one this API handed out"),
        (f"/api/training/{'x' * 300}", 404, f"no job '{'x' * 200}…'"),
        ("/api/training/analytics/compare?job_ids=a,nope,gone", 404, "unknown job(s): 'nope', 'gone'"),
        ("/api/training/export/steps?job_ids=a,nope,gone", 404, "unknown job(s): 'nope', 'gone'"),
        ("/api/training/jobs?cursor=nope", 422, "bad cursor: cursor is not one this API handed out"),
        ("/api/training/a/steps?max_points=10&fields=loss,eval_loss,learning_rate,delta,epoch", 422,
         "max_points must be at least 12 for 5 numeric field(s): "
         "the first and last step, and a minimum and a maximum of each field per bucket"),
        ("/api/training/jobs?sort=nope", 422, None),
        ("/nowhere", 404, "Not Found"),
    ],
)  # fmt: skip
def test_each_error_has_its_status_and_detail(client: TestClient, url: str, status: int, detail: str | None) -> None:
    response = client.get(url)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail"}
    if detail is not None:
        assert body["detail"] == detail


def test_invalid_parameters_are_422_with_a_list_of_errors(client: TestClient) -> None:
    response = client.get("/api/training/jobs", params={"limit": 0})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert set(error) == {"loc", "msg", "type"}
    assert (error["loc"], error["type"]) == (["query", "limit"], "greater_than_equal")
