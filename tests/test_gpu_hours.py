"""GPU hours have one definition (the view job_gpu_hours): the fleet endpoint, the view
fleet_gpu_hours and the example of docs/views.md give the same number."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from tests.conftest import REPO, Engine, Lab

T0 = 1_793_610_000  # 2026-11-02T09:00:00Z, when the sample job llama-sft-001 starts
FLEET_API = "/api/training/analytics/fleet"


def _docs_example() -> str:
    (sql,) = [s for s in re.findall(r"```sql\n(.*?)```", (REPO / "docs" / "views.md").read_text(), re.S)
              if "job_gpu_hours" in s]  # fmt: skip
    return sql


@pytest.fixture(scope="module")
def fleet(ingested: Lab, module_engine: Engine) -> Lab:
    """The jobs below, read on DuckDB and on PostgreSQL (conftest's ``engine``)."""
    return ingested.on(module_engine)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The sample jobs; llama-sft-001 with GPU samples of two GPUs (its steps logged one); a job
    known only by its config's gpu_count, and one with no GPU count at all."""
    lab = Lab(tmp_path_factory.mktemp("gpu_hours"))
    shutil.copytree(REPO / "samples" / "jobs", lab.root, dirs_exist_ok=True)
    for job_id, config in (("count-only", {"gpu_count": 4}), ("no-gpus", {})):
        lab.write_job(job_id, {
            "job_id": job_id, "status": "completed", "started_at": T0, "ended_at": T0 + 90, "config": config,
            "history": [{"step": 10, "timestamp": T0 + 60, "loss": 1.0}],
        })  # fmt: skip
    spool = lab.root.parent / "spool"
    spool.mkdir()
    samples = [
        {"ts": T0 + t, "host": "node-01", "job_id": "llama-sft-001", "gpu_index": gpu, "utilization_percent": 50.0}
        for t in (0, 10, 20) for gpu in (0, 1)
    ]  # fmt: skip
    (spool / "node-01.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert lab.ingest(lab.root, spool_root=spool).failed == 0
    return lab


def test_each_job_holds_its_gpus_for_its_whole_duration(fleet: Lab) -> None:
    rows = fleet.query("SELECT job_id, gpus, total_seconds, gpu_hours FROM job_gpu_hours ORDER BY job_id")
    by_job = {job: (gpus, seconds, hours) for job, gpus, seconds, hours in rows}
    assert by_job["llama-sft-001"] == (2, 25.0, pytest.approx(2 * 25 / 3600))  # the samples' 2 GPUs, not 1
    assert by_job["count-only"] == (4, 90.0, pytest.approx(4 * 90 / 3600))  # whole duration, not 60 s trained
    assert by_job["no-gpus"] == (None, 90.0, None)
    for gpus, seconds, hours in by_job.values():
        assert hours is None or hours == pytest.approx(gpus * seconds / 3600)
    assert by_job["mistral-lora-002"][0] == 2  # two GPUs in its step readings


def test_the_endpoint_the_view_and_the_docs_agree(fleet: Lab) -> None:
    with TestClient(create_app(fleet.engine.warehouse(fleet.db))) as client:
        response = client.get(FLEET_API)
        assert response.status_code == 200, response.text
        api = response.json()
        completed = client.get(FLEET_API, params={"status": "completed"}).json()
    ((view_hours, view_counted, view_jobs),) = fleet.query(
        "SELECT gpu_hours, gpu_hours_jobs, jobs FROM fleet_gpu_hours"
    )
    docs_hours = sum(hours for _, hours, _ in fleet.query(_docs_example()) if hours is not None)
    ((by_job,),) = fleet.query("SELECT sum(gpu_hours) FROM job_gpu_hours")
    assert api["gpu_hours"] == pytest.approx(view_hours, rel=1e-12)
    assert docs_hours == pytest.approx(view_hours, rel=1e-12)
    assert by_job == pytest.approx(view_hours, rel=1e-12)
    assert (api["gpu_hours_jobs"], api["jobs"]) == (view_counted, view_jobs) == (4, 5)
    # and the filters select among the same per-job figures
    ((completed_hours,),) = fleet.query(
        "SELECT sum(g.gpu_hours) FROM job_gpu_hours g JOIN job_results r USING (job_id) WHERE r.status = 'completed'"
    )
    assert completed["gpu_hours"] == pytest.approx(completed_hours, rel=1e-12)
