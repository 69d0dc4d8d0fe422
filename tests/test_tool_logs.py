"""Trainers' own logs, the shared framework and TensorBoard event files (issue 16).

Every real event file is ingested and checked against TensorBoard's own ``EventAccumulator``
reading the same folder (the independent reader): each scalar's points, steps and values. Event
files written here use TensorBoard's own writers (``EventFileWriter``, ``RecordWriter``).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from runlytics.ingest import quick
from runlytics.ingest.discover import TENSORBOARD, discover
from runlytics.ingest.formats import tensorboard, tool_log
from tests.conftest import DUCKDB_ONLY_INGEST, REALDATA, Engine, Lab

TFEVENTS = REALDATA / "tool_logs2" / "tfevents"
LFS_POINTER = next((TFEVENTS / "hf-lfs-pointer").rglob("events.out.tfevents.*"))
Expected = dict[tuple[str, int], float]
# every stored point, in an order both engines give
VALUES = "SELECT job_id, name, step, ts, value, source FROM metric_values ORDER BY job_id, name, step, source, ts"


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    """A lab ingesting into its file, or publishing to PostgreSQL (``ingest --db``)."""
    return Lab(tmp_path, ingest_engine)


# --- the independent reader: TensorBoard's EventAccumulator -------------------------------------


def accumulated(folder: Path) -> Expected:
    """(tag, step) -> the last value written, as TensorBoard's EventAccumulator reads the folder
    (scalars, and 0-d tensors of the scalars plugin), keeping every event (no purge)."""
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=False)
    ea.Reload()
    out: Expected = {}
    for tag in ea.Tags()["scalars"]:
        for e in ea.Scalars(tag):
            out[(tag, e.step)] = e.value
    for tag in ea.Tags()["tensors"]:
        if ea.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        for e in ea.Tensors(tag):
            out[(tag, e.step)] = float(tensor_util.make_ndarray(e.tensor_proto).item())
    return out


def stored(lab: Lab, job_id: str) -> Expected:
    rows = lab.query("SELECT name, step, value FROM metric_points WHERE job_id = $job", {"job": job_id})
    return {(name, step): value for name, step, value in rows}


def same(a: Expected, b: Expected) -> bool:
    """Equal keys and values (float32 values widened the same way; NaN equals NaN)."""
    if set(a) != set(b):
        return False
    return all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


# --- writing event files with TensorBoard's own writers -----------------------------------------


def scalar_event(tag: str, step: int, value: float, wall: float = 1_700_000_000.0) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    return event_pb2.Event(wall_time=wall + step, step=step, summary=summary)


def tensor_event(tag: str, step: int, value: float, *, plugin: str | None) -> event_pb2.Event:
    """A TF 2 ``tf.summary.scalar`` value: a 0-d float tensor, the plugin named in the first only."""
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                    float_val=[value])  # fmt: skip
    v = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if plugin is not None:
        v.metadata.plugin_data.plugin_name = plugin
    return event_pb2.Event(wall_time=1_700_000_000.0 + step, step=step, summary=summary_pb2.Summary(value=[v]))


def records(*events: event_pb2.Event) -> bytes:
    """The TFRecord bytes of these events, framed by TensorBoard's RecordWriter."""
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for event in events:
        writer.write(event.SerializeToString())
    return buffer.getvalue()


def header() -> bytes:
    return records(event_pb2.Event(wall_time=1_700_000_000.0, file_version="brain.Event:2"))


def losses(tag: str, steps: range, scale: float = 1.0) -> list[event_pb2.Event]:
    return [scalar_event(tag, s, scale / (1 + s)) for s in steps]


# --- real files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> tuple[Lab, Any]:
    lab = Lab(tmp_path_factory.mktemp("real"), module_ingest_engine)
    summary = lab.ingest(TFEVENTS)
    return lab, summary


