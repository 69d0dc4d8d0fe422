"""The fleet's insights in keyset pages when two GPUs of one job share host and index (audit
finding G6, revision 0037): containers and Slurm cgroups number their GPUs from 0, so two GPUs of
one job on one host can both be index 0, told apart by UUID only. Two idle ones give two
gpu_idle insights equal in every field of the answer; the pages must still hold each once.

Jobs ``j0`` … ``j4`` (completed, one after the other), each with spool samples of GPUs GPU-aaaa and
GPU-bbbb, both index 0 on host n1, every sample at 1 % utilization (idle share 1.0 > 0.5, by
hand: each GPU's 5 samples 1 s apart stand for 4 s, all below 10 %): two gpu_idle insights per
job, ten in all. Job ``mixed`` adds GPU-cccc (index 0, idle 3 of its 4 s: share 0.75) and
GPU-dddd (index 1, idle 4 s of 4: 1.0) on n1, and GPU-aaaa on host n2 (1.0).

On both engines: ``ingest --db`` publishes to PostgreSQL, whose API answers the pages.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DEEP_ONLY, Engine, Lab
from fastapi.testclient import TestClient
from migration_steps import alembic

from runlytics.api.app import TOKEN_ENV, create_app

FLEET_API = "/api/training/insights"
START = "2025-01-{day:02d}T00:00:00Z"
SAMPLES_AT = 1_735_689_600.0  # 2025-01-01T00:00:00Z
TWINS = [f"j{i}" for i in range(5)]


def _sample(job_id: str, host: str, index: int, uuid: str, second: int, utilization: float) -> dict[str, Any]:
    return {
        "ts": SAMPLES_AT + second, "job_id": job_id, "host": host, "gpu_index": index, "gpu_uuid": uuid,
        "utilization_percent": utilization, "memory_used_mb": 10.0,
    }  # fmt: skip


def _build(tmp: Path, engine: Engine) -> Lab:
    lab = Lab(tmp, engine)
    samples = []
    for day, job_id in enumerate([*TWINS, "mixed"], start=1):
        history = [{"step": s, "loss": 1.0} for s in (1, 2)]
        lab.write_job(job_id, {"job_id": job_id, "status": "completed", "started_at": START.format(day=day),
                               "history": history})  # fmt: skip
        gpus = [("n1", 0, "GPU-aaaa", [1.0] * 5), ("n1", 0, "GPU-bbbb", [1.0] * 5)]
        if job_id == "mixed":
            gpus = [
                ("n1", 0, "GPU-bbbb", [1.0] * 5),
                ("n1", 0, "GPU-cccc", [1.0, 1.0, 90.0, 1.0, 1.0]),
                ("n1", 1, "GPU-dddd", [1.0] * 5),
                ("n2", 0, "GPU-aaaa", [1.0] * 5),
            ]
        for host, index, uuid, utilizations in gpus:
            samples += [_sample(job_id, host, index, uuid, k, u) for k, u in enumerate(utilizations)]
    spool = tmp / "spool"
    spool.mkdir()
    (spool / "node-01-2025010100.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert lab.ingest(spool_root=spool).failed == 0
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> Lab:
    return _build(tmp_path_factory.mktemp("pages"), module_ingest_engine)


@pytest.fixture(scope="module")
def client(lab: Lab) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        yield TestClient(create_app(lab.warehouse()))


def _ok(client: TestClient, url: str, **params: Any) -> Any:
    response = client.get(url, params=params or None)
    assert response.status_code == 200, response.text
    return response.json()


def _walk(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    page = _ok(client, FLEET_API, **params)
    items = list(page["insights"])
    while page["next_cursor"] is not None:
        assert len(items) < 1000, "pages that never end"
        page = _ok(client, FLEET_API, **params, cursor=page["next_cursor"])
        items += page["insights"]
    return items


def _seen(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(i["job_id"], i["kind"], i["host"], i["gpu_index"], i["value"]) for i in items]


# by hand, in the fleet's order: jobs newest first (mixed started last), a job's GPU insights by
# host, index, then GPU key (its UUID): the answer has no UUID, so twins look alike
BY_HAND = [
    ("mixed", "gpu_idle", "n1", 0, 1.0),  # GPU-bbbb
    ("mixed", "gpu_idle", "n1", 0, 0.75),  # GPU-cccc: 1 s of its 4 at 90 %
    ("mixed", "gpu_idle", "n1", 1, 1.0),  # GPU-dddd
    ("mixed", "gpu_idle", "n2", 0, 1.0),  # GPU-aaaa on the other host
    *[(job_id, "gpu_idle", "n1", 0, 1.0) for job_id in reversed(TWINS) for _ in range(2)],
]


def test_one_page_holds_every_gpus_insight(client: TestClient) -> None:
    assert _seen(_ok(client, FLEET_API, limit=100)["insights"]) == BY_HAND


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_pages_of_gpus_that_share_host_and_index_hold_each_insight_once(client: TestClient, limit: int) -> None:
    # before revision 0037 the cursor of a page ending on the first of two twins skipped the second
    # (pages of 1: 9 rows of 14)
    walked = _walk(client, limit=limit)
    assert len(walked) == len(BY_HAND)
    assert _seen(walked) == BY_HAND


def test_filtered_pages_too(client: TestClient) -> None:
    assert _seen(_walk(client, kind="gpu_idle", limit=1)) == BY_HAND
    assert _seen(_walk(client, severity="warning", status="completed", limit=2)) == BY_HAND


def test_a_jobs_insights_follow_the_gpu_key(client: TestClient) -> None:
    answer = _ok(client, "/api/training/mixed/insights")["insights"]
    assert _seen(answer) == BY_HAND[:4]


def test_insight_results_carry_each_gpus_key(lab: Lab) -> None:
    rows = lab.query("SELECT job_id, gpu_key, count(*) FROM insight_results GROUP BY job_id, gpu_key")
    expected = {(job_id, uuid, 1) for job_id in TWINS for uuid in ("GPU-aaaa", "GPU-bbbb")}
    expected |= {("mixed", uuid, 1) for uuid in ("GPU-aaaa", "GPU-bbbb", "GPU-cccc", "GPU-dddd")}
    assert set(rows) == expected
    # the materialised rows are the view's, column for column
    stored = lab.query("SELECT job_id, kind, host, gpu_index, gpu_key, value FROM insight_results")
    view = lab.query("SELECT job_id, kind, host, gpu_index, gpu_key, value FROM job_insights")
    assert Counter(stored) == Counter(view)


def test_step_readings_key_their_gpu_by_index(tmp_path: Path, ingest_engine: Engine) -> None:
    lab = Lab(tmp_path, ingest_engine)
    gpus = [{"index": 0, "utilization_percent": 5.0}, {"index": 1, "utilization_percent": 90.0}]
    history = [{"step": s, "loss": 1.0, "gpus": gpus} for s in (1, 2, 3)]
    lab.write_job("logged", {"job_id": "logged", "status": "completed", "history": history})
    assert lab.ingest().failed == 0
    assert lab.query("SELECT kind, host, gpu_index, gpu_key FROM insight_results") == [("gpu_idle", None, 0, "#0")]


@DEEP_ONLY  # every revision's down and up, without data, in every run: test_migrations.py
def test_revision_0037_down_and_up(tmp_path: Path, ingest_engine: Engine) -> None:
    lab = _build(tmp_path, ingest_engine)  # its own: the revisions change its warehouse
    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = 'insight_results'"
    keys = "SELECT job_id, gpu_key FROM insight_results"
    before = sorted(lab.query(keys))
    assert len(before) == 14
    alembic(lab.warehouse(), "downgrade", "0036")
    assert "gpu_key" not in {c for (c,) in lab.query(columns)}
    assert sorted(lab.query("SELECT job_id FROM insight_results")) == sorted((j,) for j, _ in before)
    alembic(lab.warehouse(), "upgrade", "0037")
    assert [c for (c,) in lab.query(columns + " ORDER BY ordinal_position")][8:11] == ["gpu_index", "gpu_key", "value"]
    assert sorted(lab.query(keys)) == before
    if lab.engine.ingests:  # revision 0022's index, made again with the table
        indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'insight_results'"
        assert lab.query(indexes) == [("insight_results_job_id",)]
