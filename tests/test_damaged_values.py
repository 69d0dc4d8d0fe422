"""Damaged values inside otherwise good files: each is skipped, replaced or dropped with a warning
naming its file and line or entry, and the rest of the file is ingested (inputs.md preamble).

A lone surrogate escape, whitespace padding, empty or odd job ids and statuses in progress.json;
out-of-range integers, lone surrogates, deep nesting and empty GPU UUIDs in a spool line; a
progress.json that changes while a run reads it. Every test that ingests runs on both engines
(``ingest_engine``); the spool's and the histories' two roads (fast and careful) each get the case.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab

from runlytics.ingest import fast, gpu_samples, progress

T0 = 1_762_423_200  # 2025-11-06T10:00:00Z


def settled(path: Path) -> None:
    """Date a file's last change an hour ago: a file changed within seconds is read again."""
    past = time.time() - 3600
    os.utime(path, (past, past))


def job(job_id: Any = "j", **more: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "completed",
        "config": {"model_name": "m", "output_dir": "/data/run1"},
        "history": [
            {"step": 1, "timestamp": T0 + 10, "loss": 2.0, "iteration_time": 1.0},
            {"step": 2, "timestamp": T0 + 20, "loss": 1.0, "iteration_time": 1.0},
        ],
        **more,
    }


def warnings_of(lab: Lab, kind: str = "progress") -> dict[str, list[str]]:
    """Each file's stored warnings, by the file's name within the lab (folder/name)."""
    rows = lab.own_query("SELECT path, warnings FROM ingest_files WHERE kind = ?", [kind])
    return {"/".join(Path(path).parts[-2:]): json.loads(w) if w else [] for path, w in rows}


@pytest.fixture(params=["fast", "careful"])
def road(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The histories' fast road (the C reader) as built, or the careful read alone."""
    if request.param == "careful":
        monkeypatch.setattr(fast, "_history", None)
    return str(request.param)


# --- progress.json ----------------------------------------------------------------------------


def test_a_lone_surrogate_escape_is_replaced_and_the_job_ingested(
    tmp_path: Path, ingest_engine: Engine, road: str
) -> None:
    """`"\\udcff"` (Python's json.dumps writes it for a path decoded with surrogateescape) is
    refused by DuckDB's reader: the file is read from a copy with U+FFFD in its place."""
    lab = Lab(tmp_path, ingest_engine)
    doc = job("sur")
    doc["config"]["output_dir"] = "/data/run\udcff1"
    doc["config"]["model_name"] = "m\ud800"
    doc["history"][1]["note"] = "x\udfff"  # a key nobody reads, inside the history
    path = lab.write_job("sur", None, raw=json.dumps(doc))
    assert b"\\udcff" in path.read_bytes()
    settled(path)
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.pending) == (1, 0, 0)
    assert lab.query("SELECT step, loss FROM steps WHERE job_id = 'sur' ORDER BY step") == [(1, 2.0), (2, 1.0)]
    [(model, config)] = lab.query("SELECT model_name, CAST(config AS VARCHAR) FROM jobs WHERE job_id = 'sur'")
    assert model == "m\ufffd"
    assert json.loads(config)["output_dir"] == "/data/run\ufffd1"
    warnings = warnings_of(lab)["sur/progress.json"]
    assert "config.output_dir: '/data/run\\udcff1' holds a lone surrogate escape (not valid Unicode): " \
        "replaced by U+FFFD" in warnings  # fmt: skip
    assert any(w.startswith("config.model_name: 'm\\ud800'") for w in warnings)
    assert any(w.startswith("history[1].note: 'x\\udfff'") for w in warnings)


