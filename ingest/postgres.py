"""``runlytics ingest --db postgresql://…``: ingest into a local DuckDB stage, then publish to PostgreSQL.

Each ingester (one per host, its own roots and spool) keeps a DuckDB warehouse of its own, the
*stage*: the ordinary ingest runs there unchanged (readers, merge rules, ledger, crash safety),
queueing in ``publish_queue`` every job whose rows it changed (revision 0022). The publish that
follows copies each queued job whole to PostgreSQL: per batch of jobs, one transaction that takes
each job's advisory lock, deletes the job's rows of every per-job table and COPYs the stage's
(binary, ``pg_copy.copy_rows``), derived rows (job_results, utilization_minutes, insights)
included, so PostgreSQL computes none of them but ``slow_vs_peers``, the one insight that
compares a job with other jobs (other ingesters' among them): it is recomputed on PostgreSQL
per model, under the model's advisory lock, for the models batches marked stale in
``peer_changes`` (revision 0027) and no other recompute took since; publishes of a model in
flight together recompute it once (the PUBLISHING locks). The stage forgets a queued job only after
PostgreSQL's commit, so a kill between republishes it on the next run (a job is published
whole or not at all, and publishing it twice leaves the same rows).

A new stage (the first after ``db copy``, or a lost one rebuilt) first takes PostgreSQL's facts of
the jobs it may publish (``seed``), so that its ingest merges the files into the history PostgreSQL
holds and its first publish does not replace a job by what its files hold now.

A job already published by another ingester (``job_owners``) is not overwritten: a warning names
the job and its owner. ``ingest_files`` rows are published with their path prefixed by the
ingester's name (paths of different hosts would collide), and so are the rows of its failed and
pending files, every run; ``ingest_runs`` rows keep their run id
(nanoseconds at the start), and a run id another ingester already published is kept as it was.
docs/postgresql.md, "Ingest", and docs/decisions.md say why.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runlytics.warehouse import db, insights, migrate, pg_copy, pg_reader, pg_telemetry, postgres, retention, sidefiles
from runlytics.warehouse.lock import run_lock

from . import ledger, pipeline
from .summary import Summary

if TYPE_CHECKING:
    import duckdb
    import psycopg

# pg_advisory_xact_lock(class, hashtext(key)) classes: a job's rows (postgres.JOB_LOCK), a model's
# slow_vs_peers
JOB_LOCK = postgres.JOB_LOCK
MODEL_LOCK = 0x72756E6D  # 'runm'
# pg_advisory_lock (session level) of class PUBLISHING, hashtext(model): held shared by each publish
# of a model's jobs from before its first batch until its last batch committed, then asked for
# exclusively before the recompute, so that the publishes of one model in flight together
# recompute its peers once, after all of them committed (the others then find no stale marks)
PUBLISHING = 0x72756E70  # 'runp'

# jobs per PostgreSQL transaction: a statement per table and batch, so few batches; each holds its
# jobs' locks (other ingesters rarely want them) and insight_settings in SHARE mode until its commit
BATCH_JOBS = 500

# PostgreSQL table -> the stage's rows of the jobs named by $job_ids, {columns} the target's
PER_JOB: dict[str, str] = {
    table: f"SELECT {{columns}} FROM {db.quote_identifier(table)} WHERE job_id IN (SELECT unnest($job_ids))"
    for table in (
        "jobs", "steps", "step_gpus", "checkpoints", "trainer_steps", "trainer_runs", "metric_values",
        "job_results", "utilization_minutes", "insight_jobs",
    )
}  # fmt: skip
# slow_vs_peers compares with other jobs, which the stage may not hold: recomputed on PostgreSQL
PER_JOB["insight_results"] = (
    "SELECT {columns} FROM insight_results WHERE job_id IN (SELECT unnest($job_ids)) AND kind <> 'slow_vs_peers'"
)
# the ledger's rows of the job's files, each path prefixed by the ingester's name
PER_JOB["ingest_files"] = "SELECT {columns} FROM ingest_files WHERE job_id IN (SELECT unnest($job_ids))"
PREFIXED = {"ingest_files": "path"}
# the ledger's rows of files not ingested as they are now (failed, pending: of a job or of none),
# and of the files PostgreSQL still has as such from this ingester ($paths, unprefixed): published
# whole each run, whether or not a job changed, so that `runlytics status --db URL` lists them
PROBLEM_FILES = "SELECT {columns} FROM ingest_files WHERE outcome <> 'ingested' OR path IN (SELECT unnest($paths))"
# this ingester's rows of files not ingested as they are now, and those db copy brought (their paths
# the DuckDB warehouse's, absolute, with no ingester's name before them: no host name begins with "/")
PG_PROBLEM_PATHS = (
    "SELECT path FROM ingest_files WHERE outcome <> 'ingested' AND (starts_with(path, %s) OR starts_with(path, '/'))"
)
PG_DELETE_FILES = "DELETE FROM ingest_files WHERE path = ANY(%s)"
STAGE_PATHS = "SELECT path FROM ingest_files WHERE path IN (SELECT unnest($paths))"
# the (prefixed) paths of the ledger rows of the jobs named by $job_ids: a file that now belongs to
# one of them may still be another job's on PostgreSQL (a progress.json whose job id changed, an
# HF run folder that became part of its job): its row there is replaced by path, not only by job
JOB_FILE_PATHS = "SELECT $prefix || path FROM ingest_files WHERE job_id IN (SELECT unnest($job_ids))"
# PostgreSQL's text holds no NUL character: the published strings carry U+FFFD in its place (the
# stage keeps the original); a job id with one is not published (pg_copy.NUL_FREE, select_list)
NUL = pg_copy.NUL
# a running job the run did not change: only its insights moved (silent_running, as_of)
INSIGHTS_ONLY = ("insight_results", "insight_jobs")

# A new stage's seed (``seed``): the facts of the jobs PostgreSQL holds that this ingester may
# publish (no owner: copied by db copy and never published since; or its own: a lost stage)
SEEDED_MARK = "seeded"  # the stage took PostgreSQL's rows (or found none): never again
SEED_PREFIX = "seed:"  # 'seed:<job id>': a job taken from PostgreSQL, until the publish trims the seeds
SEED_STATE = "SELECT name FROM publish_marks WHERE name IN (SELECT unnest($names))"
SEEDED_FACTS = ("jobs", "steps", "step_gpus", "checkpoints", "trainer_steps", "trainer_runs", "metric_values")
PG_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
PG_SEED_JOBS = (
    "SELECT j.job_id, j.source_dir FROM jobs j LEFT JOIN job_owners o ON o.job_id = j.job_id "
    "WHERE o.ingester IS NULL OR o.ingester = %s ORDER BY j.job_id"
)
PG_SEED_ROWS = "SELECT {columns} FROM {table} WHERE job_id = ANY(%s)"
SEED_BATCH_ROWS = 100_000
# a stage with rows of any job (one that ingested but never published, a warehouse made a stage)
# is not new: nothing is taken
STAGE_JOBS = "SELECT " + " OR ".join(f"EXISTS (SELECT 1 FROM {db.quote_identifier(t)})" for t in SEEDED_FACTS)
STAGE_COLUMNS = (
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND table_name = $table ORDER BY ordinal_position"
)
SEED_MARKS = "INSERT INTO publish_marks SELECT unnest($names), 1"
ANY_SEED_MARK = "SELECT count(*) > 0 FROM publish_marks WHERE starts_with(name, $prefix)"
# the seeded jobs that no file of the stage names (GPU files name jobs without making them) nor lies
# in the folder of (a progress.json caught mid-write names no job yet): not the stage's, dropped
UNNAMED_SEEDS = """
WITH seeded AS (
    SELECT substr(name, length($prefix) + 1) AS job_id FROM publish_marks WHERE starts_with(name, $prefix)
), files AS (
    SELECT job_id, regexp_replace(path, '/[^/]*$', '') AS folder FROM ingest_files
    WHERE kind NOT IN ('spool', 'nvidia_smi')
)
SELECT s.job_id FROM seeded s
WHERE s.job_id NOT IN (SELECT job_id FROM files WHERE job_id IS NOT NULL)
  AND s.job_id NOT IN (SELECT j.job_id FROM jobs j JOIN files f ON f.folder = j.source_dir)
