"""No input makes the API answer 5xx: schemathesis over the OpenAPI schema, and hand-picked nasty inputs.

The hand-picked inputs (the tests taking ``client``) run on both engines: on PostgreSQL the same jobs
published by ``ingest --db``, read by the API's PostgreSQL cursor. Schemathesis' generated requests
run on DuckDB alone (a few hundred requests: their cost; the hand-picked inputs are where the
engines differ: NUL characters, huge numbers, odd text in cursors).

Every error is JSON with a `detail` (docs/api.md, "Errors").
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import Engine, Lab
from depth import examples
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from runlytics.api.app import create_app

JOB = "fuzz-job"
DOC = {
    "job_id": JOB,
    "status": "completed",
    "started_at": "2025-01-01T00:00:00Z",
    "ended_at": "2025-01-01T00:10:00Z",
    "config": {"model_name": "m", "batch_size": 4, "nested": {"x": [1, 2]}},
    "history": [
        {
            "step": step,
            "timestamp": 1735689600 + step,
            "loss": 3.0 - step / 100,
            "iteration_time": 0.5,
            "gpus": [
                {"index": i, "utilization_percent": 90.0, "memory_used_mb": 1000.0, "temperature_c": 60.0}
                for i in (0, 1)
            ],
        }
        for step in range(1, 41)
    ],
    "checkpoints": [{"step": 20}, {"step": 40}],
}


# The app exists at import, for schemathesis to read its schema (its fixture-based loader does
# not work with this pytest); it opens its warehouse only on a request, and `warehouse` below
# builds that before any test runs.
WAREHOUSE_DIR = Path(tempfile.gettempdir()) / f"runlytics-fuzz-{uuid.uuid4().hex}"
APP = create_app(WAREHOUSE_DIR / "warehouse.duckdb")
APP.state.token = None  # never a token from the environment of whoever runs the tests
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def fill(lab: Lab) -> Lab:
    lab.write_job(JOB, DOC)
    # a second job with a throughput: the summary's top jobs then have a second page
    other = {"status": "running", "started_at": "2025-01-02T00:00:00Z",
             "history": [{"step": 10, "samples": 40, "iteration_time": 0.5}]}  # fmt: skip
    lab.write_job("other", other)
    assert lab.ingest().failed == 0
    return lab


@pytest.fixture(scope="module", autouse=True)
def warehouse() -> Iterator[Lab]:
    WAREHOUSE_DIR.mkdir()
    try:
        yield fill(Lab(WAREHOUSE_DIR))
    finally:
        shutil.rmtree(WAREHOUSE_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def client(warehouse: Lab, module_ingest_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """The API on the module's DuckDB warehouse, or on the same jobs published to PostgreSQL."""
    if not module_ingest_engine.ingests:
        return TestClient(APP)
    app = create_app(fill(Lab(tmp_path_factory.mktemp("fuzz-pg"), module_ingest_engine)).warehouse(), token=None)
    return TestClient(app)


# --- schemathesis --------------------------------------------------------------------------


@schema.parametrize()
@settings(max_examples=examples(10, 25), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case: Any, warehouse: Lab) -> None:
    """Each generated request, and again on the real job (a random id stops at the 404)."""
    response = case.call_and_validate(checks=[not_a_server_error])
    if response.status_code >= 400:
        assert "detail" in response.json()
    if isinstance(case.path_parameters, dict) and "job_id" in case.path_parameters:
        case.path_parameters["job_id"] = JOB
        response = case.call_and_validate(checks=[not_a_server_error])
        if response.status_code >= 400:
            assert "detail" in response.json()


