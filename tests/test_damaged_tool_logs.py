"""Trainers' own logs damaged in ways that crashed every run, lost stored points or stalled a file
in silence (inputs.md's preamble: never crash, never lose stored data on a bad file; skip what
cannot be read, say why, go on).

Lone surrogate escapes in a Lightning ``hparams.yaml``, an MLflow ``meta.yaml`` or a LLaMA-Factory
key; integers too large for a double; a TensorBoard event file cut or emptied after a read; a
TFRecord length no record can have; steps beyond 10^18. Every test that ingests runs on both
engines (``ingest_engine``)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab
from tensorboard.compat.proto import event_pb2, summary_pb2

from runlytics.ingest.formats import llamafactory, tensorboard, text_logs

D400 = "1" + "0" * 400  # an integer no double holds
SURROGATE = "held an escaped lone UTF-16 surrogate (not a character), replaced by U+FFFD"
GOOD = "ok/lightning_logs/version_0"
VALUES = "SELECT name, step, value FROM metric_values WHERE job_id = $j ORDER BY name, step"


def write(path: Path, content: str | bytes) -> Path:
    """A file dated an hour ago: a file changed within seconds is read again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    past = path.stat().st_mtime - 3600
    os.utime(path, (past, past))
    return path


def good_run(lab: Lab) -> None:
    write(lab.root / GOOD / "metrics.csv", "epoch,step,train_loss\n0,1,2.0\n0,2,1.5\n")


def warnings_of(summary: Any, lab: Lab) -> dict[str, list[str]]:
    """The run's warnings by file, as paths below the root."""
    out: dict[str, list[str]] = {}
    for path, message in summary.listed_warnings:
        out.setdefault(Path(path).relative_to(lab.root.resolve()).as_posix(), []).append(message)
    return out


def mlflow_run(root: Path, *, run_name: str = "n", start: str = "1729486917471", experiment: str = "e") -> Path:
    run = root / "mlruns" / "1" / "r1"
    write(root / "mlruns" / "1" / "meta.yaml", f"name: {experiment}\nexperiment_id: '1'\n")
    write(
        run / "meta.yaml",
        f"end_time: 1729486999313\nexperiment_id: '1'\nrun_id: r1\nrun_name: {run_name}\n"
        f"start_time: {start}\nstatus: 3\n",
    )
    write(run / "params" / "lr", "0.1")
    return write(run / "metrics" / "loss", "1729486925677 2.25 12\n1729486931303 2.2 25\n")


def job_ids(lab: Lab) -> list[str]:
    return sorted(j for (j,) in lab.query("SELECT job_id FROM jobs"))


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def test_lone_surrogates_in_tool_logs_are_replaced_with_a_warning(lab: Lab) -> None:
    """YAML's and JSON's ``"\\udcff"`` escapes read as a str no UTF-8 holds: stored, it crashed every
    run (no job of the root stored). Each key or string is kept with U+FFFD in its place, and one
    warning per file names the first entry."""
    good_run(lab)
    version = lab.root / "bad" / "lightning_logs" / "version_0"
    write(version / "metrics.csv", "epoch,step,train_loss\n0,1,2.0\n")
    write(version / "hparams.yaml", 'model_name: "ab\\udcffc"\n"k\\udcff": 1\nlr: 0.1\n')
    mlflow_run(lab.root, run_name='"a\\udcffb"', experiment='"e\\udcffx"')
    write(
        lab.root / "lf" / "trainer_log.jsonl",
        '{"current_steps": 5, "total_steps": 10, "loss": 2.0}\n{"current_steps": 6, "loss": 1.0, "k\\udcff": 2.0}\n',
    )
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (0, 7)
    assert job_ids(lab) == ["bad/lightning_logs/version_0", "lf", "mlruns/1/r1", GOOD]
    warned = warnings_of(summary, lab)
    assert warned["bad/lightning_logs/version_0/hparams.yaml"] == [f"model_name 'ab\ufffdc' (and 1 more) {SURROGATE}"]
    assert warned["lf/trainer_log.jsonl"] == [f"line 2: key 'k\ufffd' {SURROGATE}"]
    assert warned["mlruns/1/r1/meta.yaml"] == [
        f"meta.yaml: run_name 'a\ufffdb' {SURROGATE}",
        f"../meta.yaml: name 'e\ufffdx' {SURROGATE}",
    ]
    config, model = lab.query("SELECT config, model_name FROM jobs WHERE job_id = 'bad/lightning_logs/version_0'")[0]
    assert model == "ab\ufffdc"
    assert json.loads(config) == {"model_name": "ab\ufffdc", "k\ufffd": 1, "lr": 0.1}
    (config,) = lab.query("SELECT config FROM jobs WHERE job_id = 'mlruns/1/r1'")[0]
    mlflow = json.loads(config)["mlflow"]
    assert (mlflow["run_name"], mlflow["experiment_name"]) == ("a\ufffdb", "e\ufffdx")
    assert lab.query(VALUES, {"j": "lf"}) == [("k\ufffd", 6, 2.0), ("loss", 5, 2.0), ("loss", 6, 1.0)]