def event_folders() -> list[Path]:
    folders = sorted({p.parent for p in TFEVENTS.rglob("events.out.tfevents.*")} - {LFS_POINTER.parent})
    assert len(folders) == 26
    return folders


@pytest.mark.parametrize("folder", event_folders(), ids=lambda p: p.relative_to(TFEVENTS).as_posix())
def test_every_scalar_of_every_real_event_file_is_in_metric_points(real: tuple[Lab, Any], folder: Path) -> None:
    lab, _ = real
    job_id = folder.relative_to(TFEVENTS).as_posix()
    assert same(stored(lab, job_id), accumulated(folder))


def test_real_event_files_counts_as_the_sources_list_them(real: tuple[Lab, Any]) -> None:
    lab, summary = real
    counts = dict(
        lab.query("SELECT job_id || ' ' || name, count(*) FROM metric_points GROUP BY 1"),
    )
    run0 = "hf-trainer-5-runs/runs/run0 "
    # train/epoch: 25 points on 12 distinct steps (logged with the train and the eval entry)
    assert counts[run0 + "train/epoch"] == 12
    assert counts[run0 + "eval/accuracy"] == 12 and counts[run0 + "train/total_flos"] == 1
    assert counts["lightning-two-writers/lightning_logs/version_0 train_loss_epoch"] == 100
    validation = "keras-logs-fit/logs/fit/20220104-193303/validation "
    assert counts[validation + "evaluation_loss_vs_iterations"] == 79
    assert counts[validation + "epoch_accuracy"] == 79
    # TF 2 tensors of the scalars plugin, two files of one run (steps 10000 and 20000)
    assert counts["tf2-objdet-eval/my_ssd_mobnet/eval DetectionBoxes_Precision/mAP (large)"] == 2
    assert lab.query("SELECT value FROM metric_points WHERE name = 'DetectionBoxes_Precision/mAP (large)'") == [
        (-1.0,),
        (-1.0,),
    ]
    # aborted Keras runs (a graph, no scalars) and the profiler's header-only file give no points
    assert not any(k.startswith("keras-logs-fit/logs/fit/20220104-160116") for k in counts)
    assert summary.warnings == 0
    # the analytics see them: HF run4 learned (1.29 -> 0.24), the Lightning run's valid_loss is eval loss
    run4 = lab.analytics("hf-trainer-5-runs/runs/run4")
    assert run4 is not None
    assert run4["losses"]["initial_loss"] == pytest.approx(1.2893, abs=1e-4)
    assert run4["losses"]["final_loss"] == pytest.approx(0.2362, abs=1e-4)
    assert run4["performance"]["total_iterations"] == 1200
    assert lab.query(
        "SELECT eval_loss FROM step_facts WHERE job_id = 'lightning-two-writers/lightning_logs/version_0' "
        "AND eval_loss IS NOT NULL"
    ) == stored_values(lab, "lightning-two-writers/lightning_logs/version_0", "valid_loss")


def stored_values(lab: Lab, job_id: str, name: str) -> list[tuple[float]]:
    return lab.query(
        "SELECT value FROM metric_points WHERE job_id = $job AND name = $name ORDER BY step",
        {"job": job_id, "name": name},
    )


def test_a_git_lfs_pointer_fails_with_a_reason_naming_it(lab: Lab) -> None:
    summary = lab.ingest(TFEVENTS / "hf-lfs-pointer")
    assert summary.failed == 1
    (problem,) = summary.problems
    assert problem["path"] == str(LFS_POINTER)
    assert "Git LFS pointer" in problem["reason"]
    assert lab.query("SELECT count(*) FROM metric_values") == [(0,)]


# --- discovery ----------------------------------------------------------------------------------


