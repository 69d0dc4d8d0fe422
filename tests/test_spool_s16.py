"""Session 16's spool and nvidia-smi fixes: a spool file replaced by one no longer than the read
offset, a settled file's last line without its newline, and the spool's `ts` read as progress.json
reads a timestamp (inputs.md section 2: "a timestamp as above")."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from runlytics.ingest import gpu_samples, ledger
from runlytics.ingest.formats.nvidia_smi import CsvImport
from runlytics.ingest.gpu_samples import Piece
from tests.conftest import Engine, Lab
from tests.file_times import aged, opened_under

T0 = 1_793_610_000  # 2026-11-02T09:00:00Z
LINE = '{{"ts": {ts}, "job_id": "s", "gpu_index": 0, "utilization_percent": {u}, "memory_used_mb": 1}}'
HEADER = "timestamp, index, utilization.gpu [%], memory.used [MiB], power.draw [W]\n"
SMI_FIRST = "2024/01/15 08:00:00.000, 0, 10 %, 100 MiB, 50.00 W\n"
SMI_SECOND = "2024/01/15 08:00:01.000, 0, 20 %, 200 MiB, 51.00 W"  # (no line end)


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


@pytest.fixture
def spool(lab: Lab) -> Path:
    folder = lab.root.parent / "spool"
    folder.mkdir()
    return folder


def line(t: int, u: int) -> str:
    """A sample line; the same width for every ``t`` of 10 digits and ``u`` of one."""
    return LINE.format(ts=T0 + t, u=u)


def stored(lab: Lab) -> list[tuple[float, float]]:
    rows = lab.query("SELECT ts, utilization_percent FROM gpu_samples ORDER BY ts")
    return [(ts.replace(tzinfo=UTC).timestamp() - T0, u) for ts, u in rows]


def spool_warnings(lab: Lab) -> list[str]:
    # spool files stay in the stage's ledger on PostgreSQL too (docs/postgresql.md, "Ledger")
    rows = lab.own_query("SELECT warnings FROM ingest_files WHERE kind = 'spool' ORDER BY path")
    return [warning for (warnings,) in rows for warning in json.loads(warnings)]


# --- 1. a file replaced by one no longer than the read offset ---------------------------------------


def test_a_spool_file_replaced_by_one_of_the_offsets_size_is_read_from_its_start(lab: Lab, spool: Path) -> None:
    path = spool / "g.jsonl"
    path.write_text(line(0, 1) + "\n" + line(1, 2) + "\n")
    aged(path, 600)
    lab.ingest(lab.root, spool_root=spool)
    # rotated: renamed away, and a new file of the same size (same-width lines) written in its place
    path.rename(spool / "g.jsonl.1")
    path.write_text(line(300, 7) + "\n" + line(301, 8) + "\n")
    aged(path, 60)
    first = lab.ingest(lab.root, spool_root=spool)
    assert first.ingested == 1 and first.gpu_samples == 2
    assert stored(lab) == [(0.0, 1.0), (1.0, 2.0), (300.0, 7.0), (301.0, 8.0)]
    again = lab.ingest(lab.root, spool_root=spool)
    # g.jsonl.1 holds the old file, read to its end: a file of the spool since (session 19), unchanged
    assert again.ingested == 0 and again.unchanged == 2
    assert stored(lab) == [(0.0, 1.0), (1.0, 2.0), (300.0, 7.0), (301.0, 8.0)]


def test_a_file_read_up_to_a_line_being_written_then_replaced_by_a_file_of_that_size(lab: Lab, spool: Path) -> None:
    # the auditor's c18: a read offset short of the file's end (its last line was being written),
    # then the file replaced by one exactly as long as that offset
    path = spool / "g.jsonl"
    path.write_text(line(0, 1) + "\n" + line(1, 2)[:40])
    lab.ingest(lab.root, spool_root=spool)
    assert stored(lab) == [(0.0, 1.0)]
    path.unlink()
    path.write_text(line(500, 9) + "\n")
    aged(path, 10)
    lab.ingest(lab.root, spool_root=spool)
    assert stored(lab) == [(0.0, 1.0), (500.0, 9.0)]


def test_a_run_opens_no_spool_file_whose_size_and_time_match_its_record(
    lab: Lab, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled, fresh = spool / "a.jsonl", spool / "b.jsonl"
    settled.write_text(line(0, 1) + "\n")
    fresh.write_text(line(1, 2) + "\n")
    aged(settled, 600)
    aged(fresh, 600)
    real = ledger.stat
    # b.jsonl read within FRESH_SECONDS of its last change: recorded without a fingerprint
    with monkeypatch.context() as m:
        m.setattr(ledger, "stat", lambda p: replace(real(p), fresh=True) if p.name == "b.jsonl" else real(p))
        lab.ingest(lab.root, spool_root=spool)
    prints = lab.own_query("SELECT fingerprint FROM ingest_files WHERE kind = 'spool' ORDER BY path")
    assert prints[0][0] is not None and prints[1][0] is None
    opened = opened_under(spool, monkeypatch)
    second = lab.ingest(lab.root, spool_root=spool)
    # a.jsonl matches its record: not opened; b.jsonl's bytes before its offset are checked once
    assert opened == [str(fresh.resolve())] and second.ingested == 0 and second.unchanged == 2
    opened.clear()
    third = lab.ingest(lab.root, spool_root=spool)
    assert opened == [] and third.unchanged == 2  # b.jsonl now has its fingerprint
    assert stored(lab) == [(0.0, 1.0), (1.0, 2.0)]


# --- 2. a settled file's last line without its newline ------------------------------------------


def test_a_settled_spool_files_last_line_without_its_newline_is_read(lab: Lab, spool: Path) -> None:
    path = spool / "g.jsonl"
    path.write_text(line(0, 1) + "\n" + line(1, 2))
    aged(path, 600)
    first = lab.ingest(lab.root, spool_root=spool)
    assert first.gpu_samples == 2 and first.warnings == 0
    assert stored(lab) == [(0.0, 1.0), (1.0, 2.0)]
    again = lab.ingest(lab.root, spool_root=spool)
    assert again.ingested == 0 and again.unchanged == 1
    # the writer comes back: its line end, then more lines; each sample stored once
    with path.open("a") as f:
        f.write("\n" + line(2, 3) + "\n")
    lab.ingest(lab.root, spool_root=spool)
    assert stored(lab) == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert spool_warnings(lab) == []


def test_a_settled_spool_files_bad_last_line_is_skipped_with_its_number(lab: Lab, spool: Path) -> None:
    path = spool / "g.jsonl"
    path.write_text(line(0, 1) + "\n" + line(1, 2)[:40])
    aged(path, 600)
    # not JSON: a line cut mid-write whatever the file's time says (session 20), until the file's
    # record has kept its size and time for 5 minutes of this machine's clock
    waiting = lab.ingest(lab.root, spool_root=spool)
    assert waiting.warnings == 0 and stored(lab) == [(0.0, 1.0)] and spool_warnings(lab) == []
    with duckdb.connect(str(lab.db)) as con:
        con.execute("UPDATE ingest_files SET last_read_at = last_read_at - INTERVAL 10 MINUTE")
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.warnings == 1 and stored(lab) == [(0.0, 1.0)]
    assert spool_warnings(lab) == [
        "line 2: not JSON (Unterminated string starting at: line 1 column 35 (char 34)), skipped"
    ]
    assert lab.ingest(lab.root, spool_root=spool).unchanged == 1


def test_a_spool_line_being_written_waits_and_is_stored_once_whole(lab: Lab, spool: Path) -> None:
    path = spool / "g.jsonl"
    path.write_text(line(0, 1) + "\n" + line(1, 2)[:40])
    first = lab.ingest(lab.root, spool_root=spool)
    assert first.warnings == 0 and stored(lab) == [(0.0, 1.0)]
    with path.open("a") as f:
        f.write(line(1, 2)[40:] + "\n")
    lab.ingest(lab.root, spool_root=spool)
    assert stored(lab) == [(0.0, 1.0), (1.0, 2.0)] and spool_warnings(lab) == []


def smi_rows(lab: Lab) -> list[tuple[Any, ...]]:
    return lab.query("SELECT gpu_index, ts, utilization_percent, memory_used_mb, power_w FROM gpu_samples ORDER BY ts")


def test_a_settled_nvidia_smi_logs_last_line_without_its_newline_is_imported(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "n.csv"
    log.write_text(HEADER + SMI_FIRST + SMI_SECOND)
    aged(log, 600)
    first = lab.ingest(csv_imports=[CsvImport(log, "n")])
    assert first.gpu_samples == 2 and first.warnings == 0
    assert smi_rows(lab) == [
        (0, datetime(2024, 1, 15, 8, 0, 0), 10.0, 100.0, 50.0),
        (0, datetime(2024, 1, 15, 8, 0, 1), 20.0, 200.0, 51.0),
    ]
    again = lab.ingest(csv_imports=[CsvImport(log, "n")])
    assert again.ingested == 0 and again.unchanged == 1


def test_a_settled_nvidia_smi_logs_bad_last_line_is_skipped_with_its_number(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "n.csv"
    log.write_text(HEADER + SMI_FIRST + SMI_SECOND[:29])
    aged(log, 600)
    summary = lab.ingest(csv_imports=[CsvImport(log, "n")])
    assert summary.warnings == 1 and summary.gpu_samples == 1
    (warnings,) = lab.own_query("SELECT warnings FROM ingest_files WHERE kind = 'nvidia_smi'")[0]
    assert json.loads(warnings) == ["line 3: 3 fields where the header has 5; skipped"]
    assert lab.ingest(csv_imports=[CsvImport(log, "n")]).unchanged == 1


def test_a_nvidia_smi_line_being_written_waits_then_is_stored_whole(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "g.csv"
    log.write_text(HEADER + SMI_FIRST + SMI_SECOND[:-6])  # cut at power.draw's "5"
    aged(log, 10)
    first = lab.ingest(csv_imports=[CsvImport(log, "g")])
    assert first.gpu_samples == 1 and first.warnings == 0
    with log.open("a") as f:
        f.write(SMI_SECOND[-6:] + "\n")
    aged(log, 10)
    lab.ingest(csv_imports=[CsvImport(log, "g")])
    assert smi_rows(lab) == [
        (0, datetime(2024, 1, 15, 8, 0, 0), 10.0, 100.0, 50.0),
        (0, datetime(2024, 1, 15, 8, 0, 1), 20.0, 200.0, 51.0),
    ]


@pytest.mark.parametrize("age", [10, 0], ids=["line-being-written", "changed-just-now"])
def test_a_corrected_zone_replaces_what_an_import_read_while_the_log_was_being_written(
    lab: Lab, tmp_path: Path, age: float
) -> None:
    # read while its last line was being written (or within FRESH_SECONDS of a change): the ledger
    # kept no size and time, and lost the arguments with them; the corrected import kept both readings
    log = tmp_path / "g.csv"
    log.write_text(HEADER + SMI_FIRST + (SMI_SECOND[:-6] if age else SMI_SECOND + "\n"))
    if age:
        aged(log, age)
    lab.ingest(csv_imports=[CsvImport(log, "g")])
    fixed = lab.ingest(csv_imports=[CsvImport(log, "g", timezone="Asia/Tokyo")])
    kept = [(ts, util) for _, ts, util, *_ in smi_rows(lab)]
    assert kept == [(datetime(2024, 1, 14, 23, 0, 0), 10.0)] + (
        [] if age else [(datetime(2024, 1, 14, 23, 0, 1), 20.0)]
    )
    (warnings,) = lab.own_query("SELECT warnings FROM ingest_files WHERE kind = 'nvidia_smi'")[0]
    assert fixed.warnings == 1 and json.loads(warnings) == [
        f"imported before for job 'g' with other arguments (timezone, host or columns): its {2 - bool(age)} sample(s)"
        " replaced by this import's"
    ]


# --- 3. the spool's ts read as progress.json reads a timestamp ----------------------------------

# the auditor's c13 spellings (less -1: 1969 lies past the raw window of the others) and a few more
SPELLINGS = [
    '"2025-01-01T10:00:00,5Z"', '"20250101T100000Z"', '"2025-01-01T10:00:00z"', '"2025-01-01"',
    '"2025-01-01T10:00:00+05"', "1735725600000", '"2025-01-01T10:00:00.5+05:30"', '"2025-01-01T10:00:00-00:00"',
    '"1735725600"', "1.7357256e9", '"2025-01-01T10:00"', '"2025-01-01T10:00:00.1234567Z"',
    '"2025-01-01T10:00:00+0530"', '"2025-01-01T10:00:00.25z"', '"20250101T100000,5z"', '"2025-01-01 10:00:00 UTC"',
    '"2025-01-01T10"', '"2025-W01-1"', '"2025-01-01t10:00:00"',
]  # fmt: skip


def ts_both_ways(lab: Lab, spool: Path, values: list[str]) -> tuple[dict[int, Any], dict[int, Any], Any]:
    """Each value as the ts of spool line n (GPU n) and the timestamp of progress.json's step n,
    ingested: the steps' times, the samples' times (by GPU) and the run's summary."""
    history = []
    with (spool / "s.jsonl").open("w") as f:
        for n, ts in enumerate(values, start=1):
            f.write(f'{{"ts": {ts}, "job_id": "x", "gpu_index": {n}, "utilization_percent": 1}}\n')
            history.append(f'{{"step": {n}, "timestamp": {ts}}}')
    lab.write_job("x", None, raw='{"job_id": "x", "history": [' + ", ".join(history) + "]}")
    summary = lab.ingest(lab.root, spool_root=spool)
    steps = dict(lab.query("SELECT step, ts FROM steps WHERE job_id = 'x'"))
    samples = dict(lab.query("SELECT gpu_index, ts FROM gpu_samples WHERE job_id = 'x'"))
    return steps, samples, summary