def test_schema_covers_every_endpoint(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert paths == {
        "/healthz",
        "/readyz",
        "/api/ingest/runs",
        "/api/training/export/steps",
        "/api/training/analytics/fleet",
        "/api/training/{job_id}/checkpoints",
        "/api/training/jobs",
        "/api/training/jobs/{job_id}",
        "/api/training/analytics/summary",
        "/api/training/analytics/compare",
        "/api/training/{job_id}/analytics",
        "/api/training/{job_id}/steps",
        "/api/training/{job_id}/gpus",
        "/api/training/insights",
        "/api/training/{job_id}/insights",
        "/api/training/{job_id}/metrics",
        "/api/training/{job_id}/metrics/history",
        "/api/training/{job_id}",
    }


# --- hand-picked nasty inputs --------------------------------------------------------------


def forged(kind: str, values: list[Any]) -> str:
    """A well-formed cursor that this API never handed out."""
    return base64.urlsafe_b64encode(json.dumps({"k": kind, "v": values}).encode()).decode().rstrip("=")


def raw_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


# Raw (already URL-encoded) path segments for a job id.
NASTY_IDS = {
    "traversal": "..%2F..%2Fetc%2Fpasswd",
    "traversal-plain": "..",
    "dot-encoded": "%2e%2e",
    "sql": "%27%20OR%201%3D1%20--",
    "sql-semicolon": "x%27%3B%20DROP%20TABLE%20jobs%3B%20--",
    "long": "x" * 5_000,
    "nul": "%00",
    "nul-inside": "fuzz%00job",
    "unicode": "%E2%80%AEj%C3%B6b%F0%9F%94%A5",
    "bad-utf8": "%FF%FE",
    "surrogate": "%ED%A0%80",
    "percent": "%25",
    "newline": "a%0Ab",
    "backslash": "..%5C..%5Cwindows",
    "space": "%20",
}
JOB_PATHS = [
    "/api/training/{}/analytics",
    "/api/training/{}",
    "/api/training/jobs/{}",
    "/api/training/{}/steps",
    "/api/training/{}/gpus",
    "/api/training/{}/insights",
    "/api/training/{}/metrics",
    "/api/training/{}/metrics/history?name=loss",
]


def assert_json_answer(client: TestClient, url: str) -> tuple[int, Any]:
    response = client.get(url)
    assert response.status_code < 500, f"{url[:200]} -> {response.status_code}: {response.text[:500]}"
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict) and "detail" in body, body
    return response.status_code, body


@pytest.mark.parametrize("path", JOB_PATHS)
@pytest.mark.parametrize("job_id", list(NASTY_IDS.values()), ids=list(NASTY_IDS))
def test_nasty_job_ids_are_404(client: TestClient, path: str, job_id: str) -> None:
    code, body = assert_json_answer(client, path.format(job_id))
    assert code == 404
    assert len(json.dumps(body)) < 1_000  # a 5,000-character id is not echoed whole


@pytest.mark.parametrize("name", list(NASTY_IDS))
def test_nasty_ids_to_compare_are_404(client: TestClient, name: str) -> None:
    code, body = assert_json_answer(client, f"/api/training/analytics/compare?job_ids={JOB},{NASTY_IDS[name]}")
    if name == "space":  # a blank id is dropped, as an empty one is
        assert [j["job_id"] for j in body["jobs"]] == [JOB]
    else:
        assert code == 404 and JOB not in body["detail"]


