"""Every input form of progress.json (spec/inputs.md section 1), ingested into a real warehouse:
on both engines (``ingest_engine``; on PostgreSQL through ``ingest --db URL``, the rows read are
the published ones)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DUCKDB_ONLY_INGEST, REPO, Engine, Lab

from runlytics.warehouse import migrate

T0 = datetime(2026, 3, 1, 12, 0, 0)  # naive: the warehouse stores UTC without a zone


def iso(hour: int, minute: int = 0) -> str:
    return datetime(2026, 3, 1, hour, minute).isoformat()


STEP_COLS = ["ts", "loss", "eval_loss", "learning_rate", "samples_per_second", "iteration_time", "samples"]
GPU_COLS = ["gpu_uuid", "utilization_percent", "memory_used_mb", "memory_total_mb", "temperature_c", "power_w"]
JOB_COLS = [
    "status",
    "created_at",
    "started_at",
    "ended_at",
    "updated_at",
    "config",
    "model_name",
    "batch_size",
    "save_steps",
    "target_samples_per_second",
    "gpu_count",
    "current_step",
    "total_steps",
    "source_dir",
]
LEDGER_COLS = ["outcome", "job_id", "rows", "warning_count", "warnings", "error"]


@dataclass
class Tables:
    """The warehouse's rows, read in one connection, keyed for lookups."""

    jobs: dict[str, dict[str, Any]]  # job_id -> row
    steps: dict[str, dict[int, dict[str, Any]]]  # job_id -> step -> row
    gpus: dict[str, dict[tuple[int, int], dict[str, Any]]]  # job_id -> (step, gpu_index) -> row
    checkpoints: dict[str, dict[int, tuple[Any, ...]]]  # job_id -> step -> (path, saved_at, eval_loss, source)
    ledger: dict[str, dict[str, Any]]  # job folder name -> ingest_files row (warnings decoded)


def tables(lab: Lab) -> Tables:
    """Read on the lab's engine (portable SQL)."""
    rows = lab.query
    t = Tables({}, {}, {}, {}, {})
    for r in rows(f"SELECT job_id, {', '.join(JOB_COLS)} FROM jobs"):
        assert r[0] not in t.jobs
        t.jobs[r[0]] = dict(zip(JOB_COLS, r[1:], strict=True))
    for r in rows(f"SELECT job_id, step, {', '.join(STEP_COLS)} FROM steps"):
        assert r[1] not in t.steps.get(r[0], {}), f"step {r[:2]} stored twice"
        t.steps.setdefault(r[0], {})[r[1]] = dict(zip(STEP_COLS, r[2:], strict=True))
    for r in rows(f"SELECT job_id, step, gpu_index, {', '.join(GPU_COLS)} FROM step_gpus"):
        assert (r[1], r[2]) not in t.gpus.get(r[0], {}), f"GPU reading {r[:3]} stored twice"
        t.gpus.setdefault(r[0], {})[(r[1], r[2])] = dict(zip(GPU_COLS, r[3:], strict=True))
    for r in rows("SELECT job_id, step, path, saved_at, eval_loss, source FROM checkpoints"):
        t.checkpoints.setdefault(r[0], {})[r[1]] = r[2:]
    for r in rows(f"SELECT path, {', '.join(LEDGER_COLS)} FROM ingest_files WHERE kind = 'progress'"):
        row = dict(zip(LEDGER_COLS, r[1:], strict=True))
        row["warnings"] = json.loads(row["warnings"]) if row["warnings"] else []
        assert Path(r[0]).name == "progress.json"
        t.ledger[Path(r[0]).parent.name] = row
    return t


def step_rows(lab: Lab, job_id: str) -> dict[int, dict[str, Any]]:
    """The job's steps as {step: {column: value}}."""
    return tables(lab).steps.get(job_id, {})


def gpu_rows(lab: Lab, job_id: str) -> dict[tuple[int, int], dict[str, Any]]:
    """The job's GPU readings as {(step, gpu_index): {column: value}}."""
    return tables(lab).gpus.get(job_id, {})


def job_row(lab: Lab, job_id: str) -> dict[str, Any]:
    jobs = tables(lab).jobs
    assert job_id in jobs, f"no jobs row for {job_id!r}: {sorted(jobs)}"
    return jobs[job_id]


def checkpoint_rows(lab: Lab, job_id: str) -> dict[int, tuple[Any, ...]]:
    return tables(lab).checkpoints.get(job_id, {})


def ledger_row(lab: Lab, folder: str) -> dict[str, Any]:
    """The ingest_files row of <root>/<folder>/progress.json, with warnings decoded."""
    ledger = tables(lab).ledger
    assert folder in ledger, f"no ingest_files row for {folder}: {sorted(ledger)}"
    return ledger[folder]


