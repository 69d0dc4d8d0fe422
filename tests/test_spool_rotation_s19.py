"""Session 19 audit: a spool file rotated or cut while its bytes at the old read offset stay the
same (an idle GPU: constant readings, fixed-width lines, identical tails) is told by its first
line and the whole last line before the offset; the old file renamed within the spool (any
name, logrotate's ``gpu.jsonl.1`` included) is read on from where its record stopped; an old
file no file of the spool holds is warned about (docs/ingest.md, "Rotation"). A rotated copy of
a file read to offset 0 only is read; a run that finds nothing changed opens no file of the
spool (an empty one, a compressed copy of a file gone); a gone file's record no file holds is
dropped.

One warehouse, three runs and an unchanged fourth: each case is a folder of the spool with its
own job, so that the cases cost four ingests in all (CI's time)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from runlytics.ingest.formats import spool as spool_format
from runlytics.ingest.formats.tool_log import DIGEST_BYTES, digest
from runlytics.ingest.summary import Summary
from tests.conftest import Lab
from tests.file_times import opened_under

T0 = int(time.time()) // 3600 * 3600 - 7200  # within the raw window
# inputs.md section 2's fields in its order, an idle GPU: every line as wide as the next
LINE = (
    '{{"ts": {ts}.5, "host": "node-01", "job_id": "{job}", "gpu_index": 0, "gpu_uuid": "GPU-5c1", '
    '"utilization_percent": 0.0, "memory_used_mb": 4.0, "memory_total_mb": 81559.0, "temperature_c": 31.0, '
    '"power_w": 61.0}}\n'
)
CASES = ("renamed", "logrotate", "compressed", "copytruncate", "growing", "truncated", "legacy", "zero", "dated")


def lines(job: str, first: int, last: int) -> str:
    """Samples ``first`` to ``last`` (10 s apart) of ``job``."""
    return "".join(LINE.format(ts=T0 + 10 * i, job=job) for i in range(first, last + 1))


def write(path: Path, text: str | bytes, mode: str = "w") -> None:
    with path.open(mode + ("b" if isinstance(text, bytes) else "")) as f:
        f.write(text)


def step_1(folders: dict[str, Path]) -> None:
    for case, folder in folders.items():
        write(folder / "gpu.jsonl", lines(case, 0, 9))
    write(folders["growing"] / "gpu.jsonl", lines("growing", 0, 0) + "not json\n" + lines("growing", 1, 9))
    write(folders["zero"] / "gpu.jsonl", "")  # a sampler's file before its first sample
    write(folders["zero"] / "idle.jsonl", "")  # and one that stays empty


def step_2(f: dict[str, Path]) -> None:
    # the auditor's spool_rotate_idle.sh: renamed to a name still read, a new file as long as the offset
    os.rename(f["renamed"] / "gpu.jsonl", f["renamed"] / "gpu-old.jsonl")
    write(f["renamed"] / "gpu.jsonl", lines("renamed", 10, 19))
    # spool_logrotate.sh: lines written before the rotation, renamed gpu.jsonl.1, a new gpu.jsonl
    write(f["logrotate"] / "gpu.jsonl", lines("logrotate", 10, 19), "a")
    os.rename(f["logrotate"] / "gpu.jsonl", f["logrotate"] / "gpu.jsonl.1")
    write(f["logrotate"] / "gpu.jsonl", lines("logrotate", 20, 29))
    # logrotate's compress: the old file only as gpu.jsonl.1.gz, which is not read
    write(f["compressed"] / "gpu.jsonl", lines("compressed", 10, 19), "a")
    old = (f["compressed"] / "gpu.jsonl").read_bytes()
    write(f["compressed"] / "gpu.jsonl.1.gz", gzip.compress(old))
    (f["compressed"] / "gpu.jsonl").unlink()
    write(f["compressed"] / "gpu.jsonl", lines("compressed", 20, 29))
    # logrotate's copytruncate: copied to gpu.jsonl.1, then cut in place and written again
    write(f["copytruncate"] / "gpu.jsonl", lines("copytruncate", 10, 19), "a")
    shutil.copy(f["copytruncate"] / "gpu.jsonl", f["copytruncate"] / "gpu.jsonl.1")
    write(f["copytruncate"] / "gpu.jsonl", lines("copytruncate", 20, 24))
    write(f["growing"] / "gpu.jsonl", lines("growing", 10, 14), "a")
    # cut in place and written again past the old offset, its bytes there the same
    write(f["truncated"] / "gpu.jsonl", lines("truncated", 10, 21))
    # logrotate over a record of before session 19 (its digest of the 64 bytes before the offset)
    write(f["legacy"] / "gpu.jsonl", lines("legacy", 10, 14), "a")
    os.rename(f["legacy"] / "gpu.jsonl", f["legacy"] / "gpu.jsonl.1")
    write(f["legacy"] / "gpu.jsonl", lines("legacy", 20, 29))
    # the file seen empty gets its samples and is rotated before the next run (the reviewer's zero.py)
    write(f["zero"] / "gpu.jsonl", lines("zero", 0, 4))
    os.rename(f["zero"] / "gpu.jsonl", f["zero"] / "gpu.jsonl.1")
    write(f["zero"] / "gpu.jsonl", lines("zero", 5, 7))
    # logrotate's dateext with delaycompress: renamed with its date now, compressed at the next rotation
    write(f["dated"] / "gpu.jsonl", lines("dated", 10, 14), "a")
    os.rename(f["dated"] / "gpu.jsonl", f["dated"] / "gpu.jsonl-20260301")
    write(f["dated"] / "gpu.jsonl", lines("dated", 15, 19))


def step_3(f: dict[str, Path]) -> None:
    write(f["renamed"] / "gpu.jsonl", lines("renamed", 20, 24), "a")
    # the next rotation: gpu.jsonl.1 -> gpu.jsonl.2, gpu.jsonl (grown since) -> gpu.jsonl.1
    write(f["logrotate"] / "gpu.jsonl", lines("logrotate", 30, 34), "a")
    os.rename(f["logrotate"] / "gpu.jsonl.1", f["logrotate"] / "gpu.jsonl.2")
    os.rename(f["logrotate"] / "gpu.jsonl", f["logrotate"] / "gpu.jsonl.1")
    write(f["logrotate"] / "gpu.jsonl", lines("logrotate", 35, 39))
    write(f["compressed"] / "gpu.jsonl", lines("compressed", 30, 34), "a")
    write(f["growing"] / "gpu.jsonl", lines("growing", 15, 19), "a")
    write(f["truncated"] / "gpu.jsonl", lines("truncated", 22, 24))  # cut shorter than the offset
    old = f["dated"] / "gpu.jsonl-20260301"
    write(f["dated"] / "gpu.jsonl-20260301.gz", gzip.compress(old.read_bytes()))
    old.unlink()


@dataclass
class Runs:
    folders: dict[str, Path]
    summaries: list[Summary]
    samples: list[tuple[str, int]]  # (job, ts) of every stored sample, after the last run
    files: list[tuple[str, int, int, str]]  # the spool's ledger after the last run
    opened: list[str]  # the spool's files opened by a fourth run, nothing changed since the third

    def stored(self, case: str) -> list[int]:
        return sorted((ts - T0) // 10 for job, ts in self.samples if job == case)

    def ledger(self, case: str) -> dict[str, tuple[int, int, list[str]]]:
        """name -> (read offset, lines, warnings) of the case's spool files in the ledger."""
        folder = self.folders[case]
        return {
            Path(path).name: (offset, n, json.loads(warnings))
            for path, offset, n, warnings in self.files
            if Path(path).parent == folder
        }

    def skipped(self, run: int) -> list[str]:
        """The names of the spool's files the run did not read (its problems)."""
        reasons = [p["reason"] for p in self.summaries[run].problems if p["outcome"] == "skipped"]
        return [name for reason in reasons for name in reason.split(": ", 1)[1].split(", ")]

    def warnings(self, run: int, case: str) -> list[str]:
        return [message for path, message in self.summaries[run].listed_warnings if f"/{case}/" in path]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp = tmp_path_factory.mktemp("rotation")
    lab = Lab(tmp)  # DuckDB: the spool's ledger is the stage's on PostgreSQL too
    spool = tmp / "spool"
    folders = {case: spool / case for case in CASES}
    for folder in folders.values():
        folder.mkdir(parents=True)
    summaries = []
    steps: list[Callable[[dict[str, Path]], None]] = [step_1, step_2, step_3]
    for n, step in enumerate(steps):
        step(folders)
        for path in spool.rglob("*"):  # settled writes, each step later than the last
            if path.is_file():
                when = time.time() - 600 + 60 * n
                os.utime(path, (when, when))
        summaries.append(lab.ingest(lab.root, spool_root=spool))
        if n == 0:
            legacy = folders["legacy"] / "gpu.jsonl"
            with duckdb.connect(str(lab.db)) as con:
                con.execute(
                    "UPDATE ingest_files SET read_digest = ? WHERE path = ?",
                    [digest(legacy.read_bytes()[-DIGEST_BYTES:]), str(legacy)],
                )
    samples = lab.query("SELECT job_id, epoch(ts)::BIGINT FROM gpu_samples")
    files = lab.own_query("SELECT path, read_offset, rows, warnings FROM ingest_files WHERE kind = 'spool'")
    with pytest.MonkeyPatch.context() as monkeypatch:
        opened = opened_under(spool, monkeypatch)
        summaries.append(lab.ingest(lab.root, spool_root=spool))
    return Runs(folders, summaries, samples, files, list(opened))


