"""The audit's proven disagreements with the contracts (session 11, second part), each pinned by a case.

F14: a progress.json caught while the monitor rewrites it in place, a complete new document
followed by the old, longer one's tail. inputs.md §1: a reader can find it "half old and half
new. Such a read is retried on the next ingest run"; README: files caught mid-write count as
success. Such a file is pending while it changed in the last ``progress.TORN_TAIL_SECONDS``;
a file that stays so longer is failed (no writer is at it).

Real DuckDB files in tmp folders; every expected figure is worked out by hand in its comment.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab

from runlytics.ingest import progress


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    """On both engines (docs/testing.md, "Both engines"): on PostgreSQL ``ingest --db URL`` publishes
    the stage's result, and ``lab.query`` and ``lab.analytics`` read PostgreSQL's rows."""
    return Lab(tmp_path, ingest_engine)


# --- F14: half new, half old ------------------------------------------------------------------

OLD = json.dumps(
    {"job_id": "h", "status": "running", "history": [{"step": s, "loss": 5.0 - s / 10} for s in range(1, 6)]}
)
NEW = json.dumps({"job_id": "h", "status": "running", "history": [{"step": s, "loss": 1.0} for s in range(4, 7)]})


def _rewrite_in_place(path: Path, text: str) -> None:
    """The monitor's in-place rewrite, caught before its truncate: the old file's tail stays."""
    with path.open("r+") as f:
        f.write(text)


def test_a_file_caught_half_rewritten_is_left_for_the_next_run(lab: Lab) -> None:
    path = lab.write_job("h", None, raw=OLD)
    assert lab.ingest().ingested == 1
    _rewrite_in_place(path, NEW)
    assert json.loads(path.read_text()[: len(NEW)])  # a whole new document, then the old tail
    summary = lab.ingest()
    assert (summary.ingested, summary.pending, summary.failed) == (0, 1, 0)
    assert summary.problems[0]["outcome"] == "pending"
    assert "older document's tail" in summary.problems[0]["reason"]
    # nothing of it applied: steps 1..5 with the old losses
    assert lab.query("SELECT count(*), max(step), min(loss) FROM steps") == [(5, 5, 4.5)]
    # the monitor's truncate: the next run reads the new document (steps 4..6 at loss 1.0 replace 4, 5)
    with path.open("r+") as f:
        f.truncate(len(NEW))
    summary = lab.ingest()
    assert (summary.ingested, summary.pending, summary.failed) == (1, 0, 0)
    assert lab.query("SELECT count(*), max(step), min(loss) FROM steps") == [(6, 6, 1.0)]


def test_a_tail_that_stays_is_a_failure_once_no_writer_can_be_at_it(lab: Lab) -> None:
    path = lab.write_job("h", None, raw=NEW + OLD[len(NEW) :])
    old = time.time() - progress.TORN_TAIL_SECONDS - 60
    os.utime(path, (old, old))
    summary = lab.ingest()
    assert (summary.ingested, summary.pending, summary.failed) == (0, 0, 1)
    assert summary.problems[0]["reason"].startswith("invalid JSON at line 1 column")


def test_diagnose_names_the_half_new_file() -> None:
    torn = (NEW + OLD[len(NEW) :]).encode()
    assert progress.diagnose(torn, age_seconds=1.0)[0] == "pending"
    assert progress.diagnose(torn, age_seconds=progress.TORN_TAIL_SECONDS + 1)[0] == "failed"
    # two whole documents are no torn write: failed however fresh
    assert progress.diagnose((NEW + NEW).encode(), age_seconds=1.0)[0] == "failed"


# --- F16: every null figure comes with a warning that says why ---------------------------------

# each figure of the analytics, and the fragments of the warnings that explain it when it is null
WHY = {
    ("duration", "start_time"): ("start unknown", "no step rows"),
    ("duration", "end_time"): ("end unknown", "no step rows"),
    ("duration", "total_seconds"): ("start unknown", "end unknown", "no step rows"),
    ("duration", "training_seconds"): ("training time partly unknown", "no step rows"),
    ("duration", "overhead_seconds"): ("start unknown", "end unknown", "training time partly unknown", "no step rows"),
    ("performance", "total_iterations"): ("no step rows",),
    ("performance", "total_samples"): ("total_samples is null", "no step rows"),
    ("performance", "average_samples_per_second"): ("average_samples_per_second is null", "no step rows"),
    ("performance", "peak_samples_per_second"): ("peak_samples_per_second is null", "no step rows"),
    ("performance", "average_iteration_time"): (
        "average_iteration_time is null",
        "training time partly unknown",
        "no step rows",
    ),
    ("losses", "initial_loss"): ("no finite loss values", "no step rows"),
    ("losses", "final_loss"): ("no finite loss values", "no step rows"),
    ("losses", "best_loss"): ("no finite loss values", "no step rows"),
    ("losses", "loss_reduction_percent"): ("the initial loss is 0", "no finite loss values", "no step rows"),
    ("losses", "final_eval_loss"): ("final_eval_loss and best_eval_loss are null", "no step rows"),
    ("losses", "best_eval_loss"): ("final_eval_loss and best_eval_loss are null", "no step rows"),
    ("resource_utilization", "average_gpu_utilization"): ("no GPU readings", "average_gpu_utilization and"),
    ("resource_utilization", "average_gpu_memory_mb"): ("no GPU readings", "average_gpu_memory_mb and"),
    ("resource_utilization", "peak_gpu_memory_mb"): ("no GPU readings", "peak_gpu_memory_mb are null"),
    ("resource_utilization", "average_gpu_temp_celsius"): ("no GPU readings", "average_gpu_temp_celsius and"),
    ("resource_utilization", "peak_gpu_temp_celsius"): ("no GPU readings", "peak_gpu_temp_celsius are null"),
    ("checkpoints", "checkpoint_frequency_steps"): ("no checkpoints",),
    ("checkpoints", "final_checkpoint"): ("no checkpoints",),
    ("checkpoints", "best_checkpoint"): ("no checkpoints", "best_checkpoint is null"),
    ("efficiency", "gpu_utilization_score"): ("no GPU readings", "gpu_utilization_score are null"),
    ("efficiency", "throughput_score"): ("throughput_score is null",),
    ("efficiency", "overall_score"): ("overall_score is null",),
    ("energy", "total_energy_wh"): ("energy is null",),
    ("energy", "energy_per_1000_samples_wh"): ("energy is null", "energy_per_1000_samples_wh is null"),
    ("energy", "average_throttled_share"): ("energy is null", "average_throttled_share is null"),
    ("energy", "gpus_with_power"): ("energy is null",),
    ("energy", "idle_gpus"): ("energy is null",),
}


def _unexplained(analytics: dict[str, Any]) -> list[tuple[str, str]]:
    warnings = analytics["warnings"]
    return [
        (section, name)
        for (section, name), fragments in WHY.items()
        if analytics[section][name] is None and not any(f in w for f in fragments for w in warnings)
    ]


def test_every_null_figure_has_a_warning_that_says_why(lab: Lab) -> None:
    # the audit's job: timestamps and losses 0.0, 0.5 only; a checkpoint; a target of 5 samples/s
    lab.write_job("z", {"status": "completed", "started_at": 1793606400, "ended_at": 1793606500,
                        "history": [{"step": 10, "timestamp": 1793606410, "loss": 0.0},
                                    {"step": 20, "timestamp": 1793606420, "loss": 0.5}],
                        "checkpoints": [{"step": 10}], "config": {"target_samples_per_second": 5}})  # fmt: skip
    # nothing but a status
    lab.write_job("q", {"status": "queued"})
    # GPU readings with utilization only; a checkpoint past every step with a loss
    lab.write_job("g", {"status": "running", "history": [
        {"step": 1, "iteration_time": 2.0, "samples": 8, "samples_per_second": 4.0,
         "gpus": [{"index": 0, "utilization_percent": 50.0}]}], "checkpoints": [{"step": 1}]})  # fmt: skip
    assert lab.ingest().failed == 0
    z, q, g = (lab.analytics(job) for job in "zqg")
    assert z is not None and q is not None and g is not None
    assert (z["performance"]["total_samples"], z["efficiency"]["overall_score"]) == (None, None)
    for job in (z, q, g):
        assert _unexplained(job) == [], job["warnings"]
    assert "total_samples is null: no step row has samples, the config no batch_size, and no row both" \
        " samples_per_second and seconds" in z["warnings"]  # fmt: skip
    assert "overall_score is null: neither gpu_utilization_score nor throughput_score is known" in z["warnings"]
    # g: 8 samples / 2 s = 4.0 against its own peak 4.0 -> 100; utilization 50 -> overall 75
    assert (g["efficiency"]["throughput_score"], g["efficiency"]["overall_score"]) == (100.0, 75.0)
    assert g["resource_utilization"]["average_gpu_temp_celsius"] is None
    # the texts tests and docs quote stay as they were
    assert "loss_reduction_percent is null: the initial loss is 0" in z["warnings"]
    assert "no checkpoints" in q["warnings"]


# --- F12 f: a progress.json that is a link to nothing, or a folder ------------------------------


def test_a_dangling_link_or_a_folder_named_progress_json_is_failed_with_its_reason(lab: Lab) -> None:
    ok = lab.write_job("ok", {"status": "completed", "history": [{"step": 1}]})
    os.utime(ok, (time.time() - 60, time.time() - 60))  # not read again next run (ledger.FRESH_SECONDS)
    (lab.root / "dangling").mkdir()
    (lab.root / "dangling" / "progress.json").symlink_to(lab.root / "nowhere.json")
    (lab.root / "folder" / "progress.json").mkdir(parents=True)
    summary = lab.ingest()
    assert (summary.files_seen, summary.ingested, summary.failed) == (3, 1, 2)
    reasons = {Path(p["path"]).parent.name: p["reason"] for p in summary.problems}
    assert reasons == {
        "dangling": f"a symbolic link to {lab.root / 'nowhere.json'}, which does not exist: not read",
        "folder": "not a regular file (a folder): not read",
    }
    # once the link's target exists, it is read (a failure that is checked every run)
    (lab.root / "nowhere.json").write_text('{"job_id": "d", "status": "running", "history": [{"step": 2}]}')
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (1, 1)
    assert lab.query("SELECT job_id FROM jobs ORDER BY job_id") == [("d",), ("ok",)]


# --- F12 i: bad top-level fields of a trainer_state.json warn, as log_history entries do --------


def test_bad_top_level_trainer_state_fields_are_dropped_with_a_warning(lab: Lab) -> None:
    state = {"global_step": "10", "max_steps": None, "train_batch_size": "x", "save_steps": -5,
             "logging_steps": 2.5, "best_model_checkpoint": 5, "best_metric": "low",
             "log_history": [{"step": 2, "loss": 1.0}]}  # fmt: skip
    (lab.root / "t").mkdir()
    (lab.root / "t" / "trainer_state.json").write_text(json.dumps(state))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (1, 0)
    [(warnings,)] = lab.query("SELECT warnings FROM ingest_files WHERE kind = 'trainer_state'")
    assert json.loads(warnings) == [
        "best_model_checkpoint '5' is not a checkpoint path, ignored",
        "global_step '10' is not a whole number >= 0, ignored",
        "save_steps '-5' is not a whole number >= 0, ignored",
        "logging_steps '2.5' is not a whole number >= 0, ignored",
        "train_batch_size 'x' is not a whole number >= 0, ignored",
        "best_metric 'low' is not a number, ignored",
    ]  # max_steps null: the trainer's own "not set", no warning
    assert lab.query("SELECT job_id, step, loss FROM step_facts") == [("t", 2, 1.0)]


# --- F12 b: ISO-8601's basic format and decimal comma are timestamps ---------------------------


def test_iso_basic_format_and_a_decimal_comma_are_read(lab: Lab) -> None:
    lab.write_job("b", {"status": "completed", "started_at": "20261102T080000Z", "ended_at": "20261102T100000+0100",
                        "history": [{"step": 10, "timestamp": "20261102T080010Z"},
                                    {"step": 20, "timestamp": "2026-11-02T08:00:30,5Z"},
                                    {"step": 30, "timestamp": "2026-11-02T08:00:40,5 oops"}]})  # fmt: skip
    summary = lab.ingest()
    assert (summary.ingested, summary.warnings) == (1, 1)  # step 30's timestamp only
    assert [ts.isoformat() if ts else None for (ts,) in lab.query("SELECT ts FROM steps ORDER BY step")] == [
        "2026-11-02T08:00:10", "2026-11-02T08:00:30.500000", None,
    ]  # fmt: skip
    # started 08:00:00Z, ended 10:00:00+01:00 = 09:00:00Z: 3600 s
    a = lab.analytics("b")
    assert a is not None and a["duration"]["total_seconds"] == 3600.0


# --- F15: GPU samples for a job that has no progress.json yet -----------------------------------

SMI = (
    "timestamp, utilization.gpu [%], memory.used [MiB]\n"
    "2026/11/02 08:00:00.000, 40 %, 1000 MiB\n"
    "2026/11/02 08:00:10.000, 80 %, 3000 MiB\n"
)


def test_samples_for_an_unknown_job_warn_at_import_and_count_once_it_exists(lab: Lab, tmp_path: Path) -> None:
    from runlytics.ingest import unknown_jobs
    from runlytics.ingest.formats.nvidia_smi import CsvImport

    log = tmp_path / "gpu.csv"
    log.write_text(SMI)
    summary = lab.ingest(csv_imports=[CsvImport(log, "later")])
    assert (summary.gpu_samples, summary.failed, summary.warnings) == (2, 0, 0)  # no file's warning
    assert summary.unknown_jobs == ["later"] and summary.as_dict()["unknown_jobs"] == ["later"]
    assert "'later'" in unknown_jobs.message("later")
    assert lab.analytics("later") is None
    # the job's progress.json arrives: the stored samples count (mean 60 %, 2000 MiB, peak 3000)
    lab.write_job("later", {"status": "running", "history": [{"step": 1, "loss": 1.0}]})
    summary = lab.ingest()
    assert summary.unknown_jobs == [] and "unknown_jobs" not in summary.as_dict()
    a = lab.analytics("later")
    assert a is not None
    resources = a["resource_utilization"]
    assert (resources["average_gpu_utilization"], resources["average_gpu_memory_mb"]) == (60.0, 2000.0)
    assert resources["peak_gpu_memory_mb"] == 3000.0


# --- F12 a: a job id holding '%' is decoded once, as an ASGI server decodes the path -----------


def test_a_percent_in_a_job_id_is_decoded_once(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import httpx

    from runlytics.api.app import create_app
    from runlytics.api.deps import TOKEN_ENV

    lab.write_job("a", {"job_id": "p%2F", "status": "completed", "history": [{"step": 1, "loss": 2.0}]})
    lab.write_job("b", {"job_id": "p/", "status": "completed", "history": [{"step": 1, "loss": 1.0}]})
    assert lab.ingest().ingested == 2
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    app = create_app(lab.warehouse())

    async def get(url: str) -> dict[str, Any]:
        # httpx's ASGI transport decodes the path once, as uvicorn does (TestClient decodes twice)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            response = await client.get(url)
            assert response.status_code == 200, response.text
            return response.json()

    percent = asyncio.run(get("/api/training/p%252F/analytics"))
    slash = asyncio.run(get("/api/training/p%2F/analytics"))
    assert (percent["job_id"], percent["losses"]["final_loss"]) == ("p%2F", 2.0)
    assert (slash["job_id"], slash["losses"]["final_loss"]) == ("p/", 1.0)