@pytest.fixture(scope="module")
def blank_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse at the newest schema, built once: copying it spares each test the migrations."""
    path = tmp_path_factory.mktemp("blank") / "warehouse.duckdb"
    migrate.upgrade(path)
    assert not path.with_name(path.name + ".wal").exists()
    return path


@pytest.fixture
def lab(tmp_path: Path, blank_warehouse: Path, ingest_engine: Engine) -> Lab:
    lab = Lab(tmp_path, ingest_engine)
    shutil.copyfile(blank_warehouse, lab.db)
    return lab


def entry(step: int, **fields: Any) -> dict[str, Any]:
    return {"step": step, **fields}


def gpu(index: int, **fields: Any) -> dict[str, Any]:
    return {"index": index, **fields}


# --- the extended format ------------------------------------------------------------------------


def test_extended_history_is_stored_whole(lab: Lab) -> None:
    config = {
        "model_name": "llama-3-8b",
        "batch_size": 32,
        "max_steps": 1000,
        "save_steps": 100,
        "target_samples_per_second": 120.5,
        "gpu_count": 2,
        "extra": {"nested": [1, 2]},
    }
    lab.write_job(
        "run-1",
        {
            "job_id": "job-ext",
            "status": "running",
            "created_at": iso(10),
            "started_at": iso(11),
            "updated_at": iso(12, 30),
            "config": config,
            "current_step": 20,
            "total_steps": 1000,
            "history": [
                entry(
                    10,
                    timestamp=iso(12, 10),
                    loss=2.5,
                    learning_rate=2e-5,
                    samples_per_second=64.0,
                    iteration_time=0.5,
                    samples=320,
                    gpus=[
                        gpu(
                            0,
                            uuid="GPU-a",
                            utilization_percent=97.5,
                            memory_used_mb=17200.0,
                            memory_total_mb=81559.0,
                            temperature_c=68.0,
                            power_w=301.2,
                        ),
                        gpu(
                            1,
                            uuid="GPU-b",
                            utilization_percent=88.0,
                            memory_used_mb=17100.0,
                            memory_total_mb=81559.0,
                            temperature_c=66.0,
                            power_w=290.0,
                        ),
                    ],
                ),
                entry(20, timestamp=iso(12, 20), loss=2.25, eval_loss=2.4, samples=320),
            ],
            "checkpoints": [{"step": 10, "path": "ckpt/10", "saved_at": iso(12, 11), "eval_loss": 2.45}],
        },
    )
    summary = lab.ingest()

    assert (summary.files_seen, summary.ingested, summary.failed, summary.pending) == (1, 1, 0, 0)
    assert (summary.rows, summary.warnings) == (2, 0)
    job = job_row(lab, "job-ext")
    assert job["status"] == "running"
    assert (job["created_at"], job["started_at"], job["ended_at"], job["updated_at"]) == (
        datetime(2026, 3, 1, 10),
        datetime(2026, 3, 1, 11),
        None,
        datetime(2026, 3, 1, 12, 30),
    )
    assert json.loads(job["config"]) == config
    assert (job["model_name"], job["batch_size"], job["save_steps"]) == ("llama-3-8b", 32.0, 100)
    assert (job["target_samples_per_second"], job["gpu_count"]) == (120.5, 2)
    assert (job["current_step"], job["total_steps"]) == (20, 1000)
    assert job["source_dir"] == str((lab.root / "run-1").resolve())

    assert step_rows(lab, "job-ext") == {
        10: {
            "ts": datetime(2026, 3, 1, 12, 10),
            "loss": 2.5,
            "eval_loss": None,
            "learning_rate": 2e-5,
            "samples_per_second": 64.0,
            "iteration_time": 0.5,
            "samples": 320,
        },
        20: {
            "ts": datetime(2026, 3, 1, 12, 20),
            "loss": 2.25,
            "eval_loss": 2.4,
            "learning_rate": None,
            "samples_per_second": None,
            "iteration_time": None,
            "samples": 320,
        },
    }
    assert gpu_rows(lab, "job-ext") == {
        (10, 0): {
            "gpu_uuid": "GPU-a",
            "utilization_percent": 97.5,
            "memory_used_mb": 17200.0,
            "memory_total_mb": 81559.0,
            "temperature_c": 68.0,
            "power_w": 301.2,
        },
        (10, 1): {
            "gpu_uuid": "GPU-b",
            "utilization_percent": 88.0,
            "memory_used_mb": 17100.0,
            "memory_total_mb": 81559.0,
            "temperature_c": 66.0,
            "power_w": 290.0,
        },
    }
    assert checkpoint_rows(lab, "job-ext") == {10: ("ckpt/10", datetime(2026, 3, 1, 12, 11), 2.45, "list")}
    assert ledger_row(lab, "run-1") == {
        "outcome": "ingested",
        "job_id": "job-ext",
        "rows": 2,
        "warning_count": 0,
        "warnings": [],
        "error": None,
    }


def test_max_steps_is_an_alias_of_total_steps(lab: Lab) -> None:
    lab.write_job("a", {"job_id": "a", "status": "queued", "max_steps": 500, "history": []})
    lab.write_job("b", {"job_id": "b", "status": "queued", "config": {"max_steps": 700}, "history": []})
    lab.ingest()
    assert job_row(lab, "a")["total_steps"] == 500
    assert job_row(lab, "b")["total_steps"] == 700


def test_latest_only_takes_updated_at_and_accumulates_over_runs(lab: Lab) -> None:
    def snapshot(step: int, minute: int, loss: float) -> dict[str, Any]:
        return {
            "job_id": "lat",
            "status": "running",
            "updated_at": iso(12, minute),
            "latest": entry(step, loss=loss, gpus=[gpu(0, utilization_percent=90.0 + step)]),
        }

    lab.write_job("lat", snapshot(5, 1, 1.5))
    assert lab.ingest().rows == 1
    lab.write_job("lat", snapshot(6, 2, 1.25))
    assert lab.ingest().rows == 1

    assert step_rows(lab, "lat") == {
        5: {
            "ts": datetime(2026, 3, 1, 12, 1),
            "loss": 1.5,
            "eval_loss": None,
            "learning_rate": None,
            "samples_per_second": None,
            "iteration_time": None,
            "samples": None,
        },
        6: {
            "ts": datetime(2026, 3, 1, 12, 2),
            "loss": 1.25,
            "eval_loss": None,
            "learning_rate": None,
            "samples_per_second": None,
            "iteration_time": None,
            "samples": None,
        },
    }
    assert {k: v["utilization_percent"] for k, v in gpu_rows(lab, "lat").items()} == {(5, 0): 95.0, (6, 0): 96.0}
    assert job_row(lab, "lat")["updated_at"] == datetime(2026, 3, 1, 12, 2)


def test_latest_with_own_timestamp_keeps_it(lab: Lab) -> None:
    lab.write_job("j", {"updated_at": iso(13), "latest": entry(3, timestamp=iso(12, 59), loss=1.0)})
    lab.ingest()
    assert step_rows(lab, "j")[3]["ts"] == datetime(2026, 3, 1, 12, 59)


def test_history_and_latest_together(lab: Lab) -> None:
    lab.write_job("j", {"history": [entry(1, loss=3.0), entry(2, loss=2.0)], "latest": entry(3, loss=1.0)})
    assert lab.ingest().rows == 3
    assert {s: r["loss"] for s, r in step_rows(lab, "j").items()} == {1: 3.0, 2: 2.0, 3: 1.0}


# --- the legacy flat snapshot -------------------------------------------------------------------


def legacy(step: int, loss: float, util: float, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": "old-gpt2",
        "status": "running",
        "step": step,
        "loss": loss,
        "samples_per_second": 40.0 + step,
        "iteration_time": 0.25,
        "gpu_utilization": util,
        "gpu_memory_mb": 9000.0 + step,
        "gpu_temperature": 60.0,
        **extra,
    }


def test_legacy_snapshots_build_one_row_per_distinct_step(lab: Lab) -> None:
    for step, loss, util in [(10, 3.0, 80.0), (20, 2.5, 81.0), (20, 2.4, 82.0), (30, 2.0, 83.0)]:
        lab.write_job("legacy", legacy(step, loss, util))
        summary = lab.ingest()
        assert (summary.ingested, summary.rows, summary.warnings) == (1, 1, 0)

    steps = step_rows(lab, "old-gpt2")
    assert sorted(steps) == [10, 20, 30]
    # step 20 was seen twice without timestamps: the later ingest wins
    assert {s: r["loss"] for s, r in steps.items()} == {10: 3.0, 20: 2.4, 30: 2.0}
    assert steps[30] == {
        "ts": None,
        "loss": 2.0,
        "eval_loss": None,
        "learning_rate": None,
        "samples_per_second": 70.0,
        "iteration_time": 0.25,
        "samples": None,
    }
    # one GPU, index 0, per step
    assert gpu_rows(lab, "old-gpt2") == {
        (10, 0): {
            "gpu_uuid": None,
            "utilization_percent": 80.0,
            "memory_used_mb": 9010.0,
            "memory_total_mb": None,
            "temperature_c": 60.0,
            "power_w": None,
        },
        (20, 0): {
            "gpu_uuid": None,
            "utilization_percent": 82.0,
            "memory_used_mb": 9020.0,
            "memory_total_mb": None,
            "temperature_c": 60.0,
            "power_w": None,
        },
        (30, 0): {
            "gpu_uuid": None,
            "utilization_percent": 83.0,
            "memory_used_mb": 9030.0,
            "memory_total_mb": None,
            "temperature_c": 60.0,
            "power_w": None,
        },
    }


def test_legacy_snapshot_takes_updated_at_as_its_timestamp(lab: Lab) -> None:
    lab.write_job("legacy", legacy(7, 1.0, 50.0, updated_at=iso(9, 15)))
    lab.ingest()
    assert step_rows(lab, "old-gpt2")[7]["ts"] == datetime(2026, 3, 1, 9, 15)


def test_legacy_snapshot_without_gpu_fields_has_no_gpu_row(lab: Lab) -> None:
    lab.write_job("legacy", {"job_id": "nogpu", "step": 4, "loss": 1.0})
    lab.ingest()
    assert sorted(step_rows(lab, "nogpu")) == [4]
    assert gpu_rows(lab, "nogpu") == {}


# --- windows, repeats, resumes ------------------------------------------------------------------


def test_history_windows_accumulate_every_step(lab: Lab) -> None:
    windows = [range(1, 6), range(4, 9), range(7, 11)]  # the latest 5, overlapping
    for window in windows:
        lab.write_job("w", {"job_id": "w", "status": "running", "history": [entry(s, loss=100.0 - s) for s in window]})
        lab.ingest()
    steps = step_rows(lab, "w")
    assert sorted(steps) == list(range(1, 11))
    assert all(steps[s]["loss"] == 100.0 - s for s in steps)
    assert lab.query("SELECT count(*) FROM steps")[0][0] == 10


def test_repeated_step_within_a_file_keeps_the_later_timestamp(lab: Lab) -> None:
    # resumed from a checkpoint at step 4: steps 5 and 6 are logged again, later
    history = [
        entry(4, timestamp=iso(10, 4), loss=4.0),
        entry(5, timestamp=iso(10, 5), loss=5.0, gpus=[gpu(0, utilization_percent=50.0), gpu(1)]),
        entry(6, timestamp=iso(10, 6), loss=6.0),
        entry(5, timestamp=iso(11, 5), loss=5.5, gpus=[gpu(0, utilization_percent=55.0)]),
        entry(6, timestamp=iso(11, 6), loss=6.5),
        # out of order in the list: an older reading written last does not win
        entry(4, timestamp=iso(9, 4), loss=3.0),
    ]
    lab.write_job("r", {"job_id": "r", "status": "running", "history": history})
    summary = lab.ingest()
    assert summary.rows == 3  # step rows, one per step (six entries; session 18: rows counted entries)
    steps = step_rows(lab, "r")
    assert {s: (r["loss"], r["ts"]) for s, r in steps.items()} == {
        4: (4.0, datetime(2026, 3, 1, 10, 4)),
        5: (5.5, datetime(2026, 3, 1, 11, 5)),
        6: (6.5, datetime(2026, 3, 1, 11, 6)),
    }
    # the winner's GPU readings replace the loser's whole: GPU 1 of the first step 5 is gone
    assert {k: v["utilization_percent"] for k, v in gpu_rows(lab, "r").items()} == {(5, 0): 55.0}


def test_repeated_step_across_runs_keeps_the_later_timestamp(lab: Lab) -> None:
    def run(ts: str, loss: float, gpus: list[dict[str, Any]]) -> None:
        lab.write_job(
            "r",
            {
                "job_id": "r",
                "status": "running",
                "history": [entry(1, timestamp=iso(8), loss=9.0), entry(5, timestamp=ts, loss=loss, gpus=gpus)],
            },
        )
        lab.ingest()

    run(iso(10), 1.0, [gpu(0, utilization_percent=10.0), gpu(1, utilization_percent=11.0)])
    run(iso(9), 2.0, [gpu(0, utilization_percent=20.0)])  # older: ignored
    assert step_rows(lab, "r")[5]["loss"] == 1.0
    assert {k: v["utilization_percent"] for k, v in gpu_rows(lab, "r").items()} == {(5, 0): 10.0, (5, 1): 11.0}

    run(iso(11), 3.0, [gpu(0, utilization_percent=30.0)])  # newer: replaces, GPU 1 included
    assert {s: r["loss"] for s, r in step_rows(lab, "r").items()} == {1: 9.0, 5: 3.0}
    assert step_rows(lab, "r")[5]["ts"] == datetime(2026, 3, 1, 11)
    assert {k: v["utilization_percent"] for k, v in gpu_rows(lab, "r").items()} == {(5, 0): 30.0}


def test_repeated_step_without_timestamps_later_ingest_wins(lab: Lab) -> None:
    for loss in (1.0, 2.0, 1.0):
        lab.write_job(
            "u",
            {"job_id": "u", "status": "running", "history": [entry(5, loss=loss, gpus=[gpu(0, temperature_c=loss)])]},
        )
        lab.ingest()
        assert step_rows(lab, "u")[5]["loss"] == loss
        assert gpu_rows(lab, "u")[(5, 0)]["temperature_c"] == loss
    assert lab.query("SELECT count(*) FROM steps")[0][0] == 1


def test_repeated_step_without_timestamps_within_a_file_last_entry_wins(lab: Lab) -> None:
    lab.write_job(
        "u",
        {"job_id": "u", "status": "running", "history": [entry(5, loss=1.0), entry(6, loss=6.0), entry(5, loss=2.0)]},
    )
    lab.ingest()
    assert {s: r["loss"] for s, r in step_rows(lab, "u").items()} == {5: 2.0, 6: 6.0}


# --- timestamps ---------------------------------------------------------------------------------

NOON = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


TIMESTAMPS: list[tuple[str | float, datetime]] = [
    ("2026-03-01T12:00:00", T0),
    ("2026-03-01 12:00:00", T0),
    ("2026-03-01T12:00:00Z", T0),
    ("2026-03-01T12:00:00+00:00", T0),
    ("2026-03-01T14:30:00+02:30", T0),
    ("2026-03-01T07:00:00-05:00", T0),
    ("2026-03-02T01:00:00+13:00", T0),
    ("2026-03-01T12:00:00.250Z", datetime(2026, 3, 1, 12, 0, 0, 250000)),
    (NOON.timestamp(), T0),
    (int(NOON.timestamp()), T0),
    (NOON.timestamp() + 0.5, datetime(2026, 3, 1, 12, 0, 0, 500000)),
]


def test_timestamps_are_stored_as_utc(lab: Lab) -> None:
    for i, (written, _) in enumerate(TIMESTAMPS):  # one job per form, all in one run
        lab.write_job(
            f"t{i}",
            {
                "job_id": f"t{i}",
                "status": "running",
                "created_at": written,
                "started_at": written,
                "ended_at": written,
                "updated_at": written,
                "history": [entry(1, timestamp=written)],
                "latest": entry(2),  # takes updated_at
                "checkpoints": [{"step": 1, "saved_at": written}],
            },
        )
    summary = lab.ingest()
    assert (summary.ingested, summary.warnings) == (len(TIMESTAMPS), 0)
    t = tables(lab)
    for i, (written, stored) in enumerate(TIMESTAMPS):
        job = t.jobs[f"t{i}"]
        got = (job["created_at"], job["started_at"], job["ended_at"], job["updated_at"])
        assert got == (stored,) * 4, written
        assert {s: r["ts"] for s, r in t.steps[f"t{i}"].items()} == {1: stored, 2: stored}, written
        assert t.checkpoints[f"t{i}"][1][1] == stored, written


# Ingest in a process of its own, started in New York's zone: DuckDB takes the host's zone when
# it loads, so a zone set inside this process (TZ and time.tzset()) would come too late.
INGEST_IN_NEW_YORK = """
import sys, time
from pathlib import Path
from runlytics.ingest.pipeline import ingest
print(time.strftime("%z", time.localtime(1772366400)))  # the host zone's offset on 2026-03-01
ingest(Path(sys.argv[1]), [Path(sys.argv[2])])
"""


@DUCKDB_ONLY_INGEST  # a DuckDB ingest in a subprocess (PostgreSQL's sessions are UTC: warehouse/postgres.py)
def test_timestamps_are_utc_whatever_the_host_zone(lab: Lab) -> None:
    lab.write_job(
        "t",
        {
            "job_id": "t",
            "status": "completed",
            "started_at": "2026-03-01T13:00:00+01:00",  # 12:00 UTC
            "ended_at": "2026-03-01T07:02:00-05:00",  # 12:02 UTC
            "history": [
                entry(1, timestamp="2026-03-01T07:00:30-05:00"),  # 12:00:30 UTC, written in New York
                entry(2, timestamp="2026-03-01T12:01:00"),  # no offset: UTC, not the host's zone
                entry(3, timestamp="2026-03-01T12:01:30Z"),
                entry(4, timestamp=NOON.timestamp() + 120),  # epoch seconds: 12:02 UTC
            ],
        },
    )
    done = subprocess.run(
        [sys.executable, "-c", INGEST_IN_NEW_YORK, str(lab.db), str(lab.root)],
        cwd=REPO, env={**os.environ, "TZ": "America/New_York"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "-0500"  # the ingest did run in a zone that is not UTC
    seconds = {s: (r["ts"] - T0).total_seconds() for s, r in step_rows(lab, "t").items()}
    assert seconds == {1: 30.0, 2: 60.0, 3: 90.0, 4: 120.0}
    job = job_row(lab, "t")
    assert (job["started_at"], job["ended_at"]) == (T0, datetime(2026, 3, 1, 12, 2))


def test_unreadable_timestamp_is_dropped_with_a_warning(lab: Lab) -> None:
    cases: list[Any] = ["yesterday", "2026-13-45T99:00:00", True, [2026, 3, 1], {"t": 1}, None]
    for i, written in enumerate(cases):
        lab.write_job(
            f"t{i}", {"job_id": f"t{i}", "status": "running", "history": [entry(1, timestamp=written, loss=0.5)]}
        )
    summary = lab.ingest()
    assert (summary.ingested, summary.rows, summary.warnings) == (6, 6, 6)
    t = tables(lab)
    for i, written in enumerate(cases):
        assert t.steps[f"t{i}"][1]["ts"] is None, written
        assert t.steps[f"t{i}"][1]["loss"] == 0.5, written
        (warning,) = t.ledger[f"t{i}"]["warnings"]
        assert warning.startswith("history[0] (step 1): timestamp "), warning
        # a null is dropped with a warning as a null number is (audit 18, inputs 5)
        assert warning.endswith("is null, dropped" if written is None else "is not a timestamp, dropped"), warning


# --- NaN and Infinity ---------------------------------------------------------------------------


def test_non_finite_numbers_are_accepted_and_stored(lab: Lab) -> None:
    raw = """{"job_id": "nf", "status": "running", "history": [
        {"step": 1, "loss": NaN, "eval_loss": Infinity, "learning_rate": -Infinity,
         "samples_per_second": Infinity, "iteration_time": NaN,
         "gpus": [{"index": 0, "utilization_percent": NaN, "memory_used_mb": Infinity, "temperature_c": -Infinity,
                   "power_w": NaN}]},
        {"step": 2, "loss": 1.5}
    ]}"""
    lab.write_job("nf", None, raw=raw)
    summary = lab.ingest()
    assert (summary.ingested, summary.rows, summary.warnings) == (1, 2, 0)
    s1 = step_rows(lab, "nf")[1]
    assert math.isnan(s1["loss"])
    assert s1["eval_loss"] == math.inf
    assert s1["learning_rate"] == -math.inf
    assert s1["samples_per_second"] == math.inf
    assert math.isnan(s1["iteration_time"])
    g = gpu_rows(lab, "nf")[(1, 0)]
    assert math.isnan(g["utilization_percent"])
    assert g["memory_used_mb"] == math.inf
    assert g["temperature_c"] == -math.inf
    assert math.isnan(g["power_w"])
    assert step_rows(lab, "nf")[2]["loss"] == 1.5


def test_non_finite_numbers_in_the_legacy_form(lab: Lab) -> None:
    lab.write_job(
        "nf", None, raw='{"job_id": "nf", "status": "paused", "step": 3, "loss": NaN, "gpu_temperature": Infinity}'
    )
    assert lab.ingest().warnings == 0
    assert math.isnan(step_rows(lab, "nf")[3]["loss"])
    assert gpu_rows(lab, "nf")[(3, 0)]["temperature_c"] == math.inf


# --- values that are dropped with a warning -----------------------------------------------------

GOOD_ENTRY: dict[str, Any] = {
    "step": 3,
    "timestamp": "2026-03-01T12:00:00Z",
    "loss": 0.5,
    "eval_loss": 0.6,
    "learning_rate": 1e-4,
    "samples_per_second": 10.0,
    "iteration_time": 0.1,
    "samples": 64,
}
GOOD_GPU: dict[str, Any] = {
    "index": 0,
    "utilization_percent": 50.0,
    "memory_used_mb": 1000.0,
    "memory_total_mb": 8000.0,
    "temperature_c": 40.0,
    "power_w": 100.0,
}


STEP_FIELDS = ["loss", "eval_loss", "learning_rate", "samples_per_second", "iteration_time", "samples"]


WRONG_TYPES: list[Any] = ["abc", "1.5", "", True, False, [1.5], {"v": 1.5}]


def test_step_field_of_wrong_type_is_dropped_with_a_warning(lab: Lab) -> None:
    cases = [(field, bad) for field in STEP_FIELDS for bad in WRONG_TYPES]
    for i, (field, bad) in enumerate(cases):  # one job per case, all in one run
        history = [{**GOOD_ENTRY, field: bad}, {**GOOD_ENTRY, "step": 4}]
        lab.write_job(f"j{i}", {"job_id": f"j{i}", "status": "running", "history": history})
    summary = lab.ingest()

    assert (summary.ingested, summary.rows, summary.warnings) == (len(cases), 2 * len(cases), len(cases))
    kept = {k: v for k, v in GOOD_ENTRY.items() if k not in ("step", "timestamp")}
    t = tables(lab)
    for i, (field, bad) in enumerate(cases):
        steps = t.steps[f"j{i}"]
        assert steps[3] == {"ts": T0, **kept, field: None}, (field, bad)
        assert steps[4] == {"ts": T0, **kept}, (field, bad)
        row = t.ledger[f"j{i}"]
        assert (row["outcome"], row["rows"], row["warning_count"]) == ("ingested", 2, 1), (field, bad)
        (warning,) = row["warnings"]
        shown = json.dumps(bad, separators=(",", ":"))
        assert warning == f"history[0] (step 3): {field} {shown} is not a number, dropped"


def test_absurd_step_value_is_dropped_with_a_warning(lab: Lab) -> None:
    cases: list[tuple[str, float, str]] = [
        ("samples_per_second", -1.0, "samples_per_second -1.0 is out of range"),
        ("iteration_time", -0.5, "iteration_time -0.5 is out of range"),
        ("samples", -64, "samples -64 is out of range"),
        ("samples", 6.5, "samples 6.5 is not a whole number"),
        ("samples", 1e19, "samples 10000000000000000000.0 is out of range"),
    ]
    for i, (field, bad, _) in enumerate(cases):
        lab.write_job(f"b{i}", {"job_id": f"b{i}", "status": "running", "history": [{**GOOD_ENTRY, field: bad}]})
    assert lab.ingest().warnings == len(cases)
    t = tables(lab)
    for i, (field, _, why) in enumerate(cases):
        step = t.steps[f"b{i}"][3]
        assert step[field] is None, why
        assert (step["loss"], step["eval_loss"]) == (0.5, 0.6), why
        assert t.ledger[f"b{i}"]["warnings"] == [f"history[0] (step 3): {why}, dropped"]


def test_absurd_gpu_value_is_dropped_with_a_warning(lab: Lab) -> None:
    cases: list[tuple[str, Any, str]] = [
        ("utilization_percent", 100.5, "utilization_percent 100.5 is out of range"),
        ("utilization_percent", 250, "utilization_percent 250 is out of range"),
        ("utilization_percent", -1, "utilization_percent -1 is out of range"),
        ("utilization_percent", "98 %", 'utilization_percent "98 %" is not a number'),
        ("memory_used_mb", -1.0, "memory_used_mb -1.0 is out of range"),
        ("memory_used_mb", "17200", 'memory_used_mb "17200" is not a number'),
        ("memory_total_mb", -8000, "memory_total_mb -8000 is out of range"),
        ("temperature_c", False, "temperature_c false is not a number"),
        ("power_w", -3.5, "power_w -3.5 is out of range"),
    ]
    for i, (field, bad, _) in enumerate(cases):
        gpus = [{**GOOD_GPU, field: bad}, {**GOOD_GPU, "index": 1}]
        lab.write_job(f"g{i}", {"job_id": f"g{i}", "status": "running", "history": [{**GOOD_ENTRY, "gpus": gpus}]})
    summary = lab.ingest()

    assert (summary.rows, summary.warnings) == (len(cases), len(cases))
    kept = {k: v for k, v in GOOD_GPU.items() if k != "index"}
    t = tables(lab)
    for i, (field, _, why) in enumerate(cases):
        readings = t.gpus[f"g{i}"]
        assert readings == {(3, 0): {"gpu_uuid": None, **kept, field: None}, (3, 1): {"gpu_uuid": None, **kept}}, why
        assert t.steps[f"g{i}"][3]["loss"] == 0.5, why  # the entry stays
        assert t.ledger[f"g{i}"]["warnings"] == [f"history[0] (step 3) gpus[0]: {why}, dropped"]


def test_utilization_of_exactly_100_and_0_is_kept(lab: Lab) -> None:
    gpus = [{**GOOD_GPU, "utilization_percent": 100}, {**GOOD_GPU, "index": 1, "utilization_percent": 0}]
    lab.write_job("g", {"job_id": "g", "status": "running", "history": [{**GOOD_ENTRY, "gpus": gpus}]})
    assert lab.ingest().warnings == 0
    assert {k: v["utilization_percent"] for k, v in gpu_rows(lab, "g").items()} == {(3, 0): 100.0, (3, 1): 0.0}


def test_bad_legacy_values_are_dropped_with_a_warning_naming_the_snapshot(lab: Lab) -> None:
    doc = legacy(12, 1.0, 140.0, samples_per_second="fast")
    doc["gpu_memory_mb"] = -5
    lab.write_job("legacy", doc)
    summary = lab.ingest()
    assert (summary.rows, summary.warnings) == (1, 2)
    assert step_rows(lab, "old-gpt2")[12]["samples_per_second"] is None
    assert step_rows(lab, "old-gpt2")[12]["loss"] == 1.0
    assert gpu_rows(lab, "old-gpt2")[(12, 0)] == {
        "gpu_uuid": None,
        "utilization_percent": None,
        "memory_used_mb": None,
        "memory_total_mb": None,
        "temperature_c": 60.0,
        "power_w": None,
    }
    assert ledger_row(lab, "legacy")["warnings"] == [
        'snapshot (step 12): samples_per_second "fast" is not a number, dropped',
        # the file's own names (they named the gpus[0] of a list the file does not have)
        "snapshot (step 12): gpu_utilization 140.0 is out of range, dropped; gpu_memory_mb -5 is out of range, dropped",
    ]


def test_bad_latest_value_warning_names_latest(lab: Lab) -> None:
    lab.write_job(
        "l", {"job_id": "l", "status": "running", "latest": {"step": 9, "loss": "nan?", "iteration_time": 0.2}}
    )
    lab.ingest()
    assert step_rows(lab, "l")[9]["iteration_time"] == 0.2
    assert ledger_row(lab, "l")["warnings"] == ['latest (step 9): loss "nan?" is not a number, dropped']


def test_null_value_is_dropped_and_the_rest_of_the_entry_stays(lab: Lab) -> None:
    lab.write_job(
        "n",
        {
            "job_id": "n",
            "status": "running",
            "history": [{**GOOD_ENTRY, "loss": None, "gpus": [{**GOOD_GPU, "temperature_c": None}]}],
        },
    )
    assert lab.ingest().rows == 1
    step = step_rows(lab, "n")[3]
    assert step["loss"] is None
    assert (step["eval_loss"], step["samples"]) == (0.6, 64)
    reading = gpu_rows(lab, "n")[(3, 0)]
    assert reading["temperature_c"] is None
    assert reading["utilization_percent"] == 50.0


def test_null_value_is_warned_about(lab: Lab) -> None:
    gpus = [{**GOOD_GPU, "temperature_c": None, "index": None}, {**GOOD_GPU, "index": 1, "power_w": None}]
    history = [
        {**GOOD_ENTRY, "loss": None, "eval_loss": None, "gpus": gpus},
        {**GOOD_ENTRY, "step": None, "loss": None},  # skipped for its step alone
        {**GOOD_ENTRY, "step": 4, "timestamp": None, "learning_rate": 1e-4},  # dropped as a null number is
    ]
    lab.write_job("n", {"job_id": "n", "status": "running", "history": history, "latest": {"step": 5, "samples": None}})
    lab.write_job("s", legacy(12, 1.0, 40.0) | {"loss": None, "gpu_temperature": None})
    summary = lab.ingest()
    assert ledger_row(lab, "n")["warnings"] == [
        "history[0] (step 3): loss is null, dropped; eval_loss is null, dropped",
        "history[0] (step 3) gpus[0]: index is null, dropped; temperature_c is null, dropped",
        "history[0] (step 3) gpus[1]: power_w is null, dropped",
        "history[1]: no step: entry skipped",
        "history[2] (step 4): timestamp is null, dropped",
        "latest (step 5): samples is null, dropped",
    ]
    assert ledger_row(lab, "s")["warnings"] == [
        "snapshot (step 12): loss is null, dropped; gpu_temperature is null, dropped"
    ]
    assert summary.warnings == 7
    assert sorted(gpu_rows(lab, "n")) == [(3, 0), (3, 1)]  # a null index takes the reading's position


def test_null_in_a_string_is_no_null_value(lab: Lab) -> None:
    lab.write_job("n", {"job_id": "n", "status": "running", "config": {"note": "null"}, "history": [GOOD_ENTRY]})
    assert lab.ingest().warnings == 0


def test_entry_with_bad_step_is_skipped_with_a_warning(lab: Lab) -> None:
    cases: list[tuple[Any, str]] = [
        (-3, "step -3 is out of range, dropped: entry skipped"),
        (-1e30, "step -1e30 is out of range, dropped: entry skipped"),
        ("7", 'step "7" is not a number, dropped: entry skipped'),
        (2.5, "step 2.5 is not a whole number, dropped: entry skipped"),
        (True, "step true is not a number, dropped: entry skipped"),
        ([1], "step [1] is not a number, dropped: entry skipped"),
    ]
    for i, (bad_step, _) in enumerate(cases):
        history = [entry(1, loss=1.0), entry(bad_step, loss=2.0, gpus=[GOOD_GPU]), entry(2, loss=3.0)]
        lab.write_job(f"s{i}", {"job_id": f"s{i}", "status": "running", "history": history})
    summary = lab.ingest()
    assert (summary.ingested, summary.rows, summary.warnings) == (len(cases), 2 * len(cases), len(cases))
    t = tables(lab)
    for i, (_, why) in enumerate(cases):
        assert {s: r["loss"] for s, r in t.steps[f"s{i}"].items()} == {1: 1.0, 2: 3.0}, why
        assert f"s{i}" not in t.gpus, why
        assert t.ledger[f"s{i}"]["warnings"] == [f"history[1]: {why}"]


def test_entry_without_step_is_skipped_with_a_warning(lab: Lab) -> None:
    history = [entry(1, loss=1.0), {"loss": 2.0, "gpus": [GOOD_GPU]}, {"step": None, "loss": 2.5}, entry(2, loss=3.0)]
    lab.write_job("s", {"job_id": "s", "status": "running", "history": history})
    summary = lab.ingest()
    assert (summary.rows, summary.warnings) == (2, 2)
    assert {s: r["loss"] for s, r in step_rows(lab, "s").items()} == {1: 1.0, 2: 3.0}
    assert gpu_rows(lab, "s") == {}
    row = ledger_row(lab, "s")
    assert (row["rows"], row["warning_count"]) == (2, 2)
    assert row["warnings"] == ["history[1]: no step: entry skipped", "history[2]: no step: entry skipped"]


def test_latest_without_step_is_skipped_with_a_warning(lab: Lab) -> None:
    lab.write_job("s", {"job_id": "s", "status": "running", "latest": {"loss": 1.0}})
    summary = lab.ingest()
    assert (summary.ingested, summary.rows, summary.warnings) == (1, 0, 1)
    assert job_row(lab, "s")["status"] == "running"
    assert ledger_row(lab, "s")["warnings"] == ["latest: no step: entry skipped"]


def test_warnings_of_several_entries_are_counted_and_ordered(lab: Lab) -> None:
    history = [{**GOOD_ENTRY, "step": s, "loss": "x"} for s in range(60)]
    lab.write_job("many", {"job_id": "many", "status": "running", "history": history})
    summary = lab.ingest()
    assert (summary.rows, summary.warnings) == (60, 60)
    row = ledger_row(lab, "many")
    assert row["warning_count"] == 60
    assert len(row["warnings"]) == 50  # the first ones are stored
    assert row["warnings"][0] == 'history[0] (step 0): loss "x" is not a number, dropped'
    assert row["warnings"][49] == 'history[49] (step 49): loss "x" is not a number, dropped'


# --- job_id, status, checkpoints ----------------------------------------------------------------


def test_missing_job_id_is_the_folder_name(lab: Lab) -> None:
    lab.write_job("folder-job-42", {"status": "completed", "history": [entry(1)]})
    lab.ingest()
    assert job_row(lab, "folder-job-42")["status"] == "completed"
    assert sorted(step_rows(lab, "folder-job-42")) == [1]
    assert ledger_row(lab, "folder-job-42")["job_id"] == "folder-job-42"


def test_job_id_of_wrong_type_falls_back_to_the_folder_name_with_a_warning(lab: Lab) -> None:
    lab.write_job("f", {"job_id": {"id": 1}, "status": "running", "history": [entry(1)]})
    summary = lab.ingest()
    assert summary.warnings == 1
    assert job_row(lab, "f")["status"] == "running"
    assert ledger_row(lab, "f")["warnings"] == ['job_id {"id":1} is not a string: the folder name is used']


def test_job_id_is_taken_from_the_file_not_the_folder(lab: Lab) -> None:
    lab.write_job("some-folder", {"job_id": "real-id", "status": "running", "history": [entry(1)]})
    lab.ingest()
    assert lab.query("SELECT job_id FROM jobs") == [("real-id",)]
    assert lab.query("SELECT DISTINCT job_id FROM steps") == [("real-id",)]


def test_status_is_case_insensitive(lab: Lab) -> None:
    cases = {
        "queued": "queued",
        "RUNNING": "running",
        "Paused": "paused",
        "completed": "completed",
        "FAILED": "failed",
        "CanCelled": "cancelled",
    }
    for i, written in enumerate(cases):
        lab.write_job(f"s{i}", {"job_id": f"s{i}", "status": written, "history": []})
    assert lab.ingest().warnings == 0
    t = tables(lab)
    for i, stored in enumerate(cases.values()):
        assert t.jobs[f"s{i}"]["status"] == stored


def test_unknown_status_is_kept_as_unknown_with_a_warning(lab: Lab) -> None:
    cases: list[Any] = ["exploded", "done", "", 3, ["running"], True, {"state": "running"}]
    for i, written in enumerate(cases):
        lab.write_job(f"s{i}", {"job_id": f"s{i}", "status": written, "history": [entry(1, loss=1.0)]})
    summary = lab.ingest()
    assert (summary.ingested, summary.rows, summary.warnings) == (len(cases), len(cases), len(cases))
    t = tables(lab)
    for i, written in enumerate(cases):
        assert t.jobs[f"s{i}"]["status"] == "unknown"
        shown = json.dumps(written, separators=(",", ":"))
        assert t.ledger[f"s{i}"]["warnings"] == [
            f"status {shown} is not one of queued, running, paused, completed, failed, cancelled: kept as unknown"
        ]


def test_missing_status_is_unknown(lab: Lab) -> None:
    lab.write_job("s", {"job_id": "s", "history": [entry(1)]})
    lab.ingest()
    assert job_row(lab, "s")["status"] == "unknown"
    assert ledger_row(lab, "s")["warnings"] == ["no status: kept as unknown"]


def test_checkpoint_folders_are_recorded(lab: Lab) -> None:
    lab.write_job("fold", {"job_id": "ck-job", "status": "running", "history": [entry(100)]})
    for name in ["checkpoint-100", "checkpoint-250", "checkpoint-best", "checkpoint-12a", "ckpt-300"]:
        (lab.root / "fold" / name).mkdir()
    lab.ingest()
    folder = (lab.root / "fold").resolve()
    assert checkpoint_rows(lab, "ck-job") == {
        100: (str(folder / "checkpoint-100"), None, None, "folder"),
        250: (str(folder / "checkpoint-250"), None, None, "folder"),
    }

    # a checkpoint saved later is picked up by the next run; the list completes the folder's row
    (lab.root / "fold" / "checkpoint-500").mkdir()
    lab.write_job(
        "fold",
        {
            "job_id": "ck-job",
            "status": "running",
            "history": [entry(100)],
            "checkpoints": [{"step": 250, "saved_at": iso(12), "eval_loss": 1.5}],
        },
    )
    lab.ingest()
    ckpts = checkpoint_rows(lab, "ck-job")
    assert sorted(ckpts) == [100, 250, 500]
    assert ckpts[250] == (str(folder / "checkpoint-250"), T0, 1.5, "list")
    assert ckpts[500] == (str(folder / "checkpoint-500"), None, None, "folder")


def test_checkpoint_folders_of_a_job_left_pending_are_added_once_it_is_ingested(lab: Lab) -> None:
    (lab.root / "p" / "checkpoint-10").mkdir(parents=True)
    lab.write_job("p", None, raw="")
    assert lab.ingest().pending == 1
    assert lab.query("SELECT count(*) FROM checkpoints")[0][0] == 0
    lab.write_job("p", {"job_id": "p", "status": "running", "history": [entry(10)]})
    lab.ingest()
    assert sorted(checkpoint_rows(lab, "p")) == [10]


def test_bad_checkpoint_items_are_skipped_with_a_warning(lab: Lab) -> None:
    items = [{"step": 10, "path": "a"}, {"path": "no-step"}, {"step": -1}, {"step": 20, "saved_at": "soon"}]
    lab.write_job("c", {"job_id": "c", "status": "running", "history": [entry(1)], "checkpoints": items})
    summary = lab.ingest()
    assert summary.warnings == 3
    assert checkpoint_rows(lab, "c") == {10: ("a", None, None, "list"), 20: (None, None, None, "list")}
    assert ledger_row(lab, "c")["warnings"] == [
        "checkpoints[1]: no step: checkpoint skipped",
        "checkpoints[2]: step -1 is out of range, dropped: checkpoint skipped",
        'checkpoints[3]: saved_at "soon" is not a timestamp, dropped',
    ]


# --- files caught mid-write ---------------------------------------------------------------------


def whole_doc(n: int, status: str = "running", scale: float = 1.0) -> dict[str, Any]:
    """A job's progress.json without job_id: the folder's name is the job's id."""
    return {
        "status": status,
        "updated_at": iso(12, n),
        "current_step": n,
        "history": [
            entry(s, timestamp=iso(11, s), loss=scale / s, gpus=[gpu(0, utilization_percent=50.0 + s)])
            for s in range(1, n + 1)
        ],
    }