def test_integers_too_large_for_a_double_are_skipped_with_warnings(lab: Lab) -> None:
    """A 400-digit integer raised OverflowError in every run (the fallback converted it again)."""
    assert text_logs.number(int(D400)) == float("inf") and text_logs.number(-int(D400)) == float("-inf")
    assert llamafactory.duration_seconds(f"{D400}:00:00") is None
    good_run(lab)
    lines = [
        '{"current_steps": 5, "total_steps": 10, "loss": 2.0, "elapsed_time": "0:00:10"}',
        '{"current_steps": ' + D400 + ', "loss": 1.0}',
        '{"current_steps": 6, "total_steps": ' + D400 + ', "loss": 1.5}',
        '{"current_steps": 7, "loss": 1.25, "elapsed_time": "' + D400 + ':00:00"}',
    ]
    write(lab.root / "lf" / "trainer_log.jsonl", "\n".join(lines) + "\n")
    mlflow_run(lab.root, start=D400)
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (0, 5)
    assert job_ids(lab) == ["lf", "mlruns/1/r1", GOOD]
    warned = warnings_of(summary, lab)
    assert warned["lf/trainer_log.jsonl"] == [
        f"line 2: current_steps '{D400[:40]}' is not a step, skipped",
        f"line 3: total_steps '{D400[:40]}' is not a whole number, ignored",
        f"line 4: elapsed_time '{D400[:40]}' is not a duration, its points untimed",
    ]
    assert warned["mlruns/1/r1/meta.yaml"] == [
        f"meta.yaml: start_time '{D400[:40]}' is no time (epoch milliseconds, years 1-9999), ignored"
    ]
    assert lab.query(VALUES, {"j": "lf"}) == [("loss", 5, 2.0), ("loss", 6, 1.5), ("loss", 7, 1.25)]
    # a total no step reaches is not one: the log's own 10 stays
    assert lab.query("SELECT total_steps, current_step FROM jobs WHERE job_id = 'lf'") == [(10, 7)]
    # the start no date holds is unknown; the end is read
    (started, ended) = lab.query("SELECT started_at, ended_at FROM jobs WHERE job_id = 'mlruns/1/r1'")[0]
    assert started is None and ended is not None
    assert lab.query(VALUES, {"j": "mlruns/1/r1"}) == [("loss", 12, 2.25), ("loss", 25, 2.2)]


def test_an_integer_past_pythons_4300_digits_is_read_as_inf(lab: Lab) -> None:
    """Python's json raises a plain ValueError (not JSONDecodeError) for such an integer: the run
    stopped with a traceback on a trainer_log.jsonl line holding one."""
    good_run(lab)
    lines = [
        '{"current_steps": 5, "total_steps": 10, "loss": 2.0}',
        '{"current_steps": 6, "total_steps": 10, "loss": 1' + "0" * 5000 + "}",
    ]
    write(lab.root / "lf" / "trainer_log.jsonl", "\n".join(lines) + "\n")
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (0, 2)
    assert job_ids(lab) == ["lf", GOOD]
    assert lab.query(VALUES, {"j": "lf"}) == [("loss", 5, 2.0), ("loss", 6, float("inf"))]


# --- TensorBoard -----------------------------------------------------------------------------


def record(body: bytes, length: int | None = None) -> bytes:
    head = struct.pack("<Q", len(body) if length is None else length)
    return (
        head + struct.pack("<I", tensorboard.masked_crc(head)) + body + struct.pack("<I", tensorboard.masked_crc(body))
    )


def event(step: int, value: float) -> bytes:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=value)])
    return event_pb2.Event(wall_time=1_700_000_000.0 + step % 1000, step=step, summary=summary).SerializeToString()


