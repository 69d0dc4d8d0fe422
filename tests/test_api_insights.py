"""Insights through the API (docs/api.md): one job's, the fleet's (filters, keyset pages), the
counts by severity in a job's analytics and the job list, and the counts for running jobs in
``/metrics``; over a warehouse built by real ingest of small jobs whose insights are worked out
by hand from shared/spec/insights.md:

    job       status     model  start       insights
    live      running    m1     2025-01-05  silent_running (nothing logged since 00:10 that day)
    gpus      completed  m2     2025-01-04  nonfinite_loss at step 4 (NaN), gpu_idle of GPU 0 (5 %)
    insights  completed  m1     2025-01-03  none (a job named like the fleet route)
    nan       failed     m2     2025-01-02  nonfinite_loss at steps 3-4 (two NaN)
    spiky     completed  m1     2025-01-01  loss_spike at 30, loss_spike at 35-36 (10 against 1)
    late      failed     m2     -           nonfinite_loss at step 2 (+Inf)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from conftest import Engine, Lab
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.warehouse import insight_list, insights

NAN, INF = float("nan"), float("inf")
FLEET_API = "/api/training/insights"


def rows(losses: list[float], **extra: Any) -> list[dict[str, Any]]:
    return [{"step": i, "loss": loss, **extra} for i, loss in enumerate(losses, start=1)]


SPIKY = [1.0] * 40
SPIKY[29] = SPIKY[34] = SPIKY[35] = 10.0  # steps 30, 35 and 36
# three GPUs logged with each step: GPU 0 idle (5 % < 10 % at every reading); the median of the
# means (5, 90, 50) is 50, and no GPU that is not idle is more than 20 points below it
GPU_READINGS = [
    {"index": 0, "utilization_percent": 5},
    {"index": 1, "utilization_percent": 90},
    {"index": 2, "utilization_percent": 50},
]
JOBS: dict[str, dict[str, Any]] = {
    "spiky": {"status": "completed", "started_at": "2025-01-01T00:00:00Z", "ended_at": "2025-01-01T01:00:00Z",
              "config": {"model_name": "m1"}, "history": rows(SPIKY)},
    "nan": {"status": "failed", "started_at": "2025-01-02T00:00:00Z", "ended_at": "2025-01-02T01:00:00Z",
            "config": {"model_name": "m2"}, "history": rows([1.0, 0.9, NAN, NAN, 0.8])},
    "insights": {"status": "completed", "started_at": "2025-01-03T00:00:00Z", "ended_at": "2025-01-03T01:00:00Z",
                 "config": {"model_name": "m1"}, "history": rows([3.0, 2.0, 1.0])},
    "gpus": {"status": "completed", "started_at": "2025-01-04T00:00:00Z", "ended_at": "2025-01-04T01:00:00Z",
             "config": {"model_name": "m2"},
             "history": [{**r, "gpus": GPU_READINGS} for r in rows([1.0, 1.0, 1.0, NAN])]},
    "live": {"status": "running", "started_at": "2025-01-05T00:00:00Z", "updated_at": "2025-01-05T00:10:00Z",
             "config": {"model_name": "m1"}, "history": rows([1.0, 0.5])},
    "late": {"status": "failed", "config": {"model_name": "m2"}, "history": rows([1.0, INF])},
}  # fmt: skip
NO_STEP = {"first_step": None, "last_step": None}
NO_TIMES = {"start_time": None, "end_time": None}
NO_GPU = {"host": None, "gpu_index": None, "gpu_uuid": None}  # gpu_uuid: the UUID of a GPU kind's GPU, when known


def insight(job_id: str, kind: str, severity: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "kind": kind, "severity": severity, **NO_TIMES, **NO_GPU, **fields}


SPIKES = [
    insight("spiky", "loss_spike", "warning", first_step=30, last_step=30, value=10.0, reference=1.0),
    insight("spiky", "loss_spike", "warning", first_step=35, last_step=36, value=10.0, reference=1.0),
]
NAN_ROWS = insight("nan", "nonfinite_loss", "critical", first_step=3, last_step=4, value=2.0, reference=0.9)
GPUS = [
    insight("gpus", "nonfinite_loss", "critical", first_step=4, last_step=4, value=1.0, reference=1.0),
    # step readings have no host: null (insights.md: the host is for GPU kinds, where known)
    insight("gpus", "gpu_idle", "warning", **NO_STEP, **{"host": None, "gpu_index": 0}, value=1.0, reference=0.5),
]  # by first step, those without one last (not by kind: gpu_idle < nonfinite_loss)
LATE = insight("late", "nonfinite_loss", "critical", first_step=2, last_step=2, value=1.0, reference=1.0)


def live_silence(as_of: str) -> dict[str, Any]:
    """live's silent_running: as_of − its latest time (updated_at, its rows have none); the limit
    is max(30 min, 20·g) with g unknown: 30 min."""
    silence = (datetime.fromisoformat(as_of) - datetime.fromisoformat("2025-01-05T00:10:00+00:00")).total_seconds()
    return insight("live", "silent_running", "warning", **NO_STEP, value=silence, reference=1800.0)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("insights"))
    for job_id, doc in JOBS.items():
        lab.write_job(job_id, {"job_id": job_id, **doc})
    assert lab.ingest().failed == 0
    return lab


@pytest.fixture(scope="module")
def client(lab: Lab, module_engine: Engine) -> Iterator[TestClient]:
    """The app over the jobs, on DuckDB and on PostgreSQL (conftest's ``engine``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        yield TestClient(create_app(module_engine.warehouse(lab.db)))


@pytest.fixture(scope="module")
def as_of(lab: Lab) -> str:
    """The start of the ingest run, as the API writes times (read from ingest_runs, not the API)."""
    ((started,),) = lab.query("SELECT max(started_at) FROM ingest_runs")
    return started.isoformat() + "Z"


def ok(client: TestClient, url: str, **params: Any) -> Any:
    response = client.get(url, params=params or None)
    assert response.status_code == 200, response.text
    return response.json()


def without_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        assert isinstance(item.pop("message"), str)
    return items


def approx_silence(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**i, "value": pytest.approx(i["value"], abs=1e-3)} if i["kind"] == "silent_running" else i for i in items]


