"""Insights (``shared/spec/insights.md``): what went wrong in a run, found by the views.

The rules are SQL views (``warehouse/sql/insight_*.sql``, their union ``job_insights``); every
threshold they compare with is a row of ``insight_settings`` (name -> value), read through the
one-row view ``insight_parameters``. ``insight_results`` holds ``job_insights`` materialised
with the ``as_of`` it was computed at, and ``insight_jobs`` one row per job computed (a job
without insights has its ``as_of`` there). Ingest refreshes them with ``job_results``
(``results.refresh_queued``): the jobs a run changed (a statement per range of job ids,
``job_ranges``: DuckDB takes a range down to the jobs' facts), ``silent_running`` alone for
every other running job (it depends on the time) and ``slow_vs_peers`` alone for the completed
jobs of the same models.
Changing a threshold recomputes every job's insights in the same transaction.
``tests/test_insights.py`` checks that the tables equal the view.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import duckdb

from . import db

# gpu_idle.utilization's default, and the idle threshold of the per-minute rollups (rollups.py),
# which keep the time below it only: at any other threshold gpu_idle reads the raw samples kept
IDLE_UTILIZATION = 10

# The thresholds of insights.md, under their names in insight_settings (docs/insights.md).
DEFAULTS: dict[str, float] = {
    "loss_spike.mad_factor": 6,
    "loss_spike.relative": 0.5,
    "loss_divergence.factor": 2,
    "loss_divergence.rise": 0.1,
    "overfitting.min_evals_after": 3,
    "overfitting.eval_rise": 1.05,
    "overfitting.train_window": 10,
    "throughput_drop.min_rows": 10,
    "throughput_drop.fraction": 0.7,
    "stall.factor": 10,
    "stall.min_seconds": 60,
    "slow_vs_peers.fraction": 0.7,
    "slow_vs_peers.min_peers": 3,
    "gpu_idle.utilization": IDLE_UTILIZATION,
    "gpu_idle.share": 0.5,
    "gpu_straggler.min_gpus": 2,
    "gpu_straggler.points": 20,
    "gpu_throttled.share": 0.1,
    "low_gpu_utilization.percent": 50,
    "low_gpu_utilization.min_training_seconds": 600,
    "memory_headroom.fraction": 0.4,
    "memory_headroom.min_training_seconds": 600,
    "work_at_risk.factor": 2,
    "silent_running.min_seconds": 1800,
    "silent_running.factor": 20,
}

# thresholds that count rows, evals, jobs or GPUs: whole numbers, at least this
COUNTS: dict[str, int] = {
    "overfitting.min_evals_after": 1,
    "overfitting.train_window": 1,
    "throughput_drop.min_rows": 1,
    "slow_vs_peers.min_peers": 1,
    "gpu_straggler.min_gpus": 2,
}
MAX_COUNT = 1_000_000  # a window frame of more rows than any job has

KINDS = (
    "nonfinite_loss", "loss_spike", "loss_divergence", "overfitting",
    "throughput_drop", "stall", "slow_vs_peers",
    "gpu_idle", "gpu_straggler", "gpu_throttled", "low_gpu_utilization", "memory_headroom",
    "work_at_risk", "silent_running",
)  # fmt: skip
SEVERITIES = ("critical", "warning", "info")

# --- tables (revision 0011; revision 0037 adds insight_results.gpu_key after gpu_index) ---------

COLUMNS = """
    job_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, severity VARCHAR NOT NULL,
    first_step BIGINT, last_step BIGINT, start_time TIMESTAMP, end_time TIMESTAMP,
    host VARCHAR, gpu_index INTEGER, value DOUBLE, reference DOUBLE, message VARCHAR"""
CREATE_SETTINGS = "CREATE TABLE insight_settings (name VARCHAR PRIMARY KEY, value DOUBLE NOT NULL)"
CREATE_RESULTS = f"CREATE TABLE insight_results ({COLUMNS}, as_of TIMESTAMP NOT NULL)"
CREATE_JOBS = "CREATE TABLE insight_jobs (job_id VARCHAR PRIMARY KEY, as_of TIMESTAMP NOT NULL)"
DROP_TABLES = ("insight_results", "insight_jobs", "insight_settings")

# --- settings ---------------------------------------------------------------------------------

SELECT_SETTINGS = "SELECT name, value FROM insight_settings ORDER BY name"
UPSERT_SETTING = "INSERT OR REPLACE INTO insight_settings (name, value) VALUES ($name, $value)"
FILL_DEFAULTS = "INSERT OR REPLACE INTO insight_settings (name, value) SELECT unnest($names), unnest($values)"

# --- materialising ----------------------------------------------------------------------------

SELECT_RESULTS = "SELECT i.*, p.as_of FROM job_insights i, insight_parameters p"
REFILL = (
    "DELETE FROM insight_results; DELETE FROM insight_jobs; "
    f"INSERT INTO insight_results {SELECT_RESULTS}; "
    "INSERT INTO insight_jobs SELECT j.job_id, p.as_of FROM jobs j, insight_parameters p"
)
# the jobs whose every insight is recomputed: those named (a run changed their facts)
RECOMPUTED = "SELECT job_id FROM jobs WHERE job_id IN (SELECT unnest($job_ids))"
# a running job that the run did not change: of its insights only silent_running (the silence
# since its last row, at as_of) can differ, so only that kind is recomputed (a filter on kind
# leaves the view's other rules out: one pass over the rows for the last row and the median gap)
RUNNING = "SELECT job_id FROM jobs WHERE status = 'running' AND job_id NOT IN (SELECT unnest($job_ids))"
DELETE_SILENT = "DELETE FROM insight_results WHERE kind = 'silent_running' AND job_id IN (SELECT unnest($job_ids))"
# slow_vs_peers compares a completed job with the other completed jobs of its model: when a job
# changes, those of its model (before and after the change: run this before job_results is
# refreshed) may change too
PEERS = """
SELECT job_id FROM jobs
WHERE status = 'completed' AND model_name IN (
    SELECT model_name FROM jobs WHERE job_id IN (SELECT unnest($job_ids))
    UNION SELECT model_name FROM job_results WHERE job_id IN (SELECT unnest($job_ids))
)
"""
DELETE_JOBS = "DELETE FROM insight_results WHERE job_id IN (SELECT unnest($job_ids))"
# DuckDB takes a filter on job_id that compares it with constants (job_id = $a, job_id BETWEEN $a
# AND $b) down through the views' windows and joins to the jobs' facts, but not a list of jobs
# (IN is not carried across a join): the jobs are computed by ranges of job_id, each one
# statement whose cost is mostly planning it (~0.1 s) when it spans a few jobs
ALL_JOBS = "SELECT job_id FROM jobs ORDER BY job_id"
INSERT_RANGE = (
    f"INSERT INTO insight_results {SELECT_RESULTS} "
    "WHERE i.job_id BETWEEN $first AND $last AND i.job_id IN (SELECT unnest($job_ids))"
)
RANGE_GAP = 16  # jobs not asked for that a range may span (each a few ms) rather than plan another
MAX_RANGES = 16  # more ranges than this: one range from the first job asked for to the last (one pass)
UPSERT_AS_OF = (
    "INSERT OR REPLACE INTO insight_jobs SELECT j.job_id, p.as_of FROM jobs j, insight_parameters p "
    "WHERE j.job_id IN (SELECT unnest($job_ids))"
)
# A peer's slow_vs_peers rows, computed once into a temp table: only the peers whose rows differ from
# the stored ones (in any column but as_of) have them replaced and get the run's as_of (all their
# rows, and insight_jobs): a completed job whose insights did not change keeps the as_of of the run
# that last changed it (docs/insights.md), not the as_of of every run that changed a job of its model.
# value and reference (DOUBLE) are compared exactly: a peer median that moved by an ulp (a peer's
# job_results figure summed again in another order by a parallel aggregate) re-stamps that peer with
# the run's as_of, though its message (%.6g) reads the same. Harmless: its rows are replaced by equal
# ones, only as_of moves; a tolerance would keep a stored figure that is no longer the computed one.
PEER_ROWS = """
CREATE OR REPLACE TEMP TABLE batch_peer_insights AS
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference, message
FROM insight_peers WHERE job_id IN (SELECT unnest($job_ids))
"""
PEERS_CHANGED = """
SELECT DISTINCT job_id FROM (
    (SELECT * FROM batch_peer_insights
     EXCEPT ALL
     SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference, message
     FROM insight_results WHERE kind = 'slow_vs_peers' AND job_id IN (SELECT unnest($job_ids)))
    UNION ALL
    (SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference, message
     FROM insight_results WHERE kind = 'slow_vs_peers' AND job_id IN (SELECT unnest($job_ids))
     EXCEPT ALL
     SELECT * FROM batch_peer_insights)
)
"""
DELETE_PEER_KIND = "DELETE FROM insight_results WHERE kind = 'slow_vs_peers' AND job_id IN (SELECT unnest($job_ids))"
# an insight of no GPU (a peer's or a step rule's, ``i``) as insight_results lays it out: host,
# gpu_index and gpu_key NULL, then the run's as_of (``p``, insight_parameters)
INSERT_NO_GPU = """
INSERT INTO insight_results
SELECT i.job_id, i.kind, i.severity, i.first_step, i.last_step, i.start_time, i.end_time, NULL, NULL, NULL,
       i.value, i.reference, i.message, p.as_of