def lost(lines: int) -> str:
    return spool_format.LOST.format(lines=lines)


def test_a_file_renamed_within_the_spool_and_a_new_one_of_the_offsets_size(runs: Runs) -> None:
    # before: the new gpu.jsonl "unchanged", then read on from the old offset: 15 samples of 25
    assert runs.stored("renamed") == list(range(25))
    files = runs.ledger("renamed")
    # the renamed file is read on from where its record stopped (nothing new), not again from its start
    assert files["gpu-old.jsonl"] == (len(lines("renamed", 0, 9)), 10, [])
    assert files["gpu.jsonl"] == (len(lines("renamed", 10, 24)), 15, [])
    assert runs.warnings(1, "renamed") == runs.warnings(2, "renamed") == []


def test_logrotates_renamed_copies_are_read_on_from_where_the_old_file_was_read(runs: Runs) -> None:
    # before: 10..19 (written before the rotation, only in gpu.jsonl.1) and 30..34 lost, silently
    assert runs.stored("logrotate") == list(range(40))
    files = runs.ledger("logrotate")
    assert files["gpu.jsonl.2"][:2] == (len(lines("logrotate", 0, 19)), 20)
    assert files["gpu.jsonl.1"][:2] == (len(lines("logrotate", 20, 34)), 15)
    assert files["gpu.jsonl"][:2] == (len(lines("logrotate", 35, 39)), 5)
    assert runs.skipped(1) == ["gpu.jsonl.1.gz"]  # the compressed case's
    assert runs.skipped(2) == runs.skipped(3) == ["gpu.jsonl.1.gz", "gpu.jsonl-20260301.gz"]  # and the dated's
    assert runs.warnings(1, "logrotate") == runs.warnings(2, "logrotate") == []


