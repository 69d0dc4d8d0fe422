"""The REST API (docs/api.md) over warehouses built by real ingest of small hand-written jobs.

The fleet below is small enough to work every figure out by hand; the comment beside each
expected value shows the arithmetic (shared/spec/analytics.md).

    job      status     model    start   end      seconds  samples  throughput  gpu util  peak MiB  overall
    alpha    completed  llama    00:00   +100 s   20       100      5.0         90        1000      70
    bravo    completed  llama    01:00   +300 s   10       100      10.0        80        3000      90
    charlie  failed     mistral  02:00   +50 s    20       200      10.0        70        4000      60
    delta    running    mistral  03:00   +60 s    40       -        -           60        500       60
    echo     queued     gpt2     -       -        -        -        -           -         -         -
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Engine, Lab
from fastapi.testclient import TestClient
from servers import serving

from runlytics.api import job_paths
from runlytics.api.app import MAX_COMPARE, TOKEN_ENV, create_app
from runlytics.warehouse import fleet, migrate
from runlytics.warehouse.db import PostgresUrl
from runlytics.warehouse.views import STATUSES

BASE = datetime(2025, 1, 1, tzinfo=UTC)
HOUR = 3600
JOBS_API = "/api/training/jobs"
SUMMARY_API = "/api/training/analytics/summary"
COMPARE_API = "/api/training/analytics/compare"

Json = dict[str, Any]


def at(seconds: float) -> str:
    """An ISO timestamp `seconds` after BASE, as the API writes it back (with Z)."""
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def gpu(index: int, util: float, mem: float, temp: float) -> Json:
    return {"index": index, "utilization_percent": util, "memory_used_mb": mem, "temperature_c": temp}


def row(step: int, seconds: float, **fields: Any) -> Json:
    """A step entry that covers 10 iterations of `seconds / 10` each."""
    return {"step": step, "iteration_time": seconds / 10, **fields}


BRAVO_GPUS = (  # two GPUs at each of its two steps
    [gpu(0, 80, 2000, 60), gpu(1, 80, 3000, 62)],
    [gpu(0, 80, 2000, 64), gpu(1, 80, 3000, 66)],
)
FLEET: dict[str, Json] = {
    "alpha": {
        "status": "completed",
        "started_at": at(0),
        "ended_at": at(100),
        "updated_at": at(100),
        "current_step": 20,
        "total_steps": 20,
        "config": {"model_name": "llama", "target_samples_per_second": 10.0},
        "history": [
            row(10, 10, timestamp=at(10), samples=50, samples_per_second=5.0, loss=2.0, gpus=[gpu(0, 90, 1000, 60)]),
            row(20, 10, timestamp=at(20), samples=50, samples_per_second=6.0, loss=1.0, gpus=[gpu(0, 90, 1000, 70)])
            | {"eval_loss": 1.2},
        ],
        "checkpoints": [{"step": 10}, {"step": 20}],
    },
    "bravo": {
        "status": "completed",
        "started_at": at(HOUR),
        "ended_at": at(HOUR + 300),
        "config": {"model_name": "llama", "target_samples_per_second": 10.0},
        "history": [
            row(10, 5, timestamp=at(HOUR + 5), samples=50, loss=3.0, gpus=BRAVO_GPUS[0]),
            row(20, 5, timestamp=at(HOUR + 10), samples=50, loss=1.5, gpus=BRAVO_GPUS[1]),
        ],
    },
    "charlie": {
        "status": "failed",
        "started_at": at(2 * HOUR),
        "ended_at": at(2 * HOUR + 50),
        "config": {"model_name": "mistral", "target_samples_per_second": 20.0},
        "history": [
            row(10, 10, timestamp=at(2 * HOUR + 10), samples=100, loss=2.0, gpus=[gpu(0, 70, 4000, 60)]),
            row(20, 10, timestamp=at(2 * HOUR + 20), samples=100, loss=0.5, gpus=[gpu(0, 70, 4000, 60)]),
        ],
    },
    "delta": {  # running, without any samples figure: no throughput
        "status": "running",
        "started_at": at(3 * HOUR),
        "updated_at": at(3 * HOUR + 60),
        "config": {"model_name": "mistral"},
        "history": [
            row(10, 20, loss=1.0, gpus=[gpu(0, 60, 500, 60)]),
            row(20, 20, loss=0.9, gpus=[gpu(0, 60, 500, 60)]),
        ],
    },
    "echo": {"status": "queued", "created_at": at(4 * HOUR), "config": {"model_name": "gpt2"}},
}
ALL_JOBS = sorted(FLEET)


def write_fleet(lab: Lab, jobs: dict[str, Json]) -> None:
    for job_id, doc in jobs.items():
        lab.write_job(job_id, {"job_id": job_id, **doc})


def make_client(db: Path | PostgresUrl, token: str | None = None) -> TestClient:
    """A client of the app, with the token given (and never one from the environment)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        return TestClient(create_app(db, token=token))


def ok(client: TestClient, url: str, **params: Any) -> Json:
    response = client.get(url, params=params or None)
    assert response.status_code == 200, response.text
    return response.json()


def status_of(client: TestClient, url: str, **params: Any) -> tuple[int, Json]:
    response = client.get(url, params=params or None)
    return response.status_code, response.json()


def ids(rows: list[Json]) -> list[str]:
    return [r["job_id"] for r in rows]