def test_whitespace_around_the_document_is_allowed(tmp_path: Path, ingest_engine: Engine, road: str) -> None:
    """JSON allows any whitespace around the value: 64 bytes and more of it are no reason to fail."""
    lab = Lab(tmp_path, ingest_engine)
    head, tail = " \n" * 50_000, "\n" * 100 + " " * 70_000  # past looks_complete's first reads
    for name, before, after in [("lead", head, ""), ("trail", "", tail), ("both", head, tail)]:
        settled(lab.write_job(name, None, raw=before + json.dumps(job(name)) + after))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.pending) == (3, 0, 0)
    steps = lab.query("SELECT job_id, step, loss FROM steps ORDER BY job_id, step")
    assert steps == [(name, step, loss) for name in ("both", "lead", "trail") for step, loss in [(1, 2.0), (2, 1.0)]]
    assert set(map(tuple, warnings_of(lab).values())) == {()}


def test_looks_complete_reads_past_padding(tmp_path: Path) -> None:
    for raw, expected in [
        (b" " * 64 + b"{}" + b" " * 64, True),
        (b"\xef\xbb\xbf" + b"\n" * 200_000 + b"{}", True),
        (b"{}" + b"\n" * 200_000, True),
        (b"{" + b" " * 200, False),
        (b" " * 200, False),
    ]:
        path = tmp_path / "p.json"
        path.write_bytes(raw)
        assert progress.looks_complete(path, len(raw)) is expected, raw[:10]


def test_an_empty_or_numeric_job_id_is_said(tmp_path: Path, ingest_engine: Engine) -> None:
    """An empty or blank job_id is absent (the folder's name); a number's text is the id; both warned."""
    lab = Lab(tmp_path, ingest_engine)
    for folder, job_id in [("k1", ""), ("k2", "  \t"), ("k3", 123), ("k4", [1]), ("k5", "ok")]:
        settled(lab.write_job(folder, job(job_id)))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (5, 0)
    jobs = dict(lab.query("SELECT job_id, source_dir FROM jobs"))
    assert {job_id: Path(folder).name for job_id, folder in jobs.items()} == {
        "k1": "k1",
        "k2": "k2",
        "123": "k3",
        "k4": "k4",
        "ok": "k5",
    }
    warnings = warnings_of(lab)
    assert warnings["k1/progress.json"] == ['job_id "" is empty: the folder name is used']
    assert warnings["k2/progress.json"] == ['job_id "  \\t" is empty: the folder name is used']
    assert warnings["k3/progress.json"] == ["job_id 123 is a number, not a string: its text 123 is used"]
    assert warnings["k4/progress.json"] == ["job_id [1] is not a string: the folder name is used"]
    assert warnings["k5/progress.json"] == []


def test_a_numeric_job_id_keeps_every_digit(tmp_path: Path, ingest_engine: Engine, road: str) -> None:
    """A whole number's text as written: through a double, 17+ digits would round (two ids into one)."""
    lab = Lab(tmp_path, ingest_engine)
    for folder, job_id in [("n1", 1234567890123456789), ("n2", 12345678901234567), ("n3", 12345678901234568),
                           ("n4", -5)]:  # fmt: skip
        settled(lab.write_job(folder, job(job_id)))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (4, 0)
    jobs = {job_id: Path(folder).name for job_id, folder in lab.query("SELECT job_id, source_dir FROM jobs")}
    assert jobs == {"1234567890123456789": "n1", "12345678901234567": "n2", "12345678901234568": "n3", "n4": "n4"}
    assert lab.query("SELECT job_id, count(*) FROM steps WHERE job_id LIKE '1234%' GROUP BY job_id ORDER BY 1") == [
        ("12345678901234567", 2),
        ("1234567890123456789", 2),
        ("12345678901234568", 2),
    ]
    warnings = warnings_of(lab)
    assert warnings["n1/progress.json"] == [
        "job_id 1234567890123456789 is a number, not a string: its text 1234567890123456789 is used"
    ]
    assert warnings["n4/progress.json"] == ["job_id -5 is not a string: the folder name is used"]