# what the monitor wrote before: longer than the new text, so an in-place rewrite leaves its tail
OLD_TEXT = json.dumps(whole_doc(14, scale=3.0))
NEW_TEXT = json.dumps(whole_doc(10, status="completed"))
SPLICE = NEW_TEXT.index("0.333") + 3

TORN: dict[str, str] = {
    "empty": "",
    "whitespace": "  \n\t",
    "cut after the brace": NEW_TEXT[:1],
    "cut mid-key": NEW_TEXT[:5],
    "cut mid-string": NEW_TEXT[: NEW_TEXT.index("completed") + 4],
    "cut mid-number": NEW_TEXT[: NEW_TEXT.index("0.5") + 2],
    "cut after an entry": NEW_TEXT[: NEW_TEXT.index("}]}") + 3],
    "cut after a comma": NEW_TEXT[: NEW_TEXT.index("}]}, ") + 4],
    "cut before the last brace": NEW_TEXT[:-1],
    "new prefix, old tail": NEW_TEXT[:SPLICE] + OLD_TEXT[SPLICE:],
    "whole new, old tail": NEW_TEXT + OLD_TEXT[len(NEW_TEXT) :],
    "valid prefix, garbage": NEW_TEXT + "\x00\x00garbage",
    "two objects": NEW_TEXT + NEW_TEXT,
}