def cursor_of(kind: str, values: list[Any]) -> str:
    """A cursor as the API encodes them (for forging ones it never handed out)."""
    raw = json.dumps({"k": kind, "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture(scope="module")
def fleet_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("fleet"))
    write_fleet(lab, FLEET)
    summary = lab.ingest()
    assert summary.failed == 0 and summary.ingested == len(FLEET)
    return lab


@pytest.fixture(scope="module")
def client(fleet_lab: Lab, module_engine: Engine) -> TestClient:
    """The app over the fleet, on DuckDB and on PostgreSQL (conftest's ``engine``)."""
    return make_client(module_engine.warehouse(fleet_lab.db))


# --- one job's analytics -------------------------------------------------------------------


def test_job_analytics_every_section(client: TestClient) -> None:
    assert ok(client, "/api/training/alpha/analytics") == {
        "job_id": "alpha",
        "status": "completed",
        "model_name": "llama",
        "duration": {
            "start_time": "2025-01-01T00:00:00Z",
            "end_time": "2025-01-01T00:01:40Z",  # ended_at of a completed job
            "total_seconds": 100.0,
            "training_seconds": 20.0,  # 1.0 s × 10 + 1.0 s × 10
            "overhead_seconds": 80.0,  # 100 − 20
        },
        "performance": {
            "total_iterations": 20,
            "total_samples": 100.0,  # 50 + 50
            "average_samples_per_second": 5.0,  # 100 / 20 s
            "peak_samples_per_second": 6.0,
            "average_iteration_time": 1.0,  # 20 s / 20 iterations
        },
        "losses": {
            "initial_loss": 2.0,
            "final_loss": 1.0,
            "best_loss": 1.0,
            "loss_reduction_percent": 50.0,  # 100 × (2 − 1) / 2
            "final_eval_loss": 1.2,
            "best_eval_loss": 1.2,
        },
        "resource_utilization": {
            "average_gpu_utilization": 90.0,
            "average_gpu_memory_mb": 1000.0,
            "peak_gpu_memory_mb": 1000.0,
            "average_gpu_temp_celsius": 65.0,  # (60 + 70) / 2
            "peak_gpu_temp_celsius": 70.0,
        },
        "checkpoints": {
            "total_checkpoints": 2,
            "checkpoint_frequency_steps": 10.0,  # median of gaps 10 − 0, 20 − 10
            "final_checkpoint": "checkpoint-20",
            "best_checkpoint": "checkpoint-20",  # the step row at 20 has eval_loss 1.2
        },
        "efficiency": {
            "gpu_utilization_score": 90.0,
            "throughput_score": 50.0,  # 100 × 5.0 / target 10.0
            "overall_score": 70.0,  # (90 + 50) / 2
        },
        # no GPU samples: no energy, no per-GPU breakdown (the readings logged with steps have no times)
        "energy": {
            "total_energy_wh": None,
            "energy_per_1000_samples_wh": None,
            "gpus_with_power": None,  # no GPU was sampled: not 0 in disguise (revision 0040)
            "idle_gpus": None,
            "average_throttled_share": None,
        },
        "gpus": [],
        # the energy figures are null, and say why (analytics.md: every null figure has a warning)
        "warnings": ["energy is null: no GPU samples (power and throttling are read from timed samples only)"],
        "insights": {"critical": 0, "warning": 0, "info": 0},  # tests/test_api_insights.py counts some
    }


def test_job_analytics_nulls_come_with_warnings(client: TestClient) -> None:
    delta = ok(client, "/api/training/delta/analytics")
    assert delta["duration"]["total_seconds"] == 60.0  # running: updated_at − started_at
    assert delta["duration"]["training_seconds"] == 40.0  # 2.0 s × 10 × 2
    assert delta["performance"]["average_samples_per_second"] is None
    assert delta["efficiency"] == {"gpu_utilization_score": 60.0, "throughput_score": None, "overall_score": 60.0}
    assert delta["checkpoints"]["total_checkpoints"] == 0
    assert "no checkpoints" in delta["warnings"]

    echo = ok(client, "/api/training/echo/analytics")
    assert echo["status"] == "queued"
    assert echo["duration"]["start_time"] is None
    assert echo["performance"]["total_samples"] is None
    assert echo["losses"]["final_loss"] is None


def test_job_analytics_unknown_job_is_404_json(client: TestClient) -> None:
    code, body = status_of(client, "/api/training/nope/analytics")
    assert (code, body) == (404, {"detail": "no job 'nope'"})


# --- the summary ---------------------------------------------------------------------------


def test_summary_figures(client: TestClient) -> None:
    summary = ok(client, SUMMARY_API)
    assert summary["total_jobs"] == 5
    assert summary["jobs_by_status"] == {
        "queued": 1, "running": 1, "paused": 0, "completed": 2, "failed": 1, "cancelled": 0,
    }  # fmt: skip
    assert list(summary["jobs_by_status"]) == list(STATUSES)  # every status, no "unknown" when none
    assert summary["average_training_duration_seconds"] == pytest.approx(200.0)  # completed only: (100 + 300) / 2
    assert summary["total_training_time_hours"] == pytest.approx(90 / 3600)  # (20 + 10 + 20 + 40) s
    assert summary["average_throughput_samples_per_sec"] == pytest.approx(25 / 3)  # (5 + 10 + 10) / 3
    assert summary["resource_trends"] == {
        "average_gpu_utilization": pytest.approx(75.0),  # (90 + 80 + 70 + 60) / 4
        "average_peak_memory_mb": pytest.approx(2125.0),  # (1000 + 3000 + 4000 + 500) / 4
    }
    assert summary["top_performing_total"] == 3  # delta and echo have no throughput: not ranked
    assert summary["next_cursor"] is None and summary["next"] is None
    # throughput desc; bravo and charlie tie at 10.0 and go by job id
    assert summary["top_performing_jobs"] == [
        {"job_id": "bravo", "throughput": 10.0, "duration": 300.0},
        {"job_id": "charlie", "throughput": 10.0, "duration": 50.0},
        {"job_id": "alpha", "throughput": 5.0, "duration": 100.0},
    ]


def test_summary_filtered_by_status(client: TestClient) -> None:
    summary = ok(client, SUMMARY_API, status="completed")
    assert summary["total_jobs"] == 2
    assert summary["jobs_by_status"] == {s: 2 if s == "completed" else 0 for s in STATUSES}
    assert summary["average_training_duration_seconds"] == pytest.approx(200.0)
    assert summary["total_training_time_hours"] == pytest.approx(30 / 3600)  # 20 + 10
    assert summary["average_throughput_samples_per_sec"] == pytest.approx(7.5)  # (5 + 10) / 2
    assert summary["resource_trends"] == {"average_gpu_utilization": 85.0, "average_peak_memory_mb": 2000.0}
    assert ids(summary["top_performing_jobs"]) == ["bravo", "alpha"]


def test_summary_filtered_by_model(client: TestClient) -> None:
    summary = ok(client, SUMMARY_API, model="mistral")
    assert summary["total_jobs"] == 2
    assert summary["jobs_by_status"]["failed"] == 1 and summary["jobs_by_status"]["running"] == 1
    assert summary["average_training_duration_seconds"] is None  # no completed job: null, not 0
    assert summary["total_training_time_hours"] == pytest.approx(60 / 3600)  # 20 + 40
    assert summary["average_throughput_samples_per_sec"] == pytest.approx(10.0)  # delta has none
    assert summary["resource_trends"] == {"average_gpu_utilization": 65.0, "average_peak_memory_mb": 2250.0}
    assert ids(summary["top_performing_jobs"]) == ["charlie"]  # delta, without a throughput, is not ranked
    assert summary["top_performing_total"] == 1


def test_summary_with_no_matching_job(client: TestClient) -> None:
    summary = ok(client, SUMMARY_API, model="no-such-model")
    assert summary["total_jobs"] == 0
    assert summary["jobs_by_status"] == dict.fromkeys(STATUSES, 0)
    assert summary["average_training_duration_seconds"] is None
    assert summary["total_training_time_hours"] == 0  # a sum over no job (decisions.md), not unknown
    assert summary["average_throughput_samples_per_sec"] is None
    assert summary["top_performing_jobs"] == []
    assert summary["top_performing_total"] == 0


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2025-01-01T01:00:00Z", "2025-01-01T03:00:00Z"),  # since inclusive, until exclusive
        ("2025-01-01T01:00:00", "2025-01-01T03:00:00"),  # no offset means UTC
        ("2025-01-01T02:00:00+01:00", "2025-01-01T04:00:00+01:00"),  # 01:00Z and 03:00Z
        ("2024-12-31T20:00:00-05:00", "2024-12-31T22:00:00-05:00"),
    ],
)
def test_summary_and_list_filtered_by_start_time(client: TestClient, since: str, until: str) -> None:
    summary = ok(client, SUMMARY_API, since=since, until=until)
    assert summary["total_jobs"] == 2
    assert ids(summary["top_performing_jobs"]) == ["bravo", "charlie"]
    listing = ok(client, JOBS_API, since=since, until=until)
    assert (ids(listing["jobs"]), listing["total"]) == (["charlie", "bravo"], 2)