def test_an_empty_gpu_uuid_in_a_reading_is_no_uuid(tmp_path: Path, ingest_engine: Engine, road: str) -> None:
    """As in the spool: '' or blanks name no GPU, so the reading is stored with no uuid."""
    lab = Lab(tmp_path, ingest_engine)

    def reading(index: int, uuid: str) -> dict[str, Any]:
        return {"index": index, "uuid": uuid, "utilization_percent": 50.0, "memory_used_mb": 1.0, "temperature_c": 40}

    doc = job("u1")
    doc["history"][0]["gpus"] = [reading(0, ""), reading(1, "GPU-a")]
    doc["history"][1]["gpus"] = [reading(0, " \t"), reading(1, "GPU-a")]
    doc["latest"] = {"step": 3, "timestamp": T0 + 30, "loss": 0.5, "gpus": [reading(0, ""), reading(1, "")]}
    settled(lab.write_job("u1", doc))
    assert lab.ingest().ingested == 1
    assert lab.query("SELECT step, gpu_index, gpu_uuid FROM step_gpus ORDER BY step, gpu_index") == [
        (1, 0, None),
        (1, 1, "GPU-a"),
        (2, 0, None),
        (2, 1, "GPU-a"),
        (3, 0, None),
        (3, 1, None),
    ]
    assert warnings_of(lab)["u1/progress.json"] == []


def test_blanks_around_a_status_are_dropped_with_a_warning(tmp_path: Path, ingest_engine: Engine) -> None:
    lab = Lab(tmp_path, ingest_engine)
    settled(lab.write_job("s1", {**job("s1"), "status": " Completed "}))
    settled(lab.write_job("s2", {**job("s2"), "status": "done"}))
    settled(lab.write_job("s3", {**job("s3"), "status": "completed\n"}))  # any ASCII whitespace, as job_id
    settled(lab.write_job("s4", {**job("s4"), "status": "\tRunning\r\n"}))
    lab.ingest()
    assert dict(lab.query("SELECT job_id, status FROM jobs")) == {
        "s1": "completed",
        "s2": "unknown",
        "s3": "completed",
        "s4": "running",
    }
    warnings = warnings_of(lab)
    assert warnings["s1/progress.json"] == ['status " Completed " has blanks around it: read as completed']
    assert warnings["s3/progress.json"] == ['status "completed\\n" has blanks around it: read as completed']
    assert warnings["s4/progress.json"] == ['status "\\tRunning\\r\\n" has blanks around it: read as running']
    assert warnings["s2/progress.json"] == [
        'status "done" is not one of queued, running, paused, completed, failed, cancelled: kept as unknown'
    ]


# --- a progress.json that changes while it is read (inputs.md §1: never half-applied) ----------

OLD_STEPS = [(1, 2.0), (2, 1.0)]
NEW_DOC = job(
    "torn",
    history=[
        {"step": 1, "timestamp": T0 + 10, "loss": 2.0, "iteration_time": 1.0},
        {"step": 2, "timestamp": T0 + 20, "loss": 1.0, "iteration_time": 1.0},
        {"step": 3, "timestamp": T0 + 30, "loss": 0.5, "iteration_time": 1.0},
    ],
)


