"""GET /metrics, session 16 audit: a series set per GPU (gpu_key), not per index; a job's throughput
from its latest step row alone. On each engine, from a real ingest (the expected figures are the
inputs written here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runlytics.api import metrics
from runlytics.api.app import TOKEN_ENV, create_app
from tests.conftest import Engine, Lab
from tests.test_metrics import T0, Series, by_job, scrape, settle

GPU_FAMILIES = (
    "runlytics_gpu_utilization_percent",
    "runlytics_gpu_memory_used_mb",
    "runlytics_gpu_temperature_celsius",
    "runlytics_gpu_power_watts",
    "runlytics_gpu_sample_timestamp_seconds",
)
GpuLabels = tuple[str, str, str, str]  # job_id, host, gpu, gpu_uuid


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(metrics.STALE_ENV, raising=False)
    return lambda db: TestClient(create_app(db, token=None))


def by_gpu(series: Series) -> dict[GpuLabels, float]:
    """A GPU family's values by its four labels (a KeyError when one is missing)."""
    out = {}
    for labels, value in series.items():
        named = dict(labels)
        out[(named["job_id"], named["host"], named["gpu"], named["gpu_uuid"])] = value
    return out


def sample(t: float, uuid: str | None, **figures: float) -> dict[str, Any]:
    """A spool sample of job "shared" on host node1 at GPU index 0 (each container numbers its GPU 0)."""
    record: dict[str, Any] = {"ts": T0 + t, "job_id": "shared", "host": "node1", "gpu_index": 0, **figures}
    if uuid is not None:
        record["gpu_uuid"] = uuid
    return record


def running(job_id: str, *history: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job_id, "status": "running", "total_steps": 100, "history": list(history)}


def test_two_gpus_sharing_host_and_index_each_have_their_series(
    tmp_path: Path, ingest_engine: Engine, client: Any
) -> None:
    """GPU-A, GPU-B and a GPU without a UUID (gpu_key '#0'), all index 0 on node1, sampled at the same
    instants: three series sets, each of its own GPU's latest sample, told apart by gpu_uuid."""
    lab = Lab(tmp_path, ingest_engine)
    settle(lab.write_job("shared", running("shared", {"step": 10, "timestamp": T0, "loss": 1.0})), T0)
    spool = tmp_path / "spool"
    spool.mkdir()
    samples = []
    for t in (0, 30, 60):  # the latest ts (60) is the same for the three GPUs: a tie across GPUs
        samples += [
            sample(t, "GPU-A", utilization_percent=10.0 + t, memory_used_mb=100.0, temperature_c=30.0, power_w=100.0),
            sample(t, "GPU-B", utilization_percent=90 + t / 10, memory_used_mb=7e4, temperature_c=80.0, power_w=400.0),
            sample(t, None, utilization_percent=50.0, memory_used_mb=5.0 + t, temperature_c=45.0),
        ]
    (spool / "node1.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    lab.ingest(lab.root, spool_root=spool)

    families = scrape(client(lab.warehouse()))
    a, b, bare = ("shared", "node1", "0", "GPU-A"), ("shared", "node1", "0", "GPU-B"), ("shared", "node1", "0", "")
    assert by_gpu(families["runlytics_gpu_utilization_percent"]) == {a: 70.0, b: 96.0, bare: 50.0}
    assert by_gpu(families["runlytics_gpu_memory_used_mb"]) == {a: 100.0, b: 7e4, bare: 65.0}
    assert by_gpu(families["runlytics_gpu_temperature_celsius"]) == {a: 30.0, b: 80.0, bare: 45.0}
    assert by_gpu(families["runlytics_gpu_power_watts"]) == {a: 100.0, b: 400.0}  # the bare GPU has no power
    assert by_gpu(families["runlytics_gpu_sample_timestamp_seconds"]) == {a: T0 + 60, b: T0 + 60, bare: T0 + 60}


def test_a_logged_reading_carries_its_uuid_label(tmp_path: Path, ingest_engine: Engine, client: Any) -> None:
    """A job without samples: its latest step's readings (host ''), gpu_uuid from the reading, else ''."""
    lab = Lab(tmp_path, ingest_engine)
    gpus = [{"index": 0, "uuid": "GPU-L", "utilization_percent": 33.0}, {"index": 1, "utilization_percent": 44.0}]
    settle(lab.write_job("logged", running("logged", {"step": 5, "loss": 1.0, "gpus": gpus})), T0)
    lab.ingest(lab.root)

    families = scrape(client(lab.warehouse()))
    assert by_gpu(families["runlytics_gpu_utilization_percent"]) == {
        ("logged", "", "0", "GPU-L"): 33.0,
        ("logged", "", "1", ""): 44.0,
    }
    for name in GPU_FAMILIES:  # every per-GPU family has the label, on every series
        assert all("gpu_uuid" in dict(labels) for labels in families.get(name, {})), name


def test_throughput_is_the_latest_step_rows_alone(tmp_path: Path, ingest_engine: Engine, client: Any) -> None:
    """docs/metrics.md: the latest step row's samples_per_second, else its samples / seconds. A latest
    row with neither has no series (not an earlier row's 50.0, not 0)."""
    lab = Lab(tmp_path, ingest_engine)
    older = {"step": 10, "timestamp": T0 + 10, "loss": 1.0, "samples_per_second": 50.0, "samples": 500}
    settle(lab.write_job("none", running("none", older, {"step": 20, "timestamp": T0 + 20, "loss": 0.9})), T0)
    by_rate = {"step": 20, "timestamp": T0 + 20, "loss": 0.9, "samples_per_second": 12.5}
    settle(lab.write_job("rate", running("rate", older, by_rate)), T0)
    lab.ingest(lab.root)

    families = scrape(client(lab.warehouse()))
    assert by_job(families, "runlytics_job_step") == {"none": 20, "rate": 20}
    assert by_job(families, "runlytics_job_samples_per_second") == {"rate": 12.5}
