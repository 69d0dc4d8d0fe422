"""A sealing backlog (the hot rows of many past days, as an upgraded warehouse holds its minutes) is
sealed a day at a time into the same parts as ingest writes, copying no rows, and a kill -9 inside
it then a re-run gives the same facts (issue 14: peak ingest memory)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import REPO
from test_crash import KILL_AT, ingest_command, storage_facts

from runlytics.warehouse import db, migrate, parts

DAYS, HOSTS, GPUS = 3, ("node-01", "node-02"), 2
T0 = 1767225600  # 2026-01-01T00:00:00Z
NO_ARCHIVE = Path("/nonexistent-archive")
MANIFEST = "SELECT table_name, day, host, min_ts, max_ts, rows FROM gpu_parts ORDER BY ALL"


@dataclass
class Backlog:
    empty: Path  # an empty spool: a run that seals and reads nothing
    base: Path  # the warehouse with every sealed row back in its hot table
    facts: dict[str, Any]  # samples and minutes of the clean run
    manifest: list[tuple[Any, ...]]  # its parts, less their names


def spool(folder: Path) -> None:
    """Two hosts x two GPUs, a sample a minute for two hours of each of three past days."""
    folder.mkdir()
    for host in HOSTS:
        lines = [
            json.dumps(
                {
                    "ts": T0 + 86400 * day + 60 * m,
                    "host": host,
                    "job_id": f"job-{host}",
                    "gpu_index": g,
                    "gpu_uuid": f"GPU-{host}-{g}",
                    "utilization_percent": float((m * 7 + g) % 100),
                    "power_w": 200.0 + m % 13,
                }
            )  # fmt: skip
            for day in range(DAYS)
            for m in range(120)
            for g in range(GPUS)
        ]
        (folder / f"{host}.jsonl").write_text("\n".join(lines) + "\n")


def unseal_everything(path: Path) -> None:
    """Move every part's rows back to the hot tables (a warehouse upgraded before the parts)."""
    con = db.connect(path)
    try:
        with db.atomic(con):
            for table in (parts.GPU_SAMPLES, parts.GPU_MINUTES):
                parts.unseal(con, table, parts.live_paths(con, table))
    finally:
        con.close()


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> Backlog:
    tmp = tmp_path_factory.mktemp("backlog")
    spool(tmp / "spool")
    (tmp / "empty").mkdir()
    (tmp / "base").mkdir()
    path = tmp / "base" / "w.duckdb"
    done = run(ingest_command(tmp / "empty", path, "--spool", str(tmp / "spool"), "--keep-raw-days", "0", "--json"))
    assert done.returncode == 0, done.stderr
    facts = storage_facts(path, NO_ARCHIVE)
    assert len(facts["gpu_samples"]) == DAYS * len(HOSTS) * 120 * GPUS
    assert len(facts["gpu_minutes"]) == len(facts["gpu_samples"])  # a sample a minute
    with duckdb.connect(str(path), read_only=True) as con:
        manifest = con.execute(MANIFEST).fetchall()
    # one part per (host, day) of samples, one per day of minutes
    assert len(manifest) == DAYS * len(HOSTS) + DAYS
    unseal_everything(path)
    with duckdb.connect(str(path), read_only=True) as con:
        hot = [con.execute(f"SELECT count(*) FROM {t.hot}").fetchone() for t in (parts.GPU_SAMPLES, parts.GPU_MINUTES)]
    assert hot == [(len(facts["gpu_samples"]),), (len(facts["gpu_minutes"]),)]
    return Backlog(tmp / "empty", tmp / "base", facts, manifest)


def lab(backlog: Backlog, folder: Path) -> Path:
    shutil.copytree(backlog.base, folder)
    return folder / "w.duckdb"


def seal_command(backlog: Backlog, path: Path) -> list[str]:
    return ingest_command(backlog.empty, path, "--spool", str(backlog.empty), "--keep-raw-days", "0", "--json")


def test_a_backlog_is_sealed_into_the_parts_a_clean_run_writes(backlog: Backlog, tmp_path: Path) -> None:
    path = lab(backlog, tmp_path / "lab")
    done = run(seal_command(backlog, path))
    assert done.returncode == 0, done.stderr
    assert storage_facts(path, NO_ARCHIVE) == backlog.facts
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(MANIFEST).fetchall() == backlog.manifest
        for table in (parts.GPU_SAMPLES, parts.GPU_MINUTES):
            assert con.execute(f"SELECT count(*) FROM {table.hot}").fetchone() == (0,)


# ~3 days of minutes, enough rows that a copy of a day shows in DuckDB's memory (~40 MB for all)
COPIED_ROWS = 100_000
HOT_MINUTES = f"""
INSERT INTO gpu_minutes_hot BY NAME
SELECT 'job-' || (i % 7) AS job_id, 'node-' || (i % 5) AS host, '#' || (i % 8) AS gpu_key, i % 8 AS gpu_index,
       TIMESTAMP '2026-01-01' + to_minutes(i // 25) AS minute, 1 AS samples,
       TIMESTAMP '2026-01-01' + to_minutes(i // 25) AS first_ts,
       TIMESTAMP '2026-01-01' + to_minutes(i // 25) AS last_ts,
       CAST(i % 100 AS DOUBLE) AS utilization_percent_sum
FROM range({COPIED_ROWS}) r(i)
"""


def test_the_seal_copies_no_rows_inside_its_transaction(tmp_path: Path) -> None:
    """A day's rows are read through a view, not copied: a copy dropped inside the caller's
    transaction stays in memory until it ends (2.9 GiB for the 52.7M bench warehouse's minutes,
    here ~40 MB against the ~40 KB of the manifest's new rows)."""
    path = tmp_path / "w.duckdb"
    migrate.ensure_current(path)
    con = db.connect(path)
    try:
        con.execute(HOT_MINUTES)
        with db.atomic(con):
            assert parts.seal(con, parts.GPU_MINUTES, parts.cutoff(con, parts.GPU_MINUTES)) == COPIED_ROWS
            (in_memory,) = con.execute(
                "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'IN_MEMORY_TABLE'"
            ).fetchone() or (None,)
            assert in_memory < 2**20
        assert con.execute("SELECT day, rows FROM gpu_parts ORDER BY day").fetchall() == [
            (date(2026, 1, 1), 36_000), (date(2026, 1, 2), 36_000), (date(2026, 1, 3), 28_000)
        ]  # fmt: skip
        assert con.execute("SELECT count(*) FROM gpu_minutes_hot").fetchone() == (0,)
        assert con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = $v", {"v": parts.SEALING}
        ).fetchone() == (0,)
    finally:
        con.close()


# killed while sealing the samples' second day, and the minutes' second day (the samples done)
@pytest.mark.parametrize("nth", [2, DAYS + 2])
def test_killed_inside_the_backlog_seal_then_rerun_equals_one_clean_run(
    backlog: Backlog, tmp_path: Path, nth: int
) -> None:
    path = lab(backlog, tmp_path / "lab")
    command = seal_command(backlog, path)
    killed = run([sys.executable, "-c", KILL_AT, "runlytics.warehouse.parts:_seal_day:after", str(nth), *command[3:]])
    assert killed.returncode == -signal.SIGKILL, (nth, killed.returncode, killed.stderr[-2000:])
    rerun = run(command)
    assert rerun.returncode == 0, rerun.stderr
    assert storage_facts(path, NO_ARCHIVE) == backlog.facts
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(MANIFEST).fetchall() == backlog.manifest
