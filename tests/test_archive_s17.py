"""Session 17's retention audit: the archive holds each pruned sample once, every installed reader
reads it as it is, and a partly pruned job's GPU readings leave out no pruned day.

- `--archive DIR`: samples of a pruned day stored again (an nvidia-smi log of an old job
  re-imported whole as it grew, a copy of a spool file) were pruned and archived again under a new
  part name: the archive held them twice. A part archived where the (day, host) already has files
  now rewrites that partition merged, one row per (job, GPU, time), the warehouse's copy winning.
- The unknown host '' was `host=__HIVE_DEFAULT_PARTITION__`, which pandas (pyarrow) cannot read:
  it is now `host=` (an empty value), read back as '' by DuckDB, pandas and polars.
- `/gpus` of a job whose older days aged out answered its kept samples only (a GPU sampled only
  then missing); it now reads the minutes whenever some of the job's minutes lost their samples.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pytest
from conftest import REPO, Engine, Lab
from fastapi.testclient import TestClient
from test_crash import KILL_AT

from runlytics.api.app import create_app
from runlytics.ingest.formats.nvidia_smi import CsvImport
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import parts, retention

T0 = datetime(2026, 1, 1)  # the old day (day 0); the newest sample is of day 4: --keep-raw-days 1 prunes days 0-2
HEADER = "timestamp, index, uuid, utilization.gpu [%], memory.used [MiB], power.draw [W]\n"
Json = dict[str, Any]


def _epoch(at: datetime) -> float:
    return at.replace(tzinfo=UTC).timestamp()


def _line(job: str, host: str | None, uuid: str, index: int, at: datetime, util: float = 50.0) -> str:
    doc: Json = {"ts": _epoch(at), "job_id": job, "gpu_uuid": uuid, "gpu_index": index, "utilization_percent": util,
                 "memory_used_mb": 1000.0, "power_w": 100.0}  # fmt: skip
    if host is not None:
        doc["host"] = host
    return json.dumps(doc) + "\n"


def _newest(spool: Path) -> None:
    """A sample of day 4 (the window counts back from it)."""
    spool.mkdir(exist_ok=True)
    (spool / "newest.jsonl").write_text(_line("jobB", "n2", "GPU-b0", 0, T0 + timedelta(days=4, hours=9)))


def _read(archive: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The archive's (host, job, GPU, time, utilization) rows as each installed reader reads it."""
    pattern = str(archive / "**" / "*.parquet")
    columns = ["host", "job_id", "gpu_key", "ts", "utilization_percent"]
    by_duckdb = duckdb.sql(
        f"SELECT {', '.join(columns)} FROM read_parquet('{pattern}', hive_partitioning = true)"
    ).fetchall()
    frame = pd.read_parquet(archive)
    by_pandas = [(r.host, r.job_id, r.gpu_key, r.ts.to_pydatetime(), r.utilization_percent) for r in frame.itertuples()]
    by_polars = pl.scan_parquet(pattern, hive_partitioning=True).select(columns).collect().rows()
    return {name: sorted(rows) for name, rows in
            (("duckdb", by_duckdb), ("pandas", by_pandas), ("polars", by_polars))}  # fmt: skip


def _once(archive: Path) -> list[tuple[Any, ...]]:
    """The archive's rows, the same for every reader, no (host, job, GPU, time) twice."""
    read = _read(archive)
    assert read["pandas"] == read["duckdb"] == read["polars"]
    keys = Counter(row[:4] for row in read["duckdb"])
    assert [key for key, n in keys.items() if n > 1] == []
    return read["duckdb"]


# --- each pruned sample is archived once ---------------------------------------------------------


def _smi_log(path: Path, seconds: range) -> None:
    day = T0.strftime("%Y/%m/%d")
    rows = [f"{day} 14:00:{s:02d}.000, 0, GPU-n0, 50 %, 1000 MiB, 100.00 W\n" for s in seconds]
    path.write_text(HEADER + "".join(rows))