@pytest.mark.parametrize("how", ["in place", "renamed, same size and time"])
def test_a_file_changed_during_its_read_is_pending(
    tmp_path: Path, ingest_engine: Engine, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is replaced after every read of it (a hook on the staging that follows them):
    what was read is not merged; the next run reads the new file whole."""
    lab = Lab(tmp_path, ingest_engine)
    path = lab.write_job("torn", job("torn"))
    settled(path)
    new = json.dumps(NEW_DOC).encode()
    old = path.read_bytes()
    if how == "renamed, same size and time":
        new = json.dumps(job("torn", status="failed")).encode()  # a real document, as long as the old
        new += b" " * (len(old) - len(new))
        assert len(new) == len(old)
    staged = progress.stage

    def rewrite_then_stage(*args: Any, **kwargs: Any) -> None:
        staged(*args, **kwargs)
        if not getattr(rewrite_then_stage, "done", False):
            rewrite_then_stage.done = True  # type: ignore[attr-defined]
            before = path.stat()
            if how == "in place":
                path.write_bytes(new)
            else:  # a new inode with the old one's size and mtime: only the inode tells
                other = path.with_name("progress.json.new")
                other.write_bytes(new)
                os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
                os.replace(other, path)
                assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    monkeypatch.setattr(progress, "stage", rewrite_then_stage)
    summary = lab.ingest()
    assert (summary.ingested, summary.pending, summary.failed) == (0, 1, 0)
    assert summary.problems[0]["reason"] == "changed while being read"
    assert lab.query("SELECT count(*) FROM steps") == [(0,)]
    settled(path)
    again = lab.ingest()
    assert (again.ingested, again.pending, again.failed) == (1, 0, 0)
    if how == "in place":
        assert lab.query("SELECT step, loss FROM steps ORDER BY step") == [(1, 2.0), (2, 1.0), (3, 0.5)]
    else:
        assert lab.query("SELECT status FROM jobs") == [("failed",)]
        assert lab.query("SELECT step, loss FROM steps ORDER BY step") == OLD_STEPS


# --- the spool (inputs.md §2: a bad line is skipped with its line number; the others are kept) --


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


def line(ts: int, gpu: int = 0, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "job_id": "sj", "host": "n1", "gpu_index": gpu, "utilization_percent": 50.0, **fields}


def write_lines(path: Path, rows: list[dict[str, Any] | str]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_spool_values_out_of_their_columns_range_never_stop_the_run(
    tmp_path: Path, ingest_engine: Engine, spool: Path
) -> None:
    lab = Lab(tmp_path, ingest_engine)
    write_lines(
        spool / "n1.jsonl",
        [
            line(T0),
            line(T0 + 1, gpu=2**31),  # past an INTEGER: skipped
            line(T0 + 2, clocks_event_reasons=2**63),  # past a BIGINT: dropped
            line(T0 + 3, host="n\udcff"),  # lone surrogates: U+FFFD in their place
            line(T0 + 4, gpu_uuid="GPU-\ud800"),
            {**line(T0 + 5), "job_id": "sj\udfff"},
            # nested past Python's parser (an escape sends the line to it, the careful road)
            f'{{"ts": {T0 + 6}, "job_id": "sj", "gpu_index": 0, "e": "\\u0041", "x": {"[" * 5000}1{"]" * 5000}}}',
            # past a double: an infinity, as 1e400 (both roads; the escape sends it to the careful one)
            f'{{"ts": {T0 + 7}, "job_id": "sj", "gpu_index": 0, "host": "\\u006e1", "power_w": 1{"0" * 400}}}',
            line(T0 + 8, gpu=2**31 - 1, clocks_event_reasons=2**63 - 1),  # the largest that fit
            line(T0 + 9),
        ],
    )
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.failed == 0
    rows = lab.query(
        "SELECT ts, job_id, host, gpu_index, gpu_uuid, clocks_event_reasons, power_w FROM gpu_samples ORDER BY ts"
    )
    rows = [(int(r[0].replace(tzinfo=UTC).timestamp()) - T0, *r[1:]) for r in rows]
    assert rows == [
        (0, "sj", "n1", 0, None, None, None),
        (2, "sj", "n1", 0, None, None, None),
        (3, "sj", "n\ufffd", 0, None, None, None),
        (4, "sj", "n1", 0, "GPU-\ufffd", None, None),
        (5, "sj\ufffd", "n1", 0, None, None, None),
        (7, "sj", "n1", 0, None, None, math.inf),
        (8, "sj", "n1", 2**31 - 1, None, 2**63 - 1, None),
        (9, "sj", "n1", 0, None, None, None),
    ]
    [warnings] = warnings_of(lab, "spool").values()
    assert warnings == [
        "line 2: gpu_index '2147483648' is not a GPU index, skipped",
        "line 3: clocks_event_reasons '9223372036854775808' is not a bitmask, dropped",
        "line 4: host 'n\\udcff' is not valid Unicode: U+FFFD in place of its lone surrogate, dropped",
        "line 5: gpu_uuid 'GPU-\\ud800' is not valid Unicode: U+FFFD in place of its lone surrogate, dropped",
        "line 6: job_id 'sj\\udfff' is not valid Unicode: U+FFFD in place of its lone surrogate, dropped",
        "line 7: not JSON (nested too deeply), skipped",
    ]


@pytest.mark.parametrize("spool_road", ["fast", "careful"])
def test_an_empty_gpu_uuid_is_no_uuid(
    tmp_path: Path, ingest_engine: Engine, spool: Path, spool_road: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two GPUs of a host whose lines say `"gpu_uuid": ""` (or blanks) stay two GPUs, keyed by index."""
    lab = Lab(tmp_path, ingest_engine)
    settled(lab.write_job("oj", job("oj")))
    # NaN in a key nobody reads sends a line the careful road (parse_line); the fast road must not need it
    extra = ', "extra": NaN' if spool_road == "careful" else ""
    careful = []

    def parse_line(line: bytes) -> tuple[dict[str, Any], list[str]]:
        careful.append(line)
        return parsed(line)

    parsed = gpu_samples.parse_line
    monkeypatch.setattr(gpu_samples, "parse_line", parse_line)
    rows = [(T0, 0, 10, 100), (T0, 1, 90, 900), (T0 + 60, 0, 20, 200), (T0 + 60, 1, 80, 800)]
    (spool / "n1.jsonl").write_text(
        "".join(
            f'{{"ts": {ts}, "job_id": "oj", "host": "{host}", "gpu_index": {gpu}, "gpu_uuid": "{uuid}", '
            f'"utilization_percent": {util}, "memory_used_mb": {mem}{extra}}}\n'
            for host, uuid in [("n1", ""), ("n2", "  ")]
            for ts, gpu, util, mem in rows
        )
    )
    lab.ingest(lab.root, spool_root=spool)
    assert len(careful) == (8 if spool_road == "careful" else 0)
    stored = lab.query("SELECT host, gpu_index, gpu_uuid, count(*) FROM gpu_samples GROUP BY 1, 2, 3 ORDER BY 1, 2")
    assert stored == [("n1", 0, None, 2), ("n1", 1, None, 2), ("n2", 0, None, 2), ("n2", 1, None, 2)]
    assert lab.query(
        "SELECT gpus_seen, average_gpu_utilization, average_gpu_memory_mb, peak_gpu_memory_mb "
        "FROM job_resources WHERE job_id = 'oj'"
    ) == [(4, 50.0, 500.0, 900.0)]


# --- integers past Python's 4,300 digits (its json raises a plain ValueError for them) -------

HUGE = "1" + "0" * 5000  # read as +inf, as DuckDB and the fast road read it (and 1e400)


def test_an_integer_of_5000_digits_never_stops_the_run(tmp_path: Path, ingest_engine: Engine, road: str) -> None:
    """In a file DuckDB reads (the number is inf), in one it refuses for its shape (Python's repaired
    copy reads it as inf too) and in one that is not JSON past it (failed, with line and column)."""
    lab = Lab(tmp_path, ingest_engine)
    doc = job("big")
    doc["history"][1]["loss"] = 1e400  # a placeholder, replaced by 5000 digits below
    text = json.dumps({**doc, "x": 1}).replace("Infinity", HUGE).replace('"x": 1', f'"x": -{HUGE}')
    settled(lab.write_job("big", None, raw=text))
    shaped = json.dumps(
        {**doc, "job_id": "shaped", "history": [doc["history"][0], 5, doc["history"][1]]}
    )  # 5: DuckDB refuses
    settled(lab.write_job("shaped", None, raw=shaped.replace("Infinity", HUGE)))
    broken = json.dumps(job("broken"))[:-1] + f', "x": {HUGE}, "y": @}}'
    settled(lab.write_job("broken", None, raw=broken))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.pending) == (2, 1, 0)
    column = broken.index("@") + 1
    assert [(p["outcome"], p["reason"]) for p in summary.problems] == [
        ("failed", f"invalid JSON at line 1 column {column}: Expecting value")
    ]
    steps = lab.query("SELECT job_id, step, loss FROM steps ORDER BY job_id, step")
    assert steps == [("big", 1, 2.0), ("big", 2, math.inf), ("shaped", 1, 2.0), ("shaped", 2, math.inf)]
    warnings = warnings_of(lab)
    assert warnings["big/progress.json"] == []
    assert warnings["shaped/progress.json"] == ["history[1]: no step: entry skipped"]


