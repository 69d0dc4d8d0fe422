"""Session 20 audit: a settled spool file's last line without its newline is read only when it is
whole JSON. A line cut mid-write in a file that looks settled (its mtime old: a file server's
clock behind, or ``touch -d``) waits, unwarned, with the offset before it, and is read once whole;
one that stays cut is read as a bad line once its record has had the file's size and time for
5 minutes by this machine's clock, and warned of once (docs/ingest.md, the spool's reading)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import pytest

from runlytics.ingest.formats.tool_log import digest
from runlytics.ingest.summary import Summary
from tests.conftest import Engine, Lab
from tests.file_times import opened_under

T0 = int(time.time()) // 3600 * 3600 - 7200  # within the raw window
OLD = 86_400  # 1970-01-02: the audit's `touch -d`


def line(i: int, job: str = "s") -> str:
    return json.dumps({"ts": T0 + i, "job_id": job, "gpu_index": 0, "utilization_percent": i})


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


@pytest.fixture
def spool(lab: Lab) -> Path:
    folder = lab.root.parent / "spool"
    folder.mkdir()
    return folder


def append(path: Path, text: str, old: bool = True) -> None:
    """The writer adds ``text``; ``old``: the file server's clock says the file has long settled."""
    with path.open("a") as f:
        f.write(text)
    if old:
        os.utime(path, (OLD, OLD))


def stored(lab: Lab) -> list[float]:
    return [u for (u,) in lab.query("SELECT utilization_percent FROM gpu_samples ORDER BY ts")]


def record(lab: Lab, path: Path) -> tuple[int, str, list[str]]:
    """The file's ledger record: its read offset, digest and warnings (the stage's, on PostgreSQL too)."""
    query = "SELECT read_offset, read_digest, warnings FROM ingest_files WHERE kind = 'spool' AND path = $path"
    ((offset, read_digest, warnings),) = lab.own_query(query, {"path": str(path.resolve())})
    return offset, read_digest, json.loads(warnings)


def five_minutes_on(lab: Lab) -> None:
    """This machine's clock five minutes and more past the spool's records (their last_read_at)."""
    with duckdb.connect(str(lab.db)) as con:
        con.execute("UPDATE ingest_files SET last_read_at = last_read_at - INTERVAL 10 MINUTE WHERE kind = 'spool'")


def said(summary: Summary) -> list[str]:
    return [message for _, message in summary.listed_warnings]


@pytest.mark.parametrize("touched", [True, False], ids=["old-again", "now"])
def test_a_line_cut_mid_write_in_a_settled_file_waits_and_is_read_whole(lab: Lab, spool: Path, touched: bool) -> None:
    # the audit's mts.sh: two lines and half a line, the file's time 1970-01-02
    path = spool / "gpu.jsonl"
    first, second = line(1) + "\n", line(2) + "\n"
    cut = len(line(3)) // 2
    append(path, first + second + line(3)[:cut])
    run1 = lab.ingest(lab.root, spool_root=spool)
    assert run1.gpu_samples == 2 and run1.warnings == 0 and stored(lab) == [1.0, 2.0]
    # the offset stays before the cut line, and the digest tells the lines before it
    head = (first + second).encode()
    assert record(lab, path) == (len(head), digest(first.encode()) + digest(second.encode()), [])
    # the writer finishes the line and writes one more
    append(path, line(3)[cut:] + "\n" + line(4) + "\n", old=touched)
    run2 = lab.ingest(lab.root, spool_root=spool)
    assert run2.gpu_samples == 2 and run2.warnings == 0
    assert stored(lab) == [1.0, 2.0, 3.0, 4.0]
    assert record(lab, path)[0] == path.stat().st_size and record(lab, path)[2] == []