def test_discovery_job_ids_and_files() -> None:
    jobs = {j.tool_job_id: j for j in discover([REALDATA / "tool_logs2"])}
    keras = "tfevents/keras-logs-fit/logs/fit/20220104-193303/"
    # Keras: train/ and validation/ are two runs (the folder holding the event files)
    train, validation = jobs[keras + "train"], jobs[keras + "validation"]
    assert [p.name for p in train.tool_files[TENSORBOARD]] == [
        "events.out.tfevents.1641342783.pedram-Z97M-DS3H.13409.625.v2"
    ]  # not the .profile-empty file, nothing from plugins/profile/
    assert len(validation.tool_files[TENSORBOARD]) == 1
    assert len(jobs["tfevents/tf2-objdet-eval/my_ssd_mobnet/eval"].tool_files[TENSORBOARD]) == 2
    version_12 = jobs["lightning_csv/slm-resumed-and-killed/lightning_logs/version_12"]
    assert [p.name for p in version_12.tool_files["lightning_csv"]] == ["metrics.csv", "hparams.yaml"]
    mlflow = [k for k in jobs if k and k.startswith("mlflow/")]
    assert len(mlflow) == 11 and all(k.count("/") == 5 for k in mlflow)
    assert "llamafactory/qwen25-7b-eval-lines" in jobs
    assert not any(".ipynb_checkpoints" in str(p) for j in jobs.values() for p in j.tool_paths())


def test_event_files_under_runs_belong_to_the_hf_job_folder(lab: Lab) -> None:
    job = lab.root / "hf-job"
    (job / "checkpoint-20").mkdir(parents=True)
    (job / "checkpoint-20" / "trainer_state.json").write_text('{"global_step": 20, "log_history": []}')
    (job / "runs" / "Dec04_10-00-00_host").mkdir(parents=True)
    (job / "runs" / "Dec04_10-00-00_host" / "events.out.tfevents.1.host.1.0").write_bytes(header())
    (lab.root / "other" / "runs" / "a").mkdir(parents=True)
    (lab.root / "other" / "runs" / "a" / "events.out.tfevents.2.host").write_bytes(header())
    jobs = discover([lab.root])
    assert [(j.path.name, j.tool_job_id, len(j.tool_files[TENSORBOARD])) for j in jobs] == [
        ("hf-job", None, 1),
        ("a", "other/runs/a", 1),
    ]
    # a root that is itself the run folder: the folder's name
    assert [j.tool_job_id for j in discover([lab.root / "other" / "runs" / "a"])] == ["a"]


# --- incremental, idempotent, last written wins ------------------------------------------------------


def test_appends_are_read_from_the_offset_and_a_cut_record_waits(lab: Lab) -> None:
    run = lab.root / "run"
    run.mkdir()
    writer = EventFileWriter(str(run))
    for e in losses("loss", range(1, 11)):
        writer.add_event(e)
    writer.flush()
    (path,) = run.iterdir()
    assert lab.ingest().ingested == 1
    assert len(stored(lab, "run")) == 10
    for e in losses("loss", range(11, 21)):
        writer.add_event(e)
    writer.flush()
    size_before = path.stat().st_size
    summary = lab.ingest()
    assert summary.ingested == 1 and summary.points == 10  # only the new records were read
    offset = "SELECT read_offset FROM ingest_files WHERE path = $path"
    assert lab.query(offset, {"path": lab.ledger_path(path)}) == [(size_before,)]
    # a record cut mid-write: nothing of it yet, no warning; whole once the writer ends it
    record = records(scalar_event("loss", 21, 0.5))
    with path.open("ab") as f:
        f.write(record[:17])
    summary = lab.ingest()
    assert summary.warnings == 0 and len(stored(lab, "run")) == 20
    with path.open("ab") as f:
        f.write(record[17:])
    lab.ingest()
    assert stored(lab, "run")[("loss", 21)] == 0.5
    assert same(stored(lab, "run"), accumulated(run))
    writer.close()
    # nothing new: nothing changes
    before = lab.facts(), lab.query(VALUES)
    summary = lab.ingest()
    assert summary.ingested == 0 and summary.points == 0
    assert (lab.facts(), lab.query(VALUES)) == before