"""
INSERT_PEER_KIND = f"""{INSERT_NO_GPU}FROM batch_peer_insights i, insight_parameters p
WHERE i.job_id IN (SELECT unnest($job_ids))
"""
# silent_running is a rule of insight_steps: read there, not through job_insights, whose union
# with insight_peers and insight_gpus DuckDB binds and optimizes before the filter on kind prunes
# them (~50 ms of each run that has a running job it did not change)
INSERT_SILENT = f"""{INSERT_NO_GPU}FROM insight_steps i, insight_parameters p
WHERE i.kind = 'silent_running' AND i.job_id IN (SELECT unnest($job_ids))
"""
STAMP_RESULTS = (
    "UPDATE insight_results SET as_of = (SELECT as_of FROM insight_parameters) "
    "WHERE job_id IN (SELECT unnest($job_ids))"
)


class UnknownThreshold(LookupError):
    """A threshold name that insights.md does not have."""


class BadThreshold(ValueError):
    """A value a threshold cannot take."""


def thresholds(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """The thresholds in force: name -> value, every name of ``DEFAULTS``, sorted by name."""
    return {name: float(value) for name, value in con.execute(SELECT_SETTINGS).fetchall()}


def check_threshold(name: str, value: float) -> float:
    """``value`` as the float stored for ``name``; a clear error when either is wrong."""
    if name not in DEFAULTS:
        raise UnknownThreshold(f"unknown insight threshold {name!r}; the thresholds are: {', '.join(sorted(DEFAULTS))}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadThreshold(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise BadThreshold(f"{name} must be a finite number of at least 0, not {value!r}")
    if name in COUNTS and (number != int(number) or not COUNTS[name] <= number <= MAX_COUNT):
        raise BadThreshold(
            f"{name} counts, so it must be a whole number from {COUNTS[name]} to {MAX_COUNT}, not {value!r}"
        )
    return number


def set_threshold(con: duckdb.DuckDBPyConnection, name: str, value: float) -> dict[str, float]:
    """Set one threshold and recompute every job's insights, in one transaction; the thresholds."""
    number = check_threshold(name, value)
    with db.atomic(con):
        con.execute(UPSERT_SETTING, {"name": name, "value": number})
        refill(con)
    return thresholds(con)