STEPS = f"/api/training/{JOB}/steps"
GPUS = f"/api/training/{JOB}/gpus"
JOBS = "/api/training/jobs"
SUMMARY = "/api/training/analytics/summary"
INSIGHTS = "/api/training/insights"
METRIC = f"/api/training/{JOB}/metrics/history"
BAD_CURSORS = {
    "garbage": "%25%25%25",
    "not-base64": "!!!!",
    "base64-garbage": raw_cursor("\x00\x01not json"),
    "json-list": raw_cursor("[1, 2]"),
    "no-kind": raw_cursor('{"v": [1]}'),
    "nan": raw_cursor('{"k": "steps", "v": [NaN]}'),
    "non-ascii": "%C3%A9",
    "huge": forged("steps", [10**40]),
    "bool": forged("steps", [True]),
    "float": forged("steps", [1.5]),
    "string": forged("steps", ["1"]),
    "object": forged("steps", [{"a": 1}]),
    "arity": forged("steps", [1, 2]),
    "gpus-huge": forged("gpus", [10**40, 0]),
    "gpus-string": forged("gpus", ["0", "1"]),
    "jobs-time-text": forged("jobs:start_time:1", ["not a time", "x"]),
    "jobs-time-number": forged("jobs:start_time:1", [1e308, "x"]),
    "jobs-time-year-10000": forged("jobs:start_time:1", ["9999-12-31T23:59:59-05:00", "x"]),
    "jobs-id-number": forged("jobs:start_time:1", ["2025-01-01T00:00:00Z", 5]),
    "jobs-null-id": forged("jobs:start_time:1", [None, None]),
    "jobs-surrogate": raw_cursor('{"k": "jobs:start_time:1", "v": [null, "\\ud800"]}'),
    "top-text": forged("top", ["fast", "x"]),
    "top-huge": forged("top", [10**40, "x"]),
    "top-id-number": forged("top", [None, 5]),
}
# (url prefix, cursor kind it takes): a cursor of one listing is refused by every other
LISTINGS = {
    "steps": f"{STEPS}?",
    "gpus": f"{GPUS}?",
    "jobs": f"{JOBS}?",
    "jobs-by-seconds": f"{JOBS}?sort=total_seconds&",
    "top": f"{SUMMARY}?",
    "insights": f"{INSIGHTS}?",
    "metric": f"{METRIC}?name=loss&",
}


@pytest.mark.parametrize("listing", list(LISTINGS))
@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_bad_cursors_are_422(client: TestClient, listing: str, cursor: str) -> None:
    code, body = assert_json_answer(client, f"{LISTINGS[listing]}cursor={cursor}")
    assert code == 422, body


def test_cursors_from_another_listing_are_422(client: TestClient) -> None:
    handed_out = {
        "steps": client.get(STEPS, params={"limit": 1}).json()["next_cursor"],
        "gpus": client.get(GPUS, params={"limit": 1}).json()["next_cursor"],
        "jobs": client.get(JOBS, params={"limit": 1}).json()["next_cursor"],
        "jobs-by-seconds": client.get(JOBS, params={"limit": 1, "sort": "total_seconds"}).json()["next_cursor"],
        "top": client.get(SUMMARY, params={"limit": 1}).json()["next_cursor"],
    }
    assert all(handed_out.values())
    for source, cursor in handed_out.items():
        for listing, prefix in LISTINGS.items():
            code, _ = assert_json_answer(client, f"{prefix}cursor={cursor}")
            assert code == (200 if listing == source else 422), (source, listing)


