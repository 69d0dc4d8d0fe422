"""GPU telemetry from a stage to PostgreSQL (issue #18): raw samples, rollups, raw window.

An ingester writing PostgreSQL ingests into a local DuckDB warehouse of its own (the stage,
ingest/postgres.py) and then publishes what the run changed. For the GPU telemetry that is
what the stage's outbox (warehouse/telemetry_outbox.py) lists: per GPU, the minutes [lo, hi)
whose samples and rollups a batch recomputed. ``publish`` replaces on PostgreSQL, in one
transaction, the rows of those minutes with the stage's: the raw samples (``gpu_sample_minutes``,
packed one row per GPU and minute: warehouse/pg_samples.py), ``gpu_minutes``,
``utilization_minutes`` (per job and minute) and ``job_gpu_series`` (per GPU), with binary COPY
(floats to the last bit); it then drops the raw samples past PostgreSQL's window
(``keep_raw_days``) whose minute is rolled up there, commits, and only then deletes the
published ranges from the outbox. A publish killed anywhere sends the same ranges again next
time; replacing them is idempotent, so PostgreSQL ends equal to the stage.

Its cost follows the outbox: a minute's new samples, or a late spool file's few past minutes,
not the rows stored. The stage is read through the view names (``gpu_samples``,
``gpu_minutes``) with the ranges' time span as constants, so its scans skip the Parquet parts
and row groups outside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb
import psycopg

from . import db, pg_copy, pg_samples, postgres, results, retention, telemetry_outbox

# pg_advisory_xact_lock's key ('rgpu'): one telemetry publish at a time on a database, so two
# ingesters' replacements of a job's utilization minutes never interleave
LOCK = 0x72677075

OUTBOX = telemetry_outbox.TABLE
# Ranges of one GPU that overlap or touch are merged, so that each row of a range is read once
# (a join, not a semi-join). Ranges further apart than this are read by separate queries, each
# with its own time span: a late file for last week and this minute's samples don't make one
# scan of the week.
SPAN_GAP = timedelta(hours=1)

# the stage's owed ranges (what the outbox holds now), then merged per GPU and per job
OWED = f"CREATE OR REPLACE TEMP TABLE pg_publish_owed AS SELECT DISTINCT job_id, host, gpu_key, lo, hi FROM {OUTBOX}"
MERGED = """
CREATE OR REPLACE TEMP TABLE {name} AS
SELECT {key}, min(lo) AS lo, max(hi) AS hi FROM (
    SELECT *, sum(CASE WHEN reach IS NULL OR lo > reach THEN 1 ELSE 0 END)
                  OVER (PARTITION BY {key} ORDER BY lo, hi ROWS UNBOUNDED PRECEDING) AS island
    FROM (SELECT {key}, lo, hi,
                 max(hi) OVER (PARTITION BY {key} ORDER BY lo, hi ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                     AS reach
          FROM ({WHOLE}) w) x
) y
GROUP BY {key}, island
"""
# PostgreSQL's samples are packed a minute a row and replaced whole: each range widened to whole
# minutes before the merge (the rollups' ranges are whole minutes already, warehouse/rollups.py;
# this keeps any other from leaving a minute half replaced)
WHOLE = (
    "SELECT {key}, date_trunc('minute', lo) AS lo, CASE WHEN hi = date_trunc('minute', hi) THEN hi "
    "ELSE date_trunc('minute', hi) + INTERVAL 1 MINUTE END AS hi FROM pg_publish_owed"
)
GPU_KEY = ("job_id", "host", "gpu_key")
JOB_KEY = ("job_id",)
GPU_RANGES = "pg_publish_ranges"
JOB_RANGES = "pg_publish_job_ranges"
RANGE_COLUMNS = {
    GPU_RANGES: [("job_id", "text"), ("host", "text"), ("gpu_key", "text"), ("lo", "timestamp"), ("hi", "timestamp")],
    JOB_RANGES: [("job_id", "text"), ("lo", "timestamp"), ("hi", "timestamp")],
}
GPU_NAMES = tuple(name for name, _ in RANGE_COLUMNS[GPU_RANGES])
JOB_NAMES = tuple(name for name, _ in RANGE_COLUMNS[JOB_RANGES])
RANGES = "SELECT {names} FROM {table} ORDER BY lo, hi"
DROP = "DROP TABLE IF EXISTS {table}"
# the ranges in a temporary table of PostgreSQL's transaction (``_send``)
TEMP_RANGES = "CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP"
COPY_RANGES = "COPY {table} FROM STDIN (FORMAT BINARY)"
ANALYZE = "ANALYZE {table}"
DONE = f"""
DELETE FROM {OUTBOX} o USING pg_publish_owed p
WHERE o.job_id = p.job_id AND o.host = p.host AND o.gpu_key = p.gpu_key AND o.lo = p.lo AND o.hi = p.hi
"""

# per published table: the stage's rows of the ranges of one time span (the ranges bound as
# lists: the copy reads on a cursor of its own, which sees no temporary table), and the delete
# of PostgreSQL's rows of every range
GPU_MATCH = "t.job_id = r.job_id AND t.host = r.host AND t.gpu_key = r.gpu_key"
GPU_LISTED = (
    "(SELECT unnest($job_id) AS job_id, unnest($host) AS host, unnest($gpu_key) AS gpu_key, "
    "CAST(unnest($lo) AS TIMESTAMP) AS lo, CAST(unnest($hi) AS TIMESTAMP) AS hi)"
)
JOB_LISTED = (
    "(SELECT unnest($job_id) AS job_id, CAST(unnest($lo) AS TIMESTAMP) AS lo, CAST(unnest($hi) AS TIMESTAMP) AS hi)"
)
# PostgreSQL's text holds no NUL character, and a spool line may escape one in any string: every
# string sent carries U+FFFD in its place (pg_copy's NUL_FREE, as the jobs' publish and db copy),
# keys included, so that PostgreSQL's keys are the stage's with that one change (the stage's ranges
# are matched with the stage's own strings, the replaced ones go to PostgreSQL)
# the samples of the ranges, packed per minute by pg_samples.copy (a range's bounds are whole
# minutes), their strings without NUL
SAMPLES_SOURCE = (
    f"(SELECT t.* REPLACE ({pg_copy.SAMPLES_NUL_FREE}) FROM gpu_samples t "
    f"JOIN {GPU_LISTED} r ON {GPU_MATCH} AND t.ts >= r.lo AND t.ts < r.hi "
    "WHERE t.ts >= $span_lo AND t.ts < $span_hi) t"
)
SAMPLES_WHERE = "t.ts >= $span_lo AND t.ts < $span_hi"
STAGE_SELECT = {
    "gpu_minutes": f"""
        SELECT {{names}} FROM gpu_minutes t JOIN {GPU_LISTED} r ON {GPU_MATCH} AND t.minute >= r.lo AND t.minute < r.hi
        WHERE t.minute >= $span_lo AND t.minute < $span_hi ORDER BY t.job_id, t.host, t.gpu_key, t.minute""",
    "utilization_minutes": f"""
        SELECT {{names}} FROM utilization_minutes t
        JOIN {JOB_LISTED} r ON t.job_id = r.job_id AND t.minute >= r.lo AND t.minute < r.hi
        WHERE t.minute >= $span_lo AND t.minute < $span_hi ORDER BY t.job_id, t.minute""",
}
SERIES_SELECT = (
    f"SELECT {{names}} FROM job_gpu_series t WHERE EXISTS (SELECT 1 FROM {GPU_LISTED} r WHERE {GPU_MATCH}) "
    "ORDER BY t.job_id, t.host, t.gpu_key"
)
PG_DELETE = {
    pg_samples.TABLE: f"DELETE FROM {pg_samples.TABLE} t USING {GPU_RANGES} r "
    f"WHERE {GPU_MATCH} AND t.minute >= r.lo AND t.minute < r.hi",
    "gpu_minutes": f"DELETE FROM gpu_minutes t USING {GPU_RANGES} r "
    f"WHERE {GPU_MATCH} AND t.minute >= r.lo AND t.minute < r.hi",
    "utilization_minutes": f"DELETE FROM utilization_minutes t USING {JOB_RANGES} r "
    "WHERE t.job_id = r.job_id AND t.minute >= r.lo AND t.minute < r.hi",
    "job_gpu_series": f"DELETE FROM job_gpu_series t USING {GPU_RANGES} r WHERE {GPU_MATCH}",
}

# slow_vs_peers compares a completed job without a config gpu_count with the peers of the GPU
# count its readings show (insight_peers: gpus_seen, the GPUs of its gpu_minutes, one row each in
# job_gpu_series): a publish that changes a job's number of series can change its peers. Its
# model is then marked stale in peer_changes (revision 0027), in this transaction, as a job
# batch marks the models it publishes; the publish recomputes the marked models after it
# (ingest/postgres.py). Counted before the deletes and after the copies, for the ranges' jobs.
SERIES_PER_JOB = "SELECT job_id, count(*) FROM job_gpu_series WHERE job_id = ANY(%s) GROUP BY job_id"
PEER_MODELS = """
SELECT DISTINCT model_name FROM jobs
WHERE job_id = ANY(%s) AND status = 'completed' AND model_name IS NOT NULL AND gpu_count IS NULL
ORDER BY model_name
"""
MARK_PEERS = """
INSERT INTO peer_changes (model_name, ingester, changed_at)
SELECT unnest(%s::text[]), %s, now() AT TIME ZONE 'UTC'
"""
# the name peer_changes records for a publish whose caller names no ingester
TELEMETRY_INGESTER = "gpu telemetry"

# A publish that sent this many samples (a stage's first) ANALYZEs the tables: the raw window's
# delete and the readers then plan with the new rows' statistics (autovacuum would, later).
ANALYZE_ROWS = 100_000

# PostgreSQL's raw window: as on DuckDB (retention.horizon), whole days before the newest
# sample's day (or today, when earlier) less keep_raw_days; the newest from job_gpu_series
# (one row per job and GPU) instead of a scan of the samples.
NEWEST = "SELECT max(last_minute) FROM job_gpu_series"
# A minute of samples goes only once it is rolled up on PostgreSQL (the horizon is a midnight: a
# minute before it holds samples before it only). Each GPU with minutes before the horizon is one
# probe of the packed rows' primary key (job_id, host, gpu_key, minute); the samples deleted counted,
# their (host, day)s recorded (retention.raw_pruned reads them).
PRUNE = f"""
WITH gone AS (
    DELETE FROM {pg_samples.TABLE} s USING job_gpu_series j
    WHERE j.first_minute < %(before)s
      AND s.job_id = j.job_id AND s.host = j.host AND s.gpu_key = j.gpu_key AND s.minute < %(before)s
      AND EXISTS (SELECT 1 FROM gpu_minutes m
                  WHERE m.job_id = s.job_id AND m.host = s.host AND m.gpu_key = s.gpu_key AND m.minute = s.minute)
    RETURNING s.host, CAST(s.minute AS DATE) AS day, cardinality(s.offsets_us) AS samples
), recorded AS (
    INSERT INTO {retention.PRUNED_DAYS} (host, day, pruned_at)
    SELECT DISTINCT host, day, now() AT TIME ZONE 'UTC' FROM gone
    ON CONFLICT DO NOTHING
)
SELECT coalesce(sum(samples), 0) FROM gone
"""


# The stage's pruned (host, day)s of a span it publishes: their minutes reach PostgreSQL without
# the raw samples the stage pruned (in the same run, or before a late sample of the day), and
# PostgreSQL's readers must know (retention.raw_pruned).
STAGE_PRUNED_DAYS = f"""
SELECT host, day, pruned_at FROM {retention.PRUNED_DAYS}
WHERE day >= CAST($span_lo AS DATE) AND day <= CAST($span_hi AS DATE)
"""
SEND_PRUNED_DAY = f"INSERT INTO {retention.PRUNED_DAYS} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"


@dataclass
class Published:
    """What one publish sent: rows copied per table, the ranges, raw samples pruned, seconds."""

    ranges: int = 0
    samples: int = 0
    minutes: int = 0
    utilization: int = 0
    series: int = 0
    pruned: int = 0
    peer_models: list[str] = field(default_factory=list)  # models marked stale in peer_changes
    seconds: float = 0.0


def prepare(stage: duckdb.DuckDBPyConnection) -> None:
    """Make the warehouse of ``stage`` a stage whose telemetry is owed to PostgreSQL from now on
    (everything it holds already is owed too). ``publish`` does it on its first call; calling it
    when the stage is created, before its first ingest, spares that first publish a seed."""
    with db.atomic(stage):
        telemetry_outbox.mark(stage)


def publish(
    stage: duckdb.DuckDBPyConnection,
    target: db.PostgresUrl | psycopg.Connection[Any],
    *,
    keep_raw_days: int = retention.DEFAULT_KEEP_DAYS,
    wait: float = db.DEFAULT_WAIT_SECONDS,
    now: datetime | None = None,
    ingester: str = TELEMETRY_INGESTER,
) -> Published:
    """Send PostgreSQL the GPU telemetry the stage owes it, then apply PostgreSQL's raw window.

    ``stage``: a read-write connection to the stage, in no transaction, with no other writer
    meanwhile (the caller holds its ingest lock). ``target``: a URL, or a psycopg connection in no
    transaction; publish commits on it. ``keep_raw_days``: PostgreSQL's raw window in days (0
    keeps every sample); it should not exceed the stage's own (the stage's archive is the only
    one). ``now``: today's date for the window (tests). ``ingester``: the name its marks of stale
    slow_vs_peers carry (``Published.peer_models``: the caller recomputes those models)."""
    began = time.monotonic()
    prepare(stage)
    row = stage.execute(results.PENDING).fetchone()  # a run killed before its refresh leaves jobs queued
    if row and row[0]:
        raise db.WarehouseError(
            f"the stage has {row[0]} job(s) awaiting a refresh of their derived rows: ingest into it "
            "first (a run that was stopped), then publish"
        )
    stage.execute(OWED)
    try:
        ranges: dict[str, list[tuple[Any, ...]]] = {}
        for table, key in ((GPU_RANGES, GPU_KEY), (JOB_RANGES, JOB_KEY)):
            quoted, keys = db.quote_identifier(table), _quoted(key)
            stage.execute(MERGED.format(name=quoted, key=keys, WHOLE=WHOLE.format(key=keys)))
            names = _quoted(name for name, _ in RANGE_COLUMNS[table])
            ranges[table] = stage.execute(RANGES.format(names=names, table=quoted)).fetchall()
        with _connection(target) as raw:
            try:
                with raw.transaction():
                    result = _publish(stage, raw, ranges, keep_raw_days, wait, now, ingester)
            except psycopg.Error as error:
                raise db.WarehouseError(
                    f"publishing GPU telemetry to {_name(target)} failed, nothing written there: "
                    f"{postgres.reason(error)}"
                ) from error
        with db.atomic(stage):
            stage.execute(DONE)
    finally:
        for table in ("pg_publish_owed", GPU_RANGES, JOB_RANGES):
            stage.execute(DROP.format(table=db.quote_identifier(table)))
    result.seconds = time.monotonic() - began
    return result


def _publish(
    stage: duckdb.DuckDBPyConnection,
    raw: psycopg.Connection[Any],
    ranges: dict[str, list[tuple[Any, ...]]],
    keep_raw_days: int,
    wait: float,
    now: datetime | None,
    ingester: str,
) -> Published:
    _lock(raw, wait)
    # the jobs' locks too (in job order, as every publisher takes them): the owner's publish of a
    # job replaces its utilization_minutes as this does, and two deletes that cannot see each
    # other's rows would leave both copies
    with postgres.advisory_wait(raw, wait):  # held elsewhere: --wait, then stop
        for job_id in sorted({_nul_free(r[0]) for r in ranges[JOB_RANGES]}):
            raw.execute(postgres.LOCK_JOB, (postgres.JOB_LOCK, job_id))
    result = Published(ranges=len(ranges[GPU_RANGES]))
    if ranges[GPU_RANGES]:
        for table, columns in RANGE_COLUMNS.items():
            _send(raw, table, columns, [tuple(_nul_free(v) for v in row) for row in ranges[table]])
        jobs_sampled = sorted({_nul_free(r[0]) for r in ranges[GPU_RANGES]})
        series_before = dict(raw.execute(SERIES_PER_JOB, (jobs_sampled,)).fetchall())
        for statement in PG_DELETE.values():
            raw.execute(statement)
        copied = dict.fromkeys(STAGE_SELECT, 0)
        for lo, hi in _spans(ranges[GPU_RANGES]):
            bounds = {"span_lo": lo, "span_hi": hi}
            gpus = _listed(
                [r for r in ranges[GPU_RANGES] if lo <= r[3] < hi], ("job_id", "host", "gpu_key", "lo", "hi")
            )
            jobs = _listed([r for r in ranges[JOB_RANGES] if r[2] > lo and r[1] < hi], ("job_id", "lo", "hi"))
            result.samples += pg_samples.copy(
                stage,
                raw,
                source=SAMPLES_SOURCE,
                where=SAMPLES_WHERE,
                params={**bounds, **gpus, **pg_copy.NUL_PARAMS},
            )
            for table, select in STAGE_SELECT.items():
                params = {**bounds, **(jobs if table == "utilization_minutes" else gpus)}
                copied[table] += _copy(stage, raw, table, select, params)
            pruned = stage.execute(STAGE_PRUNED_DAYS, bounds).fetchall()
            if pruned:
                raw.cursor().executemany(SEND_PRUNED_DAY, [(_nul_free(host), day, at) for host, day, at in pruned])
        result.minutes = copied["gpu_minutes"]
        result.utilization = copied["utilization_minutes"]
        every = _listed(ranges[GPU_RANGES], GPU_NAMES)
        result.series = _copy(stage, raw, "job_gpu_series", SERIES_SELECT, every)
        result.peer_models = _mark_peers(raw, jobs_sampled, series_before, ingester)
        if result.samples >= ANALYZE_ROWS:
            for table in PG_DELETE:
                raw.execute(ANALYZE.format(table=db.quote_identifier(table)))
    result.pruned = prune(raw, keep_raw_days, now=now)
    return result


def _mark_peers(raw: psycopg.Connection[Any], jobs: list[str], before: dict[str, int], ingester: str) -> list[str]:
    """Mark stale the models of those of these jobs whose number of GPU series changed (completed,
    without gpu_count); those models."""
    after = dict(raw.execute(SERIES_PER_JOB, (jobs,)).fetchall())
    changed = [job_id for job_id in jobs if before.get(job_id, 0) != after.get(job_id, 0)]
    if not changed:
        return []
    models = [model for (model,) in raw.execute(PEER_MODELS, (changed,)).fetchall()]
    if models:
        raw.execute(MARK_PEERS, (models, ingester))
    return models


def _send(
    raw: psycopg.Connection[Any], table: str, columns: list[tuple[str, str]], rows: list[tuple[Any, ...]]
) -> None:
    """The ranges into a temporary table of PostgreSQL's transaction (its deletes join them)."""
    quoted = db.quote_identifier(table)
    typed = ", ".join(f"{db.quote_identifier(name)} {kind}" for name, kind in columns)
    raw.execute(TEMP_RANGES.format(table=quoted, columns=typed))
    with raw.cursor() as cursor, cursor.copy(COPY_RANGES.format(table=quoted)) as out:
        out.set_types([t for _, t in columns])
        for row in rows:
            out.write_row(row)
    raw.execute(ANALYZE.format(table=quoted))  # the deletes plan with the ranges' real count