def test_a_spool_value_of_5000_digits_is_an_infinity(tmp_path: Path, ingest_engine: Engine, spool: Path) -> None:
    lab = Lab(tmp_path, ingest_engine)
    write_lines(
        spool / "n1.jsonl",
        [
            line(T0),
            f'{{"ts": {T0 + 1}, "job_id": "sj", "gpu_index": 0, "host": "n1", "power_w": {HUGE}}}',
            # an escape sends the line to Python's parser (the careful road)
            f'{{"ts": {T0 + 2}, "job_id": "sj", "gpu_index": 0, "host": "\\u006e1", "power_w": -{HUGE}}}',
            f'{{"ts": {T0 + 3}, "job_id": "sj", "gpu_index": {HUGE}, "host": "\\u006e1"}}',
            line(T0 + 4),
        ],
    )
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.failed == 0
    rows = lab.query("SELECT ts, gpu_index, power_w FROM gpu_samples ORDER BY ts")
    rows = [(int(r[0].replace(tzinfo=UTC).timestamp()) - T0, *r[1:]) for r in rows]
    assert rows == [(0, 0, None), (1, 0, math.inf), (2, 0, -math.inf), (4, 0, None)]
    [warnings] = warnings_of(lab, "spool").values()
    assert warnings == ["line 4: gpu_index 'inf' is not a GPU index, skipped"]
    row, problems = gpu_samples.parse_line(
        f'{{"ts": {T0}, "job_id": "sj", "gpu_index": 1, "power_w": {HUGE}}}'.encode()
    )
    assert (row["gpu_index"], row["power_w"], problems) == (1, math.inf, [])