def test_an_old_log_imported_again_as_it_grew_is_archived_once(lab: Lab, tmp_path: Path) -> None:
    """The audit's r4: the log of an old job imported, then again whole with two more lines: the
    second import stores the day's samples again (each minute recomputed from them), the run prunes
    them again; the archive holds each of the 6 samples once."""
    spool, archive, log = tmp_path / "spool", tmp_path / "archive", tmp_path / "gpu.csv"
    _newest(spool)
    ingest(lab.db, [], spools=[spool], keep_raw_days=1, archive=archive)
    _smi_log(log, range(0, 40, 10))
    ingest(lab.db, [], csv_imports=[CsvImport(log, "jobN", host="n9")], keep_raw_days=1, archive=archive)
    _smi_log(log, range(0, 60, 10))
    os.utime(log, (log.stat().st_mtime + 5, log.stat().st_mtime + 5))
    ingest(lab.db, [], csv_imports=[CsvImport(log, "jobN", host="n9")], keep_raw_days=1, archive=archive)
    assert lab.query("SELECT samples FROM job_gpus WHERE job_id = 'jobN'") == [(6,)]
    rows = _once(archive)
    assert [(h, ts.second) for h, _, _, ts, _ in rows] == [("n9", s) for s in range(0, 60, 10)]
    assert len(list((archive / "day=2026-01-01" / "host=n9").glob("*.parquet"))) == 1


def test_a_copy_of_a_pruned_spool_file_is_archived_once(lab: Lab, tmp_path: Path) -> None:
    """The audit's s3: a spool file of an old day, pruned and archived, then an exact copy of it
    dropped into the spool: stored again, pruned again, archived once."""
    spool, archive = tmp_path / "spool", tmp_path / "archive"
    _newest(spool)
    start = T0 + timedelta(hours=10)
    lines = [_line("jobA", h, f"GPU-{h}-{g}", g, start + timedelta(seconds=s), float(s % 97))
             for s in range(0, 300, 7) for h in ("n1", "n2") for g in (0, 1)]  # fmt: skip
    (spool / "run1.jsonl").write_text("".join(lines))
    ingest(lab.db, [], spools=[spool], keep_raw_days=1, archive=archive)
    first = _once(archive)
    assert len(first) == len(lines)
    (spool / "copy.jsonl").write_text("".join(lines))
    ingest(lab.db, [], spools=[spool], keep_raw_days=1, archive=archive)
    assert _once(archive) == first
    assert sorted(p.parent.name for p in archive.rglob("*.parquet")) == ["host=n1", "host=n2"]


def test_the_warehouses_copy_wins_and_the_archives_other_samples_stay(lab: Lab, tmp_path: Path) -> None:
    """A partition that already holds files (an archive written before this fix, with a sample twice;
    a sample of another job): merged into one file, each sample once, the warehouse's values for the
    samples it prunes, the newest file's for the others."""
    spool, archive = tmp_path / "spool", tmp_path / "archive"
    _newest(spool)
    at = T0 + timedelta(hours=10)
    (spool / "old.jsonl").write_text("".join(_line("jobA", "n1", "GPU-a", 0, at + timedelta(seconds=s), 70.0)
                                             for s in (0, 10, 20)))  # fmt: skip
    folder = archive / "day=2026-01-01" / "host=n1"
    folder.mkdir(parents=True)
    columns = [c for c in parts.GPU_SAMPLES.columns if c != "host"]

    def held(name: str, rows: list[tuple[str, datetime, float]]) -> None:
        values = ", ".join(
            f"('{job}', 0::INTEGER, TIMESTAMP '{ts}', 'GPU-a', {util}::DOUBLE, 1000::DOUBLE, NULL::DOUBLE, "
            "NULL::DOUBLE, 100::DOUBLE, NULL::DOUBLE, NULL::BIGINT, 'spool', 'GPU-a')"
            for job, ts, util in rows
        )
        duckdb.sql(f"COPY (SELECT * FROM (VALUES {values}) AS v({', '.join(columns)})) TO '{folder / name}'")

    held("00000000000000000001-aaaaaaaa.parquet", [("jobA", at, 1.0), ("jobZ", at, 2.0)])
    held("00000000000000000002-bbbbbbbb.parquet", [("jobA", at, 3.0), ("jobZ", at, 4.0)])
    ingest(lab.db, [], spools=[spool], keep_raw_days=1, archive=archive)
    assert _once(archive) == [("n1", "jobA", "GPU-a", at + timedelta(seconds=s), 70.0) for s in (0, 10, 20)] + [
        ("n1", "jobZ", "GPU-a", at, 4.0)
    ]
    assert len(list(folder.iterdir())) == 1


