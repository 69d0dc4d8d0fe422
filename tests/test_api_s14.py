"""The chart histories' `downsampled` flag and `max_points` rule, and the memory unit as shown.

- `/steps?max_points=N` and `/metrics/history?max_points=N`: `downsampled` is true only when rows
  (points) of the range were left out; a range that `max_points` keeps whole says false (it said
  true whenever `max_points` was given, every row returned or not).
- `/steps`' `max_points` needs 2 + 2 per numeric field asked for (22 with the default, every
  field): the schema says so, not only the 422.
- Memory figures named `_mb` are MiB (shared/spec/inputs.md): the schema's descriptions and the
  dashboard's labels say MiB, never MB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import REPO, Engine, Lab
from fastapi.testclient import TestClient

from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.warehouse import snapshots

BASE = datetime(2026, 3, 1, tzinfo=UTC)
LONG = 100  # steps of the job `long`, a loss each


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def loss_of(step: int) -> float:
    return 5.0 if step == 37 else 2.0 - step / 100


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("s14"))
    lab.write_job(
        "two",
        {"job_id": "two", "status": "completed", "history": [
            {"step": 10, "timestamp": at(10), "loss": 2.45}, {"step": 20, "timestamp": at(20), "loss": 0.32},
        ]},
    )  # fmt: skip
    lab.write_job(
        "long",
        {"job_id": "long", "status": "completed", "history": [
            {"step": s, "timestamp": at(s), "iteration_time": 1.0, "loss": loss_of(s)} for s in range(1, LONG + 1)
        ]},
    )  # fmt: skip
    # a row between two others with no loss: never a bucket's extreme of `loss`
    lab.write_job(
        "gap",
        {"job_id": "gap", "status": "completed", "history": [
            {"step": 1, "timestamp": at(1), "loss": 1.0}, {"step": 2, "timestamp": at(2)},
            {"step": 3, "timestamp": at(3), "loss": 2.0},
        ]},
    )  # fmt: skip
    assert lab.ingest().failed == 0
    con = duckdb.connect(str(lab.db))
    try:
        naive = BASE.replace(tzinfo=None)
        points = [("two", "eval/accuracy", s, naive + timedelta(seconds=s), s / 100) for s in (1, 2)]
        points += [("long", "train/loss", s, naive + timedelta(seconds=s), loss_of(s)) for s in range(1, LONG + 1)]
        con.executemany(
            "INSERT INTO metric_values (job_id, name, step, ts, value, source) VALUES (?, ?, ?, ?, ?, 'tensorboard')",
            points,
        )
    finally:
        con.close()
    snapshots.publish(lab.db)
    return lab


@pytest.fixture(scope="module")
def client(lab: Lab, module_engine: Engine) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        yield TestClient(create_app(module_engine.warehouse(lab.db)))


def ok(client: TestClient, url: str, **params: Any) -> Any:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def steps_of(answer: dict[str, Any]) -> list[int]:
    return [r["step"] for r in answer["steps"]]


# --- downsampled: true only when rows were left out ---------------------------------------


def test_a_range_kept_whole_is_not_downsampled(client: TestClient) -> None:
    answer = ok(client, "/api/training/two/steps", fields="loss", max_points=30)
    assert answer["steps"] == [{"step": 10, "loss": 2.45}, {"step": 20, "loss": 0.32}]
    assert answer["downsampled"] is False
    # every field by default: 22 points at least, and both rows kept
    answer = ok(client, "/api/training/two/steps", max_points=22)
    assert steps_of(answer) == [10, 20] and answer["downsampled"] is False


def test_a_range_with_rows_left_out_is_downsampled(client: TestClient) -> None:
    answer = ok(client, "/api/training/long/steps", fields="loss", max_points=10)
    steps = steps_of(answer)
    assert answer["downsampled"] is True and answer["next_cursor"] is None
    assert len(steps) <= 10 and steps[0] == 1 and steps[-1] == LONG and 37 in steps  # the spike kept
    # the same job, a range of 5 rows: every row fits, nothing left out
    answer = ok(client, "/api/training/long/steps", fields="loss", max_points=10, from_step=40, to_step=44)
    assert steps_of(answer) == [40, 41, 42, 43, 44] and answer["downsampled"] is False
    # max_points as large as the job: every row kept
    answer = ok(client, "/api/training/long/steps", fields="loss", max_points=LONG + 2)
    assert steps_of(answer) == list(range(1, LONG + 1)) and answer["downsampled"] is False


def test_a_short_range_keeps_a_row_of_no_value_whole(client: TestClient) -> None:
    # step 2 has no loss: never a bucket's extreme of `loss`, but the range fits (session 30: it
    # was left out, and the chart said downsampled)
    answer = ok(client, "/api/training/gap/steps", fields="loss", max_points=10)
    assert answer["steps"] == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": None}, {"step": 3, "loss": 2.0}]
    assert answer["downsampled"] is False
    # without max_points: a page, every row, never downsampled
    answer = ok(client, "/api/training/gap/steps", fields="loss")
    assert steps_of(answer) == [1, 2, 3] and answer["downsampled"] is False


def test_metric_history_downsampled_only_when_points_are_left_out(client: TestClient) -> None:
    whole = ok(client, "/api/training/two/metrics/history", name="eval/accuracy", max_points=10)
    assert [p["value"] for p in whole["points"]] == [0.01, 0.02] and whole["downsampled"] is False
    cut = ok(client, "/api/training/long/metrics/history", name="train/loss", max_points=10)
    assert len(cut["points"]) <= 10 and 37 in [p["step"] for p in cut["points"]]
    assert cut["downsampled"] is True
    every = ok(client, "/api/training/long/metrics/history", name="train/loss", max_points=1_000)
    assert [p["step"] for p in every["points"]] == list(range(1, LONG + 1)) and every["downsampled"] is False


# --- max_points: the schema states the rule the 422 applies --------------------------------


def test_the_schema_states_the_steps_max_points_rule(client: TestClient) -> None:
    schema = client.app.openapi()  # type: ignore[attr-defined]
    parameters = schema["paths"]["/api/training/{job_id}/steps"]["get"]["parameters"]
    (param,) = [p for p in parameters if p["name"] == "max_points"]
    assert "22 with the default, every field" in param["description"]
    assert "at least 2 + 2 per numeric field asked for" in param["description"]
    response = client.get("/api/training/long/steps", params={"max_points": 10})
    assert response.status_code == 422 and "at least 22 for 10 numeric field(s)" in response.json()["detail"]
    # one numeric field: 10 is enough
    assert ok(client, "/api/training/long/steps", fields="ts,loss", max_points=10)["downsampled"] is True


# --- the memory unit as shown --------------------------------------------------------------


def test_memory_figures_are_mib_in_the_schema(client: TestClient) -> None:
    schemas = client.app.openapi()["components"]["schemas"]  # type: ignore[attr-defined]
    described = {
        f"{name}.{field}": prop.get("description", "")
        for name, schema in schemas.items()
        for field, prop in schema.get("properties", {}).items()
    }
    assert [k for k, text in described.items() if re.search(r"\bMB\b", text)] == []
    for key in (
        "ResourceUtilization.average_gpu_memory_mb",
        "ResourceUtilization.peak_gpu_memory_mb",
        "GpuSummary.average_memory_mb",
        "GpuSummary.peak_memory_mb",
        "GpuReading.memory_used_mb",
        "GpuReading.memory_total_mb",
        "GpuFigures.memory_used_mb",
    ):
        assert "MiB" in described[key], key


def test_the_dashboard_labels_memory_in_mib() -> None:
    static = Path(REPO / "api" / "static")
    shown = {js.name: js.read_text() for js in sorted(static.glob("*.js"))}
    assert [name for name, text in shown.items() if re.search(r"\bMB\b", text)] == []
    assert "Memory used (MiB)" in shown["job.js"]
    # the title goes on with "; dotted: the highest reading" when a job's readings are minute buckets
    assert "GPU memory used (MiB, mean of the job's GPUs" in shown["compare.js"]
    assert 'withUnit(rt.average_peak_memory_mb, "MiB", 0)' in shown["summary.js"]