def test_since_alone_drops_jobs_without_a_start(client: TestClient) -> None:
    assert ok(client, SUMMARY_API, since="2000-01-01")["total_jobs"] == 4  # echo never started
    assert ok(client, SUMMARY_API, until="2025-01-01T00:00:00.000001Z")["total_jobs"] == 1  # alpha


@pytest.mark.parametrize(
    "params",
    [
        {"status": "finished"},
        {"status": "COMPLETED"},
        {"since": "yesterday"},
        {"until": "2025-13-01"},
        {"since": "9999-12-31T23:59:59-05:00"},  # after year 9999 in UTC
        {"until": "0001-01-01T00:00:00+05:00"},  # before year 1 in UTC
        {"limit": 0},
        {"limit": 10_001},
        {"offset": -1},
    ],
)
def test_summary_rejects_invalid_parameters(client: TestClient, params: Json) -> None:
    code, body = status_of(client, SUMMARY_API, **params)
    assert code == 422 and "detail" in body


def test_summary_unknown_status_is_a_valid_filter(client: TestClient) -> None:
    summary = ok(client, SUMMARY_API, status="unknown")
    assert summary["total_jobs"] == 0


def walk(client: TestClient, url: str, rows_key: str, **params: Any) -> list[Json]:
    """Every row of a keyset listing, following `next` links; guards against endless walks."""
    rows: list[Json] = []
    page = ok(client, url, **params)
    for _ in range(1_000):
        rows.extend(page[rows_key])
        if page["next_cursor"] is None:
            assert page["next"] is None
            return rows
        assert f"cursor={page['next_cursor']}" in page["next"]
        page = ok(client, page["next"])
    raise AssertionError("the listing never ended")


def test_summary_top_jobs_by_cursor(client: TestClient) -> None:
    first = ok(client, SUMMARY_API, limit=2)
    assert ids(first["top_performing_jobs"]) == ["bravo", "charlie"]  # a tie at 10.0, by job id
    second = ok(client, SUMMARY_API, limit=2, cursor=first["next_cursor"])
    assert ids(second["top_performing_jobs"]) == ["alpha"]  # delta and echo are not ranked
    assert second["next_cursor"] is None
    for page in (first, second):
        assert page["top_performing_total"] == 3
        assert page["total_jobs"] == 5  # the figures are the whole fleet's on every page
    for limit in (1, 2, 3, 5):
        walked = walk(client, SUMMARY_API, "top_performing_jobs", limit=limit)
        assert ids(walked) == ["bravo", "charlie", "alpha"]


def test_summary_top_jobs_cursor_without_a_throughput_is_422(client: TestClient) -> None:
    # no ranked job lacks a throughput, so no cursor handed out holds none
    code, body = status_of(client, SUMMARY_API, cursor=cursor_of("top", [None, "delta"]))
    assert code == 422 and "cursor" in body["detail"]


def test_summary_top_jobs_by_offset(client: TestClient) -> None:
    pages = [ids(ok(client, SUMMARY_API, limit=2, offset=offset)["top_performing_jobs"]) for offset in (0, 2, 4)]
    assert pages == [["bravo", "charlie"], ["alpha"], []]
    # the next link of an offset page continues by cursor, without the offset
    page = ok(client, SUMMARY_API, limit=1, offset=1)
    assert ids(page["top_performing_jobs"]) == ["charlie"]
    assert "offset" not in page["next"]
    assert ids(ok(client, page["next"])["top_performing_jobs"]) == ["alpha"]


def test_summary_top_jobs_pages_keep_the_filter(client: TestClient) -> None:
    walked = walk(client, SUMMARY_API, "top_performing_jobs", limit=1, model="llama")
    assert ids(walked) == ["bravo", "alpha"]


# --- comparing jobs ------------------------------------------------------------------------


def compare(client: TestClient, job_ids: str) -> Json:
    return ok(client, COMPARE_API, job_ids=job_ids)


def test_compare_in_the_order_asked(client: TestClient) -> None:
    result = compare(client, "charlie,alpha,bravo")
    assert result["jobs"] == [
        {"job_id": "charlie", "duration_seconds": 50.0, "throughput": 10.0, "final_loss": 0.5, "gpu_utilization": 70.0,
         "overall_score": 60.0},
        {"job_id": "alpha", "duration_seconds": 100.0, "throughput": 5.0, "final_loss": 1.0, "gpu_utilization": 90.0,
         "overall_score": 70.0},
        {"job_id": "bravo", "duration_seconds": 300.0, "throughput": 10.0, "final_loss": 1.5, "gpu_utilization": 80.0,
         "overall_score": 90.0},
    ]  # fmt: skip
    assert set(result) == {"jobs", "winner"}  # the key of analytics.md, no other spelling
    assert result["winner"] == {
        "best_throughput": "charlie",  # ties with bravo at 10.0; charlie was asked first
        "best_loss": "charlie",  # 0.5
        "fastest": "charlie",  # 50 s
        "most_efficient": "bravo",  # overall 90 against 70 and 60
    }


def test_compare_ties_go_to_the_job_asked_first(client: TestClient) -> None:
    assert compare(client, "bravo,charlie")["winner"]["best_throughput"] == "bravo"
    assert compare(client, "charlie,bravo")["winner"]["best_throughput"] == "charlie"
    # charlie and delta both have an overall score of 60
    assert compare(client, "delta,charlie")["winner"]["most_efficient"] == "delta"
    assert compare(client, "charlie,delta")["winner"]["most_efficient"] == "charlie"


def test_compare_repeated_id_counts_once(client: TestClient) -> None:
    assert ids(compare(client, "alpha,bravo,alpha")["jobs"]) == ["alpha", "bravo"]
    assert ids(compare(client, " bravo , bravo,")["jobs"]) == ["bravo"]
    assert ids(compare(client, ",".join(["alpha"] * 60))["jobs"]) == ["alpha"]  # 60 ids, 1 distinct


def test_compare_winner_is_null_when_no_job_has_the_figure(client: TestClient) -> None:
    assert compare(client, "echo")["winner"] == dict.fromkeys(
        ("best_throughput", "best_loss", "fastest", "most_efficient")
    )
    # delta has no throughput: it does not compete, and nobody else has one
    assert compare(client, "echo,delta")["winner"] == {
        "best_throughput": None,
        "best_loss": "delta",
        "fastest": "delta",
        "most_efficient": "delta",
    }
    # a job without the figure loses to one with it, whatever the order
    assert compare(client, "delta,alpha")["winner"]["best_throughput"] == "alpha"


def test_compare_unknown_job_is_404_naming_it(client: TestClient) -> None:
    code, body = status_of(client, COMPARE_API, job_ids="alpha,ghost,bravo,phantom")
    assert code == 404
    assert "ghost" in body["detail"] and "phantom" in body["detail"]
    assert "alpha" not in body["detail"]


def test_compare_takes_the_parameter_repeated_as_http_clients_send_a_list(client: TestClient) -> None:
    # params={"job_ids": [...]} in requests/httpx: job_ids=charlie&job_ids=alpha,bravo&job_ids=alpha
    response = client.get(COMPARE_API, params={"job_ids": ["charlie", "alpha,bravo", "alpha"]})
    assert response.status_code == 200
    assert ids(response.json()["jobs"]) == ["charlie", "alpha", "bravo"]
    code, body = status_of(client, COMPARE_API, job_ids=["a" * 30_000, "b" * 30_001])  # 60,001 characters in all
    assert code == 422 and "characters" in body["detail"]