DEFAULT_THRESHOLDS = {name: float(value) for name, value in insights.DEFAULTS.items()}


# --- one job --------------------------------------------------------------------------------


def test_one_jobs_insights_with_thresholds_and_as_of(client: TestClient, as_of: str) -> None:
    answer = ok(client, "/api/training/spiky/insights")
    assert set(answer) == {"job_id", "as_of", "thresholds", "insights"}
    assert answer["job_id"] == "spiky"
    assert answer["as_of"] == as_of
    assert answer["thresholds"] == DEFAULT_THRESHOLDS
    messages = [i["message"] for i in answer["insights"]]
    assert all("10" in m and "1" in m for m in messages)  # both figures
    assert without_messages(answer["insights"]) == SPIKES


@pytest.mark.parametrize(
    ("job_id", "expected"),
    [("nan", [NAN_ROWS]), ("gpus", GPUS), ("late", [LATE]), ("insights", [])],
)
def test_each_jobs_insights_in_order(client: TestClient, job_id: str, expected: list[dict[str, Any]]) -> None:
    assert without_messages(ok(client, f"/api/training/{job_id}/insights")["insights"]) == expected


def test_a_running_job_that_went_silent(client: TestClient, as_of: str) -> None:
    (found,) = without_messages(ok(client, "/api/training/live/insights")["insights"])
    assert found == approx_silence([live_silence(as_of)])[0]


def test_one_jobs_insights_filtered(client: TestClient) -> None:
    assert without_messages(ok(client, "/api/training/gpus/insights", kind="gpu_idle")["insights"]) == GPUS[1:]
    assert without_messages(ok(client, "/api/training/gpus/insights", severity="critical")["insights"]) == GPUS[:1]
    assert ok(client, "/api/training/gpus/insights", kind="stall")["insights"] == []


def test_the_fleet_route_is_not_a_job_and_a_job_named_insights_is_reached(client: TestClient) -> None:
    assert "next_cursor" in ok(client, FLEET_API)  # the fleet's list, not the job "insights"
    assert ok(client, "/api/training/jobs/insights")["job_id"] == "insights"
    answer = ok(client, "/api/training/insights/insights")
    assert (answer["job_id"], answer["insights"]) == ("insights", [])


# --- the fleet ------------------------------------------------------------------------------