def test_an_old_file_no_file_of_the_spool_holds_is_warned_about(runs: Runs) -> None:
    # the new gpu.jsonl is read whole; 10..19 are only in gpu.jsonl.1.gz, not read: said so, once
    assert runs.stored("compressed") == [*range(10), *range(20, 35)]
    assert runs.warnings(1, "compressed") == [lost(10)]
    assert runs.ledger("compressed")["gpu.jsonl"] == (len(lines("compressed", 20, 34)), 15, [])
    assert runs.skipped(1) == ["gpu.jsonl.1.gz"]
    assert runs.summaries[1].warnings >= 1


def test_a_copy_made_before_the_file_was_cut_is_read_on(runs: Runs) -> None:
    # copytruncate: 10..19 are in the copy only
    assert runs.stored("copytruncate") == list(range(25))
    files = runs.ledger("copytruncate")
    assert files["gpu.jsonl.1"] == (len(lines("copytruncate", 0, 19)), 20, [])
    assert runs.warnings(1, "copytruncate") == []


def test_a_growing_file_is_read_on_from_its_offset(runs: Runs) -> None:
    assert runs.stored("growing") == list(range(20))
    # its bad line 2 was warned of in the first run only: the others read on, not from its start
    assert runs.warnings(0, "growing") == ["line 2: not JSON (Expecting value: line 1 column 1 (char 0)), skipped"]
    assert runs.warnings(1, "growing") == runs.warnings(2, "growing") == []
    assert runs.ledger("growing")["gpu.jsonl"][:2] == ((runs.folders["growing"] / "gpu.jsonl").stat().st_size, 21)


