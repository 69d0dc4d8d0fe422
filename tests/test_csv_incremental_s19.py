"""A growing nvidia-smi CSV log imported again and again (session 19 audit, findings 1 and 7).

The log is read whole on every change (the rule for the hour the clocks go back learns each GPU's
step from the whole file), and stored whole; but a run counts and warns of only the lines that no
earlier read of the same file, with the same arguments, covered. A sample of a new line that lands
in a minute already rolled up and pruned, which the rollup can't be recomputed for, is skipped with
a warning naming the file's line, as the spool's are.

Hand-made cases: small logs in tmp_path, a real DuckDB, the in-process ingest.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Lab

from runlytics.ingest.formats.spool import SKIPPED
from runlytics.ingest.nvidia_smi import parse
from runlytics.ingest.pipeline import CsvImport

HEADER = "timestamp, index, utilization.gpu [%], memory.used [MiB], power.draw [W]"


def line(ts: float, utilization: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return f"{moment:%Y/%m/%d %H:%M:%S}.000, 0, {utilization:g} %, 1000 MiB, 200.00 W\n"


def touch(path: Path, ago: float) -> None:
    """The log last written ``ago`` seconds ago: neither fresh (2 s) nor settled (5 minutes)."""
    moment = time.time() - ago
    os.utime(path, (moment, moment))


def minutes(lab: Lab) -> list[tuple[object, ...]]:
    return lab.own_query(
        "SELECT minute, samples, utilization_percent_sum, interval_seconds FROM gpu_minutes"
        " WHERE job_id = 'j1' ORDER BY minute"
    )


def old_job(tmp_path: Path, name: str) -> tuple[Lab, Path, Path, float]:
    """A warehouse whose spool holds a recent sample of another job, so that a day 60 days back is
    past the raw window (--keep-raw-days 30): the log's samples there are rolled up, then pruned."""
    folder = tmp_path / name
    folder.mkdir()
    lab = Lab(folder)
    spool = folder / "spool"
    spool.mkdir()
    now = time.time()
    sample = {"ts": now - 400, "job_id": "other", "gpu_index": 0, "utilization_percent": 50.0}
    (spool / "x.jsonl").write_text(json.dumps(sample) + "\n")
    start = (now // 86400 - 60) * 86400 + 3 * 3600  # 03:00:00 UTC, 60 days ago
    return lab, spool, folder / "gpu.csv", start


# --- finding 1: lines between stored ones, in minutes rolled up and pruned ---------------------------


def test_new_lines_in_a_pruned_minute_are_skipped_with_a_warning_naming_their_lines(tmp_path: Path) -> None:
    """12 samples 10 s apart (03:00 and 03:01), rolled up and pruned; then 6 lines at +5 s between
    those of 03:00 (lines 14-19) and 6 of 03:02 (lines 20-25). 03:00's rollup can't be recomputed
    from the log (it holds 12 samples there, the rollup counted 6): it stands and the 6 samples are
    skipped, said once each by line, not dropped silently (the audit's run said 24 samples and 0
    warnings). What docs/ingest.md keeps: the log grown at its end ends as one import of the final
    log (03:01 recomputed, its last sample counting until 03:02:00's; 03:02 stored)."""
    lab, spool, log, start = old_job(tmp_path, "a")
    log.write_text(HEADER + "\n" + "".join(line(start + 10 * i, 80) for i in range(12)))
    touch(log, 60)
    first = lab.ingest(spool_root=spool, csv_imports=[CsvImport(log, "j1")])
    assert (first.gpu_samples, first.warnings) == (13, 0)  # the spool's sample, the log's 12
    assert lab.own_query("SELECT count(*) FROM gpu_samples WHERE job_id = 'j1'") == [(0,)]  # pruned
    assert [m[1:] for m in minutes(lab)] == [(6, 480.0, 60.0), (6, 480.0, 50.0)]

    with log.open("a") as f:
        f.write("".join(line(start + 5 + 10 * i, 10) for i in range(6)))
        f.write("".join(line(start + 120 + 10 * i, 10) for i in range(6)))
    touch(log, 30)
    second = lab.ingest(spool_root=spool, csv_imports=[CsvImport(log, "j1")])
    assert (second.gpu_samples, second.warnings) == (6, 6)
    said = [f"line {n}: {SKIPPED}" for n in range(14, 20)]
    assert [message for _, message in second.listed_warnings] == said
    ((count, kept),) = lab.own_query("SELECT warning_count, warnings FROM ingest_files WHERE kind = 'nvidia_smi'")
    assert (count, json.loads(kept)) == (6, said)
    stored = minutes(lab)
    assert [m[1:] for m in stored] == [(6, 480.0, 60.0), (6, 480.0, 60.0), (6, 60.0, 50.0)]

    fresh, fresh_spool, _, _ = old_job(tmp_path, "b")
    once = fresh.ingest(spool_root=fresh_spool, csv_imports=[CsvImport(log, "j1")])
    assert (once.gpu_samples, once.warnings) == (25, 0)
    assert [m[1:] for m in minutes(fresh)][0] == (12, 540.0, 60.0)  # one import keeps the skipped ones
    assert minutes(fresh)[1:] == stored[1:]

    # read again (touched): the same lines are skipped again, said no more
    touch(log, 20)
    third = lab.ingest(spool_root=spool, csv_imports=[CsvImport(log, "j1")])
    assert (third.ingested, third.gpu_samples, third.warnings) == (1, 0, 0)
    assert minutes(lab) == stored


# --- finding 7: a growing log counts and warns of its new lines only ---------------------------------


def test_a_growing_log_counts_and_warns_of_only_the_lines_no_run_read_before(tmp_path: Path) -> None:
    """The audit's case: one bad line near the start, 3 lines added before each of 3 imports. The
    bad line was said 3 times (ingest_runs summed 3 warnings) and the samples counted 4, 7, 10.
    Only lines that the earlier read of the same bytes, with the same arguments, covered are known:
    a log rewritten before its end (one byte of its first sample) or imported for another host is
    counted and warned of whole."""
    lab = Lab(tmp_path)
    log = tmp_path / "gpu.csv"
    start = time.time() - 3000
    log.write_text(
        HEADER + "\n" + line(start, 50) + "garbage, line\n" + "".join(line(start + i, 50) for i in (5, 10, 15))
    )
    touch(log, 20)
    counted = []
    for k in (1, 2, 3):
        summary = lab.ingest(csv_imports=[CsvImport(log, "j1")])
        counted.append((summary.gpu_samples, summary.warnings, [m for _, m in summary.listed_warnings]))
        with log.open("a") as f:
            f.write("".join(line(start + 100 * k + 5 * i, 50) for i in (1, 2, 3)))
        touch(log, 15 - 3 * k)
    assert counted == [(4, 1, ["line 3: 2 fields where the header has 5; skipped"]), (3, 0, []), (3, 0, [])]
    assert lab.own_query("SELECT sum(warnings) FROM ingest_runs") == [(1,)]
    assert lab.own_query("SELECT count(*) FROM gpu_samples") == [(10,)]  # stored whole all the same
    # the ledger covers what was read: its bytes (not the 3 lines added since), and their digest
    ((offset, rows),) = lab.own_query("SELECT read_offset, rows FROM ingest_files WHERE kind = 'nvidia_smi'")
    assert (offset, rows) == (log.stat().st_size - 3 * len(line(start, 50)), 10)

    # the first sample's utilization rewritten (the same length): the log counted whole
    log.write_text(log.read_text().replace(" 50 %", " 51 %", 1))
    touch(log, 3)
    rewritten = lab.ingest(csv_imports=[CsvImport(log, "j1")])
    # the bad line, and (session 29) the stored sample replaced with other values
    assert (rewritten.gpu_samples, rewritten.warnings) == (13, 2)
    # another host (a correction): other rows, counted whole, with the correction's own warning
    other = lab.ingest(csv_imports=[CsvImport(log, "j1", host="ws-2")])
    assert (other.gpu_samples, other.warnings) == (13, 2)
    touch(log, 2.5)
    again = lab.ingest(csv_imports=[CsvImport(log, "j1", host="ws-2")])
    assert (again.ingested, again.gpu_samples, again.warnings) == (1, 0, 0)


# --- the parser's side: the bytes a read took, and the lines an earlier read of them read whole -----

SAMPLE = "2026/01/05 08:00:00.000, 0"


@pytest.mark.parametrize(
    ("before", "complete_only", "after", "read", "seen_lines"),
    [
        # the lines read whole; the next read's new line is line 4
        ("timestamp, index\nS\nS\n", True, "S\n", len("timestamp, index\nS\nS\n"), 3),
        # a last line being written is not read: the bytes read end before it, and it is new later
        ("timestamp, index\nS\nS", True, "S\n", len("timestamp, index\nS\n"), 2),
        # a settled last line read without its end: read, unless a writer added to it since
        ("timestamp, index\nS\nS", False, "\nS\n", len("timestamp, index\nS\nS"), 3),
        ("timestamp, index\nS\nS", False, "0\n", len("timestamp, index\nS\nS"), 2),
        # CR line ends: a read that ended at a "\r" whose "\n" came later read that line whole
        ("timestamp, index\r\nS\r", True, "\nS\r\n", len("timestamp, index\r\nS\r"), 2),
    ],
)
def test_the_bytes_read_and_the_lines_an_earlier_read_covered(
    before: str, complete_only: bool, after: str, read: int, seen_lines: int
) -> None:
    first_data = before.replace("S", SAMPLE).encode()
    first = parse(first_data, complete_only=complete_only)
    assert first.read == len(before[:read].replace("S", SAMPLE).encode())
    grown = parse(first_data + after.replace("S", SAMPLE).encode(), seen=first.read)
    assert grown.seen_lines == seen_lines
    assert [n for n in grown.numbers if grown.is_new(n)] == [n for n in grown.numbers if n > seen_lines]


def test_the_bytes_read_leave_out_a_character_cut_short_and_count_the_bom() -> None:
    utf8 = "\ufefftimestamp, index\n2026/01/05 08:00:00.000, 0\n".encode()
    assert parse(utf8 + "ä".encode()[:1]).read == len(utf8)
    utf16 = "timestamp, index\r\n2026/01/05 08:00:00.000, 0\r\n".encode("utf-16")
    assert parse(utf16 + b"2").read == len(utf16)
    cut = parse(utf16 + "2026/01/05 08:00:01".encode("utf-16-le"), complete_only=True)
    assert (cut.read, cut.unterminated, len(cut.rows)) == (len(utf16), True, 1)
    assert parse(utf16 + "2026/01/05 08:00:01.000, 0\r\n".encode("utf-16-le"), seen=cut.read).seen_lines == 2