def test_compare_accepts_up_to_50_distinct_ids(client: TestClient) -> None:
    fifty = ["alpha", *(f"ghost-{i}" for i in range(MAX_COMPARE - 1))]
    code, body = status_of(client, COMPARE_API, job_ids=",".join(fifty))
    assert code == 404 and "ghost-48" in body["detail"]  # past the count check: 50 is allowed


@pytest.mark.parametrize(
    "job_ids",
    [
        ",".join(f"job-{i}" for i in range(MAX_COMPARE + 1)),  # 51 distinct ids
        "",
        ",,,",
        " , ",
    ],
)
def test_compare_rejects_a_wrong_number_of_ids(client: TestClient, job_ids: str) -> None:
    code, body = status_of(client, COMPARE_API, job_ids=job_ids)
    assert code == 422 and "detail" in body


def test_compare_needs_job_ids(client: TestClient) -> None:
    code, body = status_of(client, COMPARE_API)
    assert code == 422 and "detail" in body


# --- the job list --------------------------------------------------------------------------


def test_job_list_newest_first_by_default(client: TestClient) -> None:
    listing = ok(client, JOBS_API)
    assert ids(listing["jobs"]) == ["delta", "charlie", "bravo", "alpha", "echo"]  # echo has no start: last
    assert listing["total"] == 5
    assert listing["next_cursor"] is None and listing["next"] is None
    alpha = listing["jobs"][3]
    assert alpha == {
        "job_id": "alpha",
        "status": "completed",
        "model_name": "llama",
        "start_time": "2025-01-01T00:00:00Z",
        "end_time": "2025-01-01T00:01:40Z",
        "total_seconds": 100.0,
        "total_iterations": 20,
        "average_samples_per_second": 5.0,
        "final_loss": 1.0,
        "average_gpu_utilization": 90.0,
        "overall_score": 70.0,
        "updated_at": "2025-01-01T00:01:40Z",
        "insights": {"critical": 0, "warning": 0, "info": 0},
    }


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("job_id", ["alpha", "bravo", "charlie", "delta", "echo"]),
        ("-job_id", ["echo", "delta", "charlie", "bravo", "alpha"]),
        ("start_time", ["alpha", "bravo", "charlie", "delta", "echo"]),
        ("total_seconds", ["charlie", "delta", "alpha", "bravo", "echo"]),  # 50, 60, 100, 300, null
        ("-total_seconds", ["bravo", "alpha", "delta", "charlie", "echo"]),
        ("-average_samples_per_second", ["bravo", "charlie", "alpha", "delta", "echo"]),  # ties by id
        ("average_samples_per_second", ["alpha", "bravo", "charlie", "delta", "echo"]),
        ("final_loss", ["charlie", "delta", "alpha", "bravo", "echo"]),  # 0.5, 0.9, 1.0, 1.5, null
        ("-overall_score", ["bravo", "alpha", "charlie", "delta", "echo"]),  # 90, 70, 60, 60, null
        ("status", ["alpha", "bravo", "charlie", "echo", "delta"]),  # completed < failed < queued < running
        ("-model_name", ["charlie", "delta", "alpha", "bravo", "echo"]),  # ties ascend by id either way
    ],
)
def test_job_list_sorted_by_hand(client: TestClient, sort: str, expected: list[str]) -> None:
    assert ids(ok(client, JOBS_API, sort=sort)["jobs"]) == expected
    assert ids(walk(client, JOBS_API, "jobs", sort=sort, limit=2)) == expected


def expected_order(rows: list[Json], key: str, descending: bool) -> list[str]:
    """The documented order: by the key (nulls last), ties by job id ascending."""
    present = sorted((r for r in rows if r[key] is not None), key=lambda r: r["job_id"])
    present.sort(key=lambda r: r[key], reverse=descending)  # stable: ties keep the id order
    absent = sorted((r for r in rows if r[key] is None), key=lambda r: r["job_id"])
    return ids(present + absent)


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("key", list(fleet.SORT_KEYS))
def test_job_list_every_sort_key_pages_in_order(client: TestClient, key: str, descending: bool) -> None:
    rows = ok(client, JOBS_API)["jobs"]
    sort = f"-{key}" if descending else key
    expected = expected_order(rows, key, descending)
    assert ids(ok(client, JOBS_API, sort=sort)["jobs"]) == expected
    for limit in (1, 2):
        assert ids(walk(client, JOBS_API, "jobs", sort=sort, limit=limit)) == expected


@pytest.mark.parametrize("sort", ["duration", "--job_id", "", "job_id;DROP TABLE jobs", "config", "+job_id"])
def test_job_list_unknown_sort_key_is_422(client: TestClient, sort: str) -> None:
    code, body = status_of(client, JOBS_API, sort=sort)
    assert code == 422 and "detail" in body


def test_job_list_filters(client: TestClient) -> None:
    assert ids(ok(client, JOBS_API, status="running")["jobs"]) == ["delta"]
    assert ids(ok(client, JOBS_API, status="paused")["jobs"]) == []
    assert ids(ok(client, JOBS_API, model="llama")["jobs"]) == ["bravo", "alpha"]
    listing = ok(client, JOBS_API, model="mistral", status="failed")
    assert (ids(listing["jobs"]), listing["total"]) == (["charlie"], 1)
    code, body = status_of(client, JOBS_API, status="done")
    assert code == 422 and "done" in body["detail"]


def test_job_list_next_link_keeps_filters_and_sort(client: TestClient) -> None:
    page = ok(client, JOBS_API, model="mistral", sort="job_id", limit=1)
    assert ids(page["jobs"]) == ["charlie"] and page["total"] == 2
    assert "model=mistral" in page["next"] and "sort=job_id" in page["next"]
    following = ok(client, page["next"])
    assert ids(following["jobs"]) == ["delta"] and following["next_cursor"] is None


def test_job_list_cursor_of_another_listing_is_422(client: TestClient) -> None:
    by_id = ok(client, JOBS_API, sort="job_id", limit=1)["next_cursor"]
    for sort in ("-job_id", "-start_time", "total_seconds"):
        code, body = status_of(client, JOBS_API, sort=sort, cursor=by_id)
        assert code == 422 and "cursor" in body["detail"]
    top = ok(client, SUMMARY_API, limit=1)["next_cursor"]
    assert status_of(client, JOBS_API, cursor=top)[0] == 422
    assert status_of(client, SUMMARY_API, cursor=by_id)[0] == 422


def test_job_list_limit_bounds(client: TestClient) -> None:
    for limit in (0, -1, 10_001):
        assert status_of(client, JOBS_API, limit=limit)[0] == 422
    assert len(ok(client, JOBS_API, limit=10_000)["jobs"]) == 5