def test_a_file_cut_and_written_again_is_read_from_its_start(runs: Runs) -> None:
    # cut, then longer than the old offset with the same bytes there (before: read on, 10..19
    # lost); then cut shorter than the offset: read from its start, as before
    assert runs.stored("truncated") == list(range(25))
    assert runs.warnings(1, "truncated") == [lost(10)]
    assert runs.warnings(2, "truncated") == [lost(12)]
    assert runs.ledger("truncated")["gpu.jsonl"] == (len(lines("truncated", 22, 24)), 3, [lost(12)])


def test_a_record_of_before_session_19_that_two_files_hold_reads_both(runs: Runs) -> None:
    # its 64 bytes are in the new gpu.jsonl and in gpu.jsonl.1: the one is read from its start,
    # the other on from the offset (before: the new file taken for the old, 10..14 and 20..29 lost)
    assert runs.stored("legacy") == [*range(15), *range(20, 30)]
    files = runs.ledger("legacy")
    assert files["gpu.jsonl.1"] == (len(lines("legacy", 0, 14)), 15, [])
    assert files["gpu.jsonl"] == (len(lines("legacy", 20, 29)), 10, [])
    assert runs.warnings(1, "legacy") == []


def test_a_rotated_copy_of_a_file_read_to_offset_0_only_is_read(runs: Runs) -> None:
    # gpu.jsonl empty when the first run saw it, then 5 samples, renamed gpu.jsonl.1, a new gpu.jsonl:
    # before, the copy continued no record (nothing was read of its file) and 0..4 were lost,
    # named only as "not named *.jsonl not read: gpu.jsonl.1"
    assert runs.stored("zero") == list(range(8))
    files = runs.ledger("zero")
    assert files["gpu.jsonl.1"] == (len(lines("zero", 0, 4)), 5, [])
    assert files["gpu.jsonl"] == (len(lines("zero", 5, 7)), 3, [])
    assert files["idle.jsonl"] == (0, 0, [])  # an empty file is recorded, at offset 0
    assert "gpu.jsonl.1" not in runs.skipped(1) and runs.warnings(1, "zero") == []


def test_an_unchanged_run_opens_no_file_and_a_gone_files_record_is_dropped(runs: Runs) -> None:
    # the dated copy read on, then compressed and removed: the .gz holds no record (not read,
    # named), and the record of the removed copy, which no file holds, is dropped. Before, it
    # stayed free for ever, and every run opened the .gz to look for it; the empty idle.jsonl was
    # opened by every run too (no record)
    assert runs.stored("dated") == list(range(20))
    assert set(runs.ledger("dated")) == {"gpu.jsonl"}
    assert runs.warnings(2, "dated") == []
    assert runs.opened == []
    fourth = runs.summaries[3]
    assert fourth.ingested == fourth.gpu_samples == fourth.warnings == 0
    assert fourth.unchanged == fourth.files_seen == len(runs.files)


def test_a_copy_older_than_a_record_is_not_opened_to_look_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file holding another's bytes and more was written since that file's record (renamed,
    # copied, compressed): a copy kept from an earlier rotation is not opened at each rotation
    text = lines("held", 0, 4).encode()
    head, before = text[: spool_format.HEAD_BYTES], text[-spool_format.TAIL_BYTES :]
    old, new = tmp_path / "gpu.jsonl.2", tmp_path / "gpu.jsonl.1"
    write(old, text)
    write(new, text)
    when = os.stat(old).st_mtime_ns
    os.utime(old, ns=(when - 10**9, when - 10**9))
    mark = spool_format._Mark("gone", len(text), 5, spool_format._identity(head, before, len(text)), when)
    opened = opened_under(tmp_path, monkeypatch)
    assert spool_format._holds(old, spool_format.ledger.stat(old), [mark], others=True) is None
    assert opened == []
    held = spool_format._holds(new, spool_format.ledger.stat(new), [mark], others=True)
    assert held is not None and held.mark == mark and opened == [str(new)]


def test_only_the_records_of_folders_a_run_listed_whole_can_be_dropped() -> None:
    # a run given one spool (or one folder of it) keeps the records of another's files
    folders = {"/spool/a", "/spool/b/x"}
    assert spool_format._listed("/spool/a", folders) and spool_format._listed("/spool/a/old/deeper", folders)
    assert not spool_format._listed("/spool", folders) and not spool_format._listed("/spool/b", folders)
    assert not spool_format._listed("/other/a", folders)
