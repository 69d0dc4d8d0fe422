"""PostgreSQL against DuckDB: the summary over a huge figure, the per-GPU breakdown's order on ties,
and a new (or lost) stage's first publish after `db copy`, which merges the files into the history
PostgreSQL holds instead of replacing it (ingest/postgres.py, ``seed``; docs/postgresql.md)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from conftest import Engine, Lab
from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from runlytics.ingest import postgres as pg_ingest
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, pg_copy
from runlytics.warehouse.postgres import SESSION_OPTIONS

T0 = 1793491200  # 2026-11-01T00:00:00Z


def _job(job_id: str, memory_mb: float) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "completed",
        "config": {"model_name": "m"},
        "history": [
            {
                "step": 1,
                "timestamp": "2026-11-01T00:00:00Z",
                "loss": 1.0,
                "gpus": [{"index": 0, "utilization_percent": 50, "memory_used_mb": memory_mb, "temperature_c": 50}],
            },
            {"step": 2, "timestamp": "2026-11-01T00:00:10Z", "loss": 0.9},
        ],
    }


def test_summary_answers_where_a_mean_of_huge_figures_overflows(tmp_path: Path, ingest_engine: Engine) -> None:
    # PostgreSQL's avg(float8) raised (its sum of squares overflows past 1e154): the summary answered 500
    lab = Lab(tmp_path, ingest_engine)
    lab.write_job("a", _job("a", 1e308))
    lab.write_job("b", _job("b", 1.0))
    lab.ingest()
    client = TestClient(create_app(lab.warehouse()))
    answer = client.get("/api/training/analytics/summary")
    assert answer.status_code == 200
    assert answer.json()["total_jobs"] == 2
    assert answer.json()["resource_trends"]["average_peak_memory_mb"] == 5e307
    # a third huge job: the sum is past the largest double, the mean infinite (null in JSON), no error
    lab.write_job("c", _job("c", 1e308))
    lab.ingest()
    answer = client.get("/api/training/analytics/summary")
    assert answer.status_code == 200
    assert answer.json()["total_jobs"] == 3
    assert answer.json()["resource_trends"]["average_peak_memory_mb"] is None


def test_gpus_of_one_index_come_in_uuid_order(tmp_path: Path, ingest_engine: Engine) -> None:
    # three GPUs of one host sampled under index 0 (containers number from 0), and one without a UUID
    lab = Lab(tmp_path, ingest_engine)
    lab.write_job("a", {**_job("a", 10.0), "history": _job("a", 10.0)["history"][:1]})
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = []
    for k in range(30):
        for uuid in ("GPU-bbbb", None, "GPU-aaaa", "GPU-cccc"):
            sample = {"ts": T0 + k, "host": "n", "job_id": "a", "gpu_index": 0, "utilization_percent": 50}
            if uuid:
                sample["gpu_uuid"] = uuid
            lines.append(json.dumps(sample))
    (spool / "s.jsonl").write_text("\n".join(lines) + "\n")
    lab.ingest(spool_root=spool)
    answer = TestClient(create_app(lab.warehouse())).get("/api/training/a/analytics").json()
    assert [(g["host"], g["gpu_index"], g["gpu_uuid"]) for g in answer["gpus"]] == [
        ("n", 0, "GPU-aaaa"),
        ("n", 0, "GPU-bbbb"),
        ("n", 0, "GPU-cccc"),
        ("n", 0, None),
    ]


# --- a new or lost stage after db copy -------------------------------------------------------


def _legacy(step: int, loss: float, status: str = "running") -> dict[str, Any]:
    """A legacy snapshot: no history, the latest step at the top (inputs.md §1)."""
    return {
        "job_id": "legacy",
        "status": status,
        "step": step,
        "loss": loss,
        "updated_at": f"2026-11-01T00:0{step}:00Z",
        "config": {"model_name": "m"},
    }


def _window(steps: list[int], updated: str = "2026-11-01T01:00:00Z", status: str = "running") -> dict[str, Any]:
    """A progress.json whose history is a window of the latest steps."""
    return {
        "job_id": "window",
        "status": status,
        "updated_at": updated,
        "config": {"model_name": "m"},
        "history": [{"step": s, "timestamp": f"2026-11-01T00:00:{s:02d}Z", "loss": 1.0 / s} for s in steps],
    }


def _write(root: Path, folder: str, doc: dict[str, Any]) -> None:
    path = root / folder / "progress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _pg(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, options=SESSION_OPTIONS) as con:
        return con.execute(sql).fetchall()


def _duck(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


STEPS = "SELECT job_id, step, loss FROM steps ORDER BY 1, 2"
JOB_ROWS = "SELECT job_id, status, updated_at FROM jobs ORDER BY 1"


def test_ingest_after_db_copy_merges_into_the_copied_history(tmp_path: Path, pg_url: str) -> None:
    root = tmp_path / "jobs"
    warehouse = tmp_path / "w.duckdb"
    _write(root, "legacy", _legacy(1, 2.0))
    _write(root, "window", _window([1, 2, 3], updated="2026-11-01T02:00:00Z", status="completed"))
    ingest(warehouse, [root], wait=10)
    pg_copy.copy(warehouse, db.PostgresUrl(pg_url), wait=10)
    # run 2: the next legacy snapshot; the window moved on, its snapshot older than the copied one
    _write(root, "legacy", _legacy(2, 1.5))
    _write(root, "window", _window([3, 4, 5], updated="2026-11-01T01:00:00Z"))
    ingest(warehouse, [root], wait=10)
    stage = tmp_path / "stage.duckdb"
    pg_ingest.ingest(db.PostgresUrl(pg_url), [root], stage=stage, ingester="h", wait=10)
    want = [("legacy", 1, 2.0), ("legacy", 2, 1.5), *[("window", s, 1.0 / s) for s in range(1, 6)]]
    assert _duck(warehouse, STEPS) == want
    assert _pg(pg_url, STEPS) == want  # was legacy 2 and window 3..5: the files' rows alone
    # the copied job row is newer than run 2's window snapshot: it stays (the merge rule), as on DuckDB
    assert _pg(pg_url, JOB_ROWS) == _duck(warehouse, JOB_ROWS)
    assert [row[1] for row in _pg(pg_url, JOB_ROWS)] == ["running", "completed"]
    # the derived figures follow the merged history, and both jobs are now this ingester's
    assert _pg(pg_url, "SELECT job_id, total_iterations FROM job_results ORDER BY 1") == _duck(
        warehouse, "SELECT job_id, total_iterations FROM job_results ORDER BY 1"
    )
    assert _pg(pg_url, "SELECT job_id, ingester FROM job_owners ORDER BY 1") == [("legacy", "h"), ("window", "h")]
    # the stage holds the merged history (a later publish replaces the job by it), its marks are gone
    assert _duck(stage, STEPS) == want
    assert _duck(stage, "SELECT name FROM publish_marks WHERE starts_with(name, 'seed') ORDER BY 1") == [("seeded",)]
    # run 3 on both: the next snapshot; the stage publishes whole from its merged rows
    _write(root, "legacy", _legacy(3, 1.2))
    ingest(warehouse, [root], wait=10)
    pg_ingest.ingest(db.PostgresUrl(pg_url), [root], stage=stage, ingester="h", wait=10)
    assert _pg(pg_url, STEPS) == _duck(warehouse, STEPS)
    assert [row[:2] for row in _pg(pg_url, STEPS) if row[0] == "legacy"] == [("legacy", s) for s in (1, 2, 3)]


def test_a_lost_stage_rebuilt_from_the_files_keeps_the_published_history(tmp_path: Path, pg_url: str) -> None:
    root = tmp_path / "jobs"
    stage = tmp_path / "stage.duckdb"
    url = db.PostgresUrl(pg_url)
    _write(root, "legacy", _legacy(1, 2.0))
    _write(root, "window", _window([1, 2, 3]))
    pg_ingest.ingest(url, [root], stage=stage, ingester="h", wait=10)
    _write(root, "legacy", _legacy(2, 1.5))
    _write(root, "window", _window([3, 4, 5]))
    pg_ingest.ingest(url, [root], stage=stage, ingester="h", wait=10)
    before = _pg(pg_url, STEPS)
    assert [row[:2] for row in before] == [("legacy", 1), ("legacy", 2), *[("window", s) for s in range(1, 6)]]
    # the stage is lost; the next run rebuilds it from the files (same ingester name)
    for path in tmp_path.iterdir():
        if path.name.startswith("stage.duckdb"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    _, published = pg_ingest.ingest(url, [root], stage=stage, ingester="h", wait=10)
    assert published.jobs == 2
    assert _pg(pg_url, STEPS) == before  # was legacy 2 and window 3..5 alone
    assert _pg(pg_url, "SELECT job_id, ingester FROM job_owners ORDER BY 1") == [("legacy", "h"), ("window", "h")]


def test_a_new_stage_takes_only_the_jobs_its_files_name(tmp_path: Path, pg_url: str) -> None:
    # the copied warehouse held two hosts' jobs; this host's new stage has one of them (and GPU
    # samples of the other): the other stays on PostgreSQL as copied, unowned, and not in the stage
    root = tmp_path / "jobs"
    other = tmp_path / "other"
    warehouse = tmp_path / "w.duckdb"
    _write(root, "window", _window([1, 2, 3]))
    _write(other, "theirs", {**_window([1, 2]), "job_id": "theirs"})
    ingest(warehouse, [root, other], wait=10)
    pg_copy.copy(warehouse, db.PostgresUrl(pg_url), wait=10)
    _write(root, "window", _window([3, 4]))
    spool = tmp_path / "spool"
    spool.mkdir()
    sample = {"ts": T0, "host": "n", "job_id": "theirs", "gpu_index": 0, "utilization_percent": 50}
    (spool / "s.jsonl").write_text(json.dumps(sample) + "\n")
    stage = tmp_path / "stage.duckdb"
    _, published = pg_ingest.ingest(db.PostgresUrl(pg_url), [root], stage=stage, ingester="h", spools=[spool], wait=10)
    assert published.jobs == 1 and not published.conflicts
    assert _pg(pg_url, "SELECT job_id, step FROM steps ORDER BY 1, 2") == [
        ("theirs", 1),
        ("theirs", 2),
        *[("window", s) for s in (1, 2, 3, 4)],
    ]
    assert _pg(pg_url, "SELECT job_id, ingester FROM job_owners ORDER BY 1") == [("window", "h")]
    assert _duck(stage, "SELECT DISTINCT job_id FROM steps ORDER BY 1") == [("window",)]
    assert _duck(stage, "SELECT job_id FROM jobs ORDER BY 1") == [("window",)]
    # another host's new stage, whose files hold "theirs", takes it and publishes it merged
    _write(other, "theirs", {**_window([2, 3]), "job_id": "theirs"})
    _, published = pg_ingest.ingest(
        db.PostgresUrl(pg_url), [other], stage=tmp_path / "stage2.duckdb", ingester="h2", wait=10
    )
    assert published.jobs == 1 and not published.conflicts
    assert [s for j, s in _pg(pg_url, "SELECT job_id, step FROM steps ORDER BY 1, 2") if j == "theirs"] == [1, 2, 3]
    assert _pg(pg_url, "SELECT job_id, ingester FROM job_owners ORDER BY 1") == [("theirs", "h2"), ("window", "h")]


def test_a_new_stage_that_cannot_reach_postgresql_ingests_nothing(tmp_path: Path, pg_url: str) -> None:
    # without PostgreSQL's rows the first publish would replace the copied history: the run stops
    # before the stage ingests, and the next run (PostgreSQL back) takes them first; since session
    # 18 it stops before making the stage at all (nor its folder, nor its lock files)
    root = tmp_path / "jobs"
    _write(root, "window", _window([1, 2]))
    stage = tmp_path / "stages" / "stage.duckdb"
    unreachable = db.PostgresUrl("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(db.WarehouseError, match="cannot connect"):
        pg_ingest.ingest(unreachable, [root], stage=stage, ingester="h", wait=10)
    assert not stage.parent.exists()


def test_a_job_file_caught_mid_write_keeps_its_taken_history(tmp_path: Path, pg_url: str) -> None:
    # the new stage's first run finds the job's progress.json cut short (pending: no job id yet); the
    # job taken from PostgreSQL stays in the stage (its folder holds the file), and the next run merges
    root = tmp_path / "jobs"
    warehouse = tmp_path / "w.duckdb"
    _write(root, "window", _window([1, 2, 3]))
    ingest(warehouse, [root], wait=10)
    pg_copy.copy(warehouse, db.PostgresUrl(pg_url), wait=10)
    (root / "window" / "progress.json").write_text('{"job_id": "window", "history": [{"step": 3')
    stage = tmp_path / "stage.duckdb"
    summary, published = pg_ingest.ingest(db.PostgresUrl(pg_url), [root], stage=stage, ingester="h", wait=10)
    assert summary.pending == 1 and published.jobs == 0
    assert [s for _, s in _duck(stage, "SELECT job_id, step FROM steps ORDER BY 1, 2")] == [1, 2, 3]
    _write(root, "window", _window([3, 4, 5]))
    pg_ingest.ingest(db.PostgresUrl(pg_url), [root], stage=stage, ingester="h", wait=10)
    assert [s for _, s in _pg(pg_url, "SELECT job_id, step FROM steps ORDER BY 1, 2")] == [1, 2, 3, 4, 5]


def test_a_job_whose_folder_is_not_on_this_host_is_not_taken(tmp_path: Path, pg_url: str) -> None:
    # the copied warehouse read /old/jobs; this host's root is elsewhere: its folder could not claim
    # a job taken with the old folder (the first folder owns an id), so the job is not taken and
    # the stage publishes its files' rows, as before
    root = tmp_path / "jobs"
    warehouse = tmp_path / "w.duckdb"
    _write(root, "window", _window([1, 2, 3]))
    ingest(warehouse, [root], wait=10)
    pg_copy.copy(warehouse, db.PostgresUrl(pg_url), wait=10)
    moved = tmp_path / "moved"
    root.rename(moved)
    stage = tmp_path / "stage.duckdb"
    summary, published = pg_ingest.ingest(db.PostgresUrl(pg_url), [moved], stage=stage, ingester="h", wait=10)
    assert (summary.failed, published.jobs) == (0, 1)
    assert _pg(pg_url, "SELECT job_id, source_dir FROM jobs") == [("window", str(moved / "window"))]


@pytest.mark.parametrize("lost_after_the_check", [False, True])
def test_a_lost_stage_whose_first_run_stopped_is_still_seeded(
    tmp_path: Path, pg_url: str, lost_after_the_check: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the stage file is lost, its side files stay; its first run meets PostgreSQL down and stops
    # (before making a new stage file, since session 18; a server lost between that check and the
    # seed leaves an empty one): the next run must still take PostgreSQL's rows first
    root = tmp_path / "jobs"
    stage = tmp_path / "stage.duckdb"
    url = db.PostgresUrl(pg_url)
    _write(root, "window", _window([1, 2, 3]))
    pg_ingest.ingest(url, [root], stage=stage, ingester="h", wait=10)
    _write(root, "window", _window([3, 4, 5]))
    pg_ingest.ingest(url, [root], stage=stage, ingester="h", wait=10)
    before = _pg(pg_url, STEPS)
    assert [row[:2] for row in before] == [("window", s) for s in range(1, 6)]
    stage.unlink()
    assert any(p.name.startswith("stage.duckdb.") for p in tmp_path.iterdir())  # its side files stay
    down = db.PostgresUrl("postgresql://nobody@127.0.0.1:1/none")
    if lost_after_the_check:  # the check before a new stage is made finds it up; the seed, down
        real, calls = pg_ingest._pg, []

        @contextmanager
        def lost_after_one(target: db.PostgresUrl) -> Iterator[Any]:
            calls.append(target)
            if len(calls) == 1:
                yield None
                return
            with real(target) as conn:
                yield conn

        monkeypatch.setattr(pg_ingest, "_pg", lost_after_one)
    with pytest.raises(db.WarehouseError, match="cannot connect"):
        pg_ingest.ingest(down, [root], stage=stage, ingester="h", wait=10)
    monkeypatch.undo()
    # made before PostgreSQL was found down (beside the old heartbeat), or not made at all
    assert stage.exists() == lost_after_the_check
    pg_ingest.ingest(url, [root], stage=stage, ingester="h", wait=10)
    assert _pg(pg_url, STEPS) == before  # was window 3..5 alone: the seed was skipped