def _copy(
    stage: duckdb.DuckDBPyConnection, raw: psycopg.Connection[Any], table: str, select: str, params: dict[str, Any]
) -> int:
    columns = pg_copy.target_columns(raw, table)
    names = pg_copy.select_list(columns, of="t")
    params = {**params, **pg_copy.NUL_PARAMS}
    return pg_copy.copy_rows(stage, raw, table, columns, select.format(names=names), params)


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(db.quote_identifier(name) for name in names)


def _nul_free(value: Any) -> Any:
    return value.replace(pg_copy.NUL, pg_copy.NUL_REPLACEMENT) if isinstance(value, str) else value


def _listed(rows: list[tuple[Any, ...]], names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def prune(raw: psycopg.Connection[Any], keep_raw_days: int, *, now: datetime | None = None) -> int:
    """Delete PostgreSQL's raw samples of the days past the window whose minute is rolled up there,
    in the connection's transaction; the number deleted."""
    before = horizon(raw, keep_raw_days, now)
    if before is None:
        return 0
    row = raw.execute(PRUNE, {"before": before}).fetchone()
    return int(row[0]) if row else 0


def horizon(raw: psycopg.Connection[Any], keep_raw_days: int, now: datetime | None = None) -> datetime | None:
    """The first time PostgreSQL keeps raw samples from; None when it keeps all (0 days, no sample,
    a window reaching before year 1)."""
    if keep_raw_days <= 0:
        return None
    row = raw.execute(NEWEST).fetchone()
    newest = row[0] if row else None
    if newest is None:
        return None
    today = (now or db.utc_now()).date()
    first = retention.days_before(min(newest.date(), today), keep_raw_days)
    return None if first is None else datetime(first.year, first.month, first.day)


def _spans(ranges: list[tuple[Any, ...]]) -> list[tuple[datetime, datetime]]:
    """The time spans to read the stage in (ranges sorted by lo): their union, cut where it has a
    gap of SPAN_GAP. Each range lies in the span that holds its lo."""
    spans: list[tuple[datetime, datetime]] = []
    for *_, lo, hi in ranges:
        if spans and lo <= spans[-1][1] + SPAN_GAP:
            spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
        else:
            spans.append((lo, hi))
    return spans


def _lock(raw: psycopg.Connection[Any], wait: float) -> None:
    busy = f"another GPU telemetry publish held the database for {wait:g} s"
    postgres.wait_for_lock(lambda sql, values: _scalar(raw, sql, values), LOCK, wait, busy)


def _scalar(raw: psycopg.Connection[Any], sql: str, values: tuple[Any, ...]) -> Any:
    row = raw.execute(sql, values).fetchone()
    return row[0] if row else None


@contextmanager
def _connection(target: db.PostgresUrl | psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    if not isinstance(target, db.PostgresUrl):
        # publish commits: inside the caller's transaction it would only be a savepoint of it
        if target.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise db.WarehouseError("publish needs a PostgreSQL connection in no transaction: commit first")
        yield target
        return
    with postgres.connect(target) as raw:
        yield raw


def _name(target: db.PostgresUrl | psycopg.Connection[Any]) -> str:
    if isinstance(target, db.PostgresUrl):
        return str(target)
    return f"postgresql://{target.info.user}@{target.info.host}:{target.info.port}/{target.info.dbname}"