ORDER BY 1
"""
TRIMMED = (*SEEDED_FACTS, "job_results", "utilization_minutes", "insight_results", "insight_jobs")
TRIM_SEED = "DELETE FROM {table} WHERE job_id IN (SELECT unnest($job_ids))"
FORGET_SEED_MARKS = "DELETE FROM publish_marks WHERE starts_with(name, $prefix)"

QUEUED = "SELECT q.job_id, j.job_id IS NOT NULL FROM publish_queue q LEFT JOIN jobs j USING (job_id) ORDER BY 1"
RUNNING = "SELECT job_id FROM jobs WHERE status = 'running' AND job_id NOT IN (SELECT job_id FROM publish_queue)"
UNQUEUED = "SELECT job_id FROM jobs WHERE job_id NOT IN (SELECT job_id FROM publish_queue)"
PG_THRESHOLDS = "SELECT name, value FROM insight_settings ORDER BY name"
# held by each batch until its commit: `insights set --db` (SHARE ROW EXCLUSIVE) waits for it, or
# the batch for the setter, and then sees the new thresholds
PG_SHARE_THRESHOLDS = "LOCK TABLE insight_settings IN SHARE MODE"
DELETE_THRESHOLDS = "DELETE FROM insight_settings"
# slow_vs_peers compares completed jobs of a model: the models of the completed jobs published
# (here, and as they were on PostgreSQL before) are those whose peers may have changed
MODELS = (
    "SELECT DISTINCT replace(model_name, chr(0), $nul_replacement) FROM jobs "
    "WHERE status = 'completed' AND model_name IS NOT NULL AND job_id IN (SELECT unnest($job_ids))"
)  # as published (NUL_FREE)
DEQUEUE = "DELETE FROM publish_queue WHERE job_id IN (SELECT unnest($job_ids))"
MARK = "SELECT value FROM publish_marks WHERE name = $name"
SET_MARK = "INSERT OR REPLACE INTO publish_marks VALUES ($name, $value)"
RUNS_MARK = "runs"  # the newest ingest run published
# set with PostgreSQL's thresholds in the stage's transaction, cleared once every job's insights
# are published: a kill between still owes them to the next run
THRESHOLDS_MARK = "thresholds"
CLEAR_MARK = "DELETE FROM publish_marks WHERE name = $name"
NEW_RUNS = "SELECT {columns} FROM ingest_runs WHERE run_id > $after ORDER BY run_id"

# the batch's job locks in one statement, in the order of the array (sorted by job id, as every
# publisher takes them): a function scan yields the array's items in order
PG_LOCK_JOBS = "SELECT count(pg_advisory_xact_lock(%s, hashtext(j))) FROM unnest(%s::text[]) AS j"
PG_OWNERS = "SELECT job_id, ingester FROM job_owners WHERE job_id = ANY(%s)"
PG_MODELS = (
    "SELECT DISTINCT model_name FROM jobs WHERE status = 'completed' AND model_name IS NOT NULL AND job_id = ANY(%s)"
)
# tables' rows as PostgreSQL's planner last counted them (-1: never)
PG_ESTIMATES = "SELECT t, c.reltuples FROM unnest(%s::text[]) AS t JOIN pg_class c ON c.oid = to_regclass(t)"
# a publish that adds more than this share of a table's rows analyzes it: plans go wrong on the
# counts of a table many times smaller (nested loops over "empty" tables), not on counts a few
# times off
ANALYZE_SHARE = 1.0
# ANALYZE's own lock (it conflicts with itself, not with writers), taken before the counts are
# read: publishes that end together analyze a table one after the other, and each but the first
# then finds the count the one before took (its own rows in it) and skips its ANALYZE
PG_LOCK_FOR_ANALYZE = "LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE"
PG_ANALYZE = "ANALYZE {table}"
PG_DELETE = "DELETE FROM {table} WHERE job_id = ANY(%s)"
# the batch's rows of every per-job table, in one statement
PG_DELETE_ALL = "WITH {deletes} SELECT 1"
PG_DELETE_ONE = "d{n} AS (DELETE FROM {table} WHERE job_id = ANY(%(job_ids)s))"
# a job published again keeps its slow_vs_peers rows where it is still a completed job of a model:
# the recompute of its model replaces them after the batch (deleted here, readers saw the job
# without them until then, and a run killed between left them out until the next); %(peers)s: those jobs
PG_DELETE_KEEPING_PEERS = (
    "d{n} AS (DELETE FROM {table} WHERE job_id = ANY(%(job_ids)s) "
    "AND (kind <> 'slow_vs_peers' OR NOT job_id = ANY(%(peers)s::text[])))"
)
# the batch's jobs that are completed jobs of a model in the stage (as MODELS)
PEER_JOBS = (
    "SELECT job_id FROM jobs WHERE status = 'completed' AND model_name IS NOT NULL "
    "AND job_id IN (SELECT unnest($job_ids))"
)
PG_DELETE_INSIGHTS = "DELETE FROM insight_results WHERE job_id = ANY(%s) AND kind <> 'slow_vs_peers'"
PG_OWN = """
INSERT INTO job_owners (job_id, ingester, published_at)
SELECT unnest(%s::text[]), %s, now() AT TIME ZONE 'UTC'
ON CONFLICT (job_id) DO UPDATE SET published_at = EXCLUDED.published_at
"""
PG_DISOWN = "DELETE FROM job_owners WHERE job_id = ANY(%s)"
# a removed job's ledger rows on PostgreSQL (each must be a file the stage still records, or else
# the job is not removed), and those of the stage
PG_JOB_FILES = "SELECT job_id, path FROM ingest_files WHERE job_id = ANY(%s)"
# ... and the job each of those files is the stage's now (the job that took it over)
KNOWN_FILES = "SELECT path, job_id FROM ingest_files WHERE path IN (SELECT unnest($paths))"
# the models whose slow_vs_peers a batch's commit made stale (revision 0027): recorded in the
# batch's transaction, removed by the recompute that covers them, whoever runs it
PG_PEERS_STALE = pg_telemetry.MARK_PEERS
PG_TAKE_STALE = "DELETE FROM peer_changes WHERE model_name = ANY(%s) RETURNING model_name"
# the models this ingester marked stale and no recompute took yet: a run killed after a commit that
# marked them (a batch's, the telemetry's) and before its recompute left them; the telemetry's are
# of jobs the stage may not hold, which no later run of it would otherwise publish again
PG_LEFT_MARKS = "SELECT DISTINCT model_name FROM peer_changes WHERE ingester = %s"
PG_LOCK_MODELS = "SELECT count(pg_advisory_xact_lock(%s, hashtext(m))) FROM unnest(%s::text[]) AS m"
# the recompute sorts every pair of peers (a model's completed jobs squared): in memory, not on disk
PG_PEERS_WORK_MEM = "SET LOCAL work_mem = '64MB'"
PG_PUBLISHING = "SELECT count(pg_advisory_lock_shared(%s, hashtext(m))) FROM unnest(%s::text[]) AS m"
PG_LAST_PUBLISHING = "SELECT count(pg_advisory_lock(%s, hashtext(m))) FROM unnest(%s::text[]) AS m"
# the publish's connection holds no other session-level advisory lock
PG_DONE_PUBLISHING = "SELECT pg_advisory_unlock_all()"
PG_LOCK_TIMEOUT = postgres.SET_LOCK_TIMEOUT
# slow_vs_peers of the completed jobs of these models, from the view insight_peers over every
# ingester's jobs; each row at its job's as_of
PG_PEERS = "SELECT job_id FROM jobs WHERE status = 'completed' AND model_name = ANY(%s)"
PG_DELETE_PEER_KIND = "DELETE FROM insight_results WHERE kind = 'slow_vs_peers' AND job_id = ANY(%s)"
# a batch's delete (PG_DELETE_ALL) and another ingester's recompute (PG_DELETE_PEER_KIND) both delete
# the peers' slow_vs_peers rows, each locking them in its plan's order (block order, job_id order):
# two such plans wait on each other ("deadlock detected", a failed run). Both lock these rows first,
# in job_id order
PG_LOCK_PEER_ROWS = (
    "SELECT 1 FROM insight_results WHERE kind = 'slow_vs_peers' AND job_id = ANY(%s) ORDER BY job_id FOR UPDATE"
)
PG_INSERT_PEER_KIND = """
INSERT INTO insight_results
SELECT i.job_id, i.kind, i.severity, i.first_step, i.last_step, i.start_time, i.end_time, NULL, NULL, NULL,
       i.value, i.reference, i.message, o.as_of
