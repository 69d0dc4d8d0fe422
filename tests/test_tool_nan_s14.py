"""Trainers' own logs, the values and facts they give a job: a NaN value is stored as NaN (not NULL)
from every tool's log, so that the non-finite loss counts and the ``nonfinite_loss`` insight see
it (insights.md); a Lightning CSV run's last write is its ``updated_at`` (its duration is known like
every other tool's run); a config read whole replaces the stored one (a rewritten ``hparams.yaml``
read incrementally gives the config a fresh read gives). Every test runs on both engines
(``ingest_engine``: PostgreSQL filled by ``runlytics ingest --db URL``)."""

from __future__ import annotations

import io
import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from runlytics.warehouse import metric_history

NAN, INF = math.nan, math.inf
T0 = 1_760_000_000.0  # 2025-10-09 08:53:20 UTC
# loss per step: NaN at 2 and 7, +inf at 3, -inf at 5; the last step's loss is NaN
LOSSES = [(1, 2.0), (2, NAN), (3, INF), (4, 1.0), (5, -INF), (6, 1.5), (7, NAN)]
JOBS = {"tensorboard": "tb", "lightning_csv": "csv", "mlflow": "mlruns/1/abc", "llamafactory": "lf"}


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def write(path: Path, content: str | bytes, mtime: float = T0 + 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


def events(points: list[tuple[float, int, dict[str, float]]]) -> bytes:
    """TFRecord bytes (TensorBoard's RecordWriter): a file_version record, then one event per point."""
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    writer.write(event_pb2.Event(wall_time=T0, file_version="brain.Event:2").SerializeToString())
    for wall, step, values in points:
        plain = [summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values.items()]
        summary = summary_pb2.Summary(value=plain)
        writer.write(event_pb2.Event(wall_time=wall, step=step, summary=summary).SerializeToString())
    return buffer.getvalue()


def text(value: float) -> str:
    """As Python writes the number (``nan``, ``inf``, ``-inf``, ``2.0``): Lightning's and MLflow's files."""
    return repr(value)


def write_runs(root: Path) -> None:
    """One run per tool, each logging LOSSES as its loss."""
    tb = [(T0 + s, s, {"train/loss": v}) for s, v in LOSSES]
    write(root / "tb" / "events.out.tfevents.1760000000.host.1.0", events(tb))
    write(root / "csv" / "metrics.csv", "step,train_loss\n" + "".join(f"{s},{text(v)}\n" for s, v in LOSSES))
    run = root / "mlruns" / "1" / "abc"
    write(root / "mlruns" / "1" / "meta.yaml", "experiment_id: '1'\nname: e\n")
    write(run / "meta.yaml", "run_id: abc\nexperiment_id: '1'\nstatus: 3\nstart_time: 1760000000000\n"
                             "end_time: 1760000010000\n")  # fmt: skip
    write(run / "metrics" / "loss", "".join(f"{int((T0 + s) * 1000)} {text(v)} {s}\n" for s, v in LOSSES))
    lines = [{"current_steps": s, "total_steps": 7, "loss": v, "elapsed_time": f"0:00:0{s}"} for s, v in LOSSES]
    write(root / "lf" / "trainer_log.jsonl", "".join(json.dumps(line) + "\n" for line in lines), T0 + 10)


def same(a: list[Any], b: list[Any]) -> bool:
    """Equal lists of floats, NaN equal to NaN (and not to None: a NULL)."""

    def key(v: Any) -> Any:
        return "NaN" if isinstance(v, float) and math.isnan(v) else v

    return [key(v) for v in a] == [key(v) for v in b]


# --- T1: NaN values of every tool's log are stored as NaN -----------------------------------------


def test_nan_values_of_every_tool_log_are_stored_as_nan_and_counted(lab: Lab) -> None:
    """DuckDB's scan of the staged numpy arrays read a NaN value as NULL: the four tools' NaN losses
    were stored as NULL, left out of job_losses' non-finite count (2 where 4) and of the
    nonfinite_loss insight (its first step 3 where 2, its count 2 where 4), and the metrics list's
    last_value took the last non-NULL value (1.5) where the last step's loss is NaN (api.md: null
    when not finite). A time that is NaN is still no time (NULL)."""
    write_runs(lab.root)
    lab.ingest()
    for source, job in JOBS.items():
        stored = lab.query("SELECT step, value, source FROM metric_values WHERE job_id = $j ORDER BY step", {"j": job})
        assert [s for s, _, _ in stored] == [s for s, _ in LOSSES], job
        assert same([v for _, v, _ in stored], [v for _, v in LOSSES]), (job, stored)
        assert {src for _, _, src in stored} == {source}
        assert lab.query("SELECT nonfinite_losses FROM job_losses WHERE job_id = $j", {"j": job}) == [(4,)], job
        insight = "SELECT first_step, last_step, value FROM job_insights WHERE job_id = $j AND kind = 'nonfinite_loss'"
        assert lab.query(insight, {"j": job}) == [(2, 7, 4.0)], job
        with lab._reader() as con:
            metrics = metric_history.job_metrics(con, job)
        assert [(m["points"], m["first_step"], m["last_step"], m["last_value"]) for m in metrics] == [(7, 1, 7, None)]
        analytics = lab.analytics(job)
        assert analytics is not None
        assert "4 non-finite loss value(s) left out" in analytics["warnings"], job
        assert (analytics["losses"]["initial_loss"], analytics["losses"]["final_loss"]) == (2.0, 1.5)


def test_a_tensorboard_loss_that_went_nan_gives_the_critical_insight(lab: Lab) -> None:
    """The commonest failure: the loss goes NaN at step 3 and stays NaN. Stored as NULL, the job had
    no insight at all; now nonfinite_loss, critical, steps 3 to 4, two values."""
    points = [(T0 + s, s, {"train/loss": v}) for s, v in [(1, 2.0), (2, 1.5), (3, NAN), (4, NAN)]]
    write(lab.root / "run" / "events.out.tfevents.1760000000.host.1.0", events(points))
    lab.ingest()
    rows = lab.query("SELECT kind, severity, first_step, last_step, value FROM job_insights WHERE job_id = 'run'")
    assert ("nonfinite_loss", "critical", 3, 4, 2.0) in rows
    values = lab.query("SELECT value FROM metric_values WHERE job_id = 'run' ORDER BY step")
    assert same([v for (v,) in values], [2.0, 1.5, NAN, NAN])


def test_a_nan_wall_time_is_still_no_time_while_a_nan_value_is_kept(lab: Lab) -> None:
    """The same staging reads a NaN time as none (NULL ts): only the value's NaN is kept."""
    points = [(T0 + 1, 1, {"train/loss": 2.0}), (NAN, 2, {"train/loss": NAN})]
    write(lab.root / "run" / "events.out.tfevents.1760000000.host.1.0", events(points))
    lab.ingest()
    rows = lab.query("SELECT step, ts, value FROM metric_values WHERE job_id = 'run' ORDER BY step")
    assert rows[0][:2] == (1, datetime.fromtimestamp(T0 + 1, UTC).replace(tzinfo=None)) and rows[0][2] == 2.0
    assert rows[1][:2] == (2, None) and math.isnan(rows[1][2])


def test_nan_read_incrementally_is_stored_as_nan(lab: Lab) -> None:
    """A Lightning CSV read in two pieces: the second run's NaN replaces nothing and is kept as NaN
    (the batch that compares with stored rows, not only a first insert)."""
    folder = lab.root / "lightning_logs" / "version_0"
    write(folder / "metrics.csv", "step,train_loss\n1,2.0\n2,nan\n", time.time() - 3600)
    lab.ingest()
    write(folder / "metrics.csv", "step,train_loss\n1,2.0\n2,nan\n3,nan\n2,1.0\n", time.time() - 1800)
    lab.ingest()
    rows = lab.query("SELECT step, value FROM metric_values WHERE job_id = 'lightning_logs/version_0' ORDER BY step")
    assert [s for s, _ in rows] == [1, 2, 3]
    assert same([v for _, v in rows], [2.0, 1.0, NAN])  # step 2 logged again: its later value


# --- T4: a Lightning CSV run's last write is its updated_at: a duration -----------------------------


def test_a_lightning_csv_run_has_a_duration_from_its_files_times(lab: Lab) -> None:
    """started_at (the folder's time) and ended_at (metrics.csv's last write) were stored, but the
    status stays unknown, so analytics.md's end (ended_at for a terminal status; else the last row's
    timestamp or updated_at) was unknown: total_seconds null for every Lightning CSV run, with the
    warning "end unknown: no ended_at, ...". The last write is the run's updated_at now: end known,
    total 3600 s, no warning."""
    folder = lab.root / "lightning_logs" / "version_0"
    write(folder / "metrics.csv", "epoch,step,train_loss\n0,10,2.0\n0,20,1.5\n", T0 + 3600)
    os.utime(folder, (T0, T0))
    lab.ingest()
    job = "lightning_logs/version_0"
    row = lab.query("SELECT status, started_at, ended_at, updated_at FROM jobs WHERE job_id = $j", {"j": job})
    at = [datetime.fromtimestamp(t, UTC).replace(tzinfo=None) for t in (T0, T0 + 3600)]
    assert row == [("unknown", at[0], at[1], at[1])]
    analytics = lab.analytics(job)
    assert analytics is not None
    d = analytics["duration"]
    assert (d["start_time"], d["end_time"], d["total_seconds"]) == (
        "2025-10-09T08:53:20Z",
        "2025-10-09T09:53:20Z",
        3600.0,
    )
    assert not [w for w in analytics["warnings"] if w.startswith("end unknown")]


# --- N5: a config read whole replaces the stored one ------------------------------------------------


def test_a_rewritten_hparams_yaml_gives_the_config_a_fresh_read_gives(lab: Lab, tmp_path: Path) -> None:
    """The stored config was JSON-merge-patched with each read: a key set to null vanished, a key
    the rewritten hparams.yaml no longer has stayed. The config is the file read whole, as a fresh
    read of the final files gives it."""
    folder = lab.root / "lightning_logs" / "version_0"
    old = time.time() - 7200
    write(folder / "hparams.yaml", "lr: 0.001\nscheduler: null\nold_key: 1\nopt: {momentum: 0.9, eps: 1}\n", old)
    write(folder / "metrics.csv", "epoch,step,train_loss\n0,9,1.0\n", old)
    lab.ingest()
    write(folder / "hparams.yaml", "lr: 0.001\nscheduler: null\nnew_key: 2\nopt: {momentum: null}\n", old + 60)
    write(folder / "metrics.csv", "epoch,step,train_loss\n0,9,1.0\n0,19,0.5\n", old + 60)
    lab.ingest()
    want = {"lr": 0.001, "scheduler": None, "new_key": 2, "opt": {"momentum": None}}
    (config,) = lab.query("SELECT config FROM jobs WHERE job_id = 'lightning_logs/version_0'")[0]
    assert (json.loads(config) if isinstance(config, str) else config) == want
    (tmp_path / "fresh").mkdir()
    fresh = Lab(tmp_path / "fresh", lab.engine)
    fresh.ingest(lab.root)
    (config,) = fresh.query("SELECT config FROM jobs WHERE job_id = 'lightning_logs/version_0'")[0]
    assert (json.loads(config) if isinstance(config, str) else config) == want


def test_an_mlflow_param_deleted_is_gone_from_the_config(lab: Lab) -> None:
    """An MLflow run's params are read whole whenever a file of the run changed: a param file
    removed (a rerun into the same run folder) is no longer in the config."""
    run = lab.root / "mlruns" / "1" / "abc"
    old = time.time() - 7200
    write(lab.root / "mlruns" / "1" / "meta.yaml", "experiment_id: '1'\nname: e\n", old)
    write(run / "meta.yaml", "run_id: abc\nexperiment_id: '1'\nstatus: 1\nstart_time: 1760000000000\n", old)
    write(run / "params" / "lr", "0.1", old)
    write(run / "params" / "dropped", "x", old)
    write(run / "metrics" / "loss", f"{int(T0 * 1000)} 2.0 1\n", old)
    lab.ingest()
    (run / "params" / "dropped").unlink()
    write(run / "metrics" / "loss", f"{int(T0 * 1000)} 2.0 1\n{int(T0 * 1000) + 1000} 1.0 2\n", old + 60)
    lab.ingest()
    (config,) = lab.query("SELECT config FROM jobs WHERE job_id = 'mlruns/1/abc'")[0]
    params = (json.loads(config) if isinstance(config, str) else config)["params"]
    assert params == {"lr": "0.1"}


# --- T2: hparams.yaml's known keys are the job's settings ---------------------------------------------


def test_hparams_yaml_known_keys_are_the_jobs_settings(lab: Lab) -> None:
    """hparams.yaml is the job's config (docs/ingest.md), and analytics.md counts a row's samples as
    batch_size x its steps "when the config has batch_size": only model_name was taken from it, so
    total_samples and throughput were null, with a warning that the config has no batch_size, and
    checkpoint_frequency_steps ignored save_steps. Its batch_size, save_steps,
    target_samples_per_second, gpu_count and max_steps are read as progress.json's config's are;
    a rewritten hparams.yaml without them drops them (the config is read whole)."""
    folder = lab.root / "lightning_logs" / "version_0"
    old = time.time() - 7200
    hparams = "batch_size: 16\nlr: 0.001\nmodel_name: tiny\nsave_steps: 10\ntarget_samples_per_second: 100\n"
    write(folder / "hparams.yaml", hparams + "gpu_count: 2\nmax_steps: 40\n", old)
    write(folder / "metrics.csv", "epoch,step,train_loss\n0,10,2.0\n0,20,1.5\n0,30,1.0\n", old)
    tb = lab.root / "tb_logs" / "version_0"
    tb_points = [(T0 + s, s, {"train_loss": 3 - s / 10}) for s in (10, 20, 30)]
    write(tb / "events.out.tfevents.1760000000.host.1.0", events(tb_points))
    write(tb / "hparams.yaml", "batch_size: 16\nsave_steps: -1\ngpu_count: two\n")
    lab.ingest()
    settings = "SELECT job_id, model_name, batch_size, save_steps, target_samples_per_second, gpu_count, total_steps"
    assert lab.query(settings + " FROM jobs ORDER BY job_id") == [
        ("lightning_logs/version_0", "tiny", 16.0, 10, 100.0, 2, 40),
        ("tb_logs/version_0", None, 16.0, None, None, None, None),  # -1 and 'two' are no setting
    ]
    a = lab.analytics("lightning_logs/version_0")
    assert a is not None
    assert a["performance"]["total_samples"] == 480.0  # 16 x (10 + 10 + 10)
    assert a["checkpoints"]["checkpoint_frequency_steps"] == 10
    assert not [w for w in a["warnings"] if "batch_size" in w]
    t = lab.analytics("tb_logs/version_0")
    assert t is not None
    # rows 20 and 30 are timed (10 s each): 320 samples in 20 s; the first row's 160 untimed
    assert (t["performance"]["total_samples"], t["performance"]["average_samples_per_second"]) == (480.0, 16.0)
    write(folder / "hparams.yaml", "lr: 0.001\nmodel_name: tiny\n", old + 60)
    lab.ingest()
    assert lab.query(settings + " FROM jobs WHERE job_id = 'lightning_logs/version_0'") == [
        ("lightning_logs/version_0", "tiny", None, None, None, None, 40)  # total_steps: the highest seen stays
    ]


def test_hparams_yaml_settings_that_are_dropped_are_said(lab: Lab) -> None:
    """A setting of hparams.yaml that is no number, out of range or not whole is dropped as
    progress.json's config's is, and said in the same words (it was dropped silently): on the
    hparams.yaml a CSV logger's run reads, on the event file a TensorBoard run reads (the
    hparams.yaml beside it is no file of the run's ledger)."""
    folder = lab.root / "lightning_logs" / "version_0"
    old = time.time() - 7200
    write(folder / "hparams.yaml", "batch_size: auto\nsave_steps: -1\ngpu_count: 2.5\nmax_steps: 40\nlr: x\n", old)
    write(folder / "metrics.csv", "epoch,step,train_loss\n0,10,2.0\n", old)
    tb = lab.root / "tb_logs" / "version_0"
    event_file = write(tb / "events.out.tfevents.1760000000.host.1.0", events([(T0 + 10, 10, {"train_loss": 2.0})]))
    write(tb / "hparams.yaml", "batch_size: 16\ngpu_count: two\n")
    summary = lab.ingest()
    said = sorted((p, m) for p, m in summary.listed_warnings if "dropped" in m)
    assert said == [
        (str(folder / "hparams.yaml"), 'batch_size "auto" is not a number, dropped'),
        (str(folder / "hparams.yaml"), "gpu_count 2.5 is not a whole number, dropped"),
        (str(folder / "hparams.yaml"), "save_steps -1 is out of range, dropped"),
        (str(event_file), 'hparams.yaml: gpu_count "two" is not a number, dropped'),
    ]
    settings = "SELECT job_id, batch_size, save_steps, gpu_count, total_steps FROM jobs ORDER BY job_id"
    assert lab.query(settings) == [
        ("lightning_logs/version_0", None, None, None, 40),
        ("tb_logs/version_0", 16.0, None, None, None),
    ]


# --- T6: an MLflow run deleted in MLflow --------------------------------------------------------------


def test_an_mlflow_run_deleted_in_mlflow_is_kept_with_a_warning(lab: Lab) -> None:
    """A run whose meta.yaml says lifecycle_stage: deleted (deleted in MLflow's UI; the file store keeps
    it until `mlflow gc`) was a job like any other, silently. It is kept (decisions.md), and the
    ingest says it was deleted; a live run gets no such warning."""
    experiment = lab.root / "mlruns" / "1"
    write(experiment / "meta.yaml", "experiment_id: '1'\nname: e\nlifecycle_stage: active\n")
    for run, stage in (("live", "active"), ("gone", "deleted")):
        meta = f"run_id: {run}\nexperiment_id: '1'\nlifecycle_stage: {stage}\nstatus: 3\nstart_time: 1760000000000\n"
        write(experiment / run / "meta.yaml", meta + "end_time: 1760000010000\n")
        write(experiment / run / "metrics" / "loss", "1760000001000 1.0 1\n")
    summary = lab.ingest()
    assert sorted(j for (j,) in lab.query("SELECT job_id FROM jobs")) == ["mlruns/1/gone", "mlruns/1/live"]
    deleted = [(Path(p).parent.name, m) for p, m in summary.listed_warnings if "lifecycle_stage deleted" in m]
    assert deleted == [
        (
            "gone",
            "meta.yaml: lifecycle_stage deleted (the run was deleted in MLflow; its files stay until `mlflow gc`):"
            " kept as a job",
        )  # fmt: skip
    ]


# --- T3 (the tool-log half): an HF output folder's trainer-state job takes its tool logs' start -------


def hf_state(out: Path, step: int, mtime: float) -> None:
    steps = range(100, step + 1, 100)
    history = [{"step": s, "loss": 3.0 - s / 100, "learning_rate": 1e-4, "epoch": s / 300} for s in steps]
    state = {"global_step": step, "max_steps": 300, "save_steps": 100, "logging_steps": 100, "log_history": history}
    write(out / f"checkpoint-{step}" / "trainer_state.json", json.dumps(state), mtime)


def test_a_trainer_state_job_keeps_the_start_its_tensorboard_run_gives(lab: Lab, tmp_path: Path) -> None:
    """An HF output folder: runs/<date>_<host>/ (the Trainer's TensorBoard run, first record at T0,
    train/loss at 100, 200, 300) and checkpoint-N/trainer_state.json. A trainer state carries no
    time: the job had no start, no total and no overhead once the first checkpoint appeared (the
    TensorBoard run alone, a job of its own before, had them). The job takes its tool logs' start,
    read at once or in pieces (the run first, then checkpoint-100, then checkpoint-200); a
    progress.json job keeps its own (none here)."""
    old = time.time() - 7200
    out = lab.root / "hfjob"
    event = out / "runs" / "Jan01_00-00-00_host" / "events.out.tfevents.1760000000.host.1.0"
    points = [(T0 + s, s, {"train/loss": 3.0 - s / 100}) for s in (100, 200, 300)]
    write(event, events(points), old)
    lab.ingest()
    assert lab.query("SELECT job_id, started_at FROM jobs") == [
        ("hfjob/runs/Jan01_00-00-00_host", datetime.fromtimestamp(T0, UTC).replace(tzinfo=None))
    ]
    hf_state(out, 100, old + 10)
    lab.ingest()
    hf_state(out, 200, old + 20)
    lab.ingest()
    start = datetime.fromtimestamp(T0, UTC).replace(tzinfo=None)
    assert lab.query("SELECT job_id, started_at FROM jobs") == [("hfjob", start)]
    a = lab.analytics("hfjob")
    assert a is not None
    d = a["duration"]
    assert (d["start_time"], d["total_seconds"], d["training_seconds"], d["overhead_seconds"]) == (
        "2025-10-09T08:53:20Z", 300.0, 200.0, 100.0
    )  # fmt: skip
    assert not [w for w in a["warnings"] if w.startswith("start unknown")]
    (tmp_path / "fresh").mkdir()
    fresh = Lab(tmp_path / "fresh", lab.engine)
    fresh.ingest(lab.root)
    assert fresh.query("SELECT job_id, started_at FROM jobs") == [("hfjob", start)]
    # a progress.json job's row is never changed by its logs
    write(lab.root / "pj" / "progress.json", json.dumps({"job_id": "pj", "status": "running", "history": []}), old)
    write(lab.root / "pj" / "runs" / "x" / "events.out.tfevents.1760000000.host.1.0", events(points), old)
    lab.ingest()
    assert lab.query("SELECT started_at FROM jobs WHERE job_id = 'pj'") == [(None,)]