def events(*steps: int) -> bytes:
    return b"".join(record(event(step, step / 8)) for step in steps)


def head() -> bytes:
    return record(event_pb2.Event(wall_time=1_700_000_000.0, file_version="brain.Event:2").SerializeToString())


def test_a_cut_or_emptied_event_file_keeps_its_stored_points_with_a_warning(lab: Lab) -> None:
    """A cut, emptied or copied-over event file was read again and its job's points replaced by what
    that read gave: a truncation deleted them all, in silence. As for the other logs, the points
    stored from it stay, a warning says what happened, and the file is read on when it grows."""
    path = write(lab.root / "run" / "events.out.tfevents.1.host", head() + events(1, 2, 3, 4))
    lab.ingest()
    stored = [("loss", s, s / 8) for s in (1, 2, 3, 4)]
    assert lab.query(VALUES, {"j": "run"}) == stored
    whole = path.read_bytes()
    cut = len(head()) + len(events(1))
    write(path, whole[: cut + 5])  # one record and a piece of the next
    summary = lab.ingest()
    assert (summary.failed, lab.query(VALUES, {"j": "run"})) == (0, stored)
    assert warnings_of(summary, lab) == {
        "run/events.out.tfevents.1.host": [
            f"the file shrank from {len(whole)} to {cut + 5} bytes (cut, emptied or replaced): read again"
            " from its start, the points stored from it kept",
            # the file is dated an hour ago (settled): its cut record is said too (session 26)
            f"offset {cut}: the last record is cut short (5 bytes) and the file has settled: not read"
            " (read on if the file grows)",
        ]
    }
    write(path, b"")
    summary = lab.ingest()
    assert lab.query(VALUES, {"j": "run"}) == stored
    assert warnings_of(summary, lab) == {
        "run/events.out.tfevents.1.host": [
            f"the file shrank from {cut} to 0 bytes (cut, emptied or replaced): read again from its start,"
            " the points stored from it kept"
        ]
    }
    # written again, and further: read on, nothing lost
    write(path, head() + events(1, 2, 5))
    lab.ingest()
    assert lab.query(VALUES, {"j": "run"}) == [*stored, ("loss", 5, 5 / 8)]
    assert lab.query("SELECT current_step FROM jobs WHERE job_id = 'run'") == [(5,)]


def test_a_record_length_no_event_can_have_is_skipped_with_a_warning(lab: Lab) -> None:
    """A length of 10^12 whose CRC holds was taken for a record still being written: the records
    after it were never read, and nothing said so. It is lost framing, as a bad length CRC."""
    bad = record(b"x" * 20, length=10**12)
    data = head() + events(1, 2) + bad + events(3, 4)
    at = len(head() + events(1, 2))
    warning = f"offset {at}: record length {10**12} is larger than any event (2 GiB), {len(bad)} bytes skipped"
    chunk = tensorboard.parse(data)
    assert (chunk.warnings, [p.step for p in chunk.points], chunk.consumed) == ([warning], [1, 2, 3, 4], len(data))
    # at the end of what is written so far: skipped to the end, read on from there
    tail = head() + events(1) + bad
    chunk = tensorboard.parse(tail)
    assert (chunk.warnings, chunk.consumed) == (
        [f"offset {len(tail) - len(bad)}: record length {10**12} is larger than any event (2 GiB),"
         f" {len(bad)} bytes skipped to the end read so far"],
        len(tail),
    )  # fmt: skip
    write(lab.root / "run" / "events.out.tfevents.1.host", data)
    summary = lab.ingest()
    assert warnings_of(summary, lab) == {"run/events.out.tfevents.1.host": [warning]}
    assert [s for _, s, _ in lab.query(VALUES, {"j": "run"})] == [1, 2, 3, 4]


