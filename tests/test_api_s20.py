"""Session 20's refactor of the API's handlers (answers byte-identical): the one keyset cut of
every listing (pages.page), and the jobs' filters as one model of query parameters
(deps.Filters) whose unknown status is still named after each route's own checks."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Lab
from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from runlytics.warehouse import pages

UNKNOWN_STATUS = "unknown status 'bogus'; known: queued, running, paused, completed, failed, cancelled, unknown"


def test_a_page_is_cut_one_row_past_it_and_the_cursor_is_the_last_rows_key() -> None:
    rows = [{"step": 1}, {"step": 2}, {"step": 3}]
    page, cursor = pages.page(rows, 2, "steps", lambda row: [row["step"]])
    assert page == rows[:2] and cursor is not None
    assert pages.decode("steps", cursor, 1) == [2]
    assert pages.page(rows, 3, "steps", lambda row: [row["step"]]) == (rows, None)
    assert pages.page([], 1, "steps", lambda row: [row["step"]]) == ([], None)
    # rows of any shape: the summary's (job_id, throughput, duration) tuples
    top, cursor = pages.page([("a", 2.0, 1), ("b", 1.0, 1)], 1, "top", lambda row: [row[1], row[0]])
    assert top == [("a", 2.0, 1)] and pages.decode("top", str(cursor), 2) == [2.0, "a"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    lab = Lab(tmp_path_factory.mktemp("filters"))
    lab.write_job("a", {"job_id": "a", "status": "completed", "history": [{"step": 1, "loss": 1.0}]})
    lab.ingest()
    return TestClient(create_app(lab.db, token=None))


def detail(client: TestClient, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 422, response.text
    return response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/training/jobs",
        "/api/training/analytics/summary",
        "/api/training/analytics/fleet",
        "/api/training/insights",
    ],
)
def test_an_unknown_status_is_a_422_of_its_own_on_every_filtered_route(client: TestClient, url: str) -> None:
    assert detail(client, f"{url}?status=bogus") == UNKNOWN_STATUS
    assert client.get(f"{url}?status=completed&model=m&since=2026-01-01&until=2027-01-01").status_code == 200


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # each route's own checks come first, as when the route read the parameters itself
        ("/api/training/jobs?status=bogus&sort=bogus", "unknown sort key 'bogus'"),
        ("/api/training/insights?status=bogus&kind=bogus", "unknown kind 'bogus'"),
        ("/api/training/analytics/summary?status=bogus&offset=1&cursor=x", "cursor and offset can't be given"),
    ],
)
def test_the_unknown_status_comes_after_the_routes_own_checks(client: TestClient, query: str, expected: str) -> None:
    assert detail(client, query).startswith(expected)


def test_the_filters_bad_values_are_listed_in_their_place_among_the_routes_parameters(client: TestClient) -> None:
    # kind is declared before the filters, limit after them: a 422 lists them in that order
    found = detail(client, "/api/training/insights?limit=0&since=bogus&kind=" + "k" * 101)
    assert [error["loc"] for error in found] == [["query", "kind"], ["query", "since"], ["query", "limit"]]
    schema = client.get("/openapi.json").json()
    names = [p["name"] for p in schema["paths"]["/api/training/insights"]["get"]["parameters"]]
    assert names == ["kind", "severity", "status", "model", "since", "until", "limit", "cursor"]
