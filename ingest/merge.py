"""Applying a staged batch to the fact tables, by the replacement rules of inputs.md.

The batch's rows are read from ``staged_steps`` and ``staged_gpus`` (see fast.staged).

A step seen again replaces the stored row when its timestamp is later; when either row has no
timestamp, the later ingest wins. Within a batch, "later" is the ingest order: files in path
order, entries in file order, except that a file's ``latest`` replaces its own history's entry
of the same step only with its own, strictly later timestamp. The same rule picks a job's row
(by ``updated_at``).
"""

from __future__ import annotations

import duckdb

from runlytics.warehouse import db

# Whether some (job, step) occurs more than once in the batch. Usually none does (a batch of
# new steps): the winners are then every entry, and the ranking below is skipped.
HAS_REPEATED_STEPS = """
SELECT EXISTS (
    SELECT 1 FROM staged_steps WHERE step IS NOT NULL GROUP BY job_id, step HAVING count(*) > 1
)
"""

ALL_WINNERS = """
CREATE OR REPLACE TEMP TABLE batch_winners AS
SELECT file_id, seq, pos, job_id, step, ts, loss, eval_loss, learning_rate, samples_per_second,
       iteration_time, samples
FROM staged_steps
WHERE step IS NOT NULL
"""

# The winning entry per (job, step) within the batch. Only keys seen more than once are ranked.
# Within one file, `latest` repeating a step its history holds replaces the history entry only
# with its own, strictly later timestamp (inputs.md: "the entry with the later timestamp wins";
# an equal or unknown one is not later, and updated_at is when the snapshot was written): else
# it is dropped here, so that the history entry keeps its fields and GPU readings.
BATCH_WINNERS = """
CREATE OR REPLACE TEMP TABLE batch_winners AS
WITH entries AS (
    SELECT file_id, seq, pos, job_id, step, ts, loss, eval_loss, learning_rate, samples_per_second,
           iteration_time, samples, is_latest, stand_in
    FROM staged_steps
    WHERE step IS NOT NULL
), repeated AS (
    SELECT job_id, step FROM entries GROUP BY job_id, step HAVING count(*) > 1
), contested AS (
    SELECT e.* FROM entries e SEMI JOIN repeated r ON r.job_id = e.job_id AND r.step = e.step
), kept AS (
    SELECT * EXCLUDE (is_latest, stand_in, history, untimed_history, last_history)
    FROM (
        SELECT *,
               count(*) FILTER (WHERE NOT is_latest) OVER file_step AS history,
               bool_or(NOT is_latest AND ts IS NULL) OVER file_step AS untimed_history,
               max(ts) FILTER (WHERE NOT is_latest) OVER file_step AS last_history
        FROM contested
        WINDOW file_step AS (PARTITION BY file_id, step)
    )
    WHERE NOT (is_latest AND history > 0 AND (stand_in OR ts IS NULL OR untimed_history OR ts <= last_history))
)
SELECT e.* EXCLUDE (is_latest, stand_in) FROM entries e ANTI JOIN repeated r ON r.job_id = e.job_id AND r.step = e.step
UNION ALL
SELECT * EXCLUDE (all_timed)
FROM (
    SELECT k.*, bool_and(k.ts IS NOT NULL) OVER (PARTITION BY k.job_id, k.step) AS all_timed
    FROM kept k
)
QUALIFY row_number() OVER (
    PARTITION BY job_id, step
    ORDER BY CASE WHEN all_timed THEN ts END DESC NULLS LAST, seq DESC, pos DESC
) = 1
"""

# Winners that beat what is stored (by the rule above); `replaces` marks those with a stored row.
BATCH_APPLIED = """
CREATE OR REPLACE TEMP TABLE batch_applied AS
WITH stored AS (
    SELECT job_id, step, ts FROM steps WHERE job_id IN (SELECT DISTINCT job_id FROM batch_jobs)
)
SELECT w.*, s.step IS NOT NULL AS replaces
FROM batch_winners w
LEFT JOIN stored s ON s.job_id = w.job_id AND s.step = w.step
WHERE s.step IS NULL OR s.ts IS NULL OR w.ts IS NULL OR w.ts >= s.ts
"""

COUNT_REPLACED = "SELECT count(*) FROM batch_applied WHERE replaces"

DELETE_REPLACED_STEPS = """
DELETE FROM steps USING batch_applied a
WHERE a.replaces AND steps.job_id = a.job_id AND steps.step = a.step
"""

INSERT_STEPS = """
INSERT INTO steps (job_id, step, ts, loss, eval_loss, learning_rate, samples_per_second, iteration_time,
                   samples)
SELECT job_id, step, ts, loss, eval_loss, learning_rate, samples_per_second, iteration_time, samples
FROM batch_applied
"""

DELETE_REPLACED_GPUS = """
DELETE FROM step_gpus USING batch_applied a
WHERE a.replaces AND step_gpus.job_id = a.job_id AND step_gpus.step = a.step
"""

# Whether every staged entry with a step is applied (no repeat in the batch, nothing newer
# stored): then every staged GPU reading belongs to an applied entry.
ALL_APPLIED = """
SELECT (SELECT count(*) FROM batch_applied) = (SELECT count(*) FROM staged_steps WHERE step IS NOT NULL)
"""