def test_spool_ts_takes_the_forms_progress_json_takes(lab: Lab, spool: Path) -> None:
    steps, samples, _ = ts_both_ways(lab, spool, SPELLINGS)
    assert samples == {n: ts for n, ts in steps.items() if ts is not None}
    assert {n: samples[n] for n in (3, 14, 15)} == {
        3: datetime(2025, 1, 1, 10),
        14: datetime(2025, 1, 1, 10, 0, 0, 250000),
        15: datetime(2025, 1, 1, 10, 0, 0, 500000),
    }
    skipped = [n for n in steps if n not in samples]
    # a zone's name is no ISO-8601 time since session 19 (rl_iso_text), but for UTC and GMT (16:
    # "2025-01-01 10:00:00 UTC", offset 0)
    assert samples[16] == datetime(2025, 1, 1, 10)
    assert sorted(skipped) == [6, 9, 17, 18, 19]
    assert spool_warnings(lab) == [
        f"line {n}: ts {str(json.loads(SPELLINGS[n - 1]))!r} is not a timestamp, skipped" for n in sorted(skipped)
    ]


@pytest.mark.parametrize("whole", [False, True], ids=["piece", "file"])
def test_every_road_of_the_spool_reads_a_lowercase_z(tmp_path: Path, whole: bool) -> None:
    """The fast roads (DuckDB's JSON or CSV reader on a whole file, the text split of a piece)
    leave such a line to the careful one, which reads it as progress.json does."""
    data = b"".join(
        f'{{"ts": "{ts}", "job_id": "x", "gpu_index": 0, "utilization_percent": {u}}}\n'.encode()
        for u, ts in enumerate(["2025-01-01T10:00:00z", "2025-01-01T10:00:01.5z", "2025-01-01T10:00:02Z"])
    )
    path = tmp_path / "s.jsonl"
    path.write_bytes(data)
    con = duckdb.connect()
    staged = gpu_samples.stage(con, [Piece(0, 1, data, path if whole else None)])
    rows = con.execute("SELECT ts, utilization_percent FROM batch_gpu_samples ORDER BY seq").fetchall()
    assert [s.warnings for s in staged] == [[]]
    assert rows == [
        (datetime(2025, 1, 1, 10, 0, 0), 0.0),
        (datetime(2025, 1, 1, 10, 0, 1, 500000), 1.0),
        (datetime(2025, 1, 1, 10, 0, 2), 2.0),
    ]
    assert gpu_samples.parse_line(data.splitlines()[1])[0]["ts"] == datetime(2025, 1, 1, 10, 0, 1, 500000)


# --- 4. the spool's epoch ts, bounded as progress.json's ------------------------------------------

# epoch seconds at and around rl_epoch's bounds: from year 1, below 1e11 (year 5138)
EPOCHS = ["99999999999", "99999999999.5", "100000000000", "1e11", "250000000000", "253402300799"]


def test_spool_epochs_are_bounded_as_progress_jsons(lab: Lab, spool: Path) -> None:
    steps, samples, summary = ts_both_ways(lab, spool, EPOCHS)
    assert samples == {n: ts for n, ts in steps.items() if ts is not None}
    assert sorted(samples) == [1, 2]
    assert samples[1] == datetime(5138, 11, 16, 9, 46, 39)
    spooled = [m for path, m in summary.listed_warnings if path.endswith("s.jsonl")]
    shown = {3: "100000000000", 4: "100000000000.0", 5: "250000000000", 6: "253402300799"}
    assert spooled == [f"line {n}: ts {text!r} is not a timestamp, skipped" for n, text in shown.items()]