def test_torn_cases_are_really_torn() -> None:
    assert len(OLD_TEXT) > len(NEW_TEXT) + 100
    for name, text in TORN.items():
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
            pytest.fail(f"{name} is valid JSON")


def folder_of(name: str) -> str:
    return name.replace(" ", "-").replace(",", "")


def test_torn_files_are_left_for_the_next_run_and_nothing_of_them_is_applied(lab: Lab) -> None:
    # every torn form at once, each in its own job folder
    folders = [folder_of(name) for name in TORN]
    for folder in folders:
        lab.write_job(folder, whole_doc(8))
    assert lab.ingest().ingested == len(TORN)
    before = lab.facts()
    assert len(before["jobs"]) == len(TORN)
    assert len(before["steps"]) == len(before["step_gpus"]) == 8 * len(TORN)

    # the monitor is caught mid-write
    for name, folder in zip(TORN, folders, strict=True):
        lab.write_job(folder, None, raw=TORN[name])
    summary = lab.ingest()
    assert (summary.ingested, summary.pending + summary.failed, summary.rows) == (0, len(TORN), 0)
    assert lab.facts() == before
    ledger = tables(lab).ledger
    reasons = {Path(p["path"]).parent.name: (p["outcome"], p["reason"]) for p in summary.problems}
    assert reasons == {f: (ledger[f]["outcome"], ledger[f]["error"]) for f in folders}
    assert all(outcome in ("pending", "failed") and reason for outcome, reason in reasons.values()), reasons
    assert reasons["empty"] == ("pending", "file is empty (being written?)")
    assert reasons["whitespace"] == ("pending", "file is empty (being written?)")
    assert reasons["two-objects"] == ("failed", "holds more than one JSON value")

    # the next run finds them whole
    for folder in folders:
        lab.write_job(folder, whole_doc(10, status="completed"))
    summary = lab.ingest()
    assert (summary.ingested, summary.pending, summary.failed, summary.rows) == (len(TORN), 0, 0, 10 * len(TORN))
    t = tables(lab)
    for folder in folders:
        job = t.jobs[folder]
        assert (job["status"], job["current_step"], job["updated_at"]) == (
            "completed",
            10,
            datetime(2026, 3, 1, 12, 10),
        )
        assert {s: r["loss"] for s, r in t.steps[folder].items()} == {s: 1.0 / s for s in range(1, 11)}, folder
        assert {k: r["utilization_percent"] for k, r in t.gpus[folder].items()} == {
            (s, 0): 50.0 + s for s in range(1, 11)
        }, folder
        assert (t.ledger[folder]["outcome"], t.ledger[folder]["error"]) == ("ingested", None)