FROM insight_peers i JOIN insight_jobs o ON o.job_id = i.job_id
WHERE i.job_id = ANY(%s)
"""
# DuckDB orders text by code point, as PostgreSQL does under the C collation only: a database
# created with another (Debian's clusters take the system's, en_US.UTF-8) orders hosts, GPU series,
# metric names and job ids unlike DuckDB in every answer that sorts strings. Told by sorting these
PG_ORDER = "SELECT array_agg(s ORDER BY s) FROM unnest(%s::text[]) AS s"
ORDER_PROBE = ["node_2", "node-10", "Node-3", "node10", "a", "B", "\u00e9", "f"]
# a run id (nanoseconds at its start) that another ingester's run already has stays that run's
PG_UPSERT_RUN = """
INSERT INTO ingest_runs ({columns}) VALUES ({values})
ON CONFLICT (run_id) DO UPDATE SET {updates}
WHERE ingest_runs.host IS NOT DISTINCT FROM EXCLUDED.host AND ingest_runs.pid IS NOT DISTINCT FROM EXCLUDED.pid
"""


class ThresholdsMoved(db.WarehouseError):
    """PostgreSQL's insight thresholds changed while a publish ran: the batch was not written."""


@dataclass
class Published:
    """What a publish did: the jobs copied whole, those another ingester owns, the seconds."""

    jobs: int = 0
    insights_only: int = 0
    removed: int = 0  # jobs the stage no longer has (a tool-log run that became part of a job): deleted here
    # such jobs kept here (and owed) while the job now holding their files is not this ingester's
    # here: refused at publish (another ingester owns its id), so users keep seeing the run
    waiting: list[str] = field(default_factory=list)
    runs: int = 0
    peers_recomputed: list[str] = field(default_factory=list)  # models whose slow_vs_peers this run recomputed
    conflicts: dict[str, str] = field(default_factory=dict)  # job id -> its owner
    unpublishable: list[str] = field(default_factory=list)  # job ids PostgreSQL's text cannot hold (NUL)
    order_differs: bool = False  # PostgreSQL's default collation orders text unlike DuckDB (not C)
    rows: dict[str, int] = field(default_factory=dict)  # rows copied, per table
    telemetry: pg_telemetry.Published | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "jobs": self.jobs,
            "insights_only": self.insights_only,
            "removed": self.removed,
            "removal_waiting": sorted(self.waiting),
            "runs": self.runs,
            "peers_recomputed": self.peers_recomputed,
            "conflicts": [{"job_id": job_id, "owner": owner} for job_id, owner in sorted(self.conflicts.items())],
            "unpublishable": sorted(self.unpublishable),
            "order_differs": self.order_differs,
            "seconds": round(self.seconds, 3),
        }