def test_steps_beyond_10_18_are_dropped_with_a_warning(lab: Lab) -> None:
    """progress.json and trainer states drop a step above 10^18; the tool logs took up to 2^63-1 in
    silence (analytics of 9.2e18 iterations)."""
    good_run(lab)
    big = 2**63 - 1
    write(lab.root / "run" / "events.out.tfevents.1.host", head() + events(1, 10**18, big, 2))
    at = len(head() + events(1, 10**18))
    mlflow_run(lab.root)
    metric = lab.root / "mlruns/1/r1/metrics/loss"
    write(metric, metric.read_text() + f"1729486931999 2.1 {2 * 10**18}\n")
    write(lab.root / "c/lightning_logs/version_0/metrics.csv", f"step,train_loss\n1,2.0\n{2 * 10**18},1.0\n")
    summary = lab.ingest()
    assert summary.failed == 0
    warned = warnings_of(summary, lab)
    assert warned["run/events.out.tfevents.1.host"] == [
        f"offset {at}: step {big} is out of range (above 10^18), the event's values dropped"
    ]
    assert warned["mlruns/1/r1/metrics/loss"] == [
        f"line 3: '1729486931999 2.1 {2 * 10**18}': step {2 * 10**18} is out of range (above 10^18), skipped"
    ]
    assert warned["c/lightning_logs/version_0/metrics.csv"] == [f"line 3: step '{2 * 10**18}' is not a step, skipped"]
    assert [s for _, s, _ in lab.query(VALUES, {"j": "run"})] == [1, 2, 10**18]
    assert [s for _, s, _ in lab.query(VALUES, {"j": "mlruns/1/r1"})] == [12, 25]
    assert [s for _, s, _ in lab.query(VALUES, {"j": "c/lightning_logs/version_0"})] == [1]


def test_times_that_are_no_time_keep_their_points_untimed_with_a_warning(lab: Lab) -> None:
    """A wall_time or timestamp outside years 1-9999 (NaN, 1e300, 2^63 ms) made an untimed point in
    silence; it still does, with a warning naming the record or line."""

    def at_wall(step: int, wall: float) -> bytes:
        value = summary_pb2.Summary.Value(tag="loss", simple_value=step / 8)
        return event_pb2.Event(
            wall_time=wall, step=step, summary=summary_pb2.Summary(value=[value])
        ).SerializeToString()

    at = len(head() + events(1))
    data = head() + events(1) + record(at_wall(2, float("nan"))) + record(at_wall(3, 1e300))
    write(lab.root / "run" / "events.out.tfevents.1.host", data)
    metric = mlflow_run(lab.root)
    write(metric, metric.read_text() + f"{2**63} 2.0 30\n")
    summary = lab.ingest()
    warned = warnings_of(summary, lab)
    assert warned["run/events.out.tfevents.1.host"] == [
        f"offset {at}: wall_time nan is no time (years 1-9999) (and 1 more events), the values kept untimed"
    ]
    assert warned["mlruns/1/r1/metrics/loss"] == [
        f"line 3: timestamp {2**63} ms is no time (years 1-9999), the point kept untimed"
    ]
    timed = "SELECT step, ts IS NOT NULL FROM metric_values WHERE job_id = $j ORDER BY step"
    assert lab.query(timed, {"j": "run"}) == [(1, True), (2, False), (3, False)]
    assert lab.query(timed, {"j": "mlruns/1/r1"}) == [(12, True), (25, True), (30, False)]


# --- nesting and sizes Python itself refuses ---------------------------------------------------

D5000 = "9" * 5000  # past the 4,300 digits Python's int() converts: a plain ValueError


def test_a_value_nested_hundreds_deep_is_read_without_stopping_the_run(lab: Lab) -> None:
    """Cleaning lone surrogates recursed once a level: a trainer_log.jsonl line nested 400 deep
    holding a ``\\u`` escape, or any meta.yaml value nested 600 deep, stopped the run (RecursionError)."""
    good_run(lab)
    deep = "[" * 400 + '"\\udcff"' + "]" * 400
    lines = ['{"current_steps": 5, "loss": 2.0}', '{"current_steps": 6, "loss": 1.5, "x": ' + deep + "}"]
    write(lab.root / "lf" / "trainer_log.jsonl", "\n".join(lines) + "\n")
    meta = mlflow_run(lab.root).parent.parent / "meta.yaml"
    write(meta, meta.read_text() + "extra: " + "[" * 600 + "1" + "]" * 600 + "\n")
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (0, 5)
    assert job_ids(lab) == ["lf", "mlruns/1/r1", GOOD]
    path = "x" + "[0]" * 400  # the warning shows its ends
    assert warnings_of(summary, lab) == {
        "lf/trainer_log.jsonl": [
            f"line 2: {path[:100]}...{(path + ' ' + repr(chr(0xFFFD)))[-100:]} {SURROGATE}",
            f"line 2: x {'[' * 40!r} is not a number, dropped",
        ]
    }
    assert lab.query(VALUES, {"j": "lf"}) == [("loss", 5, 2.0), ("loss", 6, 1.5)]
    assert lab.query(VALUES, {"j": "mlruns/1/r1"}) == [("loss", 12, 2.25), ("loss", 25, 2.2)]
    assert lab.query("SELECT status FROM jobs WHERE job_id = 'mlruns/1/r1'") == [("completed",)]


