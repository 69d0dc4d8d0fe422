"""Session 19 audit: a spool file rotated or cut while its bytes at the old read offset stay the
same (an idle GPU: constant readings, fixed-width lines, identical tails) is told by its first
line and the whole last line before the offset; the old file renamed within the spool (any
name, logrotate's ``gpu.jsonl.1`` included) is read on from where its record stopped; an old
file no file of the spool holds is warned about (docs/ingest.md, "Rotation").

One warehouse, three runs: each case is a folder of the spool with its own job, so that the
cases cost three ingests in all (CI's time)."""

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

T0 = int(time.time()) // 3600 * 3600 - 7200  # within the raw window
# inputs.md section 2's fields in its order, an idle GPU: every line as wide as the next
LINE = (
    '{{"ts": {ts}.5, "host": "node-01", "job_id": "{job}", "gpu_index": 0, "gpu_uuid": "GPU-5c1", '
    '"utilization_percent": 0.0, "memory_used_mb": 4.0, "memory_total_mb": 81559.0, "temperature_c": 31.0, '
    '"power_w": 61.0}}\n'
)
CASES = ("renamed", "logrotate", "compressed", "copytruncate", "growing", "truncated", "legacy")


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


@dataclass
class Runs:
    folders: dict[str, Path]
    summaries: list[Summary]
    samples: list[tuple[str, int]]  # (job, ts) of every stored sample, after the last run
    files: list[tuple[str, int, int, str]]  # the spool's ledger after the last run

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
    return Runs(folders, summaries, samples, files)


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
    assert runs.skipped(1) == runs.skipped(2) == ["gpu.jsonl.1.gz"]  # the compressed case's
    assert runs.warnings(1, "logrotate") == runs.warnings(2, "logrotate") == []


def test_an_old_file_no_file_of_the_spool_holds_is_warned_about(runs: Runs) -> None:
    # the new gpu.jsonl is read whole; 10..19 are only in gpu.jsonl.1.gz, not read: said so, once
    assert runs.stored("compressed") == [*range(10), *range(20, 35)]
    assert runs.warnings(1, "compressed") == [lost(10)]
    assert runs.ledger("compressed")["gpu.jsonl"] == (len(lines("compressed", 20, 34)), 15, [])
    assert runs.skipped(1) == runs.skipped(2) == ["gpu.jsonl.1.gz"]
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