def _kill_and_rerun(tmp_path: Path, point: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The r4 case by the command line, its second import killed at ``point`` (inside the merge of
    day 0's partition): the archive's and the warehouse's rows then, and the archive after a rerun."""
    spool, archive, log, db = tmp_path / "spool", tmp_path / "archive", tmp_path / "gpu.csv", tmp_path / "w.duckdb"
    _newest(spool)
    options = ["--db", str(db), "--spool", str(spool), "--keep-raw-days", "1", "--archive", str(archive), "--quiet"]
    smi = ["--nvidia-smi-csv", str(log), "--job-id", "jobN", "--host", "n9"]
    _smi_log(log, range(0, 40, 10))
    entry = [sys.executable, "-m", "runlytics", "ingest"]
    done = subprocess.run([*entry, *options, *smi], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _smi_log(log, range(0, 60, 10))
    os.utime(log, (log.stat().st_mtime + 5, log.stat().st_mtime + 5))
    killed = subprocess.run([sys.executable, "-c", KILL_AT, point, "1", "ingest", *options, *smi], cwd=REPO,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    con = duckdb.connect(str(db), read_only=True)
    raw = con.execute("SELECT host, job_id, gpu_key, ts, utilization_percent FROM gpu_samples WHERE job_id = 'jobN'")
    kept = raw.fetchall()
    con.close()
    pattern = str(archive / "**" / "*.parquet")
    columns = "host, job_id, gpu_key, ts, utilization_percent"
    then = duckdb.sql(f"SELECT {columns} FROM read_parquet('{pattern}', hive_partitioning = true)").fetchall()
    rerun = subprocess.run([*entry, *options, *smi], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    return sorted(then + kept), _once(archive)


@pytest.mark.parametrize(
    "point",
    [
        "runlytics.warehouse.retention:_write_merged:after",  # the merged file renamed into place, the old one kept
        "runlytics.warehouse.retention:_remove_archived:after",  # the old file removed, the prune not committed
    ],
)
def test_a_merge_killed_at_any_point_keeps_every_sample_and_the_rerun_holds_each_once(
    tmp_path: Path, point: str
) -> None:
    held, rows = _kill_and_rerun(tmp_path, point)
    want = [("n9", "jobN", "GPU-n0", T0 + timedelta(hours=14, seconds=s), 50.0) for s in range(0, 60, 10)]
    assert sorted(set(held)) == want  # each sample somewhere at the kill (some twice)
    assert rows == want
    assert not list((tmp_path / "archive").rglob("*.tmp"))


# --- the unknown host ------------------------------------------------------------------------------


@pytest.mark.parametrize("hosts", [("", "n1"), ("",)], ids=["with-another-host", "alone"])
def test_an_archive_holding_the_unknown_host_is_read_by_pandas_duckdb_and_polars(
    lab: Lab, tmp_path: Path, hosts: tuple[str, ...]
) -> None:
    """The audit's r5: '' is the folder `host=` (an empty value), which every installed reader reads
    back as '' (Hive's `__HIVE_DEFAULT_PARTITION__` stopped pd.read_parquet(DIR))."""
    spool, archive = tmp_path / "spool", tmp_path / "archive"
    _newest(spool)
    lines = [_line("jobA", h or None, f"GPU-{h}", 0, T0 + timedelta(hours=10, seconds=s)) for h in hosts
             for s in (0, 30)]  # fmt: skip
    (spool / "a.jsonl").write_text("".join(lines))
    ingest(lab.db, [], spools=[spool], keep_raw_days=1, archive=archive)
    assert sorted(p.parent.name for p in archive.rglob("*.parquet")) == sorted(f"host={h}" for h in hosts)
    rows = _once(archive)
    assert sorted({(r[0], r[2]) for r in rows}) == sorted((h, f"GPU-{h}") for h in hosts)
    assert len(rows) == 2 * len(hosts)


def test_an_unknown_hosts_files_of_an_older_archive_move_to_the_new_folder(lab: Lab, tmp_path: Path) -> None:
    """An archive written before holds '' as `host=__HIVE_DEFAULT_PARTITION__`: a later part of the
    same day is merged with its files into `host=`, each sample once."""
    spool, archive = tmp_path / "spool", tmp_path / "archive"
    _newest(spool)
    at = T0 + timedelta(hours=10)
    (spool / "a.jsonl").write_text(_line("jobA", None, "GPU-x", 0, at, 10.0))
    ingest(lab.db, [], spools=[spool], keep_raw_days=1, archive=archive)
    day = archive / "day=2026-01-01"
    (day / "host=").rename(day / "host=__HIVE_DEFAULT_PARTITION__")  # as the archive was written before
    # a late sample of a minute never rolled up: stored, then pruned in the same run
    (spool / "b.jsonl").write_text(_line("jobA", None, "GPU-x", 0, at + timedelta(minutes=2)))
    ingest(lab.db, [], spools=[spool], keep_raw_days=1, archive=archive)
    assert [p.relative_to(day).parent.as_posix() for p in day.rglob("*.parquet")] == ["host="]
    assert not (day / "host=__HIVE_DEFAULT_PARTITION__").exists()
    assert [(r[0], r[3], r[4]) for r in _once(archive)] == [("", at, 10.0), ("", at + timedelta(minutes=2), 50.0)]


# --- a partly pruned job's GPU readings ------------------------------------------------------------


def _partly_pruned(lab: Lab, keep: int) -> TestClient:
    """The audit's r6: jobA from day 0 23:58 to day 1 00:01 on two GPUs, GPU-a1 sampled on day 0
    only (90 % on GPU-a0 then, 10 % on GPU-a1; 20 % on GPU-a0 on day 1); the newest sample of day 2:
    --keep-raw-days 1 prunes day 0 and keeps day 1."""
    spool = lab.root.parent / "spool"
    spool.mkdir()
    start = T0 + timedelta(hours=23, minutes=58)
    lines = [_line("jobA", "n1", f"GPU-a{g}", g, start + timedelta(seconds=s), 90.0 if g == 0 else 10.0)
             for s in (0, 30, 60, 90) for g in (0, 1)]  # fmt: skip
    lines += [_line("jobA", "n1", "GPU-a0", 0, T0 + timedelta(days=1, seconds=s), 20.0) for s in (0, 30)]
    newest = T0 + timedelta(days=2, hours=9)
    lines.append(_line("jobB", "n2", "GPU-b0", 0, newest))
    (spool / "a.jsonl").write_text("".join(lines))
    for job, begin, end in (("jobA", start, T0 + timedelta(days=1, minutes=1)), ("jobB", newest, newest)):
        history = [{"step": 1, "timestamp": _epoch(end), "loss": 1.0}]
        doc = {"job_id": job, "status": "completed", "started_at": _epoch(begin), "ended_at": _epoch(end)}
        lab.write_job(job, {**doc, "history": history})
    assert lab.ingest(spool_root=spool, keep_raw_days=keep).failed == 0
    return TestClient(create_app(lab.warehouse()))


def _gpus(client: TestClient, **params: Any) -> Json:
    response = client.get("/api/training/jobA/gpus", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _seen(body: Json) -> dict[tuple[str, str], float]:
    """Per (GPU, day): the highest utilization the readings hold (a bucket's maximum included)."""
    out: dict[tuple[str, str], float] = {}
    for r in body["readings"]:
        top = max(r["utilization_percent"], (r.get("maximum") or {}).get("utilization_percent") or 0.0)
        key = (r["gpu_uuid"], r["ts"][:10])
        out[key] = max(out.get(key, 0.0), top)
    return out


EVERY = {("GPU-a0", "2026-01-01"): 90.0, ("GPU-a0", "2026-01-02"): 20.0, ("GPU-a1", "2026-01-01"): 10.0}


@pytest.mark.parametrize("max_points", [3200, 40, 10])
def test_a_partly_pruned_jobs_chart_holds_every_gpu_and_day(
    tmp_path: Path, ingest_engine: Engine, max_points: int
) -> None:
    client = _partly_pruned(Lab(tmp_path, ingest_engine), keep=1)
    chart = _gpus(client, max_points=max_points)
    assert _seen(chart) == EVERY
    assert (chart["source"], chart["resolution"], chart["extremes_kept"]) == ("gpu_minutes", "minute", True)
    pages = _gpus(client)  # the keyset pages read the minutes too: nothing pruned is left out silently
    assert (pages["source"], pages["resolution"]) == ("gpu_minutes", "minute")
    assert _seen(pages) == EVERY


def test_a_job_whose_samples_are_all_kept_still_charts_its_samples(tmp_path: Path, ingest_engine: Engine) -> None:
    client = _partly_pruned(Lab(tmp_path, ingest_engine), keep=0)
    chart = _gpus(client, max_points=3200)
    assert (chart["source"], chart["resolution"], chart["downsampled"]) == ("gpu_samples", "sample", False)
    assert _seen(chart) == EVERY and len(chart["readings"]) == 10
    pages = _gpus(client)
    assert (pages["source"], len(pages["readings"])) == ("gpu_samples", 10)


def test_a_day_without_samples_inside_a_jobs_span_is_no_pruned_day(tmp_path: Path, ingest_engine: Engine) -> None:
    """A job sampled on days 1 and 3 (none on day 2), all kept: its samples, not its minutes."""
    lab = Lab(tmp_path, ingest_engine)
    spool = lab.root.parent / "spool"
    spool.mkdir()
    times = [T0 + timedelta(days=d, hours=23, minutes=59, seconds=s) for d in (1, 3) for s in (0, 30)]
    (spool / "a.jsonl").write_text(
        "".join(_line("jobA", "n1", "GPU-a0", 0, at, 10.0 * i) for i, at in enumerate(times))
    )
    lab.write_job("jobA", {"job_id": "jobA", "status": "completed", "started_at": _epoch(times[0]),
                           "ended_at": _epoch(times[-1]), "history": [{"step": 1, "loss": 1.0}]})  # fmt: skip
    assert lab.ingest(spool_root=spool, keep_raw_days=5).failed == 0
    client = TestClient(create_app(lab.warehouse()))
    chart = _gpus(client, max_points=10_000)  # 2 days + 1 minute: under the share of 10,000
    assert (chart["source"], chart["resolution"], len(chart["readings"])) == ("gpu_samples", "sample", 4)
    assert _gpus(client)["source"] == "gpu_samples"


def test_raw_pruned_says_whether_a_day_of_the_job_was_pruned(lab: Lab) -> None:
    """retention.raw_pruned: False for a job of kept days, True once one of its days is pruned; on
    a warehouse whose samples are still hot (a part of none of its days), False."""
    _partly_pruned(lab, keep=0)
    with duckdb.connect(str(lab.db), read_only=True) as con:
        assert retention.raw_pruned(con, "jobA") is False
    with duckdb.connect(str(lab.db)) as con:
        con.execute("BEGIN")
        parts.unseal(con, parts.GPU_SAMPLES, parts.live_paths(con, parts.GPU_SAMPLES))  # all hot again
        assert con.execute("SELECT count(*) FROM gpu_parts WHERE table_name = 'gpu_samples'").fetchone() == (0,)
        assert retention.raw_pruned(con, "jobA") is False
        con.execute("ROLLBACK")
    ingest(lab.db, [lab.root], spools=[lab.root.parent / "spool"], keep_raw_days=1)
    with duckdb.connect(str(lab.db), read_only=True) as con:
        assert retention.raw_pruned(con, "jobA") is True
        assert retention.raw_pruned(con, "jobB") is False
