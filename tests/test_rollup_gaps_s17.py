"""Session 17's audit of the rollups around pruned minutes (warehouse/rollups.py): a late sample,
or a GPU's next sample, arriving after a minute whose raw samples aged out (--keep-raw-days) re-ends
that minute's last interval at itself, and a backfill before such a minute counts until that
minute's first sample. The pruned warehouse fed run by run equals one ingest of the final files that
keeps every raw sample (docs/ingest.md, the raw window; decisions.md, session 17)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab

MIDNIGHT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)

JOB_GPUS = "SELECT * FROM job_gpus ORDER BY job_id, host, gpu_uuid"
JOB_ENERGY = "SELECT * FROM job_energy ORDER BY job_id"
INSIGHTS = (
    "SELECT job_id, kind, severity, host, gpu_key, value, reference FROM insight_results "
    "ORDER BY job_id, kind, host, gpu_key"
)
# every minute's counts and time-weighted sums
MINUTES = (
    "SELECT job_id, host, gpu_key, minute, samples, first_ts, last_ts, interval_seconds, utilization_seconds, "
    "idle_seconds, reasons_seconds, throttled_seconds, energy_wh FROM gpu_minutes "
    "ORDER BY job_id, host, gpu_key, minute"
)


def at(days_ago: int, clock: str, seconds: float = 0) -> datetime:
    """``clock`` (HH:MM:SS, UTC) of the day ``days_ago`` days before today, plus ``seconds``."""
    h, m, s = (int(part) for part in clock.split(":"))
    return MIDNIGHT - timedelta(days=days_ago) + timedelta(hours=h, minutes=m, seconds=s + seconds)


def line(ts: datetime, job: str = "jobA", host: str = "n1", uuid: str = "GPU-a0", **values: Any) -> str:
    """A spool line; by default jobA's GPU at 50 %, 100 W, clocks_event_reasons 0."""
    row = {"ts": ts.replace(tzinfo=UTC).timestamp(), "job_id": job, "host": host, "gpu_uuid": uuid, "gpu_index": 0,
           "utilization_percent": 50.0, "memory_used_mb": 1000.0, "temperature_c": 60.0, "power_w": 100.0,
           "clocks_event_reasons": 0}  # fmt: skip
    return json.dumps({**row, **values}) + "\n"


def burst(start: datetime, count: int, **values: Any) -> list[str]:
    """``count`` samples 10 s apart from ``start``."""
    return [line(start + timedelta(seconds=10 * i), **values) for i in range(count)]


def jobs(lab: Lab, spans: dict[str, tuple[datetime, datetime]]) -> None:
    for job, (start, end) in spans.items():
        stamp = end.replace(tzinfo=UTC).timestamp()
        lab.write_job(job, {"job_id": job, "status": "completed", "started_at": start.replace(tzinfo=UTC).timestamp(),
                            "ended_at": stamp, "history": [{"step": 1, "timestamp": stamp, "loss": 1.0}]})  # fmt: skip


class Case:
    """The spool files of each run of one scenario, ingested into a pruned warehouse run by run
    (``keep_raw_days`` 1) and, as the reference, into one that keeps every raw sample, in one ingest
    of the final files."""

    def __init__(self, tmp_path: Path, engine: Engine, spans: dict[str, tuple[datetime, datetime]]) -> None:
        self.tmp, self.engine, self.spans = tmp_path, engine, spans
        self.runs: list[dict[str, list[str]]] = []

    def lab(self, name: str) -> Lab:
        folder = self.tmp / name
        folder.mkdir()
        lab = Lab(folder, self.engine)
        jobs(lab, self.spans)
        return lab

    def spool(self, name: str, files: dict[str, list[str]]) -> Path:
        folder = self.tmp / name
        folder.mkdir()
        for file, lines in files.items():
            (folder / file).write_text("".join(lines))
        return folder

    def pruned(self) -> Lab:
        lab = self.lab("pruned")
        for i, files in enumerate(self.runs):
            lab.ingest(spool_root=self.spool(f"run{i}", files), keep_raw_days=1)
        return lab

    def reference(self) -> Lab:
        lab = self.lab("reference")
        final = {name: lines for files in self.runs for name, lines in files.items()}
        lab.ingest(spool_root=self.spool("final", final), keep_raw_days=0)
        assert lab.query("SELECT count(*) FROM gpu_samples") == [(sum(map(len, final.values())),)]
        return lab


def figures(lab: Lab) -> dict[str, list[tuple[Any, ...]]]:
    queries = {"job_gpus": JOB_GPUS, "job_energy": JOB_ENERGY, "insights": INSIGHTS, "minutes": MINUTES}
    return {name: lab.query(sql) for name, sql in queries.items()}


def old_minutes(lab: Lab, before: datetime) -> list[tuple[Any, ...]]:
    sql = "SELECT minute, samples, interval_seconds, energy_wh FROM gpu_minutes WHERE minute < $b ORDER BY minute"
    return lab.query(sql, {"b": before})


@pytest.mark.parametrize("kept_day", [5, 4], ids=["same-day", "next-day"])
def test_a_backfill_just_before_a_pruned_minute_counts_until_its_first_sample(
    tmp_path: Path, ingest_engine: Engine, kept_day: int
) -> None:
    """Late samples 09:59:00-09:59:50 of day -5, before the rolled-up 10:00 minute whose raw samples
    were pruned: 09:59:50 counts until 10:00:00 (docs: "until ... the first of the next minute whose
    rollup stands"), 60 s and 1.667 Wh for the minute as one ingest, not 50 s and 1.389 Wh. The same
    at midnight (23:59 of day -5 before 00:00 of day -4: that minute lies in another day's part)."""
    first = at(5, "09:59:00") if kept_day == 5 else at(5, "23:59:00")
    kept = first + timedelta(minutes=1)
    case = Case(tmp_path, ingest_engine, {"jobA": (first, at(1, "12:00:30"))})
    case.runs = [
        {"run1.jsonl": burst(kept, 6) + burst(at(1, "12:00:00"), 4)},
        {"late.jsonl": burst(first, 6)},
    ]
    pruned, reference = case.pruned(), case.reference()
    gap = (at(1, "12:00:00") - kept).total_seconds() - 50
    assert old_minutes(pruned, at(2, "00:00:00")) == [
        (first, 6, 60.0, 100 * 60 / 3600),
        (kept, 6, 50 + gap, 100 * (50 + gap) / 3600),
    ]
    assert figures(pruned) == figures(reference)