def test_keyset_pages_neither_skip_nor_repeat_while_ingest_adds_jobs(tmp_path: Path, ingest_engine: Engine) -> None:
    """Jobs ingested between page requests: every job there at the start is listed exactly once
    (on PostgreSQL each ingest publishes to the database the client reads)."""
    lab = Lab(tmp_path, ingest_engine)

    def job(hour: float) -> Json:
        start = hour * HOUR
        return {"status": "completed", "started_at": at(start), "ended_at": at(start + 60)}

    original = {f"run-{h:02d}": job(h) for h in (0, 2, 4, 6, 8, 10, 12)}
    write_fleet(lab, original)
    lab.ingest()
    client = make_client(lab.warehouse())

    seen: list[str] = []
    page = ok(client, JOBS_API, limit=2)  # newest first: run-12, run-10
    seen += ids(page["jobs"])
    assert seen == ["run-12", "run-10"]
    write_fleet(
        lab,
        {
            "run-20": job(20),  # newer than every job: before the cursor
            "a-tie": job(10),  # same start as run-10 (the page's last row), lower id: before it
            "z-tie": job(10),  # same start, higher id: after it
            "run-07": job(7),  # in the part not yet listed
        },
    )
    lab.ingest()
    page = ok(client, page["next"])
    seen += ids(page["jobs"])
    write_fleet(lab, {"run-30": job(30), "run-01": job(1)})
    lab.ingest()
    while page["next"]:
        page = ok(client, page["next"])
        seen += ids(page["jobs"])

    assert len(seen) == len(set(seen)), f"repeated: {seen}"
    assert set(original) <= set(seen)
    assert "run-20" not in seen and "a-tie" not in seen and "run-30" not in seen
    assert seen == ["run-12", "run-10", "z-tie", "run-08", "run-07", "run-06", "run-04", "run-02", "run-01", "run-00"]
    assert page["total"] == len(original) + 6  # the last page counts the jobs ingested meanwhile


# --- the job record ------------------------------------------------------------------------


def test_job_record(client: TestClient, fleet_lab: Lab) -> None:
    record = ok(client, "/api/training/alpha")
    assert record == {
        "job_id": "alpha",
        "status": "completed",
        "model_name": "llama",
        "created_at": None,
        "started_at": "2025-01-01T00:00:00Z",
        "ended_at": "2025-01-01T00:01:40Z",
        "updated_at": "2025-01-01T00:01:40Z",
        "current_step": 20,
        "total_steps": 20,
        "config": {"model_name": "llama", "target_samples_per_second": 10.0},
        "source_dir": "alpha",  # the folder's name: no path on the server
        "latest_step": {"step": 20, "timestamp": "2025-01-01T00:00:20Z", "loss": 1.0},
    }
    assert ok(client, "/api/training/jobs/alpha") == record


def test_job_record_without_steps(client: TestClient) -> None:
    record = ok(client, "/api/training/echo")
    assert record["status"] == "queued"
    assert record["created_at"] == "2025-01-01T04:00:00Z"
    assert record["started_at"] is None
    assert record["latest_step"] is None
    assert record["config"] == {"model_name": "gpt2"}


def test_job_record_unknown_is_404(client: TestClient) -> None:
    assert status_of(client, "/api/training/nope") == (404, {"detail": "no job 'nope'"})
    assert status_of(client, "/api/training/jobs/nope") == (404, {"detail": "no job 'nope'"})


# --- steps and GPU readings ----------------------------------------------------------------


def test_steps_of_a_job(client: TestClient) -> None:
    page = ok(client, "/api/training/alpha/steps", fields="loss,samples,seconds,delta")
    assert page == {
        "job_id": "alpha",
        "fields": ["loss", "samples", "seconds", "delta"],
        "downsampled": False,
        "steps": [
            {"step": 10, "loss": 2.0, "samples": 50.0, "seconds": 10.0, "delta": 10},
            {"step": 20, "loss": 1.0, "samples": 50.0, "seconds": 10.0, "delta": 10},
        ],
        "next_cursor": None,
        "next": None,
    }
    every = ok(client, "/api/training/alpha/steps")["steps"][1]
    assert set(every) == {"step", "ts", "loss", "eval_loss", "learning_rate", "samples_per_second",
                          "iteration_time", "samples", "seconds", "delta", "grad_norm", "epoch"}  # fmt: skip
    assert (every["ts"], every["eval_loss"], every["samples_per_second"]) == ("2025-01-01T00:00:20Z", 1.2, 6.0)


@pytest.mark.parametrize("fields", ["loss,bogus", "step", "LOSS", ",", "ts;DROP TABLE steps", "job_id"])
def test_steps_unknown_field_is_422(client: TestClient, fields: str) -> None:
    code, body = status_of(client, "/api/training/alpha/steps", fields=fields)
    assert code == 422 and "detail" in body


def test_steps_and_gpus_of_unknown_job_are_404(client: TestClient) -> None:
    assert status_of(client, "/api/training/nope/steps")[0] == 404
    assert status_of(client, "/api/training/nope/gpus")[0] == 404


def test_gpu_readings_paged_by_gpu_then_step(client: TestClient) -> None:
    walked = walk(client, "/api/training/bravo/gpus", "readings", limit=1)
    assert [(r["gpu_index"], r["step"], r["memory_used_mb"], r["temperature_c"]) for r in walked] == [
        (0, 10, 2000.0, 60.0),
        (0, 20, 2000.0, 64.0),
        (1, 10, 3000.0, 62.0),
        (1, 20, 3000.0, 66.0),
    ]
    assert all(r["utilization_percent"] == 80.0 for r in walked)
    whole = ok(client, "/api/training/bravo/gpus")
    assert whole["readings"] == walked and whole["next_cursor"] is None
    one_gpu = ok(client, "/api/training/bravo/gpus", gpu=1)["readings"]
    assert [(r["gpu_index"], r["step"]) for r in one_gpu] == [(1, 10), (1, 20)]
    assert ok(client, "/api/training/bravo/gpus", gpu=7)["readings"] == []
    assert ok(client, "/api/training/echo/gpus")["readings"] == []


# --- a long job: step pages and downsampling -----------------------------------------------

SPIKE_STEP = 1237
DIP_STEP = 503
LONG_STEPS = 2_000


def smooth_loss(step: int) -> float:
    return 2.0 + math.sin(step / 50) * 0.1 - step / 2_000


def long_history() -> list[Json]:
    rows = []
    for step in range(1, LONG_STEPS + 1):
        loss = 50.0 if step == SPIKE_STEP else 0.01 if step == DIP_STEP else smooth_loss(step)
        rows.append({"step": step, "timestamp": at(step), "iteration_time": 1.0, "loss": loss, "samples": 8})
    return rows


COLLIDING = {
    "jobs": {"status": "completed", "started_at": at(0), "ended_at": at(10), "config": {"model_name": "named-jobs"}},
    "analytics": {
        "status": "running",
        "started_at": at(HOUR),
        "config": {"model_name": "named-analytics"},
        "history": [row(10, 10, loss=4.0)],
    },  # fmt: skip
    "summary": {"status": "exploded", "started_at": at(2 * HOUR), "config": {"model_name": "named-summary"}},
}


