"""GPU reads at fleet scale (revision 0020): the GPUs a job's samples were rolled up for, with
their first and last minute, are kept in job_gpu_series with gpu_minutes; job_gpu_hours counts
them there, to the same figures as job_resources, and charts find their span there; the minutes of
a past hour are sealed into Parquet parts (revision 0021), a complete (host, day) in job order, same rows;
a chart reads its job's minutes from the hot table and the parts of its days only, the same rows and
the same chart as through the view gpu_minutes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import Lab

from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, history, parts, rollups, sealed_reads, sidefiles, snapshots

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())

# the GPU count job_gpu_hours had from job_resources (revision 0008's text): the samples' or step
# readings' GPUs, else the config's gpu_count
GPUS_BEFORE = """
SELECT j.job_id, CASE WHEN r.gpus_seen > 0 THEN r.gpus_seen ELSE j.gpu_count END
FROM jobs j JOIN job_resources r USING (job_id) ORDER BY j.job_id
"""
SERIES = "SELECT job_id, host, gpu_key, first_minute, last_minute FROM job_gpu_series ORDER BY ALL"
MINUTE_KEYS = "SELECT job_id, host, gpu_key, min(minute), max(minute) FROM gpu_minutes GROUP BY ALL ORDER BY ALL"


def spool_file(folder: Path, name: str, rows: list[tuple[str, str, int, int]]) -> Path:
    """(job, host, GPU, seconds after T0) per sample."""
    folder.mkdir(exist_ok=True)
    lines = [
        {"ts": T0 + t, "host": host, "job_id": job, "gpu_index": gpu, "gpu_uuid": f"GPU-{host}-{gpu}",
         "utilization_percent": float((t // 30 + gpu) % 100), "power_w": 100.0 + gpu, "temperature_c": 50.0 + gpu}
        for job, host, gpu, t in rows
    ]  # fmt: skip
    (folder / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def write_job(lab: Lab, job_id: str, config: dict[str, Any], gpus_logged: int = 0) -> None:
    history_rows: list[dict[str, Any]] = [{"step": 1, "timestamp": T0 + 60, "loss": 1.0}]
    if gpus_logged:
        history_rows[0]["gpus"] = [{"gpu_index": g, "utilization_percent": 50.0} for g in range(gpus_logged)]
    lab.write_job(job_id, {
        "job_id": job_id, "status": "completed", "started_at": T0, "ended_at": T0 + 3600, "config": config,
        "history": history_rows,
    })  # fmt: skip


def test_job_gpu_hours_counts_the_gpus_job_resources_counts(lab: Lab, tmp_path: Path) -> None:
    write_job(lab, "sampled", {"gpu_count": 8})
    write_job(lab, "grows", {"gpu_count": 1})
    write_job(lab, "logged", {"gpu_count": 8}, gpus_logged=3)
    write_job(lab, "configured", {"gpu_count": 4})
    write_job(lab, "unknown", {})
    spool = tmp_path / "spool"
    first = [("sampled", h, g, t) for h in ("node-01", "node-02") for g in (0, 1) for t in range(0, 300, 30)]
    spool_file(spool, "a.jsonl", first + [("grows", "node-03", 0, t) for t in range(0, 120, 30)])
    assert lab.ingest(lab.root, spool_root=spool).failed == 0
    assert lab.query(SERIES) == lab.query(MINUTE_KEYS)
    # later samples: another GPU of a known job, more minutes of known GPUs, an earlier one
    later = [("grows", "node-03", g, t) for g in (0, 5) for t in range(120, 400, 30)]
    spool_file(spool, "b.jsonl", [*later, ("sampled", "node-01", 1, -600)])
    assert lab.ingest(lab.root, spool_root=spool).failed == 0
    assert lab.query(SERIES) == lab.query(MINUTE_KEYS)
    gpus = dict(lab.query("SELECT job_id, gpus FROM job_gpu_hours"))
    assert gpus == {"sampled": 4, "grows": 2, "logged": 3, "configured": 4, "unknown": None}
    assert sorted(gpus.items()) == lab.query(GPUS_BEFORE)


def test_a_complete_day_s_minutes_are_sealed_in_job_order(lab: Lab, tmp_path: Path) -> None:
    """Two runs store two parts of one (host, day); once the day is complete its minutes are one
    part, in job order (revision 0021: the minutes are sealed like the samples)."""
    spool = tmp_path / "spool"
    hour = [(job, "node-01", g, 0) for job, gpus in (("x", (0, 1)), ("y", (2, 3))) for g in gpus]
    spool_file(spool, "a.jsonl", [(j, h, g, t) for j, h, g, t0 in hour for t in range(t0, 600, 20)])
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)
    spool_file(spool, "b.jsonl", [(j, h, g, t) for j, h, g, t0 in hour for t in range(3600 + t0, 4200, 20)])
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)  # nothing new: compaction has had its turn
    assert lab.query("SELECT table_name, day, host, count(*) FROM gpu_parts GROUP BY ALL ORDER BY ALL") == [
        ("gpu_minutes", date(2026, 1, 1), "", 1),  # a day of every host
        ("gpu_samples", date(2026, 1, 1), "node-01", 1),
    ]
    assert lab.query("SELECT count(*) FROM gpu_minutes_hot") == [(0,)]
    (path,) = lab.query("SELECT path FROM gpu_parts WHERE table_name = 'gpu_minutes'")[0]
    stored = [
        (r["job_id"], r["gpu_key"], r["minute"]) for r in pq.read_table(sidefiles.parts(lab.db) / path).to_pylist()
    ]
    assert stored == sorted(stored)  # appended a run and a minute at a time, now by job
    assert len(stored) == 4 * 20
    # the same rows as computed from the samples
    assert lab.query("SELECT * FROM gpu_minutes ORDER BY ALL") == lab.query(rollups.SELECT_ALL + " ORDER BY ALL")


def test_sealing_the_minutes_changes_no_figure(lab: Lab, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool_file(spool, "a.jsonl", [(j, "n", g, t) for t in range(0, 7200, 15) for j, g in (("x", 0), ("y", 1))])
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)
    figures = ("SELECT * FROM job_gpus ORDER BY ALL", "SELECT * FROM job_resources ORDER BY ALL", SERIES)
    with db.connection(lab.db) as con:
        assert con.execute("SELECT count(*) FROM gpu_minutes_hot").fetchone() == (0,)
        sealed = [con.execute(sql).fetchall() for sql in figures]
        chart = history.gpu_readings_downsampled(con, "x", None, 40)
        assert chart.resolution == "minute"
        con.execute("BEGIN")
        parts.unseal(con, parts.GPU_MINUTES, parts.live_paths(con, parts.GPU_MINUTES))
        assert con.execute("SELECT count(*) FROM gpu_parts WHERE table_name = 'gpu_minutes'").fetchone() == (0,)
        assert [con.execute(sql).fetchall() for sql in figures] == sealed
        assert history.gpu_readings_downsampled(con, "x", None, 40) == chart
        con.execute("ROLLBACK")


def _charts(con: Any, job: str) -> list[Any]:
    return [
        history.gpu_readings_downsampled(con, job, gpu, max_points)
        for gpu in (None, 1, 5)
        for max_points in (12, 400, 4000)
    ]


def test_a_chart_reads_the_parts_of_its_days_to_the_same_chart(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job over three days on two hosts (three minute parts, a fourth day's beside them, and
    hot rows): sealed_reads.between names only the parts of the range and gives the view's rows;
    every chart equals the one read through the view gpu_minutes (the previous reader)."""
    spool = tmp_path / "spool"
    day = 86_400
    # "long": day 1 noon to day 3 06:00 on two hosts, GPUs 0 and 1 (and GPU 5 from day 2 on node-02)
    long = [
        ("long", h, g, t) for h in ("node-01", "node-02") for g in (0, 1) for t in range(day // 2, 2 * day + 21_600, 90)
    ]
    long += [("long", "node-02", 5, t) for t in range(day + 3_600, 2 * day, 150)]
    others = [("short", "node-01", 2, t) for t in range(0, 7_200, 30)]  # day 0 only
    others += [("later", "node-03", 0, t) for t in range(3 * day, 3 * day + 3_600, 30)]  # day 3 only
    spool_file(spool, "a.jsonl", long[: len(long) // 2] + others)
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)
    spool_file(spool, "b.jsonl", long[len(long) // 2 :])
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)
    days = lab.query("SELECT day FROM gpu_parts WHERE table_name = 'gpu_minutes' ORDER BY day")
    assert [d for (d,) in days] == [date(2026, 1, 1) + timedelta(days=n) for n in range(4)]
    start = datetime(2026, 1, 1)
    with db.connection(lab.db) as con:
        assert con.execute("SELECT count(*) FROM gpu_minutes_hot").fetchone() == (0,)
        sealed = _charts(con, "long")
        assert [c.resolution for c in sealed].count("minute") > 5
        con.execute("BEGIN")
        # a day's minutes back in the hot table (as a late sample leaves them until the next seal)
        (middle,) = con.execute(
            "SELECT path FROM gpu_parts WHERE table_name = 'gpu_minutes' AND day = $d", {"d": date(2026, 1, 2)}
        ).fetchone()
        parts.unseal(con, parts.GPU_MINUTES, [middle])
        assert con.execute("SELECT count(*) FROM gpu_minutes_hot").fetchone()[0] > 0
        jan = [date(2026, 1, n) for n in range(1, 5)]  # the parts' days; Jan 2 is hot now
        ranges = [
            (start + timedelta(hours=12), start + timedelta(days=2, hours=6), {jan[0], jan[2]}),  # the job's span
            (start, start, {jan[0]}),
            (start + timedelta(hours=30), start + timedelta(hours=30, minutes=7), set()),  # the hot day's only
            (start - timedelta(days=9), start - timedelta(days=8), set()),
        ]
        for first, last, expected in ranges:
            rows = sealed_reads.between(con, parts.GPU_MINUTES, first, last)
            named = rows.params.get("sealed_parts", [])
            assert {date.fromisoformat(path.split("/day=")[1][:10]) for path in named} == expected
            got = con.execute(f"SELECT * FROM {rows.sql} ORDER BY ALL", rows.params).fetchall()
            plain = con.execute(
                "SELECT * FROM gpu_minutes WHERE minute BETWEEN $f AND $l ORDER BY ALL", {"f": first, "l": last}
            ).fetchall()
            assert got == plain
        hot = _charts(con, "long")
        monkeypatch.setattr(sealed_reads, "between", lambda con, table, first, last: sealed_reads.whole(table))
        assert _charts(con, "long") == hot  # read through the view
        con.execute("ROLLBACK")
        assert _charts(con, "long") == sealed
    monkeypatch.undo()
    # a reader of the published copy reads the parts its view names; each request's cursor keeps
    # the parts' footers (a cursor is a new connection: the setting is not inherited)
    cursor = snapshots.Reader(lab.db).cursor()
    assert cursor.execute("SELECT current_setting('parquet_metadata_cache')").fetchone() == (True,)
    assert _charts(cursor, "long") == sealed
