"""Raw GPU samples kept for --keep-raw-days, then dropped or archived (warehouse/retention.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pytest
from conftest import REPO, Lab

from runlytics.ingest.formats import spool
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, migrate, parts, retention

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
DAYS = 5


def fleet_spool(folder: Path, hosts: tuple[str, ...] = ("node-01", "node-02")) -> Path:
    """Two GPUs per host, a sample every 30 s over the first 10 minutes of each of 5 days."""
    folder.mkdir(exist_ok=True)
    lines = [
        {"ts": T0 + 86400 * d + t, "host": h, "job_id": f"job-{d}", "gpu_index": g, "gpu_uuid": f"GPU-{h}-{g}",
         "utilization_percent": float((t // 30 + g) % 100), "power_w": 100.0 + g}
        for d in range(DAYS) for h in hosts for g in range(2) for t in range(0, 600, 30)
    ]  # fmt: skip
    (folder / "fleet.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def days(lab: Lab) -> list[tuple[Any, ...]]:
    return lab.query("SELECT CAST(ts AS DATE) AS day, count(*) FROM gpu_samples GROUP BY 1 ORDER BY 1")


def test_whole_days_past_the_window_are_dropped_and_the_rollups_stay(lab: Lab, tmp_path: Path) -> None:
    spool = fleet_spool(tmp_path / "spool")
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)  # 0 keeps everything
    assert [n for _, n in days(lab)] == [80] * DAYS
    minutes = lab.query("SELECT * FROM gpu_minutes ORDER BY ALL")
    figures = lab.query("SELECT * FROM job_results ORDER BY job_id")
    assert len(minutes) == DAYS * 2 * 2 * 10
    # the window counts back from the newest sample (2026-01-05): days before 2026-01-03 go
    ingest(lab.db, [], spools=[spool], keep_raw_days=2)
    assert days(lab) == [(date(2026, 1, d), 80) for d in (3, 4, 5)]
    assert lab.query("SELECT DISTINCT day FROM gpu_parts WHERE table_name = 'gpu_samples' ORDER BY 1") == [
        (date(2026, 1, d),) for d in (3, 4, 5)
    ]
    assert lab.query("SELECT * FROM gpu_minutes ORDER BY ALL") == minutes  # never pruned
    assert lab.query("SELECT * FROM job_results ORDER BY job_id") == figures


def test_the_window_counts_from_today_when_the_newest_sample_is_later(lab: Lab) -> None:
    migrate.upgrade(lab.db)
    with db.connection(lab.db) as con:
        con.execute(
            "INSERT INTO gpu_parts VALUES ('x', 'gpu_samples', DATE '2030-01-01', 'h', TIMESTAMP '2030-01-01', "
            "TIMESTAMP '2030-01-01', 1, 1, now()::TIMESTAMP)"
        )
        today = date(2026, 12, 5)
        now = datetime(2026, 12, 5, 12)
        assert retention.horizon(con, parts.GPU_SAMPLES, 30, now) == today - timedelta(days=30)
        assert retention.horizon(con, parts.GPU_SAMPLES, 0, now) is None


def test_a_day_whose_minutes_are_not_all_rolled_up_is_kept(lab: Lab, tmp_path: Path) -> None:
    spool = fleet_spool(tmp_path / "spool")
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)
    with db.connection(lab.db) as con, db.atomic(con):
        # the minutes are sealed in parts: back to the hot table to lose one
        parts.unseal(con, parts.GPU_MINUTES, parts.live_paths(con, parts.GPU_MINUTES))
        con.execute(
            "DELETE FROM gpu_minutes_hot WHERE host = 'node-02' AND minute = TIMESTAMP '2026-01-01 00:05:00' "
            "AND gpu_key = 'GPU-node-02-1'"
        )
    ingest(lab.db, [], spools=[spool], keep_raw_days=2)
    assert lab.query(
        "SELECT DISTINCT day, host FROM gpu_parts WHERE table_name = 'gpu_samples' AND day < DATE '2026-01-03' "
        "ORDER BY ALL"
    ) == [(date(2026, 1, 1), "node-02")]


def test_the_archive_is_read_as_it_is_by_duckdb_pandas_and_polars(lab: Lab, tmp_path: Path) -> None:
    spool = fleet_spool(tmp_path / "spool", hosts=("node-01", "node 02/b"))
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)
    pruned = lab.query(
        "SELECT host, job_id, gpu_key, ts, utilization_percent FROM gpu_samples WHERE ts < TIMESTAMP '2026-01-03' "
        "ORDER BY ALL"
    )
    archive = tmp_path / "archive"
    ingest(lab.db, [], spools=[spool], keep_raw_days=2, archive=archive)
    assert days(lab)[0][0] == date(2026, 1, 3)
    folders = sorted(p.parent.relative_to(archive).as_posix() for p in archive.rglob("*.parquet"))
    assert sorted(set(folders)) == [f"day=2026-01-0{d}/host={h}" for d in (1, 2) for h in ("node%2002%2Fb", "node-01")]
    columns = ["host", "job_id", "gpu_key", "ts", "utilization_percent"]

    con = duckdb.connect()
    by_duckdb = con.execute(
        f"SELECT {', '.join(columns)} FROM read_parquet($f, hive_partitioning = true) ORDER BY ALL",
        {"f": str(archive / "**" / "*.parquet")},
    ).fetchall()
    assert by_duckdb == pruned
    found = con.execute(f"SELECT DISTINCT day FROM read_parquet('{archive}/**/*.parquet')").fetchall()
    assert {str(d) for (d,) in found} == {"2026-01-01", "2026-01-02"}

    frame = pd.read_parquet(archive)
    by_pandas = sorted(
        (str(r.host), r.job_id, r.gpu_key, r.ts.to_pydatetime(), r.utilization_percent) for r in frame.itertuples()
    )
    assert by_pandas == pruned

    by_polars = sorted(
        pl.scan_parquet(archive / "**" / "*.parquet", hive_partitioning=True).select(columns).collect().rows()
    )
    assert by_polars == pruned


def test_retention_options_on_the_command_line(tmp_path: Path) -> None:
    spool = fleet_spool(tmp_path / "spool")
    db_path = tmp_path / "w.duckdb"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "runlytics", "ingest", "--spool", str(spool), "--db", str(db_path), *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)

    bad = cli("--keep-raw-days", "-1")
    assert bad.returncode == 2 and "not a whole number of days" in bad.stderr
    assert cli("--keep-raw-days", "0", "--json").returncode == 0
    done = cli("--keep-raw-days", "3", "--archive", str(tmp_path / "archive"), "--json")
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "archive" / "day=2026-01-01").rglob("*.parquet"))) == 2


@pytest.mark.parametrize("keep", [0, 30])
def test_recent_samples_are_never_pruned(lab: Lab, tmp_path: Path, keep: int) -> None:
    spool = fleet_spool(tmp_path / "spool")
    ingest(lab.db, [], spools=[spool], keep_raw_days=keep)
    assert [n for _, n in days(lab)] == [80] * DAYS


def test_a_late_sample_of_a_day_past_the_window_leaves_its_rollups_alone(lab: Lab, tmp_path: Path) -> None:
    spool = fleet_spool(tmp_path / "spool")
    ingest(lab.db, [], spools=[spool], keep_raw_days=2)
    minutes = lab.query("SELECT * FROM gpu_minutes ORDER BY ALL")
    late = tmp_path / "late"
    late.mkdir()
    sample = {"ts": T0 + 45, "host": "node-01", "job_id": "job-0", "gpu_index": 0, "gpu_uuid": "GPU-node-01-0",
              "utilization_percent": 77.0}  # fmt: skip
    (late / "late.jsonl").write_text(json.dumps(sample) + "\n")
    ingest(lab.db, [], spools=[late], keep_raw_days=2)
    assert lab.query("SELECT * FROM gpu_minutes ORDER BY ALL") == minutes
    assert lab.query("SELECT count(*) FROM gpu_samples WHERE ts < TIMESTAMP '2026-01-03'") == [(0,)]


def test_a_late_backfill_of_old_days_is_stored_and_a_resent_pruned_minute_is_skipped(lab: Lab, tmp_path: Path) -> None:
    now = int(datetime.now(UTC).timestamp())
    today, old = tmp_path / "today", tmp_path / "old"
    today.mkdir()
    old.mkdir()
    (today / "a.jsonl").write_text(
        json.dumps({"ts": now - 60, "job_id": "now", "gpu_index": 0, "utilization_percent": 50.0}) + "\n"
    )
    ingest(lab.db, [], spools=[today])
    # 60 days back, past the default 30-day window, for a job never seen: stored and rolled up
    lines = [
        {"ts": now - 60 * 86400 + 10 * i, "job_id": "late", "gpu_index": 0, "utilization_percent": float(i)}
        for i in range(12)
    ]
    (old / "b.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = ingest(lab.db, [], spools=[old])
    assert summary.gpu_samples == 12
    minutes = lab.query(
        "SELECT samples, utilization_percent_sum FROM gpu_minutes WHERE job_id = 'late' ORDER BY minute"
    )
    assert sum(n for n, _ in minutes) == 12 and sum(s for _, s in minutes) == sum(range(12))
    # the run pruned the old day's raw samples (their minutes are rolled up); the rollups stand
    assert lab.query("SELECT count(*) FROM gpu_samples WHERE job_id = 'late'") == [(0,)]
    # the same samples sent again: their minutes can't be recomputed without their neighbours
    (old / "c.jsonl").write_text(json.dumps({**lines[0], "utilization_percent": 99.0}) + "\n")
    again = ingest(lab.db, [], spools=[old])
    assert again.warnings == 1 and again.gpu_samples == 0
    (warnings,) = lab.query("SELECT warnings FROM ingest_files WHERE path LIKE '%c.jsonl'")[0]
    assert json.loads(warnings) == [f"line 1: {spool.SKIPPED}"]
    after = lab.query("SELECT samples, utilization_percent_sum FROM gpu_minutes WHERE job_id = 'late' ORDER BY minute")
    assert after == minutes