# --- a rewrite in place caught half way (inputs.md §1: such a read is retried on the next run) -


def test_a_rewrite_caught_half_way_fails_with_its_place_and_the_finished_file_is_read(
    tmp_path: Path, ingest_engine: Engine
) -> None:
    """A longer document written over an older one from byte 0 (no truncation), read when it has
    replaced only part of it: the JSON breaks mid-document. That read is failed at once, naming
    line and column (docs/decisions.md: a file that breaks mid-document is not told from a broken
    one), nothing of it applied; the finished file is read by the next run."""
    lab = Lab(tmp_path, ingest_engine)
    old = json.dumps(job("tm", checkpoints=[{"step": 1}]))
    new = json.dumps(NEW_DOC | {"job_id": "tm", "checkpoints": [{"step": 1}]})
    path = lab.write_job("tm", None, raw=old)
    settled(path)
    assert lab.ingest().ingested == 1

    def mid_error(k: int) -> json.JSONDecodeError | None:
        try:
            json.loads(new[:k] + old[k:])
        except json.JSONDecodeError as error:
            early = error.msg.startswith("Unterminated string") or error.pos >= len(old) - 1
            return None if early or error.msg == "Extra data" else error
        return None

    k = next(k for k in range(len(old)) if mid_error(k))
    error = mid_error(k)
    assert error is not None
    path.write_text(new[:k] + old[k:])
    summary = lab.ingest()
    assert (summary.ingested, summary.pending, summary.failed) == (0, 0, 1)
    assert summary.problems[0]["reason"] == f"invalid JSON at line 1 column {error.colno}: {error.msg}"
    assert lab.query("SELECT step, loss FROM steps ORDER BY step") == OLD_STEPS
    path.write_text(new)
    settled(path)
    assert lab.ingest().ingested == 1
    assert lab.query("SELECT step, loss FROM steps ORDER BY step") == [(1, 2.0), (2, 1.0), (3, 0.5)]