def test_a_file_that_shrank_or_was_replaced_is_read_whole(lab: Lab) -> None:
    run = lab.root / "run"
    run.mkdir()
    path = run / "events.out.tfevents.1.host"
    path.write_bytes(header() + records(*losses("loss", range(1, 6))))
    lab.ingest()
    # replaced by a longer file whose first bytes differ: read from its start, not from the old offset
    path.write_bytes(header() + records(*losses("loss", range(1, 9), scale=2.0)))
    lab.ingest()
    assert stored(lab, "run") == {("loss", s): pytest.approx(2.0 / (1 + s)) for s in range(1, 9)}
    # shrank (cut, emptied, copied over): read from its start; the points it lost stay stored
    path.write_bytes(header() + records(*losses("loss", range(1, 3), scale=3.0)))
    lab.ingest()
    assert stored(lab, "run") == {("loss", s): pytest.approx((3.0 if s < 3 else 2.0) / (1 + s)) for s in range(1, 9)}


def test_of_a_step_logged_twice_the_later_file_wins(lab: Lab) -> None:
    run = lab.root / "run"
    run.mkdir()
    first, second = run / "events.out.tfevents.100.host", run / "events.out.tfevents.200.host"
    first.write_bytes(header() + records(scalar_event("x", 5, 1.0), scalar_event("x", 5, 2.0)))
    second.write_bytes(header() + records(scalar_event("x", 5, 3.0), scalar_event("x", 6, 4.0)))
    lab.ingest()
    assert stored(lab, "run") == {("x", 5): 3.0, ("x", 6): 4.0}
    # the earlier file grows, logging step 5 again: the later file still wins, and the new step counts
    with first.open("ab") as f:
        f.write(records(scalar_event("x", 5, 9.0), scalar_event("x", 7, 7.0)))
    lab.ingest()
    assert stored(lab, "run") == {("x", 5): 3.0, ("x", 6): 4.0, ("x", 7): 7.0}
    assert same(stored(lab, "run"), accumulated(run))


def test_a_tag_twice_in_one_event_keeps_its_later_value(lab: Lab) -> None:
    run = lab.root / "run"
    run.mkdir()
    twice = [summary_pb2.Summary.Value(tag="x", simple_value=v) for v in (1.0, 2.0)]
    event = event_pb2.Event(wall_time=1_700_000_005.0, step=5, summary=summary_pb2.Summary(value=twice))
    (run / "events.out.tfevents.100.host").write_bytes(header() + records(event, scalar_event("x", 6, 3.0)))
    lab.ingest()
    assert stored(lab, "run") == {("x", 5): 2.0, ("x", 6): 3.0}


def test_tf2_tensor_scalars_count_and_other_tensors_do_not(lab: Lab) -> None:
    run = lab.root / "run"
    run.mkdir()
    image = summary_pb2.Summary.Value(tag="img", tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                      string_val=[b"1", b"1", b"png"]))  # fmt: skip
    image.metadata.plugin_data.plugin_name = "images"
    events = [
        tensor_event("mAP", 1, 0.25, plugin="scalars"),
        tensor_event("mAP", 2, 0.5, plugin=None),
        tensor_event("hist", 1, 3.0, plugin="histograms"),
        tensor_event("hist", 2, 3.0, plugin=None),
        event_pb2.Event(wall_time=1.0, step=1, summary=summary_pb2.Summary(value=[image])),
    ]
    path = run / "events.out.tfevents.1.host.v2"
    path.write_bytes(header() + records(*events))
    lab.ingest()
    assert stored(lab, "run") == {("mAP", 1): 0.25, ("mAP", 2): 0.5}
    # read on from the offset, where the plugin named in the tag's first value is not seen again
    with path.open("ab") as f:
        f.write(records(tensor_event("mAP", 3, 0.75, plugin=None)))
    lab.ingest()
    assert stored(lab, "run") == {("mAP", 1): 0.25, ("mAP", 2): 0.5, ("mAP", 3): 0.75}
    assert same(stored(lab, "run"), accumulated(run))