@pytest.fixture(scope="module")
def other_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Jobs whose ids collide with route names, and a long job with one loss spike."""
    lab = Lab(tmp_path_factory.mktemp("other"))
    write_fleet(lab, COLLIDING)
    lab.write_job("long", {"job_id": "long", "status": "completed", "started_at": at(0), "history": long_history()})
    assert lab.ingest().failed == 0
    return lab


@pytest.fixture(scope="module")
def other(other_lab: Lab, module_engine: Engine) -> TestClient:
    return make_client(module_engine.warehouse(other_lab.db))


def test_steps_keyset_pages_cover_every_step_once(other: TestClient) -> None:
    walked = walk(other, "/api/training/long/steps", "steps", fields="loss", limit=600)
    assert [r["step"] for r in walked] == list(range(1, LONG_STEPS + 1))
    first = ok(other, "/api/training/long/steps", fields="loss", limit=600)
    assert len(first["steps"]) == 600 and first["steps"][-1]["step"] == 600
    assert "fields=loss" in first["next"]
    whole = ok(other, "/api/training/long/steps", fields="loss", limit=10_000)
    assert whole["steps"] == walked and whole["next_cursor"] is None


def test_steps_from_and_to_step(other: TestClient) -> None:
    page = ok(other, "/api/training/long/steps", fields="loss", from_step=SPIKE_STEP - 1, to_step=SPIKE_STEP + 1)
    assert [(r["step"], r["loss"]) for r in page["steps"]] == [
        (SPIKE_STEP - 1, pytest.approx(smooth_loss(SPIKE_STEP - 1))),
        (SPIKE_STEP, 50.0),
        (SPIKE_STEP + 1, pytest.approx(smooth_loss(SPIKE_STEP + 1))),
    ]
    # the next link of a from_step page continues after the cursor, not from from_step again
    paged = ok(other, "/api/training/long/steps", fields="loss", from_step=1990, limit=4)
    assert [r["step"] for r in paged["steps"]] == [1990, 1991, 1992, 1993]
    assert "from_step" not in paged["next"]
    assert [r["step"] for r in ok(other, paged["next"])["steps"]] == [1994, 1995, 1996, 1997]


@pytest.mark.parametrize(("fields", "max_points"), [("loss", 50), ("loss", 10), (None, 100), ("ts", 20)])
def test_steps_downsampled_keep_the_spike(other: TestClient, fields: str | None, max_points: int) -> None:
    params: Json = {"max_points": max_points} | ({"fields": fields} if fields else {})
    result = ok(other, "/api/training/long/steps", **params)
    steps = [r["step"] for r in result["steps"]]
    assert result["downsampled"] is True and result["next_cursor"] is None
    assert len(steps) <= max_points
    assert steps == sorted(set(steps))
    assert steps[0] == 1 and steps[-1] == LONG_STEPS
    assert SPIKE_STEP in steps  # the maximum of its bucket
    assert DIP_STEP in steps  # the minimum of its bucket
    if fields == "loss":
        assert max(r["loss"] for r in result["steps"]) == 50.0
    assert ok(other, "/api/training/long/steps", **params) == result  # deterministic


def test_steps_downsampling_of_a_range(other: TestClient) -> None:
    params = {"fields": "loss", "max_points": 20, "from_step": 1000, "to_step": 1500}
    steps = [r["step"] for r in ok(other, "/api/training/long/steps", **params)["steps"]]
    assert steps[0] == 1000 and steps[-1] == 1500 and SPIKE_STEP in steps and len(steps) <= 20


@pytest.mark.parametrize("max_points", [9, 0, -5, 10_001])
def test_steps_max_points_out_of_range_is_422(other: TestClient, max_points: int) -> None:
    assert status_of(other, "/api/training/long/steps", max_points=max_points)[0] == 422


def test_steps_max_points_too_small_for_the_fields_is_422(other: TestClient) -> None:
    # every numeric field by default: 2 + 2 x 10 = 22 points at least, or extremes would be lost
    status, body = status_of(other, "/api/training/long/steps", max_points=21)
    assert status == 422 and "at least 22" in body["detail"]
    assert status_of(other, "/api/training/long/steps", max_points=22)[0] == 200
    assert len(ok(other, "/api/training/long/steps", max_points=22)["steps"]) <= 22


# --- ids that collide with route names -----------------------------------------------------


def test_static_routes_win_over_job_ids(other: TestClient) -> None:
    listing = ok(other, JOBS_API)
    assert listing["total"] == 4 and set(ids(listing["jobs"])) == {"jobs", "analytics", "summary", "long"}
    summary = ok(other, SUMMARY_API)
    assert summary["total_jobs"] == 4
    assert summary["jobs_by_status"]["unknown"] == 1  # "exploded" is kept as unknown
    assert summary["jobs_by_status"]["completed"] == 2


def test_jobs_named_like_routes_stay_reachable(other: TestClient) -> None:
    assert ok(other, "/api/training/jobs/jobs")["model_name"] == "named-jobs"
    # the analytics of the job "jobs" (api/job_paths.py), not the record of "analytics"
    assert ok(other, "/api/training/jobs/analytics")["duration"]["total_seconds"] == 10.0
    assert ok(other, "/api/training/jobs/summary")["model_name"] == "named-summary"
    assert ok(other, "/api/training/analytics")["model_name"] == "named-analytics"
    assert ok(other, "/api/training/summary")["model_name"] == "named-summary"
    assert ok(other, "/api/training/analytics/analytics")["losses"]["final_loss"] == 4.0
    assert ok(other, "/api/training/summary/analytics")["status"] == "unknown"
    assert ok(other, "/api/training/analytics/steps")["steps"][0]["loss"] == 4.0
    assert ids(ok(other, COMPARE_API, job_ids="summary,jobs,analytics")["jobs"]) == ["summary", "jobs", "analytics"]
    assert ids(ok(other, JOBS_API, status="unknown")["jobs"]) == ["summary"]


def test_job_ids_with_slashes_are_reachable(tmp_path: Path, engine: Engine) -> None:
    lab = Lab(tmp_path)
    history = [row(1, 0, loss=3.0, gpus=[gpu(0, 50.0, 1000.0, 60.0)]), row(2, 10, loss=2.0)]
    lab.write_job("run-1", {"job_id": "team/run-1", "status": "completed", "history": history})
    assert lab.ingest().ingested == 1
    client = make_client(engine.warehouse(lab.db))
    for job in ("team/run-1", "team%2Frun-1"):
        assert ok(client, f"/api/training/{job}")["job_id"] == "team/run-1"
        assert ok(client, f"/api/training/jobs/{job}")["job_id"] == "team/run-1"
        assert ok(client, f"/api/training/{job}/analytics")["losses"]["final_loss"] == 2.0
        assert [r["step"] for r in ok(client, f"/api/training/{job}/steps")["steps"]] == [1, 2]
        assert ok(client, f"/api/training/{job}/gpus")["readings"][0]["utilization_percent"] == 50.0
        assert ok(client, f"/api/training/{job}/checkpoints")["checkpoints"] == []
    assert status_of(client, "/api/training/team/run-2/analytics") == (404, {"detail": "no job 'team/run-2'"})


# Jobs whose ids look like routes or hold "%": each job's answers at /api/training/{id}/…
ROUTE_LIKE = {
    "jobs": [row(1, 10, loss=3.0, gpus=[gpu(0, 40.0, 100.0, 50.0)]), row(2, 10, loss=2.0)],
    "export": [row(5, 10, loss=1.5)],
    "p%2F": [row(1, 10, loss=0.25)],
    "p/": [row(1, 10, loss=0.75)],
}


@pytest.fixture(scope="module")
def route_like_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("route-like"))
    for n, (job_id, history) in enumerate(ROUTE_LIKE.items()):
        lab.write_job(f"j{n}", {"job_id": job_id, "status": "completed", "history": history})
    assert lab.ingest().ingested == len(ROUTE_LIKE)
    return lab


def check_route_like(get: Any) -> None:
    """The answers of ROUTE_LIKE's jobs through ``get(path) -> (status, json)``."""
    status, body = get("/api/training/jobs/analytics")  # the job "jobs", not the record of "analytics"
    assert (status, body["job_id"], body["losses"]["final_loss"]) == (200, "jobs", 2.0)
    assert [r["step"] for r in get("/api/training/jobs/steps")[1]["steps"]] == [1, 2]
    assert get("/api/training/jobs/gpus")[1]["readings"][0]["utilization_percent"] == 40.0
    assert get("/api/training/jobs/insights")[1]["job_id"] == "jobs"
    assert get("/api/training/jobs/checkpoints")[1] == {"job_id": "jobs", "checkpoints": []}
    assert get("/api/training/jobs/metrics")[1]["job_id"] == "jobs"
    assert get("/api/training/jobs/metrics/history?name=x") == (404, {"detail": "job 'jobs' has no metric 'x'"})
    assert get("/api/training/jobs/jobs")[1]["job_id"] == "jobs"  # the record alias
    assert get("/api/training/jobs")[1]["total"] == len(ROUTE_LIKE)  # the list stays the list
    # no job "jobs/p%2F" or "jobs/x": the record alias answers, as before
    assert get("/api/training/jobs/x/steps") == (404, {"detail": "no job 'x/steps'"})
    status, body = get("/api/training/export/steps")  # the job "export", asked without job_ids
    assert (status, [r["loss"] for r in body["steps"]]) == (200, [1.5])
    # each id decoded once: "p%2F" is sent as p%252F, "p/" as p%2F
    assert get("/api/training/p%252F/analytics")[1]["losses"]["final_loss"] == 0.25
    assert get("/api/training/p%2F/analytics")[1]["losses"]["final_loss"] == 0.75
    assert get("/api/training/jobs/p%252F")[1]["job_id"] == "p%2F"
    assert get("/api/training/p%252F/steps")[1]["job_id"] == "p%2F"