def reset_threshold(con: duckdb.DuckDBPyConnection, name: str | None = None) -> dict[str, float]:
    """Put one threshold (or, without a name, every one) back to its default, recomputing every
    job's insights in the same transaction; the thresholds."""
    names = [name] if name is not None else sorted(DEFAULTS)
    for each in names:
        check_threshold(each, DEFAULTS.get(each, 0))
    with db.atomic(con):
        fill_defaults(con, names)
        refill(con)
    return thresholds(con)


def fill_defaults(con: duckdb.DuckDBPyConnection, names: list[str] | None = None) -> None:
    """Write the default value of these thresholds (all of them without names)."""
    names = sorted(DEFAULTS) if names is None else names
    con.execute(FILL_DEFAULTS, {"names": names, "values": [float(DEFAULTS[n]) for n in names]})


def refill(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute every job's insights (in the caller's transaction, if any)."""
    con.execute(REFILL)


def peers(con: duckdb.DuckDBPyConnection, job_ids: set[str]) -> set[str]:
    """The completed jobs whose slow_vs_peers may change with these jobs: call it before
    job_results is refreshed, so that a job's model before the change counts too."""
    if not job_ids:
        return set()
    return {job_id for (job_id,) in con.execute(PEERS, {"job_ids": sorted(job_ids)}).fetchall()}