def test_torn_files_seen_first_add_no_job_and_stop_nothing(lab: Lab) -> None:
    for name, text in TORN.items():
        lab.write_job(folder_of(name), None, raw=text)
    lab.write_job("fine", {"job_id": "fine", "status": "running", "history": [entry(1)]})
    summary = lab.ingest()
    assert (summary.files_seen, summary.ingested) == (len(TORN) + 1, 1)
    assert summary.pending + summary.failed == len(TORN)
    assert lab.query("SELECT job_id FROM jobs") == [("fine",)]
    assert lab.query("SELECT DISTINCT job_id FROM steps") == [("fine",)]
    assert lab.query("SELECT count(*) FROM step_gpus")[0][0] == 0


def test_empty_files_are_pending_and_read_again_on_every_run(lab: Lab) -> None:
    old = time.time() - 3600
    for i, raw in enumerate(["", "   ", "\n"]):
        os.utime(lab.write_job(f"e{i}", None, raw=raw), (old, old))
    for _ in range(2):
        summary = lab.ingest()
        assert (summary.pending, summary.unchanged, summary.failed) == (3, 0, 0)
        for i in range(3):
            row = ledger_row(lab, f"e{i}")
            assert (row["outcome"], row["error"]) == ("pending", "file is empty (being written?)")


