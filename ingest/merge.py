"""Applying a staged batch to the fact tables, by the replacement rules of inputs.md.

The batch's rows are read from ``staged_steps`` and ``staged_gpus`` (see fast.staged).

A step seen again replaces the stored row when its timestamp is later or equal; when either row
has no timestamp, the later ingest wins. A row whose time is its snapshot's ``updated_at`` (an
untimed ``latest`` or legacy snapshot: ``stand_in``, stored as ``steps.ts_stand_in``) counts as
untimed there: that time says when the snapshot was written, not when the step finished.
Within a batch, "later" is the ingest order: files in path order, entries in file order, and
the batch keeps what ingesting its entries one at a time would keep; except that a file's
``latest`` replaces its own history's entry of the same step only with its own, strictly later
timestamp (else it fills what that entry lacks). The same rule picks a job's row (by
``updated_at``).
"""

from __future__ import annotations

import duckdb

from runlytics.warehouse import db

from . import progress

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
       iteration_time, samples, false AS after_untimed, pos AS gpu_pos, stand_in
FROM staged_steps
WHERE step IS NOT NULL
"""

# The winning entry per (job, step) within the batch: what ingesting its entries one at a time
# would keep (the rule above, entry by entry: an entry without a timestamp replaces whatever came
# before it, so after the last such entry the later timestamp wins, ties to the later entry).
# `after_untimed` marks a winner that follows an untimed entry: it replaces the stored row
# whatever its timestamp, as one ingest per entry would. Only keys seen more than once are ranked.
# Within one file, `latest` repeating a step its history holds replaces the history's own winner
# of that step (by the rule above: untimed when the step's last history copy is, else the latest
# timestamp among the copies after the last untimed one; not every copy's) only with its own,
# strictly later timestamp (inputs.md: "the entry with the later timestamp wins"; an equal or
# unknown one is not later, and updated_at is when the snapshot was written): else
# it is dropped from the ranking, and what it holds fills what its file's winner of that step
# lacks: each null field, the timestamp (unless updated_at's stand-in), and the GPU readings when
# the winner has none (`gpu_pos`: the entry whose readings are kept).
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
), history_ends AS (
    SELECT *,
           count(*) FILTER (WHERE NOT is_latest) OVER file_step AS history,
           max(pos) FILTER (WHERE NOT is_latest) OVER file_step AS last_history,
           max(pos) FILTER (WHERE NOT is_latest AND ts IS NULL) OVER file_step AS last_untimed_history
    FROM contested
    WINDOW file_step AS (PARTITION BY file_id, step)
), marked AS (
    SELECT * EXCLUDE (history, last_history, last_untimed_history, history_ts),
           is_latest AND history > 0
           -- never NULL (a NULL would leave the entry out of both the ranking and the lenders)
           AND (stand_in OR ts IS NULL OR last_untimed_history IS NOT DISTINCT FROM last_history
                OR coalesce(ts <= history_ts, true)) AS dropped
    FROM (
        SELECT *,
               max(ts) FILTER (WHERE NOT is_latest AND pos > coalesce(last_untimed_history, 0))
                   OVER (PARTITION BY file_id, step) AS history_ts
        FROM history_ends
    )
), ordered AS (
    SELECT *,
           max(ord) FILTER (WHERE ts IS NULL OR stand_in) OVER key_all AS last_untimed,
           count(*) OVER key_all AS entries
    FROM (SELECT * EXCLUDE (dropped), row_number() OVER (PARTITION BY job_id, step ORDER BY seq, pos) AS ord
          FROM marked WHERE NOT dropped)
    WINDOW key_all AS (PARTITION BY job_id, step)
), ranked AS (
    SELECT * EXCLUDE (ord, last_untimed, entries, is_latest), last_untimed IS NOT NULL AS after_untimed
    FROM ordered
    WHERE last_untimed IS NULL OR ord > last_untimed OR (ord = last_untimed AND ord = entries)
    QUALIFY row_number() OVER (PARTITION BY job_id, step ORDER BY ts DESC, ord DESC) = 1
), lenders AS (
    SELECT * FROM marked WHERE dropped
), lent AS (
    SELECT w.file_id, w.pos FROM ranked w SEMI JOIN lenders l ON l.file_id = w.file_id AND l.step = w.step
), with_gpus AS (
    SELECT DISTINCT g.file_id, g.pos FROM staged_gpus g SEMI JOIN lent w ON w.file_id = g.file_id AND w.pos = g.pos
)
SELECT e.* EXCLUDE (is_latest, stand_in), false AS after_untimed, e.pos AS gpu_pos, e.stand_in
FROM entries e ANTI JOIN repeated r ON r.job_id = e.job_id AND r.step = e.step
UNION ALL
SELECT w.file_id, w.seq, w.pos, w.job_id, w.step,
       coalesce(w.ts, CASE WHEN NOT l.stand_in THEN l.ts END), coalesce(w.loss, l.loss),
       coalesce(w.eval_loss, l.eval_loss), coalesce(w.learning_rate, l.learning_rate),
       coalesce(w.samples_per_second, l.samples_per_second), coalesce(w.iteration_time, l.iteration_time),
       coalesce(w.samples, l.samples), w.after_untimed,
       CASE WHEN l.pos IS NOT NULL AND g.pos IS NULL THEN l.pos ELSE w.pos END, w.stand_in
FROM ranked w
LEFT JOIN lenders l ON l.file_id = w.file_id AND l.step = w.step
LEFT JOIN with_gpus g ON g.file_id = w.file_id AND g.pos = w.pos
"""