def ingest(
    target: db.PostgresUrl,
    roots: list[Path],
    *,
    stage: Path | None = None,
    ingester: str | None = None,
    wait: float = db.DEFAULT_WAIT_SECONDS,
    keep_raw_days: int = retention.DEFAULT_KEEP_DAYS,
    **options: Any,
) -> tuple[Summary, Published]:
    """Ingest ``roots`` (and the ``options`` of ``pipeline.ingest``: spools, CSV imports, …) into
    the stage, then publish what it owes ``target``. Runs of one stage are serialised, publish
    included; ``keep_raw_days`` is the raw GPU samples' window of both."""
    stage = stage or default_stage(target)
    if not os.path.lexists(stage):
        # a new stage first takes PostgreSQL's rows (seed): PostgreSQL is reached before the stage,
        # its folder and its lock files are made, so that a mistyped host, or a server that is down,
        # leaves nothing behind (a 0.6 MB stage and two locks per try); an existing stage ingests
        # while PostgreSQL is down, and the next run publishes
        with _pg(target):
            pass
    name = ingester or default_ingester(stage)
    stage.parent.mkdir(parents=True, exist_ok=True)
    with db.private_files(), run_lock(_publish_lock(stage), wait=wait):
        with run_lock(stage, wait=wait):
            _seed_or_stop(stage, target, name, wait)
        summary = pipeline.ingest(stage, roots, wait=wait, stage=True, keep_raw_days=keep_raw_days, **options)
        # the folders and files this run read: a copied ledger row of a file gone from them is gone
        read = [*roots, *(options.get("spools") or []), *(c.path for c in options.get("csv_imports") or [])]
        with run_lock(stage, wait=wait):  # the stage has no other writer while it publishes
            published = publish(
                stage, target, name, wait=wait, keep_raw_days=keep_raw_days, read=[Path(p).resolve() for p in read]
            )
    return summary, published


def _seed_or_stop(stage: Path, target: db.PostgresUrl, ingester: str, wait: float) -> None:
    """``seed``, a PostgreSQL error told as the warehouse's (the run stops before the stage ingests)."""
    import psycopg

    try:
        seed(stage, target, ingester, wait=wait)
    except psycopg.Error as error:
        raise db.WarehouseError(
            f"a new stage {stage} could not take the rows of {target}: {postgres.reason(error)}; nothing was "
            "ingested (its first publish would replace what PostgreSQL holds), the next run tries again"
        ) from error


def seed(stage: Path, target: db.PostgresUrl, ingester: str, *, wait: float = db.DEFAULT_WAIT_SECONDS) -> int:
    """A new stage (the first after ``db copy``, or one lost and rebuilt from the files) first takes
    the facts PostgreSQL holds of the jobs it may publish (copied and never published since, or its
    own) whose folder is on this host (not another host's job, nor one whose root moved: a folder
    here could not claim it, the merge rules' first folder owning the id), so that its first
    ingest merges the files into them by the merge rules, as the DuckDB warehouse would, and its
    publish does not replace a job by what its files hold now (a window of the history, the latest
    legacy snapshot, an older snapshot's job row). Each job taken is marked (``publish_marks``,
    SEED_PREFIX) until the publish, which drops from the stage those no file of this stage names
    (``trim_seeds``): another host's jobs stay that host's. Once per stage, in one stage
    transaction (SEEDED_MARK with the rows); a stage that ran before, or holds jobs, never is.
    The jobs taken; nothing where PostgreSQL has no schema yet."""
    # A stage that ran before has its heartbeat beside it: not opened again (a cron run's cost). A
    # lost stage's old heartbeat goes first, so that a run that stops after making the new stage
    # file (PostgreSQL down, a kill) leaves no heartbeat beside it: the next run opens it and seeds
    heartbeat = sidefiles.heartbeat(stage)
    if not stage.exists():
        heartbeat.unlink(missing_ok=True)
    elif heartbeat.exists():
        return 0
    migrate.ensure_current(stage, wait=wait, locked=True)
    with db.connection(stage, read_only=True, wait=wait) as con:
        marks = con.execute(SEED_STATE, {"names": [SEEDED_MARK, RUNS_MARK]}).fetchall()
        held = (con.execute(STAGE_JOBS).fetchone() or (False,))[0]
    if marks or held:
        return 0  # seeded before, published before, or a warehouse with jobs made a stage: not new
    with db.connection(stage, wait=wait) as con, _pg(target) as pg:
        current = _revision(pg)
        pg.commit()
        if current is not None and current != migrate.HEAD_REVISION:
            _ensure_schema(pg, target, wait)
        job_ids: list[str] = []
        with db.atomic(con):
            if current is not None:
                pg.execute(PG_SNAPSHOT)  # every table's rows as of one moment
                rows = pg.execute(PG_SEED_JOBS, (ingester,)).fetchall()
                job_ids = [job_id for job_id, folder in rows if folder is None or os.path.isdir(folder)]
            if job_ids:
                for table in SEEDED_FACTS:
                    _take(con, pg, table, job_ids)
                con.execute(SEED_MARKS, {"names": [SEED_PREFIX + job_id for job_id in job_ids]})
            con.execute(SET_MARK, {"name": SEEDED_MARK, "value": 1})
        pg.commit()
    return len(job_ids)


def _take(con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], table: str, job_ids: list[str]) -> None:
    """PostgreSQL's rows of these jobs in ``table`` into the stage's, SEED_BATCH_ROWS at a time
    (a server-side cursor: a copied warehouse's jobs may be millions of rows)."""
    columns = _stage_columns(con, table)
    with pg.cursor(name=f"seed_{table}") as cursor:
        cursor.execute(_seed_select(table, columns), (job_ids,))
        while rows := cursor.fetchmany(SEED_BATCH_ROWS):
            _insert_columns(con, table, columns, rows)


def _seed_select(table: str, columns: list[tuple[str, str]]) -> str:
    """PostgreSQL's rows of ``table`` for the jobs %s, in the stage's column order, JSON as its text."""
    names = [
        f"CAST({db.quote_identifier(name)} AS TEXT)" if kind == "JSON" else db.quote_identifier(name)
        for name, kind in columns
    ]
    return PG_SEED_ROWS.format(columns=", ".join(names), table=db.quote_identifier(table))


def _stage_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """The stage table's columns in order, each with its DuckDB type."""
    return [(str(name), str(kind)) for name, kind in con.execute(STAGE_COLUMNS, {"table": table}).fetchall()]


