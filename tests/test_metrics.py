"""GET /metrics: Prometheus gauges from a real ingest, staleness in /metrics and /readyz, the dashboard."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from runlytics.api import metrics
from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.ingest import journal
from runlytics.ingest.summary import Summary
from runlytics.warehouse import db, sidefiles
from tests.conftest import DUCKDB_ONLY_INGEST, REPO, Engine, Lab

T0 = 1_793_610_000  # 2026-11-02T09:00:00Z
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
# the series docs/metrics.md documents (its table: metric, labels), read from the docs rather
# than from the module under test: name -> label names
DOCUMENTED = {
    name: tuple(re.findall(r"`(\w+)`", labels))
    for name, labels in re.findall(
        r"^\| `(runlytics_\w+)` \|([^|]*)\|", (REPO / "docs" / "metrics.md").read_text(), re.M
    )
}
ODD_ID = 'odd "id" \\ x'  # label values are escaped, not broken

Series = dict[tuple[tuple[str, str], ...], float]


def scrape(client: TestClient) -> dict[str, Series]:
    """Every family's samples, by their labels (sorted pairs), from a parse of the text format."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, Series] = {}
    for family in text_string_to_metric_families(response.text):
        assert family.type == "gauge", family.name
        series = out.setdefault(family.name, {})
        for sample in family.samples:
            series[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def one(families: dict[str, Series], name: str) -> float:
    (value,) = families[name].values()
    return value


def by_job(families: dict[str, Series], name: str) -> dict[str, float]:
    return {dict(labels)["job_id"]: value for labels, value in families.get(name, {}).items()}


def by_gpu(families: dict[str, Series], name: str) -> dict[tuple[str, str, str], float]:
    return {
        (dict(labels)["job_id"], dict(labels)["host"], dict(labels)["gpu"]): value
        for labels, value in families.get(name, {}).items()
    }


def settle(path: Path, at: float) -> None:
    os.utime(path, (at, at))


def step(n: int, loss: float, **extra: Any) -> dict[str, Any]:
    return {"step": n, "timestamp": T0 + n, "loss": loss, "iteration_time": 0.5, "samples_per_second": 8.0, **extra}


def training(status: str) -> dict[str, Any]:
    """A job with 100 steps to go in all, 30 done at 0.5 s per step, two GPUs sampled."""
    return {
        "job_id": "train",
        "status": status,
        "started_at": T0,
        "total_steps": 100,
        "config": {"batch_size": 4},
        "history": [step(10, 2.0), step(20, 1.5), step(30, 1.25, samples_per_second=9.5)],
    }


def gpu_sample(t: float, gpu: int, **values: Any) -> dict[str, Any]:
    return {"ts": T0 + t, "host": "node-01", "job_id": "train", "gpu_index": gpu, **values}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(metrics.STALE_ENV, raising=False)
    return lambda db: TestClient(create_app(db, token=None))


@pytest.fixture
def fleet(tmp_path: Path, ingest_engine: Engine) -> tuple[Lab, Path, Summary]:
    """Two running jobs (one GPU-sampled, one with per-step readings only), and one of each other kind,
    ingested into the file or published to PostgreSQL (``ingest --db``)."""
    lab = Lab(tmp_path, ingest_engine)
    spool = lab.root.parent / "spool"
    spool.mkdir()
    settle(lab.write_job("train", training("running")), T0)
    logged = {
        "job_id": ODD_ID,
        "status": "running",
        "current_step": 7,
        "history": [
            {"step": 4, "loss": 3.0, "gpus": [{"index": 0, "utilization_percent": 10.0, "temperature_c": 50.0}]},
            {"step": 5, "loss": float("nan"),
             "gpus": [{"index": 0, "utilization_percent": 55.0, "memory_used_mb": 2048.0, "power_w": 210.0},
                      {"index": 1, "utilization_percent": 60.0, "temperature_c": 61.0}]},
        ],
    }  # fmt: skip
    settle(lab.write_job("logged", logged), T0)
    settle(lab.write_job("done", {"job_id": "done", "status": "completed", "history": [step(10, 1.0)]}), T0)
    settle(lab.write_job("waiting", {"job_id": "waiting", "status": "queued"}), T0)
    settle(lab.write_job("held", {"job_id": "held", "status": "paused", "history": [step(10, 1.0)]}), T0)
    settle(lab.write_job("broken", None, raw="{not json"), T0)
    (spool / "node-01.jsonl").write_text(
        "".join(
            json.dumps(s) + "\n"
            for s in (
                gpu_sample(0, 0, utilization_percent=90.0, memory_used_mb=1000.0, temperature_c=60.0, power_w=300.0),
                gpu_sample(25, 0, utilization_percent=80.0, memory_used_mb=3000.0, temperature_c=70.0, power_w=250.0),
                gpu_sample(0, 1, utilization_percent=5.0, memory_used_mb=500.0, temperature_c=40.0, power_w=50.0),
                gpu_sample(26, 1, utilization_percent=7.0, memory_used_mb=600.0, temperature_c=41.0),  # no power
            )
        )
    )
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.failed == 1 and summary.rows > 0
    return lab, spool, summary


def test_metrics_carry_the_running_jobs_their_gpus_and_the_ingest(fleet: Any, client: Any) -> None:
    lab, _, summary = fleet
    families = scrape(client(lab.warehouse()))

    assert one(families, "runlytics_warehouse_up") == 1
    assert by_job(families, "runlytics_job_step") == {"train": 30, ODD_ID: 7}  # current_step 7 > row step 5
    assert by_job(families, "runlytics_job_total_steps") == {"train": 100}
    assert by_job(families, "runlytics_job_loss") == {"train": 1.25, ODD_ID: 3.0}  # NaN at step 5 left out
    assert by_job(families, "runlytics_job_samples_per_second") == {"train": 9.5}
    # (100 - 30) steps x 0.5 s per step; the other job has no total_steps, so no ETA (not 0)
    assert by_job(families, "runlytics_job_eta_seconds") == {"train": pytest.approx(35.0)}

    # the latest sample per GPU; the job without samples: its latest step's readings, host ''
    assert by_gpu(families, "runlytics_gpu_utilization_percent") == {
        ("train", "node-01", "0"): 80.0,
        ("train", "node-01", "1"): 7.0,
        (ODD_ID, "", "0"): 55.0,
        (ODD_ID, "", "1"): 60.0,
    }
    assert by_gpu(families, "runlytics_gpu_memory_used_mb") == {
        ("train", "node-01", "0"): 3000.0,
        ("train", "node-01", "1"): 600.0,
        (ODD_ID, "", "0"): 2048.0,
    }
    assert by_gpu(families, "runlytics_gpu_temperature_celsius") == {
        ("train", "node-01", "0"): 70.0,
        ("train", "node-01", "1"): 41.0,
        (ODD_ID, "", "1"): 61.0,  # GPU 0's latest reading has no temperature: no series, not an older one
    }
    assert by_gpu(families, "runlytics_gpu_power_watts") == {
        ("train", "node-01", "0"): 250.0,  # GPU 1's latest sample has no power
        (ODD_ID, "", "0"): 210.0,
    }
    assert by_gpu(families, "runlytics_gpu_sample_timestamp_seconds") == {
        ("train", "node-01", "0"): T0 + 25,
        ("train", "node-01", "1"): T0 + 26,
    }

    jobs = {dict(labels)["status"]: value for labels, value in families["runlytics_jobs"].items()}
    assert jobs == {"queued": 1, "running": 2, "paused": 1, "completed": 1, "failed": 0, "cancelled": 0}
    assert set(families) <= set(DOCUMENTED)
    for name, series in families.items():  # each series with the labels the docs give it
        assert all({key for key, _ in labels} == set(DOCUMENTED[name]) for labels in series), name

    if lab.engine.ingests:
        # PostgreSQL has no snapshot and no heartbeat file (an ingester's is its stage's): no series
        # of either, and the ingest's freshness unknown (docs/postgresql.md, "Readers")
        assert not families.get("runlytics_snapshot_timestamp_seconds")
        assert {name for name in families if "ingest" in name and families[name]} == {
            "runlytics_ingest_stale_after_seconds"  # the threshold, set whatever the engine
        }
        return
    heartbeat = journal.read_heartbeat(lab.db)
    assert heartbeat is not None and heartbeat["outcome"] == "files_failed"
    assert one(families, "runlytics_last_ingest_files_failed") == 1
    assert one(families, "runlytics_last_ingest_rows") == summary.rows == heartbeat["summary"]["rows"]
    assert one(families, "runlytics_last_ingest_points") == summary.points == 0  # no trainer's own log here
    assert one(families, "runlytics_last_ingest_duration_seconds") == heartbeat["summary"]["seconds"]
    assert one(families, "runlytics_last_ingest_success") == 1  # the run completed; one file failed
    outcomes = {dict(labels)["outcome"]: value for labels, value in families["runlytics_last_ingest_outcome"].items()}
    assert outcomes == {"ok": 0, "files_failed": 1, "error": 0}
    ended = datetime.fromisoformat(heartbeat["ended_at"]).timestamp()
    assert one(families, "runlytics_last_ingest_timestamp_seconds") == pytest.approx(ended)
    assert one(families, "runlytics_last_successful_ingest_timestamp_seconds") == pytest.approx(ended)
    assert abs(ended - time.time()) < 300
    assert one(families, "runlytics_ingest_stale") == 0
    assert one(families, "runlytics_ingest_stale_after_seconds") == 3600
    assert one(families, "runlytics_snapshot_timestamp_seconds") == pytest.approx(time.time(), abs=300)


def test_a_finished_job_leaves_the_per_job_series(fleet: Any, client: Any) -> None:
    lab, spool, _ = fleet
    before = scrape(client(lab.warehouse()))
    assert "train" in by_job(before, "runlytics_job_step")
    settle(lab.write_job("train", {**training("completed"), "ended_at": T0 + 31}), T0 + 100)
    lab.ingest(lab.root, spool_root=spool)

    after = scrape(client(lab.warehouse()))
    for name, labels in DOCUMENTED.items():
        if "job_id" in labels:
            assert "train" not in by_job(after, name), name
    assert by_job(after, "runlytics_job_step") == {ODD_ID: 7}  # the other running job stays
    assert (ODD_ID, "", "0") in by_gpu(after, "runlytics_gpu_utilization_percent")
    jobs = {dict(labels)["status"]: value for labels, value in after["runlytics_jobs"].items()}
    assert jobs["running"] == 1 and jobs["completed"] == 2
    if lab.engine.ingests:  # no heartbeat on PostgreSQL (above)
        return
    assert one(after, "runlytics_last_ingest_files_failed") == 0  # the broken file is not read again unchanged
    outcomes = {dict(labels)["outcome"]: value for labels, value in after["runlytics_last_ingest_outcome"].items()}
    assert outcomes == {"ok": 1, "files_failed": 0, "error": 0}


def write_heartbeat(lab: Lab, last_success_at: str | None, outcome: str = "ok") -> None:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    record = {
        "run_id": 1,
        "ended_at": now,
        "outcome": outcome,
        "error": "RuntimeError: boom" if outcome == "error" else None,
        "summary": {"files_seen": 1, "ingested": 0, "failed": 0, "rows": 0, "seconds": 0.25},
        "last_success_at": last_success_at,
    }
    sidefiles.heartbeat(lab.db).write_text(json.dumps(record))


@DUCKDB_ONLY_INGEST  # the heartbeat file beside a DuckDB warehouse: PostgreSQL has none (docs/postgresql.md)
def test_an_old_last_success_is_stale_in_metrics_and_readyz(
    fleet: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, _, _ = fleet
    app = client(lab.db)
    ready = app.get("/readyz")
    assert ready.status_code == 200 and ready.json()["stale"] is False

    # the cron job keeps failing: its last success was long ago
    write_heartbeat(lab, "2020-01-01T00:00:00Z", outcome="error")
    monkeypatch.setenv(metrics.STALE_ENV, "600")
    families = scrape(app)
    assert one(families, "runlytics_ingest_stale") == 1
    assert one(families, "runlytics_ingest_stale_after_seconds") == 600
    assert one(families, "runlytics_last_ingest_success") == 0
    assert one(families, "runlytics_last_successful_ingest_timestamp_seconds") == 1_577_836_800
    ready = app.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "stale" and body["stale"] is True
    assert "2020-01-01T00:00:00Z" in body["detail"] and "RUNLYTICS_STALE_AFTER=600" in body["detail"]

    # within the threshold: fresh
    recent = datetime.fromtimestamp(time.time() - 300, UTC).isoformat()
    write_heartbeat(lab, recent)
    assert one(scrape(app), "runlytics_ingest_stale") == 0
    assert app.get("/readyz").json()["stale"] is False

    # never a success at all is stale too
    write_heartbeat(lab, None, outcome="error")
    assert one(scrape(app), "runlytics_ingest_stale") == 1
    assert app.get("/readyz").json()["status"] == "stale"

    # no heartbeat (the ingest never ran on this warehouse): unknown, so no series and a null flag
    sidefiles.heartbeat(lab.db).unlink()
    assert not scrape(app).get("runlytics_ingest_stale")
    ready = app.get("/readyz")
    assert ready.status_code == 200 and ready.json()["stale"] is None
    write_heartbeat(lab, None, outcome="error")

    # 0 disables the check
    monkeypatch.setenv(metrics.STALE_ENV, "0")
    families = scrape(app)
    assert one(families, "runlytics_ingest_stale") == 0
    assert not families.get("runlytics_ingest_stale_after_seconds")
    ready = app.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


def test_metrics_follow_the_token_rule(fleet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    lab, _, _ = fleet
    guarded = TestClient(create_app(lab.warehouse(), token="s3cret"))
    response = guarded.get("/metrics")
    assert response.status_code == 401 and response.json() == {"detail": "missing or wrong bearer token"}
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_without_a_warehouse_metrics_say_it_is_down(tmp_path: Path, client: Any, ingest_engine: Engine) -> None:
    missing: Path | db.PostgresUrl = tmp_path / "missing.duckdb"
    if ingest_engine.server is not None:  # a database the server does not have
        missing = db.PostgresUrl(ingest_engine.server.admin_url.rsplit("/", 1)[0] + "/missing")
    families = scrape(client(missing))
    assert one(families, "runlytics_warehouse_up") == 0
    assert "runlytics_job_step" not in families
    # no heartbeat yet: the ingest figures are unknown, so they have no series (never a 0)
    assert not families.get("runlytics_last_ingest_rows") and not families.get("runlytics_ingest_stale")


def test_each_app_has_its_own_registry(fleet: Any, tmp_path: Path, client: Any) -> None:
    lab, _, _ = fleet
    first, second = client(lab.warehouse()), client(tmp_path / "missing.duckdb")
    assert one(scrape(first), "runlytics_warehouse_up") == 1
    assert one(scrape(second), "runlytics_warehouse_up") == 0
    assert "/metrics" not in first.app.openapi()["paths"]  # text, not JSON: out of the OpenAPI schema


def test_stale_after_parses_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in (("", 3600.0), ("90", 90.0), ("1.5", 1.5), ("0", None), ("-5", None), ("soon", 3600.0)):
        monkeypatch.setenv(metrics.STALE_ENV, raw)
        assert metrics.stale_after() == expected, raw


# --- the Grafana dashboard -----------------------------------------------------------------


def panel_exprs(panels: list[dict[str, Any]]) -> list[str]:
    exprs = []
    for panel in panels:
        exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
        exprs += panel_exprs(panel.get("panels", []))  # rows may nest panels
    return exprs


def test_docs_name_every_series_the_module_declares_with_its_labels() -> None:
    assert {name: labels for name, (_, labels) in metrics.METRICS.items()} == DOCUMENTED


def test_the_dashboard_uses_only_metrics_the_endpoint_emits() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    exprs = panel_exprs(dashboard["panels"])
    used = {name for expr in exprs for name in re.findall(r"\brunlytics_[a-z_]+", expr)}
    assert used <= set(DOCUMENTED), used - set(DOCUMENTED)
    # every series of the issue has a panel
    assert used >= set(DOCUMENTED) - {"runlytics_snapshot_timestamp_seconds"}, set(DOCUMENTED) - used


def test_the_last_ingest_points_of_a_tool_log(tmp_path: Path, client: Any) -> None:
    """A LLaMA-Factory log (the real Mistral one) read alone: its 3466 values (866 steps, a value per
    metric per line, counted with json here; its throughput and total_tokens, 0 on every line, are
    tokens not counted: no points) are the run's points, not step rows (audit G8)."""
    source = REPO.parent / "shared" / "realdata" / "tool_logs" / "llamafactory-mistral-trainer_log.jsonl"
    lines = [json.loads(t) for t in source.read_text().splitlines()]
    skip = {"current_steps", "total_steps", "elapsed_time", "remaining_time", "throughput", "total_tokens"}
    assert sum(len(set(d) - skip) for d in lines) == 3466
    lab = Lab(tmp_path)  # DuckDB: the heartbeat file is the stage's
    (lab.root / "mistral").mkdir()
    (lab.root / "mistral" / "trainer_log.jsonl").write_bytes(source.read_bytes())
    summary = lab.ingest()
    families = scrape(client(lab.warehouse()))
    assert (one(families, "runlytics_last_ingest_points"), one(families, "runlytics_last_ingest_rows")) == (3466, 0)
    assert (summary.points, summary.rows) == (3466, 0)
