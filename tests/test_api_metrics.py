"""A job's metrics of any name (docs/api.md): the list, and one metric's history, paged by step or
downsampled as the step history is.

The warehouse is built by real ingest (the jobs' progress.json), and the metrics are rows of the
fact table ``metric_values`` written into it (as the tool-log readers write them), then published
as a snapshot. Every expected figure is computed here from the values written, independently of
the SQL under test: counts, ends, last values, and the downsampling's buckets (ntile: equal row
counts, the first ``n mod b`` buckets one row longer).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from conftest import REALDATA, Engine, Lab
from fastapi.testclient import TestClient

from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.warehouse import snapshots

BASE = datetime(2025, 1, 1)
LOSS = "train/loss"
SPIKE_STEP, DIP_STEP = 1234, 2222
LOSS_STEPS = range(0, 3000)


def loss_at(step: int) -> float:
    if step == SPIKE_STEP:
        return 1e6
    if step == DIP_STEP:
        return -1e6
    return 2.0 / (1 + step / 100) + 0.01 * math.sin(step)


# name -> [(step, value)]; times are BASE + step seconds
METRICS: dict[str, list[tuple[int, float]]] = {
    LOSS: [(s, loss_at(s)) for s in LOSS_STEPS],
    "eval/accuracy": [(s, 0.5 + s / 2000) for s in range(100, 1001, 100)],
    "lr": [(0, 1e-3), (10, 5e-4), (20, math.nan)],  # a NaN last: no last value
    "lr-Adam": [(-5, 0.25)],  # a step below 0 counts as any other
}
OTHER = {LOSS: [(s, 100.0 + s) for s in range(5)]}  # another job's metric of the same name


def iso(step: int) -> str:
    return (BASE + timedelta(seconds=step)).replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def write_metrics(lab: Lab, job_id: str, metrics: dict[str, list[tuple[int, float]]]) -> None:
    con = duckdb.connect(str(lab.db))
    try:
        rows = [
            (job_id, name, step, BASE + timedelta(seconds=step), value, "tensorboard")
            for name, points in metrics.items()
            for step, value in points
        ]
        # one Arrow table: DuckDB's executemany runs a statement per row (~10 s for these 3,000)
        table = pa.Table.from_pylist(
            [dict(zip(("job_id", "name", "step", "ts", "value", "source"), row, strict=True)) for row in rows]
        )
        con.register("new_points", table)
        con.execute("INSERT INTO metric_values (job_id, name, step, ts, value, source) SELECT * FROM new_points")
    finally:
        con.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("metrics"))
    for job_id in ("run", "other", "bare", "team/run-1"):
        lab.write_job(job_id, {"job_id": job_id, "status": "completed", "history": [{"step": 1, "loss": 1.0}]})
    assert lab.ingest().failed == 0
    write_metrics(lab, "run", METRICS)
    write_metrics(lab, "other", OTHER)
    write_metrics(lab, "team/run-1", {"a/b/c": [(1, 1.0)]})
    snapshots.publish(lab.db)
    return lab


@pytest.fixture(scope="module")
def client(lab: Lab, module_engine: Engine) -> Iterator[TestClient]:
    """The app over the jobs, on DuckDB and on PostgreSQL (conftest's ``engine``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        yield TestClient(create_app(module_engine.warehouse(lab.db)))


def get(client: TestClient, url: str, **params: Any) -> tuple[int, Any]:
    response = client.get(url, params=params or None)
    return response.status_code, response.json()


def ok(client: TestClient, url: str, **params: Any) -> Any:
    code, body = get(client, url, **params)
    assert code == 200, body
    return body


# --- the list -------------------------------------------------------------------------------


def test_a_jobs_metrics_by_name_with_counts_ends_and_last_values(client: TestClient) -> None:
    assert ok(client, "/api/training/run/metrics") == {
        "job_id": "run",
        "metrics": [
            {"name": "eval/accuracy", "points": 10, "first_step": 100, "last_step": 1000, "last_value": 1.0},
            {"name": "lr", "points": 3, "first_step": 0, "last_step": 20, "last_value": None},  # NaN at 20
            {"name": "lr-Adam", "points": 1, "first_step": -5, "last_step": -5, "last_value": 0.25},
            {"name": LOSS, "points": 3000, "first_step": 0, "last_step": 2999, "last_value": loss_at(2999)},
        ],
    }
    assert ok(client, "/api/training/other/metrics")["metrics"] == [
        {"name": LOSS, "points": 5, "first_step": 0, "last_step": 4, "last_value": 104.0}
    ]


def test_a_job_without_metrics_has_an_empty_list(client: TestClient) -> None:
    assert ok(client, "/api/training/bare/metrics") == {"job_id": "bare", "metrics": []}


def test_job_ids_with_slashes(client: TestClient) -> None:
    for path in ("/api/training/team/run-1/metrics", "/api/training/team%2Frun-1/metrics"):
        assert ok(client, path)["metrics"][0]["name"] == "a/b/c"
    history = ok(client, "/api/training/team/run-1/metrics/history", name="a/b/c")
    assert history["points"] == [{"step": 1, "ts": iso(1), "value": 1.0}]


# --- the history: pages ---------------------------------------------------------------------


def walk(client: TestClient, url: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every point, following `next` to the end; and the number of pages."""
    page = ok(client, url, **params)
    points, pages = list(page["points"]), 1
    while page["next"] is not None:
        assert page["next_cursor"] in page["next"]
        assert len(points) < 10_000, "pages that never end"
        page = ok(client, page["next"])
        points += page["points"]
        pages += 1
    assert page["next_cursor"] is None
    return points, pages


@pytest.mark.parametrize("limit", [1_000, 700, 2_999, 3_000, 10_000])
def test_pages_walked_to_the_end_hold_every_point_once(client: TestClient, limit: int) -> None:
    points, pages = walk(client, "/api/training/run/metrics/history", name=LOSS, limit=limit)
    assert [p["step"] for p in points] == list(LOSS_STEPS)  # no gap, no repeat, in order
    assert [p["value"] for p in points] == [loss_at(s) for s in LOSS_STEPS]
    assert [p["ts"] for p in points[:2]] == [iso(0), iso(1)]
    assert pages == math.ceil(len(LOSS_STEPS) / limit)


def test_the_first_page_and_its_link(client: TestClient) -> None:
    page = ok(client, "/api/training/run/metrics/history", name=LOSS, limit=2)
    assert page["job_id"] == "run" and page["name"] == LOSS and page["downsampled"] is False
    assert page["points"] == [
        {"step": 0, "ts": iso(0), "value": loss_at(0)},
        {"step": 1, "ts": iso(1), "value": loss_at(1)},
    ]
    assert page["next"].startswith("/api/training/run/metrics/history?name=train%2Floss&limit=2&cursor=")


def test_step_ranges_and_another_jobs_metric(client: TestClient) -> None:
    points, _ = walk(client, "/api/training/run/metrics/history", name=LOSS, from_step=2990, to_step=2995, limit=4)
    assert [p["step"] for p in points] == [2990, 2991, 2992, 2993, 2994, 2995]
    other = ok(client, "/api/training/other/metrics/history", name=LOSS)["points"]
    assert [(p["step"], p["value"]) for p in other] == OTHER[LOSS]
    negative = ok(client, "/api/training/run/metrics/history", name="lr-Adam")["points"]
    assert negative == [{"step": -5, "ts": iso(-5), "value": 0.25}]
    # a range past the end of an existing metric is empty, not a 404
    assert ok(client, "/api/training/run/metrics/history", name=LOSS, from_step=5000)["points"] == []


def test_a_non_finite_value_is_null(client: TestClient) -> None:
    points = ok(client, "/api/training/run/metrics/history", name="lr")["points"]
    assert [p["value"] for p in points] == [1e-3, 5e-4, None]


# --- the history: downsampled ---------------------------------------------------------------


def expected_downsample(points: list[tuple[int, float]], max_points: int) -> list[int]:
    """The steps kept: the first and last, and per ntile bucket the rows of the min and max value."""
    buckets = max(1, (max_points - 2) // 2)
    n = len(points)
    size, extra = divmod(n, buckets)
    kept = {points[0][0], points[-1][0]}
    start = 0
    for b in range(buckets):
        length = size + (1 if b < extra else 0)
        chunk = points[start : start + length]
        start += length
        finite = [(v, s) for s, v in chunk if math.isfinite(v)]
        if finite:
            kept.add(min(finite, key=lambda vs: (vs[0], vs[1]))[1])
            kept.add(max(finite, key=lambda vs: (vs[0], -vs[1]))[1])
    return sorted(kept)


@pytest.mark.parametrize("max_points", [10, 11, 100, 1_000, 5_000])
def test_max_points_keeps_the_ends_and_every_buckets_extremes(client: TestClient, max_points: int) -> None:
    answer = ok(client, "/api/training/run/metrics/history", name=LOSS, max_points=max_points)
    assert answer["next_cursor"] is None and answer["next"] is None
    steps = [p["step"] for p in answer["points"]]
    assert steps == expected_downsample(METRICS[LOSS], max_points)
    # 5,000 points' buckets hold one or two points each, both kept: none left out, not downsampled
    assert answer["downsampled"] is (len(steps) < len(LOSS_STEPS)) is (max_points < 5_000)
    assert len(steps) <= max_points
    assert {0, 2999, SPIKE_STEP, DIP_STEP} <= set(steps)  # the spike and the dip are never averaged away
    assert all(p["value"] == loss_at(p["step"]) and p["ts"] == iso(p["step"]) for p in answer["points"])


def test_downsampling_a_short_metric_keeps_it_whole(client: TestClient) -> None:
    answer = ok(client, "/api/training/run/metrics/history", name="eval/accuracy", max_points=100)
    assert [p["step"] for p in answer["points"]] == list(range(100, 1001, 100))


def test_downsampling_within_a_range(client: TestClient) -> None:
    answer = ok(client, "/api/training/run/metrics/history", name=LOSS, max_points=10, from_step=1000, to_step=1999)
    inside = [(s, v) for s, v in METRICS[LOSS] if 1000 <= s <= 1999]
    assert [p["step"] for p in answer["points"]] == expected_downsample(inside, 10)
    assert SPIKE_STEP in [p["step"] for p in answer["points"]]


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "params", "status", "detail"),
    [
        ("/api/training/nope/metrics", {}, 404, "no job 'nope'"),
        ("/api/training/nope/metrics/history", {"name": LOSS}, 404, "no job 'nope'"),
        ("/api/training/run/metrics/history", {"name": "nope"}, 404, "job 'run' has no metric 'nope'"),
        ("/api/training/bare/metrics/history", {"name": LOSS}, 404, "job 'bare' has no metric 'train/loss'"),
        ("/api/training/run/metrics/history", {"name": LOSS, "cursor": "nope"}, 422,
         "bad cursor: cursor is not one this API handed out"),
        ("/api/training/run/metrics/history", {"name": LOSS, "cursor": "eyJrIjoic3RlcHMiLCJ2IjpbMl19"}, 422,
         "bad cursor: cursor belongs to another listing"),  # a cursor of the step history
        ("/api/training/run/metrics/history", {"name": LOSS, "cursor": "eyJrIjoibWV0cmljIiwidiI6WyIyIl19"}, 422,
         "bad cursor: cursor is not one this API handed out"),  # {"k":"metric","v":["2"]}
        ("/api/training/run/metrics/history", {}, 422, None),  # no name
        ("/api/training/run/metrics/history", {"name": ""}, 422, None),
        ("/api/training/run/metrics/history", {"name": LOSS, "max_points": 9}, 422, None),
        ("/api/training/run/metrics/history", {"name": LOSS, "limit": 0}, 422, None),
        ("/api/training/run/metrics/history", {"name": LOSS, "from_step": 2**63}, 422, None),
    ],
)  # fmt: skip
def test_errors(client: TestClient, url: str, params: dict[str, Any], status: int, detail: str | None) -> None:
    code, body = get(client, url, **params)
    assert code == status, body
    assert set(body) == {"detail"}
    if detail is not None:
        assert body["detail"] == detail


def test_a_job_named_like_the_route_is_reached_by_its_record(client: TestClient) -> None:
    # /api/training/run/metrics is run's metrics; the job record of "run/metrics" is at /jobs/
    code, body = get(client, "/api/training/jobs/run/metrics")
    assert (code, body) == (404, {"detail": "no job 'run/metrics'"})


# --- through real ingest ----------------------------------------------------------------------

# A Lightning CSVLogger file: sparse rows (a step row, a validation row, an epoch row), and step
# 4 logged twice (a resumed run): the later line wins.
LIGHTNING_CSV = """step,epoch,train_loss,val_loss,lr-Adam
0,0,2.5,,0.001
2,0,2.0,,0.001
4,0,1.5,,0.0005
4,0,,1.75,
4,0,1.25,,0.0005
6,1,1.0,,0.0001
"""


def lightning_points(text: str) -> dict[str, list[tuple[int, float]]]:
    """Every column but step, per step its last written value: read with the csv module."""
    values: dict[str, dict[int, float]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        for name, cell in row.items():
            if name != "step" and cell != "":
                values.setdefault(name, {})[int(row["step"])] = float(cell)
    return {name: sorted(points.items()) for name, points in sorted(values.items())}


def test_a_lightning_runs_metrics_through_ingest(tmp_path: Any, ingest_engine: Engine) -> None:
    lab = Lab(tmp_path, ingest_engine)  # on PostgreSQL: the metrics ingest --db published
    run = lab.root / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(LIGHTNING_CSV)
    summary = lab.ingest()
    assert summary.failed == 0, summary.problems
    expected = lightning_points(LIGHTNING_CSV)
    assert expected["train_loss"] == [(0, 2.5), (2, 2.0), (4, 1.25), (6, 1.0)]  # the reader's own check
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        client = TestClient(create_app(lab.warehouse()))
    job = "/api/training/lightning_logs/version_0"
    assert ok(client, f"{job}/metrics")["metrics"] == [
        {"name": name, "points": len(points), "first_step": points[0][0], "last_step": points[-1][0],
         "last_value": points[-1][1]}
        for name, points in expected.items()
    ]  # fmt: skip
    for name, points in expected.items():
        walked, _ = walk(client, f"{job}/metrics/history", name=name, limit=1)
        assert [(p["step"], p["value"]) for p in walked] == points


TFEVENTS = REALDATA / "tool_logs2" / "tfevents" / "hf-trainer-5-runs"


@pytest.mark.skipif(not TFEVENTS.is_dir(), reason="no shared/realdata")
def test_a_real_tensorboard_runs_metrics_answer_what_the_warehouse_holds(tmp_path: Any, ingest_engine: Engine) -> None:
    """The list's aggregates and the walked pages, against the view's rows read and summed here
    (on PostgreSQL: its metric_points view over the published rows)."""
    lab = Lab(tmp_path, ingest_engine)
    summary = lab.ingest(TFEVENTS)
    assert summary.failed == 0, summary.problems
    points: dict[tuple[str, str], list[tuple[int, float | None]]] = {}
    for job_id, name, step, value in lab.query("SELECT job_id, name, step, value FROM metric_points"):
        points.setdefault((job_id, name), []).append((step, value if math.isfinite(value) else None))
    assert points, "the folder gave no metric"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        client = TestClient(create_app(lab.warehouse()))
    for job_id in sorted({job for job, _ in points}):
        listed = ok(client, f"/api/training/{job_id}/metrics")["metrics"]
        mine = sorted((name, sorted(p)) for (job, name), p in points.items() if job == job_id)
        assert listed == [
            {"name": name, "points": len(p), "first_step": p[0][0], "last_step": p[-1][0], "last_value": p[-1][1]}
            for name, p in mine
        ]
        for name, p in mine:
            walked, _ = walk(client, f"/api/training/{job_id}/metrics/history", name=name, limit=97)
            assert [(q["step"], q["value"]) for q in walked] == p


def test_the_snapshot_time_survives_the_copy_being_replaced(lab: Lab) -> None:
    """One copy is kept: an ingest may replace the copy a scrape read before /metrics stats it;
    runlytics_snapshot_timestamp_seconds then comes from the copy's name, not from nothing."""
    from runlytics.api import metrics

    lab.write_job("run-1", {"job_id": "run-1", "status": "running", "history": [{"step": 1, "loss": 1.0}]})
    lab.ingest()
    copy = snapshots.latest(lab.db)
    assert copy is not None
    stat_time = metrics._snapshot_time(copy)
    assert stat_time is not None and abs(stat_time - snapshots.stamp_seconds(copy)) < 5
    copy.unlink()
    assert metrics._snapshot_time(copy) == snapshots.stamp_seconds(copy) == int(copy.stem) / 1e9
