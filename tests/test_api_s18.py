"""Audit 18 of the REST API over real HTTP: job ids holding line breaks, cursors as long as their
ids, cursors and the parameters beside them, the time forms ``since``/``until`` read.

One small DuckDB warehouse for the module, served by ``runlytics serve`` (tests/servers.py: uvicorn
over a socket, as a client meets it): the first finding is uvicorn's decoding of ``%0A`` meeting
Starlette's path patterns, and the second whether a ``next`` link fits what the server reads
(a request of uvicorn's h11, 16 KiB), so every request here goes through the real stack.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import duckdb
import httpx
import pytest
from conftest import Lab
from servers import Server, serving

from runlytics.warehouse import bounded_json, db, queries, snapshots, times

LINE_BREAK_IDS = ("tr\n", "nl\nid", "\nlead", "two\n\n", "cr\rid", "crlf\r\n", "ls\u2028id")
CJK = ("日本語" * 85 + "0", "日本語" * 85 + "1")  # 256 characters each
ASCII = ("a" * 3100 + "0", "a" * 3100 + "1")  # 3,101 characters each
NAN = ("i" * 3100 + "0", "i" * 3100 + "1")  # each with a NaN loss: an insight each
HOST = "日本語" * 400  # the GPU job's host, and its GPUs' UUIDs below
UUIDS = ("GPU-" + "ü" * 300 + "0", "GPU-" + "ü" * 300 + "1")
METRIC = "train/loss"
SAMPLES_START = 1_751_328_000  # 2025-07-01T00:00Z
# a config DuckDB's JSON reader takes and stores as written (nan, -INF) where Python's parser refuses it
CONFIG_DOC = (
    '{"job_id": "cfg", "status": "completed", "history": [{"step": 1, "loss": 1.0}],'
    ' "config": {"lr": nan, "floor": -INF, "layers": [1, 2, ], "name": "nan, ]"}}'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    lab = Lab(tmp_path_factory.mktemp("s18"))
    one = [{"step": 1, "loss": 1.0}]
    for n, job_id in enumerate(("tr", *LINE_BREAK_IDS, "jobs\n", *CJK, *ASCII)):
        lab.write_job(f"j{n}", {"job_id": job_id, "status": "failed" if job_id == "tr\n" else "completed",
                                "started_at": "2025-07-01T00:00:00Z", "history": one})  # fmt: skip
    many = [{"step": s, "loss": 1.0 / s, "samples": 8, "iteration_time": 1.0} for s in range(1, 201)]
    lab.write_job(
        "many", {"job_id": "many", "status": "completed", "started_at": "2025-06-01T00:00:00Z", "history": many}
    )
    for n, job_id in enumerate(NAN):
        history = [{"step": s, "loss": math.nan if s == 3 else 1.0} for s in range(1, 6)]
        lab.write_job(f"nan{n}", {"job_id": job_id, "status": "completed", "history": history})
    steps = [{"step": s, "loss": 1.0, "samples": 8, "iteration_time": 60} for s in range(1, 60)]
    lab.write_job(
        "gpu", {"job_id": "gpu", "status": "completed", "started_at": "2025-07-01T00:00:00Z", "history": steps}
    )
    lab.write_job("cfg", None, raw=CONFIG_DOC)
    spool = lab.root.parent / "spool"
    spool.mkdir()
    samples = [
        {"ts": SAMPLES_START + 60 * minute, "job_id": "gpu", "gpu_index": gpu, "host": HOST, "gpu_uuid": uuid,
         "utilization_percent": 0}  # idle: a gpu_idle insight per GPU, keyed by host and UUID
        for minute in range(3) for gpu, uuid in enumerate(UUIDS)
    ]  # fmt: skip
    (spool / "s.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert lab.ingest(spool_root=spool).failed == 0
    con = duckdb.connect(str(lab.db))
    try:  # a metric's points (as a tool log's reader writes them), steps 1 to 200
        rows = [("many", METRIC, s, datetime(2025, 6, 1) + timedelta(seconds=s), 1.0 / s, "tensorboard")
                for s in range(1, 201)]  # fmt: skip
        con.executemany(
            "INSERT INTO metric_values (job_id, name, step, ts, value, source) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
    finally:
        con.close()
    snapshots.publish(lab.db)
    with serving(lab.db) as running:
        yield running


def get(server: Server, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", params=params, timeout=30)


def job_path(job_id: str) -> str:
    return "/api/training/" + quote(job_id, safe="")


# --- 1. a job id holding a line break is reachable on every per-job route ---------------------------

PER_JOB = ("", "/analytics", "/steps", "/gpus", "/insights", "/metrics", "/checkpoints")


@pytest.mark.parametrize("job_id", LINE_BREAK_IDS, ids=repr)
def test_a_job_id_with_a_line_break_is_reachable_on_every_per_job_route(server: Server, job_id: str) -> None:
    for suffix in PER_JOB:
        response = get(server, job_path(job_id) + suffix)
        assert response.status_code == 200, (suffix, response.text)
        assert response.json()["job_id"] == job_id, suffix
    alias = get(server, "/api/training/jobs/" + quote(job_id, safe=""))
    assert alias.status_code == 200 and alias.json()["job_id"] == job_id
    metric = get(server, job_path(job_id) + "/metrics/history", name="none")
    assert metric.json() == {"detail": f"job {job_id!r} has no metric 'none'"}  # the job is found


def test_a_job_id_ending_in_a_line_feed_is_not_the_job_without_it(server: Server) -> None:
    for path in (job_path("tr\n"), "/api/training/jobs/" + quote("tr\n", safe=""), job_path("tr\n") + "/analytics"):
        assert (get(server, path).json()["job_id"], get(server, path).json()["status"]) == ("tr\n", "failed"), path
    assert get(server, job_path("tr")).json()["status"] == "completed"


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/api/training/many/analytics%0A", "no job 'many/analytics\\n'"),  # was the analytics of many
        ("/api/training/many/steps%0A", "no job 'many/steps\\n'"),
        ("/api/training/many/metrics/history%0A", "no job 'many/metrics/history\\n'"),
        ("/api/training/insights%0A", "no job 'insights\\n'"),  # was the fleet's insights
        ("/api/training/analytics/summary%0A", "no job 'analytics/summary\\n'"),
        ("/api/training/export/steps%0A", "no job 'export/steps\\n'"),
        ("/api/training/jobs/many%0A", "no job 'many\\n'"),
        ("/api/ingest/runs%0A", "Not Found"),  # no route of that path: an unknown path's 404
        ("/healthz%0A", "Not Found"),
        ("/api/training/nope%0Aid/steps", "no job 'nope\\nid'"),  # was "Not Found"
    ],
)
def test_a_path_ending_in_a_line_feed_is_no_other_path(server: Server, path: str, detail: str) -> None:
    response = get(server, path)
    assert (response.status_code, response.json()) == (404, {"detail": detail})


def test_a_route_name_with_a_line_feed_is_a_job_of_that_id(server: Server) -> None:
    # /api/training/jobs was the job list with %0A after it; a job "jobs\n" is its record
    response = get(server, "/api/training/jobs%0A")
    assert response.status_code == 200 and response.json()["job_id"] == "jobs\n"


def test_a_config_of_duckdbs_json_is_served(server: Server) -> None:
    # the job record parsed the stored config with Python's parser: JSONDecodeError, a 500
    response = get(server, job_path("cfg"))
    assert response.status_code == 200, response.text[:300]
    assert response.json()["config"] == {"lr": None, "floor": None, "layers": [1, 2], "name": "nan, ]"}
    trailing = bounded_json.loads('{"a": [1, {"b": nan,}, ], "c": "x,]",\n}', 64)  # as a CAST to JSON keeps it
    assert math.isnan(trailing["a"][1]["b"]) and (trailing["a"][0], trailing["c"]) == (1, "x,]")
    with pytest.raises(db.WarehouseError, match="invalid JSON"):  # no JSON at all: a 503 that says so
        queries.job_record_config("cfg", '{"a": nope}')


# --- 2. every next link the server hands out is one it takes ------------------------------------


def walk(server: Server, path: str, items: str, **params: Any) -> list[Any]:
    """Every row of a listing, following ``next`` from the first page; each cursor checked to
    hold each of its strings once (an id sorted by was there twice)."""
    response = get(server, path, **params)
    rows: list[Any] = []
    while True:
        assert response.status_code == 200, response.text[:300]
        page = response.json()
        rows.extend(page[items])
        if page["next"] is None:
            return rows
        cursor = page["next_cursor"]
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["v"]
        strings = [v for v in values if isinstance(v, str) and len(v) > 100]
        assert len(strings) == len(set(strings)), "a long value twice in one cursor"
        assert len(cursor) < 1.4 * len(json.dumps(values, ensure_ascii=False).encode()) + 60  # UTF-8, no escapes
        response = httpx.get(page["next"], timeout=30)


@pytest.mark.parametrize("sort", ["job_id", "-job_id", "start_time", "-start_time", "status"])
@pytest.mark.parametrize("ids", [CJK, ASCII], ids=["cjk-256", "ascii-3101"])
def test_next_of_a_job_list_of_long_ids_is_followed(server: Server, sort: str, ids: tuple[str, ...]) -> None:
    rows = walk(server, "/api/training/jobs", "jobs", sort=sort, limit=1, id_prefix=ids[0][:5])
    assert sorted(job["job_id"] for job in rows) == sorted(ids)


def test_next_of_the_fleet_insights_of_long_ids_hosts_and_uuids_is_followed(server: Server) -> None:
    rows = walk(server, "/api/training/insights", "insights", limit=1)
    assert sorted(r["job_id"] for r in rows if r["kind"] == "nonfinite_loss") == sorted(NAN)
    idle = [r for r in rows if r["kind"] == "gpu_idle"]
    assert sorted((r["host"], r["gpu_uuid"]) for r in idle) == [(HOST, uuid) for uuid in UUIDS]


def test_next_of_gpu_samples_of_long_hosts_and_uuids_is_followed(server: Server) -> None:
    rows = walk(server, "/api/training/gpu/gpus", "readings", limit=1)
    assert [(r["gpu_uuid"], r["host"]) for r in rows] == [(uuid, HOST) for uuid in UUIDS for _ in range(3)]


# --- 3. a cursor never takes a page out of [from_step, to_step]; none beside max_points -------------


def cursor_of(step: int, kind: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": kind, "v": [step]}).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("path", "items", "kind", "params"), [
    ("/api/training/many/steps", "steps", "steps", {"fields": "loss"}),
    ("/api/training/many/metrics/history", "points", "metric", {"name": METRIC}),
])  # fmt: skip
def test_a_cursor_below_from_step_pages_from_from_step(
    server: Server, path: str, items: str, kind: str, params: dict[str, str]
) -> None:
    response = get(server, path, from_step=100, to_step=200, limit=3, cursor=cursor_of(10, kind), **params)
    assert [row["step"] for row in response.json()[items]] == [100, 101, 102]
    # a cursor further on than from_step goes on from the cursor
    response = get(server, path, from_step=100, to_step=200, limit=3, cursor=cursor_of(150, kind), **params)
    assert [row["step"] for row in response.json()[items]] == [151, 152, 153]
    following = httpx.get(response.json()["next"], timeout=30).json()[items]
    assert [row["step"] for row in following] == [154, 155, 156]


@pytest.mark.parametrize(("path", "kind", "params"), [
    ("/api/training/many/steps", "steps", {"fields": "loss"}),
    ("/api/training/many/metrics/history", "metric", {"name": METRIC}),
])  # fmt: skip
def test_a_cursor_beside_max_points_is_a_422(server: Server, path: str, kind: str, params: dict[str, str]) -> None:
    response = get(server, path, max_points=50, cursor=cursor_of(150, kind), **params)
    assert response.status_code == 422 and "cursor and max_points" in response.json()["detail"]
    assert get(server, path, max_points=50, **params).status_code == 200


# --- 4. the summary's offset beside a cursor ------------------------------------------------------


def test_the_summary_refuses_offset_beside_a_cursor(server: Server) -> None:
    summary = "/api/training/analytics/summary"
    first = get(server, summary, limit=1)
    assert first.status_code == 200 and first.json()["next_cursor"] is not None
    cursor = first.json()["next_cursor"]
    for offset in ("0", "5"):
        response = get(server, summary, limit=1, offset=offset, cursor=cursor)
        assert response.status_code == 422 and "cursor and offset" in response.json()["detail"]
    assert (
        get(server, summary, limit=1, offset=1).json()["top_performing_jobs"]
        == (get(server, summary, limit=1, cursor=cursor).json()["top_performing_jobs"])
    )


# --- 5. since/until: the documented forms, and only those ------------------------------------------

ACCEPTED = {
    "2026-03-01": "2026-03-01T00:00:00",
    "20260301": "2026-03-01T00:00:00",
    "2026-03-01T02:00": "2026-03-01T02:00:00",
    "2026-03-01 02:00:00": "2026-03-01T02:00:00",
    "20260301T0200Z": "2026-03-01T02:00:00",
    "20260301T020000.5": "2026-03-01T02:00:00.500000",
    "2026-03-01T02:00:00,25Z": "2026-03-01T02:00:00.250000",
    "2026-03-01T02:00:00.1234567+02": "2026-03-01T00:00:00.123456",
    "2026-03-01T02:00:00-0530": "2026-03-01T07:30:00",
    "2026-03-01t00:10:00z": "2026-03-01T00:10:00",  # RFC 3339's lower case, both letters (z was a 422)
    "1772323200": "2026-03-01T00:00:00",
}
REFUSED = [
    "2026-W09",  # an ISO week (was 2026-02-23)
    "2026-W09-1",
    "2026-060",  # an ordinal date
    "2026-03-01T00:10:00.Z",  # a point and no fraction (was 00:10)
    "2026-03-01T02",  # an hour alone (inputs.md's timestamps refuse it too)
    "2026-03-01T0200",  # an extended date with a basic time
    "20260301T02:00",
    "2026-03-01Z",  # an offset without a time
    "2026-03-01T02:00:00+02:00:30",  # an offset with seconds
    "2026-03-01T24:00",
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED.items())
def test_the_documented_time_forms_are_read(server: Server, text: str, expected: str) -> None:
    assert times.instant(text).isoformat() == expected  # runlytics export --since reads it so
    assert get(server, "/api/training/jobs", since=text, limit=1).status_code == 200


@pytest.mark.parametrize("text", REFUSED)
def test_a_time_of_another_form_is_refused(server: Server, text: str) -> None:
    with pytest.raises(times.BadTime):
        times.instant(text)
    response = get(server, "/api/training/jobs", since=text)
    assert response.status_code == 422 and repr(text) in response.json()["detail"][0]["msg"]