NASTY_PARAMS = [
    (JOBS, "status", "%27%20OR%201%3D1%20--"),
    (JOBS, "sort", "job_id%3B%20DROP%20TABLE%20jobs"),
    (JOBS, "sort", "-"),
    (JOBS, "since", "%00"),
    (JOBS, "since", "9999-12-31T23:59:59-14:00"),
    (JOBS, "until", "0001-01-01T00:00:00%2B14:00"),
    (JOBS, "since", "1e400"),
    (JOBS, "limit", "-1"),
    (JOBS, "limit", "0"),
    (JOBS, "limit", "99999999999999999999999999"),
    (JOBS, "limit", "1.5"),
    (JOBS, "limit", "NaN"),
    (SUMMARY, "offset", "-1"),
    (SUMMARY, "offset", "99999999999999999999999999"),
    (SUMMARY, "limit", "-5"),
    (SUMMARY, "status", "%E2%80%AE"),
    (SUMMARY, "until", "not-a-time"),
    (SUMMARY, "since", "9999-12-31T23:59:59-14:00"),
    ("/api/training/analytics/compare", "job_ids", ","),
    ("/api/training/analytics/compare", "job_ids", ",".join(str(i) for i in range(51))),
    ("/api/training/analytics/compare", "job_ids", "x" * 60_001),
    (STEPS, "fields", "loss%27%20--"),
    (STEPS, "fields", "loss,%00"),
    (STEPS, "fields", ""),
    (STEPS, "limit", "-1"),
    (STEPS, "limit", "10001"),
    (STEPS, "from_step", "-1"),
    (STEPS, "from_step", "99999999999999999999999999"),
    (STEPS, "to_step", "1e3"),
    (STEPS, "max_points", "-1"),
    (STEPS, "max_points", "99999999999999999999999999"),
    (GPUS, "gpu", "-1"),
    (GPUS, "gpu", "99999999999999999999999999"),
    (GPUS, "limit", "-1"),
    (INSIGHTS, "kind", "%27%20OR%201%3D1%20--"),
    (INSIGHTS, "kind", "%00"),
    (INSIGHTS, "severity", "Critical"),
    (INSIGHTS, "status", "%E2%80%AE"),
    (INSIGHTS, "since", "9999-12-31T23:59:59-14:00"),
    (INSIGHTS, "limit", "0"),
    (f"/api/training/{JOB}/insights", "kind", "x" * 5_000),
    (METRIC, "name", ""),
    (METRIC, "name", "x" * 1_001),
]


@pytest.mark.parametrize(("url", "param", "value"), NASTY_PARAMS, ids=lambda v: str(v)[:40])
def test_nasty_parameters_are_422(client: TestClient, url: str, param: str, value: str) -> None:
    code, body = assert_json_answer(client, f"{url}?{param}={value}")
    assert code == 422, body


ODD_BUT_VALID = [
    f"{JOBS}?model=%27%20OR%201%3D1%20--",  # no such model: no job, not every job
    f"{JOBS}?model=%00",
    f"{JOBS}?model={'x' * 5_000}",
    f"{SUMMARY}?model=%27%20OR%201%3D1%20--",
    f"{JOBS}?limit=1&self=x",  # a parameter the handler does not know, named like Python's self
    f"{JOBS}?limit=1&limit=1&extra=%FF",
    f"{SUMMARY}?limit=1&self=x",
    f"{STEPS}?limit=1&self=x",
    f"{GPUS}?limit=1&self=x",
    f"{STEPS}?max_points=10&fields=ts",
    f"{STEPS}?max_points=10&fields=ts,epoch",
    f"{STEPS}?from_step=4611686018427387904",
    f"{STEPS}?to_step=0",
    f"{GPUS}?gpu=1000000",
    f"{SUMMARY}?offset=10000000&limit=10000",
    f"{JOBS}?since=0001-01-01&until=9999-12-31T23:59:59.999999",
    f"{INSIGHTS}?limit=1&self=x",
    f"{INSIGHTS}?since=0001-01-01&until=9999-12-31T23:59:59.999999&kind=stall&severity=info",
    f"/api/training/{JOB}/insights?kind=gpu_idle",
    f"/api/training/{JOB}/metrics?self=x",
]


@pytest.mark.parametrize("url", ODD_BUT_VALID)
def test_odd_but_valid_requests_answer_200(client: TestClient, url: str) -> None:
    code, body = assert_json_answer(client, url)
    assert code == 200, body
    if "model=" in url:
        assert body.get("total", body.get("total_jobs")) == 0


def test_next_link_of_a_request_with_odd_parameters(client: TestClient) -> None:
    page = client.get(JOBS, params=[("limit", "1"), ("self", "x"), ("tag", "a"), ("tag", "b")]).json()
    assert "self=x" in page["next"] and "tag=a" in page["next"] and "tag=b" in page["next"]
    assert client.get(page["next"]).json()["jobs"][0]["job_id"] != page["jobs"][0]["job_id"]