def test_a_bad_record_is_a_warning_naming_file_and_offset(lab: Lab) -> None:
    run = lab.root / "run"
    run.mkdir()
    path = run / "events.out.tfevents.1.host"
    head = header()
    good = records(*losses("loss", range(1, 4)))
    one = len(records(scalar_event("loss", 1, 0.5)))
    data = bytearray(head + good)
    data[len(head) + one + 14] ^= 0xFF  # the second record's data: its data CRC fails
    data[len(head) + 2 * one + 3] ^= 0xFF  # the third record's length: its length CRC fails
    path.write_bytes(bytes(data) + records(scalar_event("loss", 9, 0.1)))
    summary = lab.ingest()
    assert summary.failed == 0 and summary.warnings == 2
    warnings = [w["message"] for w in (summary.as_dict(warning_list=True)["warning_list"])]  # type: ignore[union-attr]
    assert warnings[0] == f"offset {len(head) + one}: bad record data CRC, record skipped"
    assert warnings[1].startswith(f"offset {len(head) + 2 * one}: bad record length CRC")
    # the framing is found again after the broken header: the last record is read
    assert stored(lab, "run") == {("loss", 1): pytest.approx(0.5), ("loss", 9): pytest.approx(0.1)}


# --- the acceptance test: a running HF job between checkpoints -------------------------------------


def trainer_state(steps: range, global_step: int, scale: float) -> str:
    history = [{"step": s, "loss": scale / (1 + s), "learning_rate": 1e-4, "epoch": s / 100} for s in steps]
    return (
        '{"global_step": %d, "max_steps": 1000, "log_history": %s}' % (global_step, str(history).replace("'", '"'))  # noqa: UP031
    )


def test_analytics_follow_the_event_file_between_checkpoints(lab: Lab) -> None:
    job = lab.root / "hf-job"
    (job / "checkpoint-100").mkdir(parents=True)
    (job / "checkpoint-100" / "trainer_state.json").write_text(trainer_state(range(10, 101, 10), 100, 1.0))
    logs = job / "runs" / "Dec04_10-00-00_host"
    logs.mkdir(parents=True)
    events = logs / "events.out.tfevents.1764842400.host.77.0"
    # the Trainer logs to TensorBoard the same entries (here at a 1 % different loss, to tell them apart)
    events.write_bytes(header() + records(*losses("train/loss", range(10, 101, 10), scale=1.01)))
    lab.ingest()
    a = lab.analytics("hf-job")
    assert a is not None
    assert a["performance"]["total_iterations"] == 100
    assert a["losses"]["final_loss"] == pytest.approx(1.0 / 101)  # the trainer state's value wins
    # the job goes on: steps 110..150 are in the event file only, until the next checkpoint
    with events.open("ab") as f:
        f.write(records(*losses("train/loss", range(110, 151, 10), scale=1.01)))
    lab.ingest()
    a = lab.analytics("hf-job")
    assert a is not None
    assert a["performance"]["total_iterations"] == 150
    assert a["losses"]["final_loss"] == pytest.approx(1.01 / 151)
    assert lab.query("SELECT count(*), max(step) FROM step_facts WHERE job_id = 'hf-job'") == [(15, 150)]
    # the event times give the rows seconds: the trainer state alone has none
    assert a["duration"]["training_seconds"] == pytest.approx(140.0)
    # the next checkpoint: its values win again at the steps it has
    (job / "checkpoint-200").mkdir()
    (job / "checkpoint-200" / "trainer_state.json").write_text(trainer_state(range(10, 201, 10), 200, 1.0))
    lab.ingest()
    a = lab.analytics("hf-job")
    assert a is not None
    assert a["losses"]["final_loss"] == pytest.approx(1.0 / 201)
    assert lab.query("SELECT count(*) FROM metric_points WHERE job_id = 'hf-job' AND name = 'loss'") == [(20,)]
    assert lab.query("SELECT count(*) FROM metric_points WHERE job_id = 'hf-job' AND name = 'train/loss'") == [(15,)]


