"""Trainer-state jobs' figures follow analytics.md literally (revision 0036), and bad job-level
fields of progress.json are dropped with a warning.

A Hugging Face trainer state's log_history has no timestamps, iteration times, samples or
samples_per_second: the spec's durations, samples and throughput of a job known only from
trainer states are null, each with a warning, never the trainer's summary (train_runtime,
train_samples_per_second) or its per-device train_batch_size taken as samples per iteration.
Those stay in trainer_runs (and job_settings) as the trainer's own fields. On both engines
(``module_ingest_engine``, ``ingest_engine``: docs/testing.md, "Both engines")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEEP_ONLY, REALDATA, Engine, Lab
from tests.migration_steps import alembic

HF = REALDATA / "hf_trainer_state"
JOBS = sorted(p.name for p in HF.iterdir() if p.is_dir() and p.name != "lfs-pointer")
# the step-row fields analytics.md times and counts a row by (inputs.md section 1)
ROW_FIGURES = ("timestamp", "iteration_time", "samples", "samples_per_second")
DURATION = ("start_time", "end_time", "total_seconds", "training_seconds", "overhead_seconds")
THROUGHPUT = ("total_samples", "average_samples_per_second", "peak_samples_per_second", "average_iteration_time")


def _log_entries(folder: Path) -> list[dict[str, Any]]:
    return [e for p in sorted(folder.rglob("trainer_state.json")) for e in json.loads(p.read_text())["log_history"]]


def _summary(folder: Path) -> dict[str, Any]:
    """The trainer's own fields as its states record them: train_batch_size of the newest state (the
    highest global_step), the final summary entry of any state (only the last one writes it)."""
    states = [json.loads(p.read_text()) for p in folder.rglob("trainer_state.json")]
    newest = max(s["global_step"] for s in states)
    batches = {s.get("train_batch_size") for s in states if s["global_step"] == newest}
    summaries = [e for s in states for e in s["log_history"] if "train_runtime" in e]
    assert len(batches) == 1 and len({json.dumps(e, sort_keys=True) for e in summaries}) <= 1
    return {"train_batch_size": batches.pop(), **(summaries[0] if summaries else {})}


@pytest.fixture(scope="module")
def realdata(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("hf"), module_ingest_engine)
    shutil.copytree(HF, lab.root, dirs_exist_ok=True)
    assert lab.ingest().failed == 1  # the Git LFS pointer
    return lab


@pytest.mark.parametrize("job", JOBS)
def test_a_trainer_state_job_has_no_duration_samples_or_throughput(realdata: Lab, job: str) -> None:
    # what the files hold: no entry of any state has a figure that times or counts a row
    assert not any(key in entry for entry in _log_entries(HF / job) for key in ROW_FIGURES)
    analytics = realdata.analytics(job)
    assert analytics is not None
    assert {k: analytics["duration"][k] for k in DURATION} == dict.fromkeys(DURATION)
    assert {k: analytics["performance"][k] for k in THROUGHPUT} == dict.fromkeys(THROUGHPUT)
    assert analytics["efficiency"]["throughput_score"] is None
    warnings = analytics["warnings"]
    for why in ("start unknown", "end unknown", "training time partly unknown", "total_samples is null",
                "average_samples_per_second is null", "peak_samples_per_second is null"):  # fmt: skip
        assert any(w.startswith(why) for w in warnings), (why, warnings)
    assert not any("durations from the trainer" in w for w in warnings)
    summary = _summary(HF / job)
    has_summary = "train_runtime" in summary
    assert any(w.startswith("the trainer's train_runtime and train_samples_per_second") for w in warnings) == (
        has_summary
    )
    batch = summary["train_batch_size"]
    expected = f"total_samples does not use the trainer's train_batch_size ({batch}): a per-device batch, " \
        "not the config's batch_size (samples per iteration)"  # fmt: skip
    assert (expected in warnings) == (batch is not None)
    # the trainer's own fields stay where they were, as it recorded them; the job's batch_size is the config's
    (row,) = realdata.query(
        "SELECT r.train_batch_size, r.train_runtime, r.train_samples_per_second, j.batch_size, s.batch_size,"
        " s.train_runtime FROM trainer_runs r JOIN jobs j ON j.job_id = r.job_id"
        " JOIN job_settings s ON s.job_id = r.job_id WHERE r.job_id = $job",
        {"job": job},
    )
    assert row == (
        batch,
        summary.get("train_runtime"),
        summary.get("train_samples_per_second"),
        None,
        None,
        summary.get("train_runtime"),
    )


def test_mistral_keeps_its_trainer_figures_out_of_the_spec_figures(realdata: Lab) -> None:
    # by hand from mistral-translator/trainer_state.json: global_step 8660, train_batch_size 1,
    # train_runtime 20387.7129 s, train_samples_per_second 6.796 (16 per step: gradient
    # accumulation), 866 distinct logged steps, no timestamps: before revision 0036 total_samples was
    # 1 x 8660 = 8660 while its throughput (6.796) x its training seconds said ~138,555
    job = realdata.analytics("mistral-translator")
    assert job is not None
    assert job["performance"]["total_iterations"] == 8660
    assert (job["performance"]["total_samples"], job["duration"]["training_seconds"]) == (None, None)
    assert job["duration"]["overhead_seconds"] is None  # never 0 in disguise
    assert "training time partly unknown: 866 of 866 step rows have no seconds (neither an iteration_time nor" \
        " timestamps on them and on the row before, not going backwards)" in job["warnings"]  # fmt: skip
    assert realdata.query(
        "SELECT train_batch_size, train_runtime, train_samples_per_second FROM trainer_runs"
        " WHERE job_id = 'mistral-translator'"
    ) == [(1, 20387.7129, 6.796)]


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def test_a_total_without_start_or_end_is_null_and_so_is_the_overhead(lab: Lab) -> None:
    # rows timed by iteration_time, no timestamps, started_at, ended_at or updated_at: training
    # 10 x 1.5 + 10 x 1.5 = 30 s; start and end unknown, so total and overhead null, not 30 and 0
    history = [{"step": s, "iteration_time": 1.5, "samples": 40, "loss": 1.0} for s in (10, 20)]
    lab.write_job("t", {"job_id": "t", "status": "completed", "history": history})
    assert lab.ingest().failed == 0
    job = lab.analytics("t")
    assert job is not None
    assert job["duration"] == {"start_time": None, "end_time": None, "total_seconds": None,
                               "training_seconds": 30.0, "overhead_seconds": None}  # fmt: skip
    assert job["performance"]["average_samples_per_second"] == pytest.approx(80 / 30)
    assert (
        "start unknown: no started_at, and the first step row has no timestamp, or no seconds to go back from it"
        in job["warnings"]
    )
    end_unknown = "end unknown: no ended_at (of a finished job) or updated_at, and the last step row has no timestamp"
    assert end_unknown in job["warnings"]


def test_a_trainer_state_beside_timed_rows_changes_no_figure(lab: Lab) -> None:
    # a progress.json job (batch_size 4 per iteration, timestamps 10 s apart, 10 iterations a row)
    # with a Trainer checkpoint beside it: its summary and per-device batch change nothing
    history = [{"step": s, "timestamp": 1000 + s, "loss": 2.0 - s / 100} for s in (10, 20, 30)]
    lab.write_job("p", {"job_id": "p", "status": "completed", "config": {"batch_size": 4}, "history": history})
    state = {"global_step": 30, "max_steps": 30, "train_batch_size": 1,
             "log_history": [{"step": 30, "loss": 1.7},
                             {"step": 30, "train_runtime": 999.0, "train_samples_per_second": 0.5}]}  # fmt: skip
    (lab.root / "p" / "checkpoint-30").mkdir()
    (lab.root / "p" / "checkpoint-30" / "trainer_state.json").write_text(json.dumps(state))
    assert lab.ingest().failed == 0
    job = lab.analytics("p")
    assert job is not None
    # rows 20 and 30 are timed (10 s each; row 10 has no earlier timestamp): 20 s, 80 samples of
    # 4 x 10 in those rows; 120 samples in all
    assert job["duration"]["training_seconds"] == 20.0
    assert job["performance"]["total_samples"] == 120.0
    assert job["performance"]["average_samples_per_second"] == 4.0
    assert not any("trainer's train_" in w for w in job["warnings"])


@DEEP_ONLY  # every revision's down and up, without data, in every run: test_migrations.py
def test_revision_0036_clears_and_restores_a_trainer_jobs_batch_size(lab: Lab) -> None:
    shutil.copytree(HF / "distilbert-imdb-lora", lab.root / "d")  # train_batch_size 16, global_step 375
    assert lab.ingest().failed == 0
    figures = "SELECT batch_size, total_samples FROM jobs JOIN job_results USING (job_id) WHERE job_id = 'd'"
    assert lab.query(figures) == [(None, None)]
    alembic(lab.warehouse(), "downgrade", "0035")
    assert lab.query(figures) == [(16.0, 16.0 * 375)]  # the earlier fallback: 16 x 375 steps
    alembic(lab.warehouse(), "upgrade", "0036")
    assert lab.query(figures) == [(None, None)]
    assert lab.query("SELECT version_num FROM alembic_version") == [("0036",)]


def test_bad_job_level_fields_are_dropped_with_a_warning(lab: Lab) -> None:
    # audit F12 j: each of these was dropped without a word
    lab.write_job("c", {"job_id": "c", "status": "completed", "max_steps": -1,
                        "config": {"gpu_count": "2", "model_name": 123, "max_steps": "x", "batch_size": -4},
                        "history": [{"step": 1}]})  # fmt: skip
    config = {"gpu_count": 2, "model_name": "m", "max_steps": 9}
    lab.write_job("ok", {"job_id": "ok", "status": "completed", "max_steps": 7, "config": config,
                         "history": [{"step": 1}]})  # fmt: skip
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (2, 0)
    [(warnings,)] = lab.query("SELECT warnings FROM ingest_files WHERE job_id = 'c'")
    assert json.loads(warnings) == [
        'config.batch_size -4 is out of range, dropped; config.gpu_count "2" is not a number, dropped; '
        'config.max_steps "x" is not a number, dropped; config.model_name 123 is not a string, dropped; '
        "max_steps -1 is out of range, dropped"
    ]
    rows = lab.query("SELECT job_id, gpu_count, model_name, total_steps FROM jobs ORDER BY job_id")
    assert rows == [("c", None, None, None), ("ok", 2, "m", 7)]  # total_steps: max_steps before config's
    [(clean,)] = lab.query("SELECT warning_count FROM ingest_files WHERE job_id = 'ok'")
    assert clean == 0