def _insert_columns(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[tuple[str, str]], rows: list[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` (PostgreSQL's, JSON as text) into the stage table: one list per column, unnested;
    JSON's text as DuckDB holds it (non-finite numbers again: pg_reader.duckdb_json)."""
    if not rows:
        return
    values = [
        [pg_reader.duckdb_json(v) if kind == "JSON" and isinstance(v, str) else v for v in column]
        for column, (_, kind) in zip(zip(*rows, strict=True), columns, strict=True)
    ]
    names = ", ".join(db.quote_identifier(name) for name, _ in columns)
    casts = ", ".join(f"CAST(unnest($c{i}) AS {kind})" for i, (_, kind) in enumerate(columns))
    con.execute(
        f"INSERT INTO {db.quote_identifier(table)} ({names}) SELECT {casts}",
        {f"c{i}": list(column) for i, column in enumerate(values)},
    )


def trim_seeds(con: duckdb.DuckDBPyConnection) -> None:
    """Drop from the stage the jobs ``seed`` took that no file of the stage names or lies in the
    folder of (a GPU sample of the job does not make it the stage's), and forget the marks of all
    of them, in one transaction: the stage then holds its own jobs, their history merged with
    PostgreSQL's."""
    if not db.one(con, ANY_SEED_MARK, {"prefix": SEED_PREFIX})[0]:
        return
    with db.atomic(con):
        unnamed = [job_id for (job_id,) in con.execute(UNNAMED_SEEDS, {"prefix": SEED_PREFIX}).fetchall()]
        for table in TRIMMED if unnamed else ():
            con.execute(TRIM_SEED.format(table=db.quote_identifier(table)), {"job_ids": unnamed})
        con.execute(FORGET_SEED_MARKS, {"prefix": SEED_PREFIX})


def default_stage(target: db.PostgresUrl) -> Path:
    """``${XDG_STATE_HOME:-~/.local/state}/runlytics/<host>_<port>_<db>@<this host>.duckdb``."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    rest = target.rest.split("?", 1)[0]
    hostpart, _, dbname = rest.rpartition("/")
    hostport = hostpart.rpartition("@")[2] or "localhost"
    host, _, port = hostport.partition(":")
    name = f"{host}_{port or 5432}_{dbname or 'postgres'}@{socket.gethostname()}"
    return state / "runlytics" / (re.sub(r"[^A-Za-z0-9._@-]", "_", name) + ".duckdb")


def default_ingester(stage: Path) -> str:
    """This host's name and the stage's path: one name per stage, the same after a lost stage is rebuilt."""
    return f"{socket.gethostname()}:{stage.resolve()}"


def _publish_lock(stage: Path) -> Path:
    return stage.with_name(stage.name + ".publish")


def publish(
    stage: Path,
    target: db.PostgresUrl,
    ingester: str,
    *,
    wait: float = db.DEFAULT_WAIT_SECONDS,
    keep_raw_days: int = retention.DEFAULT_KEEP_DAYS,
    read: list[Path] | None = None,
) -> Published:
    """Publish what the stage owes ``target``: each queued job whole (but those another ingester
    owns), the insights of its running jobs (of every job, when PostgreSQL's thresholds changed),
    slow_vs_peers of the models touched, the new runs. ``read``: the folders and files the run
    read (a ledger row db copy brought of a file gone from them gives way)."""
    began = time.monotonic()
    result = Published()
    with db.connection(stage, wait=wait) as con, _pg(target) as pg:
        _ensure_schema(pg, target, wait)
        result.order_differs = order_differs(pg)
        trim_seeds(con)
        # thresholds set on PostgreSQL hold for every stage: all of this stage's insights recomputed
        _pull_thresholds(con, pg)
        refreshed = con.execute(MARK, {"name": THRESHOLDS_MARK}).fetchone() is not None
        queued = con.execute(QUEUED).fetchall()
        held = [job_id for job_id, present in queued if present]  # the others have no facts here
        running = [job_id for (job_id,) in con.execute(UNQUEUED if refreshed else RUNNING).fetchall()]
        # a job id with a NUL character: PostgreSQL's text holds none, and a job's id is its key
        # there (its locks, its owner, its rows): never published, forgotten by the stage's queue
        result.unpublishable = sorted({job_id for job_id in [*held, *running] if NUL in job_id})
        held = [job_id for job_id in held if NUL not in job_id]
        # queued without facts here: a job the stage removed (a tool-log run whose files another job
        # now owns, formats/tool_log.py) is deleted on PostgreSQL where this ingester published it
        absent = [job_id for job_id, present in queued if not present and NUL not in job_id]
        running = [job_id for job_id in running if NUL not in job_id]
        models: set[str] = set()
        try:
            _publish_problem_files(con, pg, ingester, result, read or [])
            announced = _announce(con, pg, held, wait)
            for batch in _batches(held):
                models |= _publish_jobs(con, pg, ingester, batch, result, wait)
            for batch in _batches(absent):
                models |= _remove_jobs(con, pg, ingester, batch, result, wait)
            for batch in _batches(running):
                _publish_insights(con, pg, ingester, batch, result, wait)
            _analyze(pg, result.rows)
            # GPU telemetry after the job facts: samples, gpu_minutes, job_gpu_series of the minutes
            # the stage stored since (its own transactions and outbox). Before the peers' recompute:
            # a job without gpu_count is compared with the peers of the GPUs its samples show, and
            # the models whose GPU counts it changed are recomputed with the others (peer_models)
            pg.commit()  # pg_telemetry manages its own transactions on an idle connection
            result.telemetry = pg_telemetry.publish(con, pg, keep_raw_days=keep_raw_days, wait=wait, ingester=ingester)
            models |= set(result.telemetry.peer_models) | _left_marks(pg, ingester)
            if models:
                _wait_for_publishers(pg, models | announced, wait)
                result.peers_recomputed = _recompute_peers(pg, models, wait)
            if announced or models:
                pg.execute(PG_DONE_PUBLISHING)
                pg.commit()
            result.runs = _publish_runs(con, pg)
        except Exception as error:
            import psycopg

            if isinstance(error, psycopg.errors.LockNotAvailable) or isinstance(
                error.__cause__, psycopg.errors.LockNotAvailable
            ):
                raise db.WarehouseBusy(
                    f"publish to {target} waited {wait:g} s (--wait) for a lock another session holds (a job's, "
                    f"a model's or the thresholds'; docs/postgresql.md); the stage {stage} keeps what it owes, "
                    "published by the next run"
                ) from error
            if isinstance(error, psycopg.Error):
                raise db.WarehouseError(
                    f"publish to {target} failed: {postgres.reason(error)}; the stage {stage} keeps what it owes, "
                    "published by the next run"
                ) from error
            raise
        # forgotten only now: a kill before this line republishes them (the same rows again); a job
        # another ingester owns stays owed (and warned of each run) until its owner hands it over
        kept = set(result.conflicts) | set(result.waiting)
        con.execute(DEQUEUE, {"job_ids": [job_id for job_id, _ in queued if job_id not in kept]})
        con.execute(CLEAR_MARK, {"name": THRESHOLDS_MARK})
    result.seconds = time.monotonic() - began
    return result


def _pull_thresholds(con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any]) -> None:
    """PostgreSQL's insight thresholds (``runlytics insights set --db URL`` sets them there) into
    the stage, and its every job's insights recomputed with them, in one transaction that also
    marks every job's insights owed to PostgreSQL (THRESHOLDS_MARK)."""
    with pg.cursor() as cursor:
        theirs = {name: float(value) for name, value in cursor.execute(PG_THRESHOLDS).fetchall()}
    pg.commit()
    if not theirs or theirs == insights.thresholds(con):
        return
    with db.atomic(con):
        con.execute(DELETE_THRESHOLDS)
        for name, value in sorted(theirs.items()):
            con.execute(insights.UPSERT_SETTING, {"name": name, "value": value})
        insights.refill(con)
        con.execute(SET_MARK, {"name": THRESHOLDS_MARK, "value": 1})


@contextmanager
def _pg(target: db.PostgresUrl) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection with JIT off and UTC (postgres.connect: added to the URL's own options)."""
    with postgres.connect(target) as conn:
        yield conn


def _ensure_schema(pg: psycopg.Connection[Any], target: db.PostgresUrl, wait: float) -> None:
    """PostgreSQL at this runlytics' revision: built or upgraded when older (in one transaction
    under the schema lock, as ``db upgrade``), refused when newer. Another ingester may be
    building it this moment (ingesters started together on a new database): the revision is read
    again under the schema lock, so that those that waited for the build do not run the chain
    again to find nothing to do (alembic's scripts loaded: 0.2-0.3 s of CPU each)."""
    current = _revision(pg)
    pg.commit()
    if current == migrate.HEAD_REVISION:
        return
    migrate.check_revision(current, target)
    busy = f"warehouse {target} is being upgraded or filled by another process (waited {wait:g} s)"
    postgres.wait_for_lock(lambda sql, values: pg.execute(sql, values).fetchone()[0], postgres.SCHEMA_LOCK, wait, busy)  # type: ignore[index]
    current = _revision(pg)
    pg.commit()  # the lock with it: upgrade_postgres takes it again on a connection of its own
    if current != migrate.HEAD_REVISION:
        migrate.check_revision(current, target)
        migrate.upgrade_postgres(target, wait=wait)


def order_differs(pg: psycopg.Connection[Any]) -> bool:
    """Whether the database's default collation orders text unlike DuckDB (by code point)."""
    with pg.cursor() as cursor:
        row = cursor.execute(PG_ORDER, (ORDER_PROBE,)).fetchone()
    pg.commit()
    return row is None or row[0] != sorted(ORDER_PROBE)


def _revision(pg: psycopg.Connection[Any]) -> str | None:
    with pg.cursor() as cursor:
        present = cursor.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not (present and present[0]):
            return None
        revision = cursor.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(revision[0]) if revision else None


def _batches(job_ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(job_ids), BATCH_JOBS):
        yield job_ids[start : start + BATCH_JOBS]


def _models(con: duckdb.DuckDBPyConnection, job_ids: list[str]) -> set[str]:
    if not job_ids:
        return set()
    return {model for (model,) in con.execute(MODELS, {"job_ids": job_ids, **pg_copy.NUL_PARAMS}).fetchall()}


def _lock_and_own(
    con: duckdb.DuckDBPyConnection,
    pg: psycopg.Connection[Any],
    ingester: str,
    batch: list[str],
    result: Published,
    wait: float,
) -> list[str]:
    """Take the batch's job locks (sorted: two ingesters never wait on each other in a circle) and
    return the jobs this ingester may write: unowned, or its own. Refused (ThresholdsMoved) when
    PostgreSQL's thresholds are no longer those the stage's insights were computed with."""
    with pg.cursor() as cursor:
        with postgres.advisory_wait(cursor, wait):  # a lock held elsewhere: --wait, then stop
            cursor.execute(PG_LOCK_JOBS, (JOB_LOCK, sorted(batch)))
            cursor.execute(PG_SHARE_THRESHOLDS)
        theirs = {name: float(value) for name, value in cursor.execute(PG_THRESHOLDS).fetchall()}
    if theirs and theirs != insights.thresholds(con):
        pg.rollback()
        raise ThresholdsMoved(
            "insight thresholds were set on PostgreSQL during this publish: nothing of this batch was "
            "written, the stage still owes its jobs; the next run publishes them with the new thresholds"
        )
    with pg.cursor() as cursor:
        owners = dict(cursor.execute(PG_OWNERS, (batch,)).fetchall())
    for job_id, owner in owners.items():
        if owner != ingester:
            result.conflicts[job_id] = owner
    return [job_id for job_id in batch if owners.get(job_id, ingester) == ingester]


def _publish_jobs(
    con: duckdb.DuckDBPyConnection,
    pg: psycopg.Connection[Any],
    ingester: str,
    batch: list[str],
    result: Published,
    wait: float,
) -> set[str]:
    """Copy these jobs whole in one transaction (those this ingester may write), which also records
    as stale the slow_vs_peers of the models of their completed jobs, before and after; those models."""
    mine = _lock_and_own(con, pg, ingester, batch, result, wait)
    if not mine:
        pg.rollback()
        return set()
    with pg.cursor() as cursor:
        models = {model for (model,) in cursor.execute(PG_MODELS, (mine,)).fetchall()} | _models(con, mine)
        cursor.execute(PG_LOCK_PEER_ROWS, (mine,))
        peers = [job_id for (job_id,) in con.execute(PEER_JOBS, {"job_ids": mine}).fetchall()]
        cursor.execute(_DELETE_ALL, {"job_ids": mine, "peers": peers})
        paths = con.execute(JOB_FILE_PATHS, {"prefix": f"{ingester}:", "job_ids": mine}).fetchall()
        cursor.execute(PG_DELETE_FILES, ([path for (path,) in paths],))
        _copy(con, pg, PER_JOB, mine, ingester, result.rows)
        cursor.execute(PG_OWN, (mine, ingester))
        if models:
            cursor.execute(PG_PEERS_STALE, (sorted(models), ingester))
    pg.commit()
    result.jobs += len(mine)
    return models


def _remove_jobs(
    con: duckdb.DuckDBPyConnection,
    pg: psycopg.Connection[Any],
    ingester: str,
    batch: list[str],
    result: Published,
    wait: float,
) -> set[str]:
    """Delete, in one transaction, the rows and ownership of these jobs (the stage has no job row of
    them) where PostgreSQL has them from this ingester and the stage still records every file of
    theirs there (the publish of the job that owns a moved file, earlier in the run, re-keys it); the
    models of their completed jobs (stale peers). A job this ingester never published (GPU samples
    of a job another host's files name), or whose files the stage no longer knows (a lost stage
    rebuilt after the files went), is not touched. Nor, for now, one whose files the stage holds
    for a job that is not this ingester's on PostgreSQL (its publish was refused: another ingester
    owns the id): it stays there and owed (``result.waiting``) until that job is published here."""
    with pg.cursor() as cursor:
        with postgres.advisory_wait(cursor, wait):
            cursor.execute(PG_LOCK_JOBS, (JOB_LOCK, sorted(batch)))
        owners = dict(cursor.execute(PG_OWNERS, (batch,)).fetchall())
        mine = [job_id for job_id in batch if owners.get(job_id) == ingester]
        files: dict[str, list[str]] = {}
        for job_id, path in cursor.execute(PG_JOB_FILES, (mine,)).fetchall() if mine else []:
            files.setdefault(job_id, []).append(path)
        holders = {job_id: _files_known(con, ingester, files.get(job_id, [])) for job_id in mine}
        mine = [job_id for job_id in mine if holders[job_id] is not None]
        # the jobs that took the files over (not the job itself: a GPU log imported for its id)
        takers = {job_id: (holders[job_id] or set()) - {job_id} for job_id in mine}
        wanted = sorted({taker for job_takers in takers.values() for taker in job_takers})
        taken = dict(cursor.execute(PG_OWNERS, (wanted,)).fetchall()) if wanted else {}
        waiting = [job_id for job_id in mine if any(taken.get(t) != ingester for t in takers[job_id])]
        result.waiting += waiting
        mine = [job_id for job_id in mine if job_id not in waiting]
        if not mine:
            pg.rollback()
            return set()
        models = {model for (model,) in cursor.execute(PG_MODELS, (mine,)).fetchall()}
        cursor.execute(PG_LOCK_PEER_ROWS, (mine,))
        cursor.execute(_DELETE_ALL, {"job_ids": mine, "peers": []})
        cursor.execute(PG_DISOWN, (mine,))
        if models:
            cursor.execute(PG_PEERS_STALE, (sorted(models), ingester))
    pg.commit()
    result.removed += len(mine)
    return models


def _files_known(con: duckdb.DuckDBPyConnection, ingester: str, paths: list[str]) -> set[str] | None:
    """The jobs the stage records these ledger paths on PostgreSQL for (another job now, or the job
    itself for a GPU log of it, which makes no job row); None unless each path is this ingester's
    and the stage still records its file."""
    prefix = f"{ingester}:"
    if not all(path.startswith(prefix) for path in paths):
        return None
    stage_paths = [path[len(prefix) :] for path in paths]
    known = dict(con.execute(KNOWN_FILES, {"paths": stage_paths}).fetchall()) if paths else {}
    if not all(path in known for path in stage_paths):
        return None
    return {job_id for job_id in known.values() if job_id is not None}


def _publish_insights(
    con: duckdb.DuckDBPyConnection,
    pg: psycopg.Connection[Any],
    ingester: str,
    batch: list[str],
    result: Published,
    wait: float,
) -> None:
    """The insight rows of running jobs the run did not change (silent_running moves with time)."""
    mine = [
        job_id for job_id in _lock_and_own(con, pg, ingester, batch, result, wait) if job_id not in result.conflicts
    ]
    owned = _owned(pg, mine, ingester)
    if not owned:
        pg.rollback()
        return
    with pg.cursor() as cursor:
        cursor.execute(PG_DELETE_INSIGHTS, (owned,))
        cursor.execute(PG_DELETE.format(table=db.quote_identifier("insight_jobs")), (owned,))
        _copy(con, pg, {table: PER_JOB[table] for table in INSIGHTS_ONLY}, owned, ingester, result.rows)
    pg.commit()
    result.insights_only += len(owned)


def _owned(pg: psycopg.Connection[Any], job_ids: list[str], ingester: str) -> list[str]:
    """Of these jobs, those PostgreSQL has from this ingester (a running job not yet published whole
    is owed whole, not its insights alone)."""
    if not job_ids:
        return []
    with pg.cursor() as cursor:
        owners = dict(cursor.execute(PG_OWNERS, (job_ids,)).fetchall())
    return [job_id for job_id in job_ids if owners.get(job_id) == ingester]


def _copy(
    con: duckdb.DuckDBPyConnection,
    pg: psycopg.Connection[Any],
    tables: dict[str, str],
    job_ids: list[str],
    ingester: str,
    rows: dict[str, int],
) -> None:
    """COPY the stage's rows of these jobs into each table; ``rows`` counts them per table."""
    for table, select in tables.items():
        columns = _columns(pg, table)
        params: dict[str, Any] = {"job_ids": job_ids, **pg_copy.NUL_PARAMS}
        if table in PREFIXED:
            params["prefix"] = f"{ingester}:"
        select = select.format(columns=_expressions(table, columns))
        copied = pg_copy.copy_rows(con, pg, table, columns, select, params)
        rows[table] = rows.get(table, 0) + copied


def _expressions(table: str, columns: list[tuple[str, str]]) -> str:
    """The stage's select list of ``table``'s columns as published: a prefixed column with the
    ingester's name in front ($prefix), NUL replaced in every string ($nul_replacement)."""
    return pg_copy.select_list(columns, prefixed=PREFIXED.get(table))


def _analyze(pg: psycopg.Connection[Any], rows: dict[str, int]) -> None:
    """ANALYZE the tables this publish at least doubled: the peers' recompute that follows (and
    readers until autovacuum comes) would be planned on counts of a much smaller table (20 s
    instead of 0.5 s for 500 jobs' first publish). Each table in a transaction of its own that
    holds ANALYZE's lock from before its count is read (PG_LOCK_FOR_ANALYZE): four ingesters
    that end their first publish together analyzed each table four times (0.25-0.3 s of the
    server's CPU each time, for 2,000 jobs), now once."""
    copied = {table: n for table, n in rows.items() if n}
    if not copied:
        return
    with pg.cursor() as cursor:
        known = dict(cursor.execute(PG_ESTIMATES, (sorted(copied),)).fetchall())
    pg.commit()
    for table in sorted(copied):
        if not _stale(known.get(table), copied[table]):
            continue
        with pg.cursor() as cursor:
            cursor.execute(PG_LOCK_FOR_ANALYZE.format(table=db.quote_identifier(table)))
            # the count again, under the lock: another publish may have analyzed it meanwhile
            again = dict(cursor.execute(PG_ESTIMATES, ([table],)).fetchall())
            if _stale(again.get(table), copied[table]):
                cursor.execute(PG_ANALYZE.format(table=db.quote_identifier(table)))
        pg.commit()


def _stale(estimate: float | None, copied: int) -> bool:
    """Whether a table PostgreSQL last counted ``estimate`` rows of (-1: never; None: no such
    table) is to be analyzed after ``copied`` rows were published into it."""
    return estimate is not None and (estimate < 0 or copied > ANALYZE_SHARE * estimate)


_DELETE_ALL = PG_DELETE_ALL.format(
    deletes=", ".join(
        (PG_DELETE_KEEPING_PEERS if t == "insight_results" else PG_DELETE_ONE).format(n=n, table=db.quote_identifier(t))
        for n, t in enumerate(PER_JOB)
    )
)
_COLUMNS: dict[str, list[tuple[str, str]]] = {}  # every database at this revision has the same columns
# the columns of the tables a publish writes, in order, each with its type's name (as pg_copy.COLUMNS)
PG_COLUMNS = (
    "SELECT table_name, column_name, udt_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND table_name = ANY(%s) ORDER BY table_name, ordinal_position"
)


def _columns(pg: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    if table not in _COLUMNS:
        wanted = sorted({*PER_JOB, "ingest_runs", table})
        found: dict[str, list[tuple[str, str]]] = {}
        with pg.cursor() as cursor:
            for name, column, udt in cursor.execute(PG_COLUMNS, (wanted,)).fetchall():
                found.setdefault(name, []).append((column, udt))
        _COLUMNS.update(found)
    return _COLUMNS[table]


def _publish_problem_files(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], ingester: str, result: Published, read: list[Path]
) -> None:
    """The stage's ledger rows of its failed and pending files, and of the files PostgreSQL has as
    failed or pending from this ingester (those since read, or gone), replaced in one transaction.
    Before the jobs: a file once of no job that is now a published job's is then replaced by path
    here first, and by its job below (the same row)."""
    prefix = f"{ingester}:"
    with pg.cursor() as cursor:
        found = [path for (path,) in cursor.execute(PG_PROBLEM_PATHS, (prefix,)).fetchall()]
    theirs = [path for path in found if path.startswith(prefix)]
    brought = [path for path in found if not path.startswith(prefix)]
    columns = _columns(pg, "ingest_files")
    names = [name for name, _ in columns]
    select = PROBLEM_FILES.format(columns=_expressions("ingest_files", columns))
    params = {"paths": [path[len(prefix) :] for path in theirs], "prefix": prefix, **pg_copy.NUL_PARAMS}
    mine = [row[names.index("path")] for row in con.execute(select, params).fetchall()]
    # a copied row is the DuckDB warehouse's word on its file: the stage's, once it has read the
    # file (its own row, prefixed, is published here while the file is still a problem), replaces it,
    # and so does the file's absence from what this run read (not a file of folders it did not read:
    # another host's, a mount that is down)
    held = {path for (path,) in con.execute(STAGE_PATHS, {"paths": brought}).fetchall()} if brought else set()
    superseded = [
        path
        for path in brought
        if path in held or (any(ledger.below(path, str(place)) for place in read) and not os.path.lexists(path))
    ]
    if not theirs and not mine and not superseded:
        pg.rollback()
        return
    with pg.cursor() as cursor:
        cursor.execute(PG_DELETE_FILES, (sorted({*theirs, *mine, *superseded}),))
    copied = pg_copy.copy_rows(con, pg, "ingest_files", columns, select, params)
    pg.commit()
    result.rows["ingest_files"] = result.rows.get("ingest_files", 0) + copied


def _announce(con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], held: list[str], wait: float) -> set[str]:
    """Hold PUBLISHING shared for the models these jobs have (on the stage and on PostgreSQL), in
    order; the models. Waiting at most ``wait`` seconds (behind a publish that waits to recompute
    one of them): past that, none held, which only costs a recompute of this run's own."""
    if not held:
        return set()
    with pg.cursor() as cursor:
        models = {model for (model,) in cursor.execute(PG_MODELS, (held,)).fetchall()} | _models(con, held)
    pg.commit()
    if models and not _lock_models(pg, PG_PUBLISHING, models, wait):
        return set()
    return models


def _wait_for_publishers(pg: psycopg.Connection[Any], models: set[str], wait: float) -> None:
    """Let go of PUBLISHING shared and wait (at most ``wait`` seconds) for it exclusively: until
    the other publishes of these models in flight have committed their batches. One of them then
    recomputes each model from every batch; the others find its marks gone."""
    pg.execute(PG_DONE_PUBLISHING)
    pg.commit()
    _lock_models(pg, PG_LAST_PUBLISHING, models, wait)


def _lock_models(pg: psycopg.Connection[Any], sql: str, models: set[str], wait: float) -> bool:
    """Take session-level locks of PUBLISHING on these models (sorted) with ``sql``; False, and
    none held, when that took more than ``wait`` seconds. Only an optimisation waits on them:
    the marks and MODEL_LOCK keep slow_vs_peers right without them."""
    import psycopg

    try:
        pg.execute(PG_LOCK_TIMEOUT, postgres.lock_timeout(wait))
        pg.execute(sql, (PUBLISHING, sorted(models)))
    except psycopg.errors.LockNotAvailable:
        pg.rollback()
        pg.execute(PG_DONE_PUBLISHING)
        pg.commit()
        return False
    pg.commit()
    return True


def _left_marks(pg: psycopg.Connection[Any], ingester: str) -> set[str]:
    with pg.cursor() as cursor:
        models = {model for (model,) in cursor.execute(PG_LEFT_MARKS, (ingester,)).fetchall()}
    pg.commit()
    return models


def _recompute_peers(pg: psycopg.Connection[Any], models: set[str], wait: float) -> list[str]:
    """slow_vs_peers of every completed job of those of these models (the models of the completed
    jobs published, before and after) still recorded stale in ``peer_changes``, on PostgreSQL, in
    one transaction under each model's lock (sorted); the models recomputed. A model whose stale
    marks are gone was recomputed by a transaction that began after this run's batches committed
    (another ingester's, that took the marks and computed from every job committed): not again."""
    with pg.cursor() as cursor:
        with postgres.advisory_wait(cursor, wait):
            cursor.execute(PG_LOCK_MODELS, (MODEL_LOCK, sorted(models)))
        stale = sorted({model for (model,) in cursor.execute(PG_TAKE_STALE, (sorted(models),)).fetchall()})
        if not stale:
            pg.commit()
            return []
        cursor.execute(PG_PEERS_WORK_MEM)
        peers = [job_id for (job_id,) in cursor.execute(PG_PEERS, (stale,)).fetchall()]
        cursor.execute(PG_LOCK_PEER_ROWS, (peers,))
        cursor.execute(PG_DELETE_PEER_KIND, (peers,))
        cursor.execute(PG_INSERT_PEER_KIND, (peers,))
    pg.commit()
    return stale


def _publish_runs(con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any]) -> int:
    """The stage's runs newer than the last published, upserted; the mark moves after the commit."""
    mark = con.execute(MARK, {"name": RUNS_MARK}).fetchone()
    columns = [name for name, _ in _columns(pg, "ingest_runs")]
    quoted = ", ".join(db.quote_identifier(name) for name in columns)
    rows = con.execute(NEW_RUNS.format(columns=quoted), {"after": mark[0] if mark else -1}).fetchall()
    if not rows:
        return 0
    sql = PG_UPSERT_RUN.format(
        columns=quoted,
        values=", ".join(["%s"] * len(columns)),
        updates=", ".join(
            f"{db.quote_identifier(n)} = EXCLUDED.{db.quote_identifier(n)}" for n in columns if n != "run_id"
        ),
    )
    with pg.cursor() as cursor:
        cursor.executemany(sql, rows)
    pg.commit()
    con.execute(SET_MARK, {"name": RUNS_MARK, "value": max(row[columns.index("run_id")] for row in rows)})
    return len(rows)