# Whether some entry holds two readings with one GPU index. An index equal to the reading's
# position (the usual case) can't repeat.
HAS_REPEATED_GPUS = "SELECT EXISTS (SELECT 1 FROM staged_gpus WHERE gpu_index IS DISTINCT FROM gpos - 1)"

INSERT_ALL_GPUS = """
INSERT INTO step_gpus (job_id, step, gpu_index, gpu_uuid, utilization_percent, memory_used_mb,
                       memory_total_mb, temperature_c, power_w)
SELECT job_id, step, gpu_index, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb,
       temperature_c, power_w
FROM staged_gpus
"""

# A GPU index repeated within one entry keeps its last reading.
INSERT_GPUS = """
INSERT INTO step_gpus (job_id, step, gpu_index, gpu_uuid, utilization_percent, memory_used_mb,
                       memory_total_mb, temperature_c, power_w)
WITH applied AS (
    SELECT g.* FROM staged_gpus g SEMI JOIN batch_applied a ON a.file_id = g.file_id AND a.pos = g.pos
), repeated AS (
    SELECT file_id, pos, gpu_index, max(gpos) AS last_gpos
    FROM applied GROUP BY file_id, pos, gpu_index HAVING count(*) > 1
)
SELECT g.job_id, g.step, g.gpu_index, g.gpu_uuid, g.utilization_percent, g.memory_used_mb,
       g.memory_total_mb, g.temperature_c, g.power_w
FROM applied g
LEFT JOIN repeated r ON r.file_id = g.file_id AND r.pos = g.pos AND r.gpu_index = g.gpu_index
WHERE r.last_gpos IS NULL OR r.last_gpos = g.gpos
"""

BATCH_JOB_WINNERS = """
CREATE OR REPLACE TEMP TABLE batch_job_winners AS
SELECT * EXCLUDE (all_timed)
FROM (
    SELECT j.*, bool_and(j.updated_at IS NOT NULL) OVER (PARTITION BY j.job_id) AS all_timed
    FROM batch_jobs j
)
QUALIFY row_number() OVER (
    PARTITION BY job_id
    ORDER BY CASE WHEN all_timed THEN updated_at END DESC NULLS LAST, seq DESC
) = 1
"""

DELETE_REPLACED_JOBS = """
DELETE FROM jobs USING batch_job_winners w
WHERE jobs.job_id = w.job_id
  AND (jobs.updated_at IS NULL OR w.updated_at IS NULL OR w.updated_at >= jobs.updated_at)
"""

INSERT_JOBS = """
INSERT INTO jobs (job_id, status, created_at, started_at, ended_at, updated_at, config, model_name,
                  batch_size, save_steps, target_samples_per_second, gpu_count, current_step,
                  total_steps, source_dir, source_file, ingested_at)
SELECT w.job_id, w.status, w.created_at, w.started_at, w.ended_at, w.updated_at, w.config, w.model_name,
       w.batch_size, w.save_steps, w.target_samples_per_second, w.gpu_count, w.current_step,
       w.total_steps, w.source_dir, w.path, now()::TIMESTAMP
FROM batch_job_winners w
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.job_id = w.job_id)
"""

# Checkpoints are only ever added or completed: a checkpoint once seen stays in C.
UPSERT_CHECKPOINTS = """
INSERT INTO checkpoints (job_id, step, path, saved_at, eval_loss, source)
SELECT job_id, step, path, saved_at, eval_loss, 'list'
FROM batch_checkpoints
WHERE step IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY job_id, step ORDER BY seq DESC, pos DESC) = 1
ON CONFLICT (job_id, step) DO UPDATE SET
    path = coalesce(excluded.path, checkpoints.path),
    saved_at = coalesce(excluded.saved_at, checkpoints.saved_at),
    eval_loss = coalesce(excluded.eval_loss, checkpoints.eval_loss),
    source = 'list'
"""

APPLY_JOBS = (
    BATCH_JOB_WINNERS,
    DELETE_REPLACED_JOBS,
    INSERT_JOBS,
    UPSERT_CHECKPOINTS,
)


def apply(con: duckdb.DuckDBPyConnection) -> None:
    """Merge the staged batch into the fact tables (inside the caller's transaction)."""
    repeated = _fetch_bool(con, HAS_REPEATED_STEPS)
    con.execute(BATCH_WINNERS if repeated else ALL_WINNERS)
    con.execute(BATCH_APPLIED)
    if db.one(con, COUNT_REPLACED)[0]:
        con.execute(DELETE_REPLACED_STEPS)
        con.execute(DELETE_REPLACED_GPUS)
    con.execute(INSERT_STEPS)
    simple = _fetch_bool(con, ALL_APPLIED) and not _fetch_bool(con, HAS_REPEATED_GPUS)
    con.execute(INSERT_ALL_GPUS if simple else INSERT_GPUS)
    for statement in APPLY_JOBS:
        con.execute(statement)


def _fetch_bool(con: duckdb.DuckDBPyConnection, query: str) -> bool:
    return bool(db.one(con, query)[0])