def job_ranges(ordered: list[str], chosen: set[str]) -> list[tuple[str, str]]:
    """The ranges (first, last) of ``ordered`` (every job id, in the database's order) that hold
    the ``chosen`` ones: a new range where more than RANGE_GAP others lie between two chosen, and
    one range over them all when that would make more than MAX_RANGES."""
    ranges: list[list[str]] = []
    previous = 0
    for position, job_id in enumerate(ordered):
        if job_id not in chosen:
            continue
        if ranges and position - previous - 1 <= RANGE_GAP:
            ranges[-1][1] = job_id
        else:
            ranges.append([job_id, job_id])
        previous = position
    if len(ranges) > MAX_RANGES:
        return [(ranges[0][0], ranges[-1][1])]
    return [(first, last) for first, last in ranges]


def refresh(con: duckdb.DuckDBPyConnection, job_ids: set[str], peer_ids: Iterable[str] = ()) -> set[str]:
    """Recompute the insights of these jobs, silent_running of every other running job, and
    slow_vs_peers of ``peer_ids`` (in the caller's transaction, if any, after job_results); the
    jobs whose insights are then current at as_of, but for the peers."""
    full = {job_id for (job_id,) in con.execute(RECOMPUTED, {"job_ids": sorted(job_ids)}).fetchall()}
    if full:
        params = {"job_ids": sorted(full)}
        con.execute(DELETE_JOBS, params)
        ordered = [job_id for (job_id,) in con.execute(ALL_JOBS).fetchall()]
        for first, last in job_ranges(ordered, full):
            con.execute(INSERT_RANGE, {"first": first, "last": last, **params})
        con.execute(UPSERT_AS_OF, params)
    running = {job_id for (job_id,) in con.execute(RUNNING, {"job_ids": sorted(full)}).fetchall()}
    if running:
        params = {"job_ids": sorted(running)}
        for statement in (DELETE_SILENT, INSERT_SILENT, STAMP_RESULTS, UPSERT_AS_OF):
            con.execute(statement, params)
    others = set(peer_ids) - full - running
    if others:
        con.execute(PEER_ROWS, {"job_ids": sorted(others)})
        changed = [job_id for (job_id,) in con.execute(PEERS_CHANGED, {"job_ids": sorted(others)}).fetchall()]
        if changed:
            params = {"job_ids": sorted(changed)}
            for statement in (DELETE_PEER_KIND, INSERT_PEER_KIND, STAMP_RESULTS, UPSERT_AS_OF):
                con.execute(statement, params)
    return full | running