# Winners that beat what is stored (by the rule above); `replaces` marks those with a stored row.
# A stand-in time, the winner's or the stored row's, is no timestamp: the later ingest wins.
BATCH_APPLIED = """
CREATE OR REPLACE TEMP TABLE batch_applied AS
WITH stored AS (
    SELECT job_id, step, ts, ts_stand_in FROM steps WHERE job_id IN (SELECT DISTINCT job_id FROM batch_jobs)
)
SELECT w.*, s.step IS NOT NULL AS replaces
FROM batch_winners w
LEFT JOIN stored s ON s.job_id = w.job_id AND s.step = w.step
WHERE s.step IS NULL OR s.ts IS NULL OR w.ts IS NULL OR w.after_untimed OR w.stand_in OR s.ts_stand_in
   OR w.ts >= s.ts
"""

COUNT_REPLACED = "SELECT count(*) FROM batch_applied WHERE replaces"

DELETE_REPLACED_STEPS = """
DELETE FROM steps USING batch_applied a
WHERE a.replaces AND steps.job_id = a.job_id AND steps.step = a.step
"""

INSERT_STEPS = """
INSERT INTO steps (job_id, step, ts, loss, eval_loss, learning_rate, samples_per_second, iteration_time,
                   samples, ts_stand_in)
SELECT job_id, step, ts, loss, eval_loss, learning_rate, samples_per_second, iteration_time, samples, stand_in
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

# One reading per GPU index in an entry (step_gpus is keyed by job, step and index): a reading
# whose index an earlier reading of its entry holds (an explicit index, or a missing one taken
# from its position) is dropped, with a warning (REPEATED_GPU_WARNINGS), whatever its uuid.
INSERT_GPUS = """
INSERT INTO step_gpus (job_id, step, gpu_index, gpu_uuid, utilization_percent, memory_used_mb,
                       memory_total_mb, temperature_c, power_w)
WITH applied AS (
    SELECT g.* FROM staged_gpus g SEMI JOIN batch_applied a ON a.file_id = g.file_id AND a.gpu_pos = g.pos
), repeated AS (
    SELECT file_id, pos, gpu_index, min(gpos) AS first_gpos
    FROM applied GROUP BY file_id, pos, gpu_index HAVING count(*) > 1
)
SELECT g.job_id, g.step, g.gpu_index, g.gpu_uuid, g.utilization_percent, g.memory_used_mb,
       g.memory_total_mb, g.temperature_c, g.power_w