# --- a trainer state replaced by a rename while it is read (same size and time, another inode) -


def test_a_trainer_state_replaced_during_its_read_is_pending(
    tmp_path: Path, ingest_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runlytics.ingest.formats import trainer_state as states

    lab = Lab(tmp_path, ingest_engine)
    path = lab.root / "ts" / "trainer_state.json"
    path.parent.mkdir()
    state = {"global_step": 2, "log_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]}
    path.write_text(json.dumps(state))
    settled(path)
    listed = states.changed_files

    def replace_after_stat(*args: Any, **kwargs: Any) -> Any:
        found = listed(*args, **kwargs)
        if not getattr(replace_after_stat, "done", False):
            replace_after_stat.done = True  # type: ignore[attr-defined]
            before = path.stat()
            other = path.with_name("trainer_state.json.new")
            other.write_text(json.dumps(state).replace("1.0", "0.5"))  # as long as the old
            os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
            os.replace(other, path)
            assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        return found

    monkeypatch.setattr(states, "changed_files", replace_after_stat)
    summary = lab.ingest()
    assert (summary.ingested, summary.pending, summary.failed) == (0, 1, 0)
    assert summary.problems[0]["reason"] == "changed while being read"
    assert lab.query("SELECT count(*) FROM trainer_steps") == [(0,)]
    again = lab.ingest()
    assert (again.ingested, again.pending) == (1, 0)
    assert lab.query("SELECT step, loss FROM trainer_steps ORDER BY step") == [(1, 2.0), (2, 0.5)]


# --- timestamps --------------------------------------------------------------------------------


def test_a_lowercase_utc_designator_is_utc(tmp_path: Path, ingest_engine: Engine, road: str) -> None:
    """RFC 3339 allows `z` for `Z`: DuckDB's cast refuses it, the reader must not (both roads)."""
    lab = Lab(tmp_path, ingest_engine)
    doc = job("lz", updated_at="2026-11-01T00:00:30z", started_at="20261101T000000z")
    doc["history"][0]["timestamp"] = "2026-11-01T00:00:10.5z"
    doc["history"][1]["timestamp"] = "2026-11-01 00:00:20z"
    settled(lab.write_job("lz", doc))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (1, 0)
    steps = lab.query("SELECT step, CAST(ts AS VARCHAR) FROM steps ORDER BY step")
    assert steps == [(1, "2026-11-01 00:00:10.5"), (2, "2026-11-01 00:00:20")]
    times = lab.query("SELECT CAST(started_at AS VARCHAR), CAST(updated_at AS VARCHAR) FROM jobs")
    assert times == [("2026-11-01 00:00:00", "2026-11-01 00:00:30")]
    assert warnings_of(lab)["lz/progress.json"] == []


# --- names that are not UTF-8 -------------------------------------------------------------------


def test_a_spool_file_named_not_in_utf8_fails_alone(tmp_path: Path, ingest_engine: Engine, spool: Path) -> None:
    """Not read, named as failed (read again next run); the spool's other files are ingested."""
    lab = Lab(tmp_path, ingest_engine)
    write_lines(spool / "gpu-ok.jsonl", [line(T0)])
    write_lines(Path(os.fsdecode(bytes(spool) + b"/gpu-\xff.jsonl")), [line(T0 + 1)])
    summary = lab.ingest(lab.root, spool_root=spool)
    assert (summary.ingested, summary.failed, summary.to_retry) == (1, 1, 1)
    assert [(p["path"].rsplit("/", 1)[1], p["outcome"], p["reason"]) for p in summary.problems] == [
        ("gpu-\ufffd.jsonl", "failed", "its path is not valid UTF-8: rename the file")
    ]
    assert lab.query("SELECT job_id, gpu_index FROM gpu_samples") == [("sj", 0)]
    rows = lab.own_query("SELECT path, outcome, error FROM ingest_files WHERE kind = 'spool' ORDER BY path")
    assert [(Path(p).name, o, e) for p, o, e in rows] == [
        ("gpu-ok.jsonl", "ingested", None),
        ("gpu-\ufffd.jsonl", "failed", "its path is not valid UTF-8: rename the file"),
    ]


def test_an_mlflow_param_named_not_in_utf8_fails_alone(tmp_path: Path, ingest_engine: Engine) -> None:
    """The run is ingested; the file refused is named as failed and in a warning, its odd byte as U+FFFD."""
    lab = Lab(tmp_path, ingest_engine)
    run = lab.root / "mlruns" / "1" / "abc"
    (run / "params").mkdir(parents=True)
    (run / "metrics").mkdir()
    (run / "meta.yaml").write_text("run_id: abc\nstatus: 3\nstart_time: 1700000000000\nend_time: 1700000001000\n")
    (run / "metrics" / "loss").write_text("1700000000000 0.5 1\n")
    Path(os.fsdecode(bytes(run / "params") + b"/lr\xfe")).write_text("0.1")
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.to_retry) == (2, 1, 1)
    assert [(p["path"].rsplit("/", 2)[1:], p["reason"]) for p in summary.problems] == [
        (["params", "lr\ufffd"], "its path is not valid UTF-8: rename the folder")
    ]
    assert lab.query("SELECT job_id, name, step, value FROM metric_values") == [("mlruns/1/abc", "loss", 1, 0.5)]
    stored = [w for ws in lab.own_query("SELECT warnings FROM ingest_files") for w in json.loads(ws[0] or "[]")]
    assert any(w.startswith("params/lr\ufffd: its path is not valid UTF-8") for w in stored), stored


@pytest.mark.parametrize("spool_road", ["fast", "careful"])
def test_a_blank_spool_job_id_is_no_job_id(tmp_path: Path, ingest_engine: Engine, spool: Path, spool_road: str) -> None:
    # as progress.json's blank job_id is no id: no job named "  " (the CLI and the API could not name it)
    lab = Lab(tmp_path, ingest_engine)
    settled(lab.write_job("oj", job("oj")))
    extra = ', "extra": NaN' if spool_road == "careful" else ""  # NaN sends a line to the careful road
    (spool / "n1.jsonl").write_text(
        f'{{"ts": {T0}, "job_id": "  ", "gpu_index": 0, "utilization_percent": 5{extra}}}\n'
        f'{{"ts": {T0}, "job_id": "\\t", "gpu_index": 1, "utilization_percent": 6{extra}}}\n'
        f'{{"ts": {T0}, "job_id": "oj", "gpu_index": 0, "utilization_percent": 7{extra}}}\n'
    )
    lab.ingest(lab.root, spool_root=spool)
    assert lab.query("SELECT job_id, gpu_index, utilization_percent FROM gpu_samples") == [("oj", 0, 7.0)]
    (warnings,) = lab.own_query("SELECT warnings FROM ingest_files WHERE kind = 'spool'")[0]
    assert json.loads(warnings) == ["line 1: no job_id, skipped", "line 2: no job_id, skipped"]