def test_jobs_named_like_routes_or_holding_percent_have_their_answers(
    route_like_lab: Lab, module_engine: Engine
) -> None:
    client = make_client(module_engine.warehouse(route_like_lab.db))

    def get(path: str) -> tuple[int, Json]:
        response = client.get(path)
        return response.status_code, response.json()

    check_route_like(get)
    export = client.get("/api/training/export/steps", params={"job_ids": "export"})  # the export, with job_ids
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")


def test_the_export_without_job_ids_is_422_without_a_job_named_export(client: TestClient) -> None:
    status, body = status_of(client, "/api/training/export/steps")
    assert status == 422 and "job_ids" in json.dumps(body)


def test_route_like_ids_through_a_real_server(route_like_lab: Lab) -> None:
    # uvicorn decodes the path once itself: the same answers as through the TestClient
    with serving(route_like_lab.db) as running:

        def get(path: str) -> tuple[int, Json]:
            response = httpx.get(running.url + path, timeout=30)
            return response.status_code, response.json()

        check_route_like(get)


def test_a_route_like_id_is_looked_up_only_with_the_token(route_like_lab: Lab) -> None:
    client = make_client(route_like_lab.db, token="s3cret")
    assert client.get("/api/training/jobs/analytics").status_code == 401
    answer = client.get("/api/training/jobs/analytics", headers={"Authorization": "Bearer s3cret"})
    assert (answer.status_code, answer.json()["job_id"]) == (200, "jobs")


def test_the_route_like_suffixes_are_the_schemas(route_like_lab: Lab) -> None:
    paths = ok(make_client(route_like_lab.db), "/openapi.json")["paths"]
    prefix = "/api/training/{job_id}/"
    assert set(job_paths.SUFFIXES) == {p.removeprefix(prefix) for p in paths if p.startswith(prefix)}


@pytest.mark.parametrize(
    ("path", "raw", "once"),
    [
        ("/api/training/p//a", b"/api/training/p%252F/a", "/api/training/p%2F/a"),  # decoded twice
        ("/api/training/p%2F/a", b"/api/training/p%252F/a", None),  # once, as servers do
        ("/api/training/p//a", b"/api/training/p%2F/a", None),
        ("/api/training/100%/a", b"/api/training/100%25/a", None),
    ],
)
def test_a_path_decoded_twice_is_decoded_once(path: str, raw: bytes, once: str | None) -> None:
    assert job_paths.decoded_once({"path": path, "raw_path": raw}) == once


# --- auth and health -----------------------------------------------------------------------

GUARDED = [
    JOBS_API,
    "/api/training/jobs/alpha",
    SUMMARY_API,
    f"{COMPARE_API}?job_ids=alpha,bravo",
    "/api/training/alpha/analytics",
    "/api/training/alpha/steps",
    "/api/training/alpha/gpus",
    "/api/training/alpha/checkpoints",
    "/api/training/analytics/fleet",
    "/api/training/alpha",
]


@pytest.fixture(scope="module")
def guarded_client(fleet_lab: Lab) -> TestClient:
    return make_client(fleet_lab.db, token="s3cret")