FROM applied g
LEFT JOIN repeated r ON r.file_id = g.file_id AND r.pos = g.pos AND r.gpu_index = g.gpu_index
WHERE r.first_gpos IS NULL OR r.first_gpos = g.gpos
"""

# The warnings of the readings INSERT_GPUS drops, for every staged entry (won or not: the file
# holds them), in the file's warnings beside those of its refused values.
REPEATED_GPU_WARNINGS = """
INSERT INTO batch_warnings
SELECT g.file_id, g.pos, g.gpos,
       CASE WHEN EXISTS (SELECT 1 FROM staged_steps s WHERE s.file_id = g.file_id AND s.pos = g.pos AND s.is_latest)
            THEN 'latest' ELSE 'history[' || CAST(g.pos - 1 AS VARCHAR) || ']' END
       || ' (step ' || CAST(g.step AS VARCHAR) || '): gpus[' || CAST(g.gpos - 1 AS VARCHAR)
       || '] repeats GPU index ' || CAST(g.gpu_index AS VARCHAR) || coalesce(' (uuid ' || g.gpu_uuid || ')', '')
       || ', dropped: one reading per index'
FROM (
    SELECT file_id, pos, gpos, step, gpu_index, gpu_uuid,
           row_number() OVER (PARTITION BY file_id, pos, gpu_index ORDER BY gpos) AS nth
    FROM staged_gpus
) g
WHERE g.nth > 1
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

# A value the new snapshot gives but that was refused (a bad time, a setting of the wrong type:
# dropped with a warning) keeps the stored job's (inputs.md: a file that breaks the contract never
# loses data already ingested); a field the snapshot leaves out, or gives as null, is replaced. A
# refused config (not an object) keeps the settings read from it too. Only a row a progress.json
# made is kept from: a trainer state's or a tool log's row of the job would make the result depend
# on which was read first (one ingest reads the progress.json first).
KEPT_WHEN_REFUSED = (
    "created_at", "started_at", "ended_at", "updated_at", "config", "current_step", "total_steps",
)  # fmt: skip
KEEP_REFUSED = (
    "UPDATE batch_job_winners w SET "
    + ", ".join(
        [
            f"{c} = CASE WHEN w.{c} IS NULL AND list_contains(w.present, {n}) THEN j.{c} ELSE w.{c} END"
            for c, n in ((db.quote_identifier(name), db.quote_literal(name)) for name in KEPT_WHEN_REFUSED)
        ]
        + [
            f"{c} = CASE WHEN w.{c} IS NULL AND (list_contains(w.present, {n}) OR (w.config IS NULL"
            f" AND list_contains(w.present, 'config'))) THEN j.{c} ELSE w.{c} END"
            for c, n in ((db.quote_identifier(name), db.quote_literal(name)) for name in progress.JOB_SETTINGS)
        ]
    )
    + " FROM jobs j WHERE j.job_id = w.job_id AND j.source_file LIKE '%progress.json'"
)

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

# Checkpoints are only ever added or completed: a checkpoint once seen stays in C. Items of one
# step in the batch complete each other as ingests one item at a time would: each field is the
# last item's that has one (a writer listing a step when saved, then again when evaluated, with
# only eval_loss the second time, keeps the first item's path and saved_at).
UPSERT_CHECKPOINTS = """
INSERT INTO checkpoints (job_id, step, path, saved_at, eval_loss, source)
SELECT job_id, step,
       arg_max(path, (seq, pos)) FILTER (WHERE path IS NOT NULL),
       arg_max(saved_at, (seq, pos)) FILTER (WHERE saved_at IS NOT NULL),
       arg_max(eval_loss, (seq, pos)) FILTER (WHERE eval_loss IS NOT NULL),
       'list'
FROM batch_checkpoints
WHERE step IS NOT NULL
GROUP BY job_id, step
ON CONFLICT (job_id, step) DO UPDATE SET
    path = coalesce(excluded.path, checkpoints.path),
    saved_at = coalesce(excluded.saved_at, checkpoints.saved_at),
    eval_loss = coalesce(excluded.eval_loss, checkpoints.eval_loss),
    source = 'list'
"""

APPLY_JOBS = (
    BATCH_JOB_WINNERS,
    KEEP_REFUSED,
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
    repeated_gpus = _fetch_bool(con, HAS_REPEATED_GPUS)
    if repeated_gpus:
        con.execute(REPEATED_GPU_WARNINGS)
    simple = not repeated_gpus and _fetch_bool(con, ALL_APPLIED)
    con.execute(INSERT_ALL_GPUS if simple else INSERT_GPUS)
    for statement in APPLY_JOBS:
        con.execute(statement)


def _fetch_bool(con: duckdb.DuckDBPyConnection, query: str) -> bool:
    return bool(db.one(con, query)[0])