def test_a_tool_log_job_has_a_job_row(lab: Lab) -> None:
    run = lab.root / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.1.host").write_bytes(header() + records(*losses("train_loss", range(1, 4))))
    lab.ingest()
    rows = lab.query("SELECT job_id, status, started_at, updated_at, current_step FROM jobs")
    assert [r[0] for r in rows] == ["lightning_logs/version_0"]
    _, status, started, updated, step = rows[0]
    assert (status, step) == ("unknown", 3)
    assert (updated - started).total_seconds() == 3.0  # the header's wall time, the last point's
    summary = lab.query("SELECT count(*) FROM job_results WHERE final_loss IS NOT NULL")
    assert summary == [(1,)]


# --- the record parser under random cuts and corruption ---------------------------------------------

EVENTS = header() + records(*losses("a", range(1, 30)), *losses("b", range(1, 30)))
FULL = tensorboard.parse(EVENTS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=len(EVENTS)))
def test_a_cut_anywhere_reads_the_whole_records_before_it(cut: int) -> None:
    chunk = tensorboard.parse(EVENTS[:cut])
    assert chunk.warnings == []
    assert chunk.points == FULL.points[: len(chunk.points)]
    # reading on from where it stopped gives the rest
    rest = tensorboard.parse(EVENTS[chunk.consumed :], chunk.consumed)
    assert chunk.points + rest.points == FULL.points
    assert chunk.consumed + rest.consumed == len(EVENTS)


@settings(max_examples=200, deadline=None)
@given(at=st.integers(min_value=0, max_value=len(EVENTS) - 1), flip=st.integers(min_value=1, max_value=255))
def test_a_corrupted_byte_is_a_warning_never_a_crash(at: int, flip: int) -> None:
    data = bytearray(EVENTS)
    data[at] ^= flip
    chunk = tensorboard.parse(bytes(data))
    assert chunk.warnings  # CRC-32C detects every change of one byte
    assert all(w.startswith("offset ") for w in chunk.warnings)
    lost = {p.order for p in FULL.points} - {p.order for p in chunk.points}
    assert len(lost) <= 1  # the record holding the byte, at most; the framing is found again after it
    assert set(chunk.points) <= set(FULL.points)


# --- the columns road against the record-by-record road ---------------------------------------------


def same_chunk(a: Any, b: Any) -> None:
    """Equal points (NaN equals NaN), warnings, offsets and run facts."""

    def plain(chunk: Any) -> list[tuple[Any, ...]]:
        return [(p.name, p.step, p.ts, "nan" if math.isnan(p.value) else p.value, p.order) for p in chunk.points]

    assert plain(a) == plain(b)
    assert (a.warnings, a.consumed, a.lines, a.info) == (b.warnings, b.consumed, b.lines, b.info)


@pytest.mark.parametrize("window", [None, 3], ids=["whole", "windows-of-3"])
def test_every_real_event_file_reads_the_same_both_ways_and_by_columns(
    window: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if window is not None:  # many windows: a TF 2 tag's plugin named in an earlier one
        monkeypatch.setattr(tensorboard, "_WINDOW_RECORDS", window)
    for path in sorted(TFEVENTS.rglob("events.out.tfevents.*")):
        if path == LFS_POINTER:
            continue
        data = path.read_bytes()
        columns = tensorboard._parse_columns(data, 0)
        assert columns is not None, path  # text summaries and tensors beside the scalars: those records alone
        same_chunk(columns, tensorboard._parse_records(data, 0))


def odd_value(draw: Any) -> summary_pb2.Summary.Value:
    """Plain scalars mostly, and every kind of value the columns road must leave to a record alone."""
    tag = draw(st.sampled_from(["loss", "eval/loss", "", "é" * 70, "t" * 130]))
    kind = draw(st.integers(min_value=0, max_value=7))
    number = draw(st.sampled_from([0.0, -0.0, 1.5, math.nan, math.inf, -3e38]))
    if kind <= 3:
        return summary_pb2.Summary.Value(tag=tag, simple_value=number)
    if kind == 4:  # a 0-d tensor, its plugin named or not
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[number])
        value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
        plugin = draw(st.sampled_from(["", "scalars", "images"]))
        if plugin:
            value.metadata.plugin_data.plugin_name = plugin
        return value
    if kind == 5:  # a simple value with metadata
        value = summary_pb2.Summary.Value(tag=tag, simple_value=number)
        value.metadata.plugin_data.plugin_name = "scalars"
        return value
    if kind == 6:
        return summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(height=1))
    return summary_pb2.Summary.Value(tag=tag)  # a tag alone