def fleet_order(as_of: str) -> list[dict[str, Any]]:
    """Newest jobs first (a job without a start last), each job's insights in their order."""
    return approx_silence([live_silence(as_of), *GPUS, NAN_ROWS, *SPIKES, LATE])


def fleet_fields(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        del item["status"], item["model_name"], item["job_start_time"]
    return without_messages(items)


def test_the_fleets_insights_newest_jobs_first(client: TestClient, as_of: str) -> None:
    answer = ok(client, FLEET_API)
    assert set(answer) == {"insights", "as_of", "thresholds", "next_cursor", "next"}
    assert answer["as_of"] == as_of and answer["thresholds"] == DEFAULT_THRESHOLDS
    assert answer["next_cursor"] is None and answer["next"] is None
    first = answer["insights"][0]
    assert (first["status"], first["model_name"], first["job_start_time"]) == ("running", "m1", "2025-01-05T00:00:00Z")
    assert answer["insights"][-1]["job_start_time"] is None
    assert fleet_fields(answer["insights"]) == fleet_order(as_of)


def keys(items: list[dict[str, Any]]) -> list[tuple[str, str, int | None]]:
    return [(i["job_id"], i["kind"], i["first_step"]) for i in items]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"kind": "loss_spike"}, [("spiky", "loss_spike", 30), ("spiky", "loss_spike", 35)]),
        ({"severity": "critical"}, [("gpus", "nonfinite_loss", 4), ("nan", "nonfinite_loss", 3),
                                    ("late", "nonfinite_loss", 2)]),
        ({"severity": "info"}, []),
        ({"status": "failed"}, [("nan", "nonfinite_loss", 3), ("late", "nonfinite_loss", 2)]),
        ({"model": "m1"}, [("live", "silent_running", None), ("spiky", "loss_spike", 30),
                           ("spiky", "loss_spike", 35)]),
        ({"since": "2025-01-02T00:00:00Z", "until": "2025-01-04T00:00:00Z"}, [("nan", "nonfinite_loss", 3)]),
        ({"since": "2025-01-04T01:00:00+01:00"}, [("live", "silent_running", None),
                                                   ("gpus", "nonfinite_loss", 4), ("gpus", "gpu_idle", None)]),
        ({"model": "m2", "kind": "nonfinite_loss", "status": "completed"}, [("gpus", "nonfinite_loss", 4)]),
        ({"model": "nope"}, []),
    ],
)  # fmt: skip
def test_the_fleets_filters(client: TestClient, params: dict[str, str], expected: list[Any]) -> None:
    assert keys(ok(client, FLEET_API, **params)["insights"]) == expected


def walk(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    page = ok(client, FLEET_API, **params)
    items = list(page["insights"])
    while page["next"] is not None:
        assert page["next_cursor"] in page["next"]
        assert len(items) < 10_000, "pages that never end"
        page = ok(client, page["next"])
        items += page["insights"]
    return items


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7, 8])
def test_pages_walked_to_the_end_hold_every_insight_once(client: TestClient, as_of: str, limit: int) -> None:
    assert fleet_fields(walk(client, limit=limit)) == fleet_order(as_of)


def test_pages_keep_the_filters(client: TestClient) -> None:
    page = ok(client, FLEET_API, severity="critical", limit=1)
    assert page["next"].startswith(f"{FLEET_API}?severity=critical&limit=1&cursor=")
    assert keys(walk(client, severity="critical", limit=1)) == [
        ("gpus", "nonfinite_loss", 4), ("nan", "nonfinite_loss", 3), ("late", "nonfinite_loss", 2)
    ]  # fmt: skip


def forged(values: list[Any], kind: str = "insights") -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": kind, "v": values}).encode()).decode().rstrip("=")