def test_git_lfs_pointer_and_top_level_array_fail_without_stopping_the_others(lab: Lab) -> None:
    lab.write_job(
        "lfs",
        None,
        raw="version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n",
    )
    lab.write_job("array", None, raw=json.dumps([{"step": 1, "loss": 1.0}]))
    lab.write_job("number", None, raw="42")
    lab.write_job("ok-1", {"job_id": "ok-1", "status": "running", "history": [entry(1), entry(2)]})
    lab.write_job("zz-ok-2", {"job_id": "ok-2", "status": "running", "history": [entry(1)]})
    summary = lab.ingest()

    assert (summary.files_seen, summary.ingested, summary.failed, summary.pending, summary.rows) == (5, 2, 3, 0, 3)
    assert sorted(r[0] for r in lab.query("SELECT job_id FROM jobs")) == ["ok-1", "ok-2"]
    lfs, array, number = ledger_row(lab, "lfs"), ledger_row(lab, "array"), ledger_row(lab, "number")
    assert lfs["outcome"] == array["outcome"] == number["outcome"] == "failed"
    assert lfs["error"] == "not JSON: a Git LFS pointer was committed in place of the file"
    assert array["error"] == "top-level JSON value is list, not an object"
    assert number["error"] == "top-level JSON value is int, not an object"
    reasons = {Path(p["path"]).parent.name: p["reason"] for p in summary.problems}
    assert reasons == {"lfs": lfs["error"], "array": array["error"], "number": number["error"]}