@st.composite
def event_files(draw: Any) -> bytes:
    events = [event_pb2.Event(wall_time=draw(st.sampled_from([0.0, 1.7e9, math.nan])), file_version="brain.Event:2")]
    for step in range(draw(st.integers(min_value=0, max_value=12))):
        values = [odd_value(draw) for _ in range(draw(st.integers(min_value=0, max_value=4)))]
        event = event_pb2.Event(
            wall_time=draw(st.sampled_from([0.0, 1.7e9 + step, -5.0, 1e300])),
            step=draw(st.sampled_from([step, step, 0, -1, 2**62])),
            summary=summary_pb2.Summary(value=values),
        )
        if draw(st.integers(min_value=0, max_value=19)) == 0:
            event.source_metadata.writer = "w"
        events.append(event)
    bodies = [e.SerializeToString() for e in events]
    if draw(st.integers(min_value=0, max_value=4)) == 0:  # a step written twice: not canonical
        bodies[-1] += b"\x10\x05"
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for body in bodies:
        writer.write(body)
    return buffer.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=event_files(), cut=st.floats(min_value=0, max_value=1), offset=st.sampled_from([0, 7]))
def test_the_columns_road_reads_what_record_by_record_reads(data: bytes, cut: float, offset: int) -> None:
    data = data[: round(len(data) * cut)] if cut < 1 else data
    columns = tensorboard._parse_columns(data, offset)
    expected = tensorboard._parse_records(data, offset)
    if columns is not None:
        same_chunk(columns, expected)
    same_chunk(tensorboard.parse(data, offset), expected)


def test_plain_scalars_take_the_columns_road() -> None:
    data = header() + records(*losses("a", range(1, 50)), *losses("b", range(1, 50)))
    columns = tensorboard._parse_columns(data, 0)
    assert columns is not None and columns.count == 98
    same_chunk(columns, tensorboard._parse_records(data, 0))
    # one bad CRC: the whole read goes record by record (its warning)
    broken = bytearray(data)
    broken[len(header()) + 20] ^= 1
    assert tensorboard._parse_columns(bytes(broken), 0) is None
    assert tensorboard.parse(bytes(broken)).warnings


def test_a_run_folder_that_becomes_part_of_an_hf_job_moves_to_it(lab: Lab) -> None:
    """Before its first checkpoint an HF output folder holds only runs/<date>/: a run of its own.
    Once the folder saves a checkpoint, its event files are the job's, read again for it."""
    job = lab.root / "out"
    logs = job / "runs" / "Dec04_10-00-00_host"
    logs.mkdir(parents=True)
    events = logs / "events.out.tfevents.1764842400.host.77.0"
    events.write_bytes(header() + records(*losses("train/loss", range(10, 51, 10))))
    lab.ingest()
    assert len(stored(lab, "out/runs/Dec04_10-00-00_host")) == 5
    (job / "checkpoint-50").mkdir()
    (job / "checkpoint-50" / "trainer_state.json").write_text(trainer_state(range(10, 51, 10), 50, 1.0))
    lab.ingest()
    assert len([k for k in stored(lab, "out") if k[0] == "train/loss"]) == 5
    assert lab.query("SELECT job_id FROM ingest_files WHERE path = $path", {"path": lab.ledger_path(events)}) == [
        ("out",)
    ]