def test_integers_past_pythons_4300_digits_in_durations_and_yaml_are_read(lab: Lab) -> None:
    """int() raises a plain ValueError past 4,300 digits: an elapsed_time of that many hours, or such
    an integer in a meta.yaml or an hparams.yaml, stopped the run. The duration is none (the
    line's points untimed); a YAML integer is +-inf, as float() reads it (no time; "inf" in a config)."""
    assert llamafactory.duration_seconds("1\u0663\u0663:00:00") is None  # ASCII digits only
    assert llamafactory.duration_seconds("2 days, 1:00:00") == 176400.0
    good_run(lab)
    lines = [
        '{"current_steps": 5, "loss": 2.0, "elapsed_time": "0:00:10"}',
        '{"current_steps": 6, "loss": 1.5, "elapsed_time": "' + D5000 + ':00:00"}',
    ]
    write(lab.root / "lf" / "trainer_log.jsonl", "\n".join(lines) + "\n")
    mlflow_run(lab.root, start=D5000)
    version = lab.root / "pl" / "lightning_logs" / "version_0"
    write(version / "metrics.csv", "epoch,step,train_loss\n0,1,2.0\n")
    write(version / "hparams.yaml", f"lr: 0.1\nbig: {D5000}\nsmall: -{D5000}\n")
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (0, 7)
    assert job_ids(lab) == ["lf", "mlruns/1/r1", GOOD, "pl/lightning_logs/version_0"]
    assert warnings_of(summary, lab) == {
        "lf/trainer_log.jsonl": [f"line 2: elapsed_time '{D5000[:40]}' is not a duration, its points untimed"],
        "mlruns/1/r1/meta.yaml": ["meta.yaml: start_time 'inf' is no time (epoch milliseconds, years 1-9999), ignored"],
    }
    timed = "SELECT step, value, ts IS NOT NULL FROM metric_values WHERE job_id = 'lf' ORDER BY step"
    assert lab.query(timed) == [(5, 2.0, True), (6, 1.5, False)]
    (config,) = lab.query("SELECT config FROM jobs WHERE job_id = 'pl/lightning_logs/version_0'")[0]
    assert json.loads(config) == {"lr": 0.1, "big": "inf", "small": "-inf"}
    mlflow = "SELECT started_at IS NULL, status FROM jobs WHERE job_id = 'mlruns/1/r1'"
    assert lab.query(mlflow) == [(True, "completed")]
    assert lab.query(VALUES, {"j": "mlruns/1/r1"}) == [("loss", 12, 2.25), ("loss", 25, 2.2)]


def test_an_mlflow_status_that_is_a_list_or_mapping_is_kept_unknown_with_a_warning(lab: Lab) -> None:
    """``STATUSES.get`` hashed whatever YAML gave: ``status: [3]`` stopped the run (TypeError)."""
    run = mlflow_run(lab.root).parent.parent
    write(run / "meta.yaml", (run / "meta.yaml").read_text().replace("status: 3", "status: [3]"))
    other = lab.root / "mlruns" / "1" / "r2"
    write(other / "meta.yaml", "run_id: r2\nstatus: {a: 1}\nstart_time: 1729486917471\n")
    write(other / "metrics" / "loss", "1729486925677 3.0 1\n")
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (0, 5)
    assert warnings_of(summary, lab) == {
        "mlruns/1/r1/meta.yaml": ["meta.yaml: status '[3]' is not an MLflow run status, kept as unknown"],
        "mlruns/1/r2/meta.yaml": [f"meta.yaml: status {str({'a': 1})!r} is not an MLflow run status, kept as unknown"],
    }
    assert lab.query("SELECT job_id, status FROM jobs ORDER BY job_id") == [
        ("mlruns/1/r1", "unknown"),
        ("mlruns/1/r2", "unknown"),
    ]
    assert lab.query(VALUES, {"j": "mlruns/1/r2"}) == [("loss", 1, 3.0)]
