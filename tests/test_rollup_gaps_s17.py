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


def test_a_late_sample_after_a_pruned_minute_re_ends_it_and_the_gap_counts_once(
    tmp_path: Path, ingest_engine: Engine
) -> None:
    """Samples 10:00:00-10:00:50 of day -5 and 12:00 of day -1; the first run prunes day -5 (its
    10:00 minute's last interval runs to day -1's 12:00:00). A late sample at day -5 10:05:00 (a
    minute never rolled up) ends that interval: 10:00 counts 300 s (50 + 250), not 352,800 s beside
    the late minute's own 352,500 s (the gap counted twice: 19,592.5 Wh instead of 9,800.83)."""
    case = Case(tmp_path, ingest_engine, {"jobA": (at(5, "10:00:00"), at(1, "12:00:30"))})
    case.runs = [
        {"run1.jsonl": burst(at(5, "10:00:00"), 6) + burst(at(1, "12:00:00"), 4)},
        {"late.jsonl": [line(at(5, "10:05:00"))]},
    ]
    pruned, reference = case.pruned(), case.reference()
    assert pruned.query("SELECT count(*) FROM gpu_samples WHERE ts < $b", {"b": at(2, "00:00:00")}) == [(0,)]
    # 10:00: 5 x 10 s + 250 s to 10:05:00, 100 W throughout: 300 s, 30,000 J = 8.333 Wh
    assert old_minutes(pruned, at(2, "00:00:00")) == [
        (at(5, "10:00:00"), 6, 300.0, 30_000 / 3600),
        (at(5, "10:05:00"), 1, 352_500.0, 100 * 352_500 / 3600),
    ]
    assert figures(pruned) == figures(reference)
    (energy,) = pruned.query("SELECT energy_wh FROM job_gpus")[0]
    assert energy == pytest.approx(100 * (300 + 352_500 + 30) / 3600)  # 9,800.83 Wh


def test_a_gpus_next_sample_after_its_minute_was_pruned_closes_that_interval(
    tmp_path: Path, ingest_engine: Engine
) -> None:
    """jobA's GPU sampled 10:00:00-10:00:50 of day -5, jobB's on another host at day -1 09:00: the
    first run prunes day -5 with jobA's last interval open. jobA's day -1 samples arrive next run:
    the open interval ends at 12:00:00 of day -1 (352,750 s), as one ingest of the same files counts
    it, pruned or not (2.222 Wh instead of 9,800.83)."""
    spans = {"jobA": (at(5, "10:00:00"), at(1, "12:00:30")), "jobB": (at(1, "09:00:00"), at(1, "09:00:30"))}
    case = Case(tmp_path, ingest_engine, spans)
    case.runs = [
        {
            "a.jsonl": burst(at(5, "10:00:00"), 6),
            "b.jsonl": burst(at(1, "09:00:00"), 4, job="jobB", host="n2", uuid="GPU-b0"),
        },
        {"a2.jsonl": burst(at(1, "12:00:00"), 4)},
    ]
    pruned, reference = case.pruned(), case.reference()
    assert old_minutes(pruned, at(2, "00:00:00")) == [(at(5, "10:00:00"), 6, 352_800.0, 100 * 352_800 / 3600)]
    got, want = figures(pruned), figures(reference)
    assert got["job_gpus"] == want["job_gpus"]
    assert got["job_energy"] == want["job_energy"]
    assert got["insights"] == want["insights"]
    # reasons_seconds of the re-ended minute: whether its last sample had clocks_event_reasons is not
    # in the rollup (the interval was open), so that sum stands (50 s; one ingest counts 352,800 s).
    # Every other figure of every minute is one ingest's.
    reasons = MINUTES.split(", ").index("reasons_seconds")
    assert [row[:reasons] + row[reasons + 1 :] for row in got["minutes"]] == [
        row[:reasons] + row[reasons + 1 :] for row in want["minutes"]
    ]
    assert [row[reasons] for row in got["minutes"]][:1] == [50.0]


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


@pytest.mark.parametrize("power", ["one", "mixed"])
def test_a_re_ended_minute_whose_samples_differ(tmp_path: Path, ingest_engine: Engine, power: str) -> None:
    """The first case with the pruned minute's samples differing: utilization 50/5 % (idle), clock
    reasons 0/4 (throttled: SW power cap), its last sample idle and throttled. Its old interval
    (352,750 s) is longer than the rest of the minute (50 s), so each time-weighted sum tells whether
    the last sample counted in it: every figure as one ingest's. The energy of the last interval needs
    the last sample's power: known where the minute had one power; with 100 and 300 W it is not, and
    the minute's energy is unknown (NULL), not the gap's 9,800 Wh or more."""
    watts = [100.0] * 6 if power == "one" else [100.0, 300.0] * 3
    pruned_minute = [
        line(at(5, "10:00:00", 10 * i), utilization_percent=5.0 if i % 2 else 50.0, clocks_event_reasons=4 * (i % 2),
             power_w=watts[i])
        for i in range(6)
    ]  # fmt: skip
    case = Case(tmp_path, ingest_engine, {"jobA": (at(5, "10:00:00"), at(1, "12:00:30"))})
    case.runs = [
        {"run1.jsonl": pruned_minute + burst(at(1, "12:00:00"), 4)},
        {"late.jsonl": [line(at(5, "10:05:00"))]},
    ]
    pruned, reference = case.pruned(), case.reference()
    got, want = figures(pruned), figures(reference)
    # 10:00: intervals 10 s x 5 + 250 s; idle and throttled: the samples at 10, 30 and 50 s (10 + 10 + 250)
    columns = MINUTES.split(" FROM ")[0].split(", ")
    first = dict(zip(columns, got["minutes"][0], strict=True))
    assert (first["interval_seconds"], first["utilization_seconds"], first["idle_seconds"]) == (300.0, 300.0, 270.0)
    assert (first["reasons_seconds"], first["throttled_seconds"]) == (300.0, 270.0)
    if power == "one":
        assert got == want
        return
    assert first["energy_wh"] is None
    energy = columns.index("energy_wh")
    assert [row[:energy] for row in got["minutes"]] == [row[:energy] for row in want["minutes"]]
    assert [row[energy] for row in got["minutes"][1:]] == [row[energy] for row in want["minutes"][1:]]
    # job_gpus: every figure but the energy, one ingest's less 10:00's trapezoids (200 W x 10 s x 5 and
    # 200 W x 250 s: 10:00:50's 300 W to 10:05:00's 100 W)
    names, (gpu,) = pruned.columns(JOB_GPUS)
    e = names.index("energy_wh")
    (gpu_want,) = want["job_gpus"]
    assert gpu[:e] + gpu[e + 1 :] == gpu_want[:e] + gpu_want[e + 1 :]
    assert gpu[e] == pytest.approx(gpu_want[e] - (200 * 10 * 5 + 200 * 250) / 3600)
    assert got["insights"] == want["insights"]