@DUCKDB_ONLY_INGEST  # DuckDB's ingest's shortcut (heartbeat, snapshot): `ingest --db` always reads, then publishes
def test_the_no_op_shortcut_sees_an_event_file_grow(lab: Lab) -> None:
    run = lab.root / "run"
    run.mkdir()
    path = run / "events.out.tfevents.1.host"
    path.write_bytes(header() + records(*losses("loss", range(1, 4))))
    os.utime(path, (1_700_000_000, 1_700_000_000))  # not being written: the shortcut may apply
    lab.ingest()
    assert quick.nothing_to_do(lab.db, [lab.root]) is not None
    with path.open("ab") as f:
        f.write(records(scalar_event("loss", 4, 0.2)))
    os.utime(path, (1_700_000_100, 1_700_000_100))
    assert quick.nothing_to_do(lab.db, [lab.root]) is None  # the full road reads the new record
    lab.ingest()
    assert len(stored(lab, "run")) == 4


def test_a_merge_that_fails_leaves_nothing_half_done(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The points, the job row and the ledger's offsets commit together: a failure inside the
    transaction leaves the warehouse as before, and the next run reads the file again whole."""
    run = lab.root / "run"
    run.mkdir()
    path = run / "events.out.tfevents.1.host"
    path.write_bytes(header() + records(*losses("loss", range(1, 4))))
    lab.ingest()
    with path.open("ab") as f:
        f.write(records(*losses("loss", range(4, 8))))
    before = lab.query(VALUES), lab.query(LEDGER, {"path": lab.ledger_path(path)})

    def refuse(*args: Any) -> None:
        raise OSError("the disk refused")

    monkeypatch.setattr(tool_log.results, "enqueue", refuse)
    with pytest.raises(OSError):
        lab.ingest()
    assert (lab.query(VALUES), lab.query(LEDGER, {"path": lab.ledger_path(path)})) == before
    monkeypatch.undo()
    lab.ingest()
    assert len(stored(lab, "run")) == 7
    assert same(stored(lab, "run"), accumulated(run))


LEDGER = "SELECT read_offset, read_digest, rows FROM ingest_files WHERE path = $path"


def test_a_lightning_tensorboard_run_takes_its_hparams_as_config(real: tuple[Lab, Any]) -> None:
    lab, _ = real
    ((config,),) = lab.query("SELECT config FROM jobs WHERE job_id = 'lightning-two-writers/lightning_logs/version_0'")
    expected = yaml.load(  # noqa: S506 - the test's own independent read: a loader that ignores the tags
        (TFEVENTS / "lightning-two-writers/lightning_logs/version_0/hparams.yaml").read_text(), Loader=_Plain
    )
    stored_config = json.loads(config)
    assert stored_config["h"] == expected["h"] and stored_config["input_size"] == expected["input_size"]


def test_an_hparams_yaml_that_links_out_of_the_root_is_not_read(tmp_path: Path, ingest_engine: Engine) -> None:
    lab = Lab(tmp_path, ingest_engine)
    run = lab.root / "lightning_logs" / "version_3"
    run.mkdir(parents=True)
    source = TFEVENTS / "lightning-two-writers/lightning_logs/version_3"
    for f in source.iterdir():
        if f.name != "hparams.yaml":
            (run / f.name).write_bytes(f.read_bytes())
    secret = tmp_path / "secret.yaml"
    secret.write_text("password: hunter2\n")
    (run / "hparams.yaml").symlink_to(secret)
    lab.ingest()
    assert lab.query("SELECT job_id, config FROM jobs") == [("lightning_logs/version_3", None)]


class _Plain(yaml.SafeLoader):
    pass


_Plain.add_multi_constructor("", lambda loader, suffix, node: None)