def test_wrongly_shaped_parts_are_dropped_with_a_warning(lab: Lab) -> None:
    # DuckDB's typed reader refuses a file whose lists or objects have the wrong shape (its error
    # quotes the value, cut short mid-character for non-ASCII text); the ingester reads a copy
    # without those parts, with a warning for each, and keeps the rest of the file
    shapes: dict[str, Any] = {
        "history-string": {"history": "Ü" * 50},
        "history-object": {"history": {"step": 1}},
        "history-of-strings": {"history": ["Ü" * 50, {"step": 1}]},
        "latest-list": {"latest": [1, 2]},
        "gpus-of-strings": {"latest": {"step": 1, "gpus": ["Ü" * 50]}},
        "checkpoints-of-numbers": {"checkpoints": [5]},
    }
    for folder, doc in shapes.items():
        lab.write_job(folder, {"status": "running", **doc})
    lab.write_job("a-fine", {"job_id": "fine-1", "status": "running", "history": [entry(1)]})
    lab.write_job("z-fine", {"job_id": "fine-2", "status": "running", "history": [entry(2)]})
    summary = lab.ingest()

    assert (summary.ingested, summary.failed, summary.pending) == (2 + len(shapes), 0, 0)
    t = tables(lab)
    assert sorted(t.jobs) == sorted(["fine-1", "fine-2", *shapes])
    assert list(t.steps["history-of-strings"]) == [1] and list(t.steps["gpus-of-strings"]) == [1]
    for folder in shapes:
        assert t.ledger[folder]["outcome"] == "ingested", folder
        assert t.ledger[folder]["warning_count"] >= 1, folder


def test_history_entry_that_is_not_an_object_is_skipped_with_a_warning(lab: Lab) -> None:
    lab.write_job("j", {"job_id": "j", "status": "running", "history": ["oops", {"step": 1, "loss": 1.0}]})
    summary = lab.ingest()
    assert (summary.ingested, summary.rows, summary.warnings) == (1, 1, 1)


def test_failed_file_is_not_read_again_until_it_changes(lab: Lab) -> None:
    path = lab.write_job("array", None, raw="[1, 2]")
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert lab.ingest().failed == 1
    summary = lab.ingest()
    assert (summary.failed, summary.unchanged) == (0, 1)
    assert ledger_row(lab, "array")["outcome"] == "failed"
    lab.write_job("array", {"job_id": "fixed", "status": "running", "history": [entry(1)]})
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (1, 0)
    assert ledger_row(lab, "array")["outcome"] == "ingested"