@pytest.mark.parametrize("url", GUARDED)
def test_token_guards_every_data_endpoint(guarded_client: TestClient, url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}, {"Authorization": "Bearer "}):
        response = guarded_client.get(url, headers=headers)
        assert response.status_code == 401, headers
        assert response.json() == {"detail": "missing or wrong bearer token"}
        assert response.headers["www-authenticate"] == "Bearer"
    assert guarded_client.get(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_dashboard_pages_need_no_token_their_data_does(guarded_client: TestClient) -> None:
    for path in ("/", "/job?id=alpha", "/compare?job_ids=alpha", "/summary", "/static/common.js"):
        assert guarded_client.get(path).status_code == 200, path
    assert guarded_client.get("/api/training/jobs").status_code == 401


def test_health_endpoints_need_no_token(guarded_client: TestClient) -> None:
    assert guarded_client.get("/healthz").json() == {"status": "ok", "detail": None, "revision": None, "snapshot": None}
    ready = guarded_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


def test_token_from_the_environment(fleet_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    client = TestClient(create_app(fleet_lab.db))
    assert client.get(JOBS_API).status_code == 401
    assert client.get(JOBS_API, headers={"Authorization": "Bearer from-env"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_readyz_reports_the_snapshot_and_revision(client: TestClient, fleet_lab: Lab, module_engine: Engine) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["revision"] == migrate.HEAD_REVISION
    if module_engine.postgres:  # no snapshots there: readers see each commit (docs/postgresql.md)
        assert body["snapshot"] is None
        return
    assert body["snapshot"] is not None and Path(body["snapshot"]).parent.name == fleet_lab.db.name + ".snapshots"


def test_without_a_warehouse_readyz_and_data_are_503(tmp_path: Path) -> None:
    client = make_client(tmp_path / "missing.duckdb")
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    code, body = status_of(client, JOBS_API)
    assert code == 503 and "detail" in body


# --- a real server -------------------------------------------------------------------------


@pytest.fixture
def server(fleet_lab: Lab, tmp_path: Path) -> Iterator[str]:
    """`runlytics serve` in a subprocess; yields its base URL once /healthz answers."""
    with serving(fleet_lab.db) as running:
        yield running.url


def test_runlytics_serve(server: str) -> None:
    response = httpx.get(f"{server}/api/training/alpha/analytics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["efficiency"]["overall_score"] == 70.0
    missing = httpx.get(f"{server}/api/training/nope/analytics", timeout=10)
    assert (missing.status_code, missing.json()) == (404, {"detail": "no job 'nope'"})


# --- what the dashboard asks for: fleet trends, checkpoints, GPU charts, id prefixes ----------

FLEET_API = "/api/training/analytics/fleet"


def test_fleet_gpu_hours_throughput_histogram_and_utilization_over_time(client: TestClient) -> None:
    trends = ok(client, FLEET_API, bins=2, buckets=3)
    # total_seconds x GPUs seen: alpha 100 x 1, bravo 300 x 2, charlie 50 x 1, delta 60 x 1; echo has neither
    assert trends["gpu_hours"] == pytest.approx((100 + 600 + 50 + 60) / 3600)
    assert (trends["gpu_hours_jobs"], trends["jobs"]) == (4, 5)
    # throughputs 5 (alpha), 10 (bravo), 10 (charlie): two bins over [5, 10]
    assert trends["throughput_histogram"] == [
        {"low": 5.0, "high": 7.5, "jobs": 1},
        {"low": 7.5, "high": 10.0, "jobs": 2},
    ]
    # timed readings in the minutes 00:00 (alpha), 01:00 (bravo) and 02:00 (charlie); delta's steps
    # have no time. From 00:00 to the end of 02:00, 121 minutes: three buckets of 41 whole minutes
    # (121 / 3 = 40.3 would cut minutes: a bucket would count readings of a minute it holds part of)
    width = 41 * 60
    buckets = trends["utilization_over_time"]
    assert [(b["average_gpu_utilization"], b["readings"], b["jobs"]) for b in buckets] == [
        (90.0, 2, 1),  # alpha, one GPU at two steps
        (80.0, 4, 1),  # bravo, two GPUs at two steps
        (70.0, 2, 1),  # charlie
    ]
    assert [b["start"] for b in buckets] == [at(0), at(width), at(2 * width)]
    assert buckets[-1]["end"] == at(3 * width)
    assert trends["models"] == [
        {"model_name": "gpt2", "jobs": 1},
        {"model_name": "llama", "jobs": 2},
        {"model_name": "mistral", "jobs": 2},
    ]


def test_fleet_trends_follow_the_filters(client: TestClient) -> None:
    completed = ok(client, FLEET_API, status="completed", bins=1)
    assert completed["gpu_hours"] == pytest.approx((100 + 600) / 3600)
    assert completed["throughput_histogram"] == [{"low": 5.0, "high": 10.0, "jobs": 2}]
    assert [b["jobs"] for b in completed["utilization_over_time"]] == [1, 1]  # the buckets with readings
    # the models of the jobs matching every other filter, for a model picker
    assert [m["model_name"] for m in ok(client, FLEET_API, model="llama")["models"]] == ["gpt2", "llama", "mistral"]
    nothing = ok(client, FLEET_API, status="paused")
    assert nothing == {
        "gpu_hours": None, "gpu_hours_jobs": 0, "jobs": 0, "throughput_histogram": [],
        "utilization_over_time": [], "models": [],
    }  # fmt: skip


@pytest.mark.parametrize("params", [{"bins": 0}, {"bins": 201}, {"buckets": 0}, {"status": "nope"}])
def test_fleet_rejects_invalid_parameters(client: TestClient, params: Json) -> None:
    assert status_of(client, FLEET_API, **params)[0] == 422


def test_checkpoints_of_a_job(client: TestClient) -> None:
    assert ok(client, "/api/training/alpha/checkpoints") == {
        "job_id": "alpha",
        "checkpoints": [
            {"step": 10, "name": "checkpoint-10", "eval_loss": None, "train_loss": 2.0},
            {"step": 20, "name": "checkpoint-20", "eval_loss": 1.2, "train_loss": 1.0},  # eval_loss of step 20
        ],
    }
    assert ok(client, "/api/training/echo/checkpoints")["checkpoints"] == []
    assert status_of(client, "/api/training/nobody/checkpoints")[0] == 404


def test_job_list_by_id_prefix(client: TestClient) -> None:
    assert ids(ok(client, JOBS_API, id_prefix="b")["jobs"]) == ["bravo"]
    assert ids(ok(client, JOBS_API, id_prefix="zz")["jobs"]) == []
    assert ok(client, JOBS_API, id_prefix="", sort="job_id")["total"] == len(FLEET)


def test_gpu_readings_for_charts_carry_step_times(client: TestClient) -> None:
    page = ok(client, "/api/training/bravo/gpus", max_points=10)
    assert page["source"] == "step_readings" and page["next_cursor"] is None
    assert [(r["gpu_index"], r["step"], r["ts"], r["temperature_c"]) for r in page["readings"]] == [
        (0, 10, at(HOUR + 5), 60.0),
        (0, 20, at(HOUR + 10), 64.0),
        (1, 10, at(HOUR + 5), 62.0),
        (1, 20, at(HOUR + 10), 66.0),
    ]
    # and so do their pages (ts was null there: audit 28)
    first = ok(client, "/api/training/bravo/gpus", limit=3)
    rest = ok(client, "/api/training/bravo/gpus", cursor=first["next_cursor"])
    assert [(r["gpu_index"], r["step"], r["ts"]) for r in first["readings"] + rest["readings"]] == [
        (r["gpu_index"], r["step"], r["ts"]) for r in page["readings"]
    ]


def test_gpu_readings_downsampled_keep_every_extreme(lab: Lab, engine: Engine) -> None:
    def reading(step: int, g: int) -> Json:
        temp = 99.0 if (step, g) == (321, 1) else 10.0 if (step, g) == (77, 0) else 50.0 + (step % 5)
        return {"index": g, "utilization_percent": 50.0, "memory_used_mb": 100.0, "temperature_c": temp, "power_w": 1.0}

    history = [
        {"step": s, "timestamp": at(s), "loss": 1.0, "gpus": [reading(s, 0), reading(s, 1)]} for s in range(1, 501)
    ]
    lab.write_job("hot", {"job_id": "hot", "status": "completed", "history": history})
    assert lab.ingest().failed == 0
    rows = ok(make_client(engine.warehouse(lab.db)), "/api/training/hot/gpus", max_points=42)["readings"]
    for g in (0, 1):
        steps = [r["step"] for r in rows if r["gpu_index"] == g]
        assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 500
        assert len(steps) <= 42 + 2 * 4  # per GPU: first, last, and a min and max of 4 figures per bucket
    assert any(r["gpu_index"] == 1 and r["step"] == 321 and r["temperature_c"] == 99.0 for r in rows)
    assert any(r["gpu_index"] == 0 and r["step"] == 77 and r["temperature_c"] == 10.0 for r in rows)