@pytest.mark.parametrize("finished", [False, True], ids=["whole-at-once", "cut-then-finished"])
def test_a_settled_last_line_without_its_newline_that_is_json_is_read_once(
    lab: Lab, spool: Path, finished: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a writer that never writes a final newline (session 16's rule, kept), caught mid-line or not
    path = spool / "gpu.jsonl"
    cut = len(line(2)) // 2
    append(path, line(1) + "\n" + (line(2)[:cut] if finished else line(2)))
    lab.ingest(lab.root, spool_root=spool)
    if finished:
        assert stored(lab) == [1.0]
        append(path, line(2)[cut:])  # whole now, still without its newline
    run = lab.ingest(lab.root, spool_root=spool)
    assert stored(lab) == [1.0, 2.0] and record(lab, path)[0] == path.stat().st_size
    assert run.warnings == 0 and record(lab, path)[2] == []
    opened = opened_under(spool, monkeypatch)
    again = lab.ingest(lab.root, spool_root=spool)
    assert opened == [] and again.unchanged == 1 and again.gpu_samples == 0 and stored(lab) == [1.0, 2.0]


@pytest.mark.parametrize("when", ["first-run", "appended"])
def test_a_line_cut_for_good_is_warned_of_once(
    lab: Lab, spool: Path, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a writer killed mid-line (a buffered sampler's last flush): the cut line never ends
    path = spool / "gpu.jsonl"
    cut = line(2)[:30]
    append(path, line(1) + "\n" + (cut if when == "first-run" else ""))
    lab.ingest(lab.root, spool_root=spool)
    if when == "appended":
        append(path, cut)
    waiting = [lab.ingest(lab.root, spool_root=spool) for _ in range(2)]
    assert [run.warnings for run in waiting] == [0, 0] and stored(lab) == [1.0]
    assert record(lab, path)[0] == len(line(1)) + 1
    five_minutes_on(lab)  # unchanged that long by this machine's clock: its writer stopped
    late = lab.ingest(lab.root, spool_root=spool)
    message = "line 2: not JSON (Unterminated string starting at: line 1 column 30 (char 29)), skipped"
    assert said(late) == [message] and record(lab, path)[0] == path.stat().st_size
    opened = opened_under(spool, monkeypatch)
    after = [lab.ingest(lab.root, spool_root=spool) for _ in range(2)]
    assert opened == [] and [run.warnings for run in after] == [0, 0] and stored(lab) == [1.0]


def test_a_settled_whole_last_line_that_is_no_sample_is_skipped_at_once(
    lab: Lab, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # whole JSON, but no sample: a bad line as any other, warned of once
    path = spool / "gpu.jsonl"
    append(path, line(1) + "\n" + json.dumps({"ts": T0 + 2, "gpu_index": 0}))
    run = lab.ingest(lab.root, spool_root=spool)
    assert said(run) == ["line 2: no job_id, skipped"] and record(lab, path)[0] == path.stat().st_size
    opened = opened_under(spool, monkeypatch)
    again = lab.ingest(lab.root, spool_root=spool)
    assert opened == [] and again.warnings == 0 and stored(lab) == [1.0]


def test_a_line_cut_after_its_cr_waits_for_its_lf(lab: Lab, spool: Path) -> None:
    # CRLF lines caught between the CR and the LF: the line is read once, with its own number
    path = spool / "gpu.jsonl"
    append(path, line(1) + "\r\n" + line(2) + "\r")
    lab.ingest(lab.root, spool_root=spool)
    assert stored(lab) == [1.0]
    append(path, "\nnot json\r\n" + line(4) + "\r\n")
    run = lab.ingest(lab.root, spool_root=spool)
    assert stored(lab) == [1.0, 2.0, 4.0]
    assert said(run) == ["line 3: not JSON (Expecting value: line 1 column 1 (char 0)), skipped"]


def test_a_file_rotated_while_its_last_line_waits_is_read_on_under_its_new_name(lab: Lab, spool: Path) -> None:
    # logrotate renames the file while a line waits in it; its writer, still at the old file, ends the line
    path, rotated = spool / "gpu.jsonl", spool / "gpu.jsonl.1"
    cut = len(line(3)) // 2
    append(path, line(1) + "\n" + line(2) + "\n" + line(3)[:cut])
    lab.ingest(lab.root, spool_root=spool)
    path.rename(rotated)
    append(path, line(5) + "\n")
    run2 = lab.ingest(lab.root, spool_root=spool)
    assert run2.warnings == 0 and stored(lab) == [1.0, 2.0, 5.0]
    # the rotated copy took the record up, before the cut line
    assert record(lab, rotated)[0] == len(line(1)) + len(line(2)) + 2
    append(rotated, line(3)[cut:] + "\n" + line(4) + "\n")
    run3 = lab.ingest(lab.root, spool_root=spool)
    assert run3.warnings == 0 and stored(lab) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_run_that_finds_only_a_cut_line_lists_no_earlier_warning(lab: Lab, spool: Path) -> None:
    # the review's spool_oldwarn.py: a bad line warned of by one run; a later run finds only a line
    # being written (on a file server whose clock is behind), reads nothing and warns of nothing,
    # and listed the first run's warning as its own (the record's time was the run's, its warnings kept)
    path = spool / "gpu.jsonl"
    append(path, line(1) + "\nGARBAGE\n" + line(3) + "\n")
    first = lab.ingest(lab.root, spool_root=spool)
    assert said(first) == ["line 2: not JSON (Expecting value: line 1 column 1 (char 0)), skipped"]
    append(path, line(4)[:15])
    waiting = lab.ingest(lab.root, spool_root=spool)
    assert waiting.warnings == 0 and said(waiting) == [] and stored(lab) == [1.0, 3.0]
    assert record(lab, path)[2] == []  # the ledger keeps the last read's warnings: this one's, none
    five_minutes_on(lab)  # the line stays cut: warned of once, alone
    late = lab.ingest(lab.root, spool_root=spool)
    assert late.warnings == 1 and said(late) == [
        "line 4: not JSON (Expecting ',' delimiter: line 1 column 16 (char 15)), skipped"
    ]
