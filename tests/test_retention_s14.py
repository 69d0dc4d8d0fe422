"""Samples of a day past the raw window (--keep-raw-days) that arrive in pieces across runs: the
warehouse equals one ingest of the final files, whatever the run boundaries (warehouse/rollups.py,
ingest/gpu_store.py: a rolled-up minute whose samples the batch holds again is recomputed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab

from runlytics.ingest.formats import spool
from runlytics.ingest.formats.nvidia_smi import CsvImport

HEADER = "timestamp, index, utilization.gpu [%], memory.used [MiB], power.draw [W]\n"
# 60 days back: past the default 30-day window once today's sample is stored
OLD = (datetime.now(UTC) - timedelta(days=60)).replace(hour=10, minute=0, second=0, microsecond=0, tzinfo=None)
MINUTES = ("SELECT job_id, gpu_key, minute, samples, first_ts, last_ts, utilization_percent_sum, power_w_sum, "
           "interval_seconds, utilization_seconds, idle_seconds, energy_wh FROM gpu_minutes WHERE job_id = 'old' "
           "ORDER BY gpu_key, minute")  # fmt: skip
FIGURES = "SELECT gpu_index, samples, average_utilization FROM job_gpus WHERE job_id = 'old' ORDER BY gpu_index"


def old_log(seconds: int = 300, step: int = 5) -> list[str]:
    """Two GPUs, a line each every ``step`` seconds for ``seconds`` from 10:00 of a day 60 days back."""
    lines = []
    for t in range(0, seconds, step):
        ts = (OLD + timedelta(seconds=t)).strftime("%Y/%m/%d %H:%M:%S.000")
        for gpu in (0, 1):
            util = (t * 7 + gpu * 40) % 101 if gpu == 0 else (t // step) % 9  # GPU 1 mostly idle
            lines.append(f"{ts}, {gpu}, {util} %, {1000 + t} MiB, {100 + t / 7:.2f} W\n")
    return lines


def today(folder: Path) -> Path:
    """A spool holding one sample of an hour ago: the window counts back from it."""
    folder.mkdir(exist_ok=True)
    now = datetime.now(UTC).timestamp()
    line = {"ts": now - 3600, "job_id": "today", "gpu_index": 0, "utilization_percent": 50.0}
    (folder / "today.jsonl").write_text(json.dumps(line) + "\n")
    return folder


def lab_in(tmp_path: Path, name: str, engine: Engine) -> Lab:
    folder = tmp_path / name
    folder.mkdir()
    return Lab(folder, engine)


def run(lab: Lab, log: Path, spools: Path) -> Any:
    return lab.ingest(spool_root=spools, csv_imports=[CsvImport(log, "old")])


def state(lab: Lab) -> tuple[Any, ...]:
    return lab.query(MINUTES), lab.query(FIGURES), lab.query("SELECT count(*) FROM gpu_samples WHERE job_id = 'old'")


@pytest.mark.parametrize("cut_at", [47, 48], ids=["mid-minute", "minute-boundary"])
def test_an_old_log_imported_in_pieces_equals_one_import_of_the_whole_log(
    tmp_path: Path, ingest_engine: Engine, cut_at: int
) -> None:
    """An nvidia-smi log of a day past the window, imported once cut at a line end (line 47: mid
    minute 10:03; line 48: the end of minute 10:03, so only the next sample's interval is missing),
    then whole: every minute, the minute that straddles the two imports included, as one import of
    the whole log computes it."""
    lines = old_log()
    spools = today(tmp_path / "spool")
    whole = tmp_path / "whole.csv"
    whole.write_text(HEADER + "".join(lines))
    clean = lab_in(tmp_path, "clean", ingest_engine)
    run(clean, whole, spools)

    log = tmp_path / "growing.csv"
    log.write_text(HEADER + "".join(lines[: 2 * cut_at]))
    pieces = lab_in(tmp_path, "pieces", ingest_engine)
    run(pieces, log, spools)
    assert pieces.query("SELECT count(*) FROM gpu_samples WHERE job_id = 'old'") == [(0,)]  # pruned in that run
    log.write_text(HEADER + "".join(lines))
    second = run(pieces, log, spools)
    assert second.warnings == 0 and second.gpu_samples == len(lines) - 2 * cut_at  # the new lines only
    run(pieces, log, spools)  # unchanged: nothing more

    utilization = [int(line.split(", ")[2].split(" ")[0]) for line in lines]
    hand = [(g, 60, pytest.approx(sum(utilization[g::2]) / 60)) for g in (0, 1)]
    for lab in (clean, pieces):
        minutes, figures, raw = state(lab)
        assert sum(row[3] for row in minutes) == len(lines) == 120 and raw == [(0,)]
        assert figures == hand
    # every figure of every minute (intervals, energy: the straddled minute's last sample counts
    # until the next import's first) as one import of the whole log
    assert state(pieces) == state(clean)


def test_a_resent_pruned_minute_with_a_new_sample_is_recomputed_a_changed_one_skipped(
    tmp_path: Path, ingest_engine: Engine
) -> None:
    """A spool of an old day sent again whole with one more sample in its last minute: the minute is
    recomputed with it. The same samples with a changed value can't be told from new ones there
    (the raw samples that would settle it are gone): the rollups stand, the samples are skipped."""
    spools = today(tmp_path / "spool")
    base = OLD.replace(tzinfo=UTC).timestamp()
    lines = [{"ts": base + 10 * i, "job_id": "old", "gpu_index": 0, "utilization_percent": float(i)} for i in range(9)]
    more = [*lines, {"ts": base + 95, "job_id": "old", "gpu_index": 0, "utilization_percent": 40.0}]

    clean = lab_in(tmp_path, "clean", ingest_engine)
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "old.jsonl").write_text("".join(json.dumps(line) + "\n" for line in more))
    clean.ingest(spool_root=spools)
    clean.ingest(spool_root=tmp_path / "final")

    pieces = lab_in(tmp_path, "pieces", ingest_engine)
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "old.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    pieces.ingest(spool_root=spools)
    pieces.ingest(spool_root=tmp_path / "first")
    assert pieces.query("SELECT count(*) FROM gpu_samples WHERE job_id = 'old'") == [(0,)]
    again = pieces.ingest(spool_root=tmp_path / "final")
    assert again.warnings == 0 and again.gpu_samples == 10
    minutes = pieces.query(MINUTES)
    assert [(row[2].minute, row[3], row[6]) for row in minutes] == [(0, 6, 15.0), (1, 4, 61.0)]
    assert minutes == clean.query(MINUTES) and pieces.query(FIGURES) == clean.query(FIGURES)

    changed = tmp_path / "changed"
    changed.mkdir()
    edited = [{**line, "utilization_percent": 99.0} if i == 7 else line for i, line in enumerate(more)]
    (changed / "old.jsonl").write_text("".join(json.dumps(line) + "\n" for line in edited))
    late = pieces.ingest(spool_root=changed)
    # minute 1 is not found whole; minute 0 is, but its last sample counts until minute 1's first
    # (which may be a sample no longer at hand): both rollups stand, every sample is skipped
    assert late.warnings == 10 and late.gpu_samples == 0
    (warnings,) = pieces.own_query("SELECT warnings FROM ingest_files WHERE path LIKE '%changed/old.jsonl'")[0]
    assert json.loads(warnings) == [f"line {n}: {spool.SKIPPED}" for n in range(1, 11)]
    assert pieces.query(MINUTES) == minutes


# Late samples of a day past the window around rolled-up minutes whose raw samples aged out
LATE = ("SELECT minute, samples, interval_seconds, utilization_seconds, idle_seconds, throttled_seconds, "
        "energy_wh FROM gpu_minutes WHERE job_id = 'old' ORDER BY minute")  # fmt: skip


def sample(t: float, util: float = 50.0, reasons: int = 1) -> dict[str, Any]:
    base = OLD.replace(tzinfo=UTC).timestamp()
    return {"ts": base + t, "job_id": "old", "gpu_index": 0, "utilization_percent": util, "power_w": 200.0,
            "clocks_event_reasons": reasons}  # fmt: skip


def spool_folder(tmp_path: Path, name: str, files: dict[str, list[dict[str, Any]]]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file, rows in files.items():
        (folder / file).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_a_late_sample_before_a_pruned_kept_minute_counts_until_that_minute(
    tmp_path: Path, ingest_engine: Engine
) -> None:
    """Minutes 10:01 (file y) and 10:02 (first piece of x) rolled up and pruned; then x grown: a
    sample at 10:00:30 and 10:02 whole. 10:02 is recomputed, 10:01's rollup stands: the 10:00:30
    sample counts until 10:01's first sample (30 s, as one ingest of the files), not across 10:01
    to 10:02's first (90 s: 10:01's time and energy counted twice)."""
    spools = today(tmp_path / "spool")
    n = [sample(t) for t in range(60, 120, 10)]
    m_first = [sample(t) for t in range(120, 160, 10)]
    g_m = [sample(30)] + [sample(t) for t in range(120, 180, 10)]
    pieces = lab_in(tmp_path, "pieces", ingest_engine)
    pieces.ingest(spool_root=spools)
    pieces.ingest(spool_root=spool_folder(tmp_path, "run1", {"y.jsonl": n, "x.jsonl": m_first}))
    assert pieces.query("SELECT count(*) FROM gpu_samples WHERE job_id = 'old'") == [(0,)]
    pieces.ingest(spool_root=spool_folder(tmp_path, "run2", {"x.jsonl": g_m}))
    clean = lab_in(tmp_path, "clean", ingest_engine)
    clean.ingest(spool_root=spools)
    clean.ingest(spool_root=spool_folder(tmp_path, "all", {"y.jsonl": n, "x.jsonl": g_m}))
    minutes = pieces.query(LATE)
    assert minutes[0][1:] == (1, 30.0, 30.0, None, None, pytest.approx(200 * 30 / 3600))
    assert minutes == clean.query(LATE) and pieces.query(FIGURES) == clean.query(FIGURES)


def test_late_backfill_samples_around_pruned_kept_minutes_count_no_time_twice(
    tmp_path: Path, ingest_engine: Engine
) -> None:
    """Two late samples of minutes never rolled up (10:00:30, 10:03:10) around 10:01 and 10:02,
    rolled up and pruned: the first counts until 10:01's first sample (one ingest's 30 s), not 160 s
    across both kept minutes; 10:01's rollup stands, 10:02's last sample counts until 10:03:10 now
    (its interval was open: 50 s, then 70 s, as one ingest; session 17)."""
    spools = today(tmp_path / "spool")
    kept = [sample(t) for t in range(60, 180, 10)]
    late = [sample(30), sample(190)]
    pieces = lab_in(tmp_path, "pieces", ingest_engine)
    pieces.ingest(spool_root=spools)
    pieces.ingest(spool_root=spool_folder(tmp_path, "run1", {"y.jsonl": kept}))
    before = pieces.query(LATE)
    stored = pieces.ingest(spool_root=spool_folder(tmp_path, "run2", {"x.jsonl": late}))
    assert stored.warnings == 0 and stored.gpu_samples == 2
    clean = lab_in(tmp_path, "clean", ingest_engine)
    clean.ingest(spool_root=spools)
    clean.ingest(spool_root=spool_folder(tmp_path, "all", {"y.jsonl": kept, "x.jsonl": late}))
    minutes = pieces.query(LATE)
    assert [row[0].minute for row in minutes] == [0, 1, 2, 3]
    assert minutes == clean.query(LATE)
    assert minutes[0][1:] == (1, 30.0, 30.0, None, None, pytest.approx(200 * 30 / 3600))
    assert minutes[1] == before[0]  # 10:01's rollup stands
    assert minutes[2][1:] == (6, 70.0, 70.0, None, None, pytest.approx(200 * 70 / 3600))  # 10:02 re-ended
    assert sum(row[2] or 0 for row in minutes) <= 160  # 10:00:30 to 10:03:10


@pytest.mark.parametrize("change", ["moved", "reasons"])
def test_a_resent_pruned_minute_with_a_moved_sample_or_changed_reasons_is_skipped(
    tmp_path: Path, ingest_engine: Engine, change: str
) -> None:
    """Two minutes of an old day, rolled up and pruned, sent again with one sample of 10:00 moved
    (10:00:10 to 10:00:15, its values the same) or its clocks_event_reasons changed (1 to 4): counts,
    sums, minima and maxima are the same, the time-weighted sums are not. Such a sample can't be told
    from a new one: the rollups stand, that minute's samples are skipped with a warning."""
    spools = today(tmp_path / "spool")
    orig = [sample(t, 0.0 if (t // 10) % 2 == 0 else 50.0) for t in range(0, 120, 10)]
    if change == "moved":
        edited = [{**row, "ts": row["ts"] + 5} if i == 1 else row for i, row in enumerate(orig)]
    else:
        edited = [{**row, "clocks_event_reasons": 4} if i == 1 else row for i, row in enumerate(orig)]
    pieces = lab_in(tmp_path, "pieces", ingest_engine)
    pieces.ingest(spool_root=spools)
    pieces.ingest(spool_root=spool_folder(tmp_path, "first", {"old.jsonl": orig}))
    before = pieces.query(LATE)
    assert [row[1:5] for row in before] == [(6, 60.0, 60.0, 30.0), (6, 50.0, 50.0, 30.0)]
    again = pieces.ingest(spool_root=spool_folder(tmp_path, "again", {"old.jsonl": edited}))
    # 10:00's six samples are skipped; 10:01's, the same as stored, are found whole (its figures the same)
    assert again.gpu_samples == 6 and again.warnings == 6
    assert pieces.query(LATE) == before
    # the same samples again, unchanged: found whole, recomputed to the same figures
    same = pieces.ingest(spool_root=spool_folder(tmp_path, "same", {"old.jsonl": orig}))
    assert same.warnings == 0 and same.gpu_samples == 12 and pieces.query(LATE) == before


def test_a_skipped_sample_read_twice_is_warned_about_at_both_lines(tmp_path: Path, ingest_engine: Engine) -> None:
    """A pruned minute sent again with one of its samples read twice (the later read another value):
    the minute is not found whole, its samples are skipped, the earlier read of that sample with
    them (a warning at each of its lines; the summary does not count it stored)."""
    spools = today(tmp_path / "spool")
    orig = [sample(t, float(t // 2)) for t in range(0, 120, 10)]
    pieces = lab_in(tmp_path, "pieces", ingest_engine)
    pieces.ingest(spool_root=spools)
    pieces.ingest(spool_root=spool_folder(tmp_path, "first", {"old.jsonl": orig}))
    before = pieces.query(LATE)
    again = pieces.ingest(spool_root=spool_folder(tmp_path, "again", {"old.jsonl": [*orig, sample(20, 99.0)]}))
    assert again.gpu_samples == 6 and again.warnings == 7  # 10:01's six samples are stored (found whole)
    (warnings,) = pieces.own_query("SELECT warnings FROM ingest_files WHERE path LIKE '%again/old.jsonl'")[0]
    assert json.loads(warnings) == [f"line {n}: {spool.SKIPPED}" for n in (1, 2, 3, 4, 5, 6, 13)]
    assert pieces.query(LATE) == before
