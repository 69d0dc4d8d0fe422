"""The warehouse's live figures for ``GET /metrics`` (api/routes/metrics.py), in the Prometheus
text format, and the ingest's staleness (also answered by ``/readyz``).

A collector reads, on each scrape, the newest snapshot (one cursor) and the ingest heartbeat
file (``<db>.last-ingest.json``, ingest/journal.py), and yields gauges; each app has a registry of
its own (never the process-global one). Per-job series exist only for running jobs, so a job
that finishes drops out and the series count stays bounded. A figure that is unknown (NULL,
NaN, ±Infinity) has no series, never a 0. See docs/metrics.md.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runlytics.ingest import journal
from runlytics.warehouse import db, health, ingest_status, insight_list, snapshots
from runlytics.warehouse.views import STATUSES

STALE_ENV = "RUNLYTICS_STALE_AFTER"
DEFAULT_STALE_AFTER = 3600.0
OUTCOMES = ("ok", "files_failed", "error")
JOB = ("job_id",)
# A GPU's series: its index ("gpu") does not name it alone (each container numbers its GPUs
# from 0), so its UUID ('' when unknown) tells two GPUs of a host under one index apart.
GPU = ("job_id", "host", "gpu", "gpu_uuid")

# Every metric the endpoint can emit: name -> (help, label names).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "runlytics_warehouse_up": ("1 when the newest snapshot could be read on this scrape, else 0", ()),
    "runlytics_snapshot_timestamp_seconds": ("When the snapshot read was published (Unix time)", ()),
    "runlytics_jobs": ("Jobs by status (every status, zeros included; 'unknown' when any)", ("status",)),
    "runlytics_problem_files": (
        "Files not ingested as they are now, by outcome (failed, pending; zeros included): a file that "
        "keeps failing stays counted",
        ("outcome",),
    ),
    "runlytics_job_step": ("A running job's latest step", JOB),
    "runlytics_job_total_steps": ("A running job's total steps, when known", JOB),
    "runlytics_job_loss": ("A running job's latest finite training loss", JOB),
    "runlytics_job_samples_per_second": ("A running job's latest throughput, in samples per second", JOB),
    "runlytics_job_eta_seconds": (
        f"A running job's remaining steps times its average seconds per step over its last "
        f"{health.RECENT_ROWS} step rows",
        JOB,
    ),
    "runlytics_gpu_utilization_percent": ("A running job's GPU's latest utilization, in percent", GPU),
    "runlytics_gpu_memory_used_mb": ("A running job's GPU's latest memory used, in MiB", GPU),
    "runlytics_gpu_temperature_celsius": ("A running job's GPU's latest temperature, in degrees Celsius", GPU),
    "runlytics_gpu_power_watts": ("A running job's GPU's latest power draw, in watts", GPU),
    "runlytics_gpu_sample_timestamp_seconds": (
        "When a running job's GPU's latest sample was taken (Unix time; none for step readings)",
        GPU,
    ),
    "runlytics_insights": (
        "Insights of the running jobs by kind and severity (every kind, zeros included)",
        ("kind", "severity"),
    ),
    "runlytics_job_insights": (
        "A running job's insights by severity (every severity, zeros included)",
        JOB + ("severity",),
    ),
    "runlytics_last_ingest_timestamp_seconds": ("When the last ingest run ended (Unix time)", ()),
    "runlytics_last_ingest_success": ("1 when the last ingest run completed (outcome ok or files_failed)", ()),
    "runlytics_last_ingest_outcome": ("1 for the last ingest run's outcome, 0 for the others", ("outcome",)),
    "runlytics_last_ingest_files_failed": ("Files the last ingest run could not read", ()),
    "runlytics_last_ingest_rows": ("Rows the last ingest run wrote", ()),
    "runlytics_last_ingest_points": ("Metric points of trainers' own logs the last ingest run read", ()),
    "runlytics_last_ingest_duration_seconds": ("How long the last ingest run took", ()),
    "runlytics_last_successful_ingest_timestamp_seconds": ("When the last successful ingest run ended", ()),
    "runlytics_ingest_stale": (f"1 when the last successful ingest is older than {STALE_ENV} seconds", ()),
    "runlytics_ingest_stale_after_seconds": (f"The staleness threshold ({STALE_ENV}); none when disabled", ()),
    "runlytics_ingest_heartbeat_readable": (
        "1 when the ingest heartbeat file could be read, 0 when it is there but can't be (none before the first run)",
        (),
    ),
}


def _family(name: str) -> GaugeMetricFamily:
    documentation, labels = METRICS[name]
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _number(value: Any) -> float | None:
    """A finite number as float, else None (NULL, NaN, ±Infinity, bools and text are unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _epoch(text: Any) -> float | None:
    """Unix time of an ISO-8601 time of the heartbeat (UTC when it names no zone)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# --- staleness (also answered by /readyz) -------------------------------------------------


def _stale_setting() -> float:
    """RUNLYTICS_STALE_AFTER as a number: the default when unset or blank, NaN when unreadable."""
    raw = os.environ.get(STALE_ENV, "").strip()
    try:
        return float(raw) if raw else DEFAULT_STALE_AFTER
    except ValueError:
        return math.nan


def stale_after_problem() -> str | None:
    """What is wrong with RUNLYTICS_STALE_AFTER, in one line; None when it is unset, blank, 0 or a
    finite number of seconds above 0. ``runlytics serve`` refuses to start on it (exit 2): a typo
    would otherwise be the default 3600 s, or a negative number staleness off, without a word."""
    if 0 <= _stale_setting() < math.inf:
        return None
    raw = os.environ.get(STALE_ENV, "").strip()
    return (
        f"{STALE_ENV}={raw!r} is not a number of seconds: give one above 0 (the age past which the last "
        f"successful ingest is stale; default {DEFAULT_STALE_AFTER:g}), or 0 to turn the check off"
    )


def stale_after() -> float | None:
    """The threshold in seconds from RUNLYTICS_STALE_AFTER (default 3600); None when 0 disables it.
    A value ``stale_after_problem`` refuses (which ``runlytics serve`` does not start with) reads as
    the default, or as off when negative, for an app built without the command."""
    value = _stale_setting()
    if math.isnan(value):
        value = DEFAULT_STALE_AFTER
    return value if value > 0 else None


@dataclass(frozen=True)
class Freshness:
    """Whether the ingest is stale: None when unknown (no heartbeat yet), False when disabled."""

    stale: bool | None
    threshold: float | None
    last_success: float | None
    detail: str | None = None


def ingest_freshness(db_path: Path) -> Freshness:
    """The freshness of the warehouse at ``db_path``, by its heartbeat file (for /readyz)."""
    try:
        return freshness(journal.read_heartbeat(db_path))
    except journal.HeartbeatUnreadable as error:
        return unreadable(error)


def unreadable(error: journal.HeartbeatUnreadable) -> Freshness:
    """A heartbeat this process can't read: the last success is unknown, which with a threshold
    set is stale (a check that can't be made must not pass), named without the server's folder."""
    threshold = stale_after()
    if threshold is None:
        return Freshness(False, None, None)
    name, reason = error.path.name, error.reason
    detail = f"the ingest heartbeat {name} can't be read ({reason}): the last successful ingest is unknown"
    return Freshness(True, threshold, None, detail)


def freshness(heartbeat: Any, now: float | None = None) -> Freshness:
    """Is the last successful ingest (by this heartbeat record) older than the threshold?"""
    threshold = stale_after()
    if not isinstance(heartbeat, dict):
        return Freshness(None if threshold else False, threshold, None)
    last_success = _epoch(heartbeat.get("last_success_at"))
    if threshold is None:
        return Freshness(False, None, last_success)
    if last_success is None:
        detail = f"no successful ingest recorded (last run: {heartbeat.get('outcome')} at {heartbeat.get('ended_at')})"
        return Freshness(True, threshold, None, detail)
    age = (time.time() if now is None else now) - last_success
    if age > threshold:
        detail = (
            f"last successful ingest {age:.0f} s ago (at {heartbeat.get('last_success_at')}), "
            f"over {STALE_ENV}={threshold:g} s"
        )
        return Freshness(True, threshold, last_success, detail)
    return Freshness(False, threshold, last_success)


# --- the collector -------------------------------------------------------------------------


class WarehouseCollector(Collector):
    """Reads the newest snapshot and the heartbeat on each scrape."""

    def __init__(self, reader: snapshots.Reader) -> None:
        self.reader = reader

    def describe(self) -> list[Metric]:
        return []  # nothing to read at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._warehouse()
        yield from self._ingest()

    def _warehouse(self) -> Iterator[Metric]:
        up = _family("runlytics_warehouse_up")
        try:
            cursor = self.reader.cursor()
            try:
                live = health.running_job_ids(cursor)
                jobs = health.running_jobs(cursor, live)
                gpus = health.running_gpus(cursor, live)
                by_status = health.jobs_by_status(cursor)
                by_kind = insight_list.kind_counts(cursor, live)
                by_severity = insight_list.severity_counts(cursor, live)
                problems = ingest_status.problem_counts(cursor)
            finally:
                cursor.close()
        except (db.WarehouseError, duckdb.Error):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        published = _snapshot_time(self.reader.snapshot)
        if published is not None:
            family = _family("runlytics_snapshot_timestamp_seconds")
            family.add_metric([], published)
            yield family
        yield from _status_families(by_status)
        yield from _problem_families(problems)
        yield from _job_families(jobs)
        yield from _gpu_families(gpus)
        yield from _insight_families(by_kind, by_severity)

    def _ingest(self) -> Iterator[Metric]:
        try:
            heartbeat = journal.read_heartbeat(self.reader.db_path)
            fresh, readable = freshness(heartbeat), None if heartbeat is None else 1.0
        except journal.HeartbeatUnreadable as error:  # not "no run yet": said by its own gauge
            heartbeat, fresh, readable = None, unreadable(error), 0.0
        values: dict[str, float | None] = {}
        outcome = None
        if isinstance(heartbeat, dict):
            summary = heartbeat["summary"] if isinstance(heartbeat.get("summary"), dict) else {}
            outcome = heartbeat.get("outcome")
            values = {
                "runlytics_last_ingest_timestamp_seconds": _epoch(heartbeat.get("ended_at")),
                "runlytics_last_ingest_success": (
                    float(outcome in ("ok", "files_failed")) if outcome in OUTCOMES else None
                ),
                "runlytics_last_ingest_files_failed": _number(summary.get("failed")),
                "runlytics_last_ingest_rows": _number(summary.get("rows")),
                "runlytics_last_ingest_points": _number(summary.get("points")),
                "runlytics_last_ingest_duration_seconds": _number(summary.get("seconds")),
                "runlytics_last_successful_ingest_timestamp_seconds": _epoch(heartbeat.get("last_success_at")),
            }
        values["runlytics_ingest_stale"] = None if fresh.stale is None else float(fresh.stale)
        values["runlytics_ingest_stale_after_seconds"] = fresh.threshold
        values["runlytics_ingest_heartbeat_readable"] = readable
        for name, value in values.items():
            family = _family(name)
            if value is not None:
                family.add_metric([], value)
            yield family
        outcomes = _family("runlytics_last_ingest_outcome")
        if outcome in OUTCOMES:
            for known in OUTCOMES:
                outcomes.add_metric([known], float(known == outcome))
        yield outcomes


def _snapshot_time(path: Path | None) -> float | None:
    """When the copy this scrape read was published. One copy is kept: an ingest may replace it
    between the read and this stat, and the copy's name (its publish time) still says when."""
    if path is None:
        return None
    published = snapshots.published_at(path)
    return published if published is not None else snapshots.stamp_seconds(path)


def _status_families(by_status: dict[str, int]) -> Iterator[Metric]:
    family = _family("runlytics_jobs")
    counts = {status: 0 for status in STATUSES}
    for status, count in by_status.items():
        key = status if status in counts else "unknown"
        counts[key] = counts.get(key, 0) + count
    for status, count in counts.items():
        family.add_metric([status], count)
    yield family


def _problem_families(by_outcome: dict[str, int]) -> Iterator[Metric]:
    family = _family("runlytics_problem_files")
    for outcome, count in by_outcome.items():
        family.add_metric([outcome], count)
    yield family


def _job_families(jobs: list[dict[str, Any]]) -> Iterator[Metric]:
    families = {
        name: _family(name)
        for name in (
            "runlytics_job_step",
            "runlytics_job_total_steps",
            "runlytics_job_loss",
            "runlytics_job_samples_per_second",
            "runlytics_job_eta_seconds",
        )
    }
    for job in jobs:
        step, total = _number(job["step"]), _number(job["total_steps"])
        per_step = _number(job["seconds_per_step"])
        eta = None
        if total is not None and per_step is not None:
            eta = _number(max(0.0, total - (step or 0.0)) * per_step)  # a product past a double: no figure
        values = {
            "runlytics_job_step": step,
            "runlytics_job_total_steps": total,
            "runlytics_job_loss": _number(job["loss"]),
            "runlytics_job_samples_per_second": _number(job["samples_per_second"]),
            "runlytics_job_eta_seconds": eta,
        }
        for name, value in values.items():
            if value is not None:
                families[name].add_metric([job["job_id"]], value)
    yield from families.values()


def _gpu_families(gpus: list[dict[str, Any]]) -> Iterator[Metric]:
    columns = {
        "runlytics_gpu_utilization_percent": "utilization_percent",
        "runlytics_gpu_memory_used_mb": "memory_used_mb",
        "runlytics_gpu_temperature_celsius": "temperature_c",
        "runlytics_gpu_power_watts": "power_w",
        "runlytics_gpu_sample_timestamp_seconds": "sample_epoch",
    }
    families = {name: _family(name) for name in columns}
    for gpu in gpus:
        labels = [gpu["job_id"], gpu["host"], str(gpu["gpu_index"]), gpu["gpu_uuid"]]
        for name, column in columns.items():
            value = _number(gpu[column])
            if value is not None:
                families[name].add_metric(labels, value)
    yield from families.values()


def _insight_families(by_kind: dict[tuple[str, str], int], by_job: dict[str, dict[str, int]]) -> Iterator[Metric]:
    kinds = _family("runlytics_insights")
    for (kind, severity), count in sorted(by_kind.items()):
        kinds.add_metric([kind, severity], count)
    yield kinds
    jobs = _family("runlytics_job_insights")
    for job_id, counts in sorted(by_job.items()):
        for severity, count in counts.items():
            jobs.add_metric([job_id, severity], count)
    yield jobs