GOOD_KEY = ["2025-01-04T00:00:00Z", "gpus", 4, "nonfinite_loss", 4, "", -1, "", 1.0]  # start, job, KEY_COLUMNS


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"kind": "nope"}, "unknown kind 'nope'; known: " + ", ".join(insights.KINDS)),
        ({"severity": "fatal"}, "unknown severity 'fatal'; known: critical, warning, info"),
        ({"status": "done"}, None),
        ({"since": "yesterday"}, None),
        ({"limit": 0}, None),
        ({"cursor": "nope"}, "bad cursor: cursor is not one this API handed out"),
        ({"cursor": forged(GOOD_KEY, "jobs:start_time:1")}, "bad cursor: cursor belongs to another listing"),
        ({"cursor": forged(GOOD_KEY[:-1])}, "bad cursor: cursor is not one this API handed out"),
        ({"cursor": forged(["not a time", *GOOD_KEY[1:]])}, "bad cursor: cursor is not one this API handed out"),
        ({"cursor": forged([*GOOD_KEY[:2], "4", *GOOD_KEY[3:]])}, "bad cursor: cursor is not one this API handed out"),
        ({"cursor": forged([*GOOD_KEY[:2], True, *GOOD_KEY[3:]])}, "bad cursor: cursor is not one this API handed out"),
        ({"cursor": forged([*GOOD_KEY[:3], 4, *GOOD_KEY[4:]])}, "bad cursor: cursor is not one this API handed out"),
        ({"cursor": forged([*GOOD_KEY[:8], "1.0"])}, "bad cursor: cursor is not one this API handed out"),
        ({"cursor": forged([*GOOD_KEY[:7], 0, 1.0])}, "bad cursor: cursor is not one this API handed out"),
        ({"cursor": forged([None, 5, *GOOD_KEY[2:]])}, "bad cursor: cursor is not one this API handed out"),
    ],
)
def test_the_fleets_bad_parameters_are_422(client: TestClient, params: dict[str, Any], detail: str | None) -> None:
    response = client.get(FLEET_API, params=params)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"detail"}
    if detail is not None:
        assert response.json()["detail"] == detail


def test_a_forged_cursor_of_the_right_shape_pages_on(client: TestClient) -> None:
    # after gpus' nonfinite_loss: gpus' gpu_idle, then the older jobs
    page = ok(client, FLEET_API, cursor=forged(GOOD_KEY))
    assert keys(page["insights"])[:2] == [("gpus", "gpu_idle", None), ("nan", "nonfinite_loss", 3)]


@pytest.mark.parametrize(
    ("url", "params", "status", "detail"),
    [
        ("/api/training/nope/insights", {}, 404, "no job 'nope'"),
        ("/api/training/spiky/insights", {"kind": "nope"}, 422, None),
        ("/api/training/spiky/insights", {"severity": "nope"}, 422, None),
    ],
)
def test_one_jobs_errors(client: TestClient, url: str, params: dict[str, Any], status: int, detail: str | None) -> None:
    response = client.get(url, params=params)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"detail"}
    if detail is not None:
        assert response.json()["detail"] == detail


# --- counts ---------------------------------------------------------------------------------

COUNTS = {
    "live": {"critical": 0, "warning": 1, "info": 0},
    "gpus": {"critical": 1, "warning": 1, "info": 0},
    "insights": {"critical": 0, "warning": 0, "info": 0},
    "nan": {"critical": 1, "warning": 0, "info": 0},
    "spiky": {"critical": 0, "warning": 2, "info": 0},
    "late": {"critical": 1, "warning": 0, "info": 0},
}


@pytest.mark.parametrize("job_id", list(COUNTS))
def test_a_jobs_analytics_count_its_insights_by_severity(client: TestClient, job_id: str) -> None:
    assert ok(client, f"/api/training/{job_id}/analytics")["insights"] == COUNTS[job_id]


def test_the_job_list_carries_the_counts(client: TestClient) -> None:
    jobs = ok(client, "/api/training/jobs", limit=4)["jobs"]
    assert {j["job_id"]: j["insights"] for j in jobs} == {j: COUNTS[j] for j in ("live", "gpus", "insights", "nan")}


def test_metrics_count_the_running_jobs_insights(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    by_kind = {(s.labels["kind"], s.labels["severity"]): s.value for s in families["runlytics_insights"].samples}
    # every kind, with its severity; only live runs, and it has one silent_running
    assert by_kind == {(k, insight_list.SEVERITY_OF[k]): float(k == "silent_running") for k in insights.KINDS}
    by_job = {(s.labels["job_id"], s.labels["severity"]): s.value for s in families["runlytics_job_insights"].samples}
    assert by_job == {("live", "critical"): 0.0, ("live", "warning"): 1.0, ("live", "info"): 0.0}


def test_every_kind_has_a_severity() -> None:
    assert set(insight_list.SEVERITY_OF) == set(insights.KINDS)
    assert set(insight_list.SEVERITY_OF.values()) == set(insights.SEVERITIES)
