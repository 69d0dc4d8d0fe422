"""Reading ``progress.json`` files (inputs.md section 1) into batch tables, inside DuckDB.

DuckDB's JSON reader parses a whole batch of files in parallel; the SQL below turns what it
read into typed, checked rows and a warning for every value it had to drop. Python only
decides which files to read and explains files that are not JSON at all.

Batch tables (temporary, replaced per batch; ``batch_files`` is filled by the caller with
``file_id``, ``seq`` (ingest order), ``path``, ``folder`` (the job directory's name) and
``source_dir``):

- ``raw_docs``       what the JSON reader returned, one row per file
- ``batch_jobs``     one job row per file
- ``batch_entries``  (a view) every step entry as read: history, latest, or the legacy flat snapshot
- ``batch_steps``    one row per step entry, typed and checked
- ``batch_gpus``     one row per GPU reading of an entry
- ``batch_checkpoints`` one row per ``checkpoints`` item
- ``batch_warnings`` one row per dropped value or skipped entry

History entries the fast road read (fast.py) are in none of these: ``batch_files`` says how
many a file had (``history_entries``), and the merge reads both kinds of rows through
fast.py's ``staged_steps`` and ``staged_gpus``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import duckdb

from runlytics.warehouse import db
from runlytics.warehouse.views import STATUSES

from . import json_text, ledger, sql

_GPU = (
    'STRUCT("index" JSON, uuid JSON, utilization_percent JSON, memory_used_mb JSON, '
    "memory_total_mb JSON, temperature_c JSON, power_w JSON)"
)
_ENTRY = (
    "STRUCT(step JSON, timestamp JSON, loss JSON, eval_loss JSON, learning_rate JSON, "
    f"samples_per_second JSON, iteration_time JSON, samples JSON, gpus {_GPU}[])"
)

# The columns the reader extracts; other keys are ignored (config is kept whole).
COLUMNS: dict[str, str] = {
    "job_id": "JSON",
    "status": "JSON",
    "created_at": "JSON",
    "started_at": "JSON",
    "ended_at": "JSON",
    "updated_at": "JSON",
    "config": "JSON",
    "current_step": "JSON",
    "total_steps": "JSON",
    "max_steps": "JSON",
    "history": f"{_ENTRY}[]",
    "latest": _ENTRY,
    "checkpoints": "STRUCT(step JSON, path JSON, saved_at JSON, eval_loss JSON)[]",
    "gpus": "JSON",  # no field of the document: read only to say it is ignored (BATCH_JOBS)
    # the legacy flat snapshot
    "step": "JSON",
    "timestamp": "JSON",
    "loss": "JSON",
    "eval_loss": "JSON",
    "learning_rate": "JSON",
    "samples_per_second": "JSON",
    "iteration_time": "JSON",
    "samples": "JSON",
    "gpu_utilization": "JSON",
    "gpu_memory_mb": "JSON",
    "gpu_temperature": "JSON",
}

MAX_FILE_BYTES = 1 << 30
# A monitor that rewrites progress.json in place writes the new document over the old one, then
# truncates: a read between the two finds a whole document and the older one's tail (inputs.md
# §1: "half old and half new", retried next run). The window is that short; a file that still
# reads so this long after its last change has no writer at it, and fails (read again when it
# changes) rather than staying pending for good: the window after which any file is taken as
# settled (``ledger.settled``: one notion of a file no writer is at).
TORN_TAIL_SECONDS = ledger.SETTLED_SECONDS
# DuckDB's JSON reader allocates a buffer of maximum_object_size per file it reads; at 1 GiB
# that allocation, and handing it back, took half the time of a batch of ordinary files. A
# batch asks for twice its largest file (a file may grow while being read), at least 16 MiB.
MIN_BUFFER_BYTES = 16 << 20

# The key fast.py adds to each document of its `rests` file (one file: DuckDB's reader costs
# milliseconds per file it opens): `filename` becomes that file's name, '#', the file's id.
REST_KEY = "__runlytics_file__"

READ_DOCS = f"""
CREATE OR REPLACE TEMP TABLE raw_docs AS
SELECT * EXCLUDE (filename, {REST_KEY}),
       CASE WHEN filename = $rests THEN filename || '#' || CAST({REST_KEY} AS VARCHAR) ELSE filename END AS filename
FROM read_json(
    $files, columns = $columns, format = 'unstructured', filename = true,
    maximum_object_size = $max_bytes
)
"""

# The statuses a job may have (warehouse/views.py, the one list), as a SQL list, and the warning
# for any other
_STATUS_LIST = ", ".join(db.quote_literal(status) for status in STATUSES)
_NOT_A_STATUS = db.quote_literal(f" is not one of {', '.join(STATUSES)}: kept as unknown")
# The job row's columns read from the document's config (merge.KEEP_REFUSED keeps them with it)
JOB_SETTINGS = ("model_name", "batch_size", "save_steps", "target_samples_per_second", "gpu_count")
_JOB_SETTINGS_LIST = "[" + ", ".join(db.quote_literal(name) for name in JOB_SETTINGS) + "]"
# One job row per file. A missing job_id is the job directory's name.
BATCH_JOBS = f"""
CREATE OR REPLACE TEMP TABLE batch_jobs AS
SELECT f.file_id,
       f.seq,
       f.path,
       f.read_path,
       f.source_dir,
       coalesce(f.history_entries, 0) AS history_entries,
       coalesce(CASE WHEN NOT regexp_full_match(rl_string(d.job_id), '[[:space:]]*') THEN rl_string(d.job_id) END,
                -- a whole number 0..2^64-1 as written (through a DOUBLE, 17+ digits would round)
                CASE WHEN json_type(d.job_id) = 'UBIGINT' THEN CAST(d.job_id AS VARCHAR) END, f.folder)
           AS job_id,
       CASE WHEN lower(rl_trim(rl_string(d.status))) IN ({_STATUS_LIST})
            THEN lower(rl_trim(rl_string(d.status))) ELSE 'unknown' END AS status,
       d.rl_times[1] AS created_at,
       d.rl_times[2] AS started_at,
       d.rl_times[3] AS ended_at,
       d.rl_times[4] AS updated_at,
       CASE WHEN json_type(d.config) = 'OBJECT' THEN d.config END AS config,
       rl_string(d.config -> '$.model_name') AS model_name,
       rl_setting(d.config, 'batch_size') AS batch_size,
       CAST(rl_setting(d.config, 'save_steps') AS BIGINT) AS save_steps,
       rl_setting(d.config, 'target_samples_per_second') AS target_samples_per_second,
       CAST(rl_setting(d.config, 'gpu_count') AS BIGINT) AS gpu_count,
       rl_whole(d.current_step, 0, 1000000000000000000) AS current_step,
       coalesce(rl_whole(d.total_steps, 0, 1000000000000000000), rl_whole(d.max_steps, 0, 1000000000000000000),
                CAST(rl_setting(d.config, 'max_steps') AS BIGINT)) AS total_steps,
       -- the job row's columns this document gives a value for (a JSON null gives none): where that
       -- value is refused, the stored job's stays (merge.KEEP_REFUSED)
       list_filter([
           CASE WHEN d.created_at IS NOT NULL THEN 'created_at' END,
           CASE WHEN d.started_at IS NOT NULL THEN 'started_at' END,
           CASE WHEN d.ended_at IS NOT NULL THEN 'ended_at' END,
           CASE WHEN d.updated_at IS NOT NULL THEN 'updated_at' END,
           CASE WHEN d.config IS NOT NULL THEN 'config' END,
           CASE WHEN d.current_step IS NOT NULL THEN 'current_step' END,
           CASE WHEN d.total_steps IS NOT NULL OR d.max_steps IS NOT NULL
                     OR coalesce(json_type(d.config -> '$.max_steps'), 'NULL') <> 'NULL' THEN 'total_steps' END
       ] || list_filter({_JOB_SETTINGS_LIST},
                        lambda name: coalesce(json_type(json_extract(d.config, '$.' || name)), 'NULL') <> 'NULL'),
           lambda name: name IS NOT NULL) AS present,
       concat_ws('; ',
           CASE WHEN regexp_full_match(rl_string(d.job_id), '[[:space:]]*')
                THEN 'job_id ' || left(CAST(d.job_id AS VARCHAR), 40) || ' is empty: the folder name is used'
                WHEN json_type(d.job_id) = 'UBIGINT'
                THEN 'job_id ' || CAST(d.job_id AS VARCHAR) || ' is a number, not a string: its text '
                     || CAST(d.job_id AS VARCHAR) || ' is used'
                WHEN d.job_id IS NOT NULL AND rl_string(d.job_id) IS NULL
                THEN 'job_id ' || left(CAST(d.job_id AS VARCHAR), 40)
                     || ' is not a string: the folder name is used' END,
           CASE WHEN d.status IS NULL THEN 'no status: kept as unknown'
                WHEN lower(rl_trim(coalesce(rl_string(d.status), ''))) NOT IN ({_STATUS_LIST})
                THEN 'status ' || left(CAST(d.status AS VARCHAR), 40) || {_NOT_A_STATUS}
                -- blanks around a known status are dropped (docs/decisions.md), and said
                WHEN rl_string(d.status) <> rl_trim(rl_string(d.status))
                THEN 'status ' || left(CAST(d.status AS VARCHAR), 40) || ' has blanks around it: read as '
                     || lower(rl_trim(rl_string(d.status))) END,
           rl_timestamp_dropped('created_at', d.created_at, d.rl_times[1]),
           rl_timestamp_dropped('started_at', d.started_at, d.rl_times[2]),
           rl_timestamp_dropped('ended_at', d.ended_at, d.rl_times[3]),
           rl_timestamp_dropped('updated_at', d.updated_at, d.rl_times[4]),
           CASE WHEN d.config IS NOT NULL AND json_type(d.config) <> 'OBJECT'
                THEN 'config is not an object: dropped' END,
           nullif(array_to_string(rl_setting_problems('config.', d.config), '; '), ''),
           CASE WHEN (d.config -> '$.model_name') IS NOT NULL AND rl_string(d.config -> '$.model_name') IS NULL
                THEN 'config.model_name ' || left(CAST(d.config -> '$.model_name' AS VARCHAR), 40)
                     || ' is not a string, dropped' END,
           rl_whole_problem('current_step', d.current_step, 0, 1000000000000000000),
           rl_whole_problem('total_steps', d.total_steps, 0, 1000000000000000000),
           rl_whole_problem('max_steps', d.max_steps, 0, 1000000000000000000),
           CASE WHEN d.history IS NULL AND d.latest IS NULL AND d.step IS NULL
                THEN 'no step entries: no history list, latest object or legacy step' END,
           -- the legacy snapshot's fields are read only in a document without history and latest
           -- (BATCH_ENTRIES); beside them, and a gpus list at the top level, said to be ignored
           CASE WHEN d.history IS NOT NULL OR d.latest IS NOT NULL
                THEN nullif(concat_ws(', ',
                         CASE WHEN d.step IS NOT NULL THEN 'step' END,
                         CASE WHEN d.timestamp IS NOT NULL THEN 'timestamp' END,
                         CASE WHEN d.loss IS NOT NULL THEN 'loss' END,
                         CASE WHEN d.eval_loss IS NOT NULL THEN 'eval_loss' END,
                         CASE WHEN d.learning_rate IS NOT NULL THEN 'learning_rate' END,
                         CASE WHEN d.samples_per_second IS NOT NULL THEN 'samples_per_second' END,
                         CASE WHEN d.iteration_time IS NOT NULL THEN 'iteration_time' END,
                         CASE WHEN d.samples IS NOT NULL THEN 'samples' END,
                         CASE WHEN d.gpu_utilization IS NOT NULL THEN 'gpu_utilization' END,
                         CASE WHEN d.gpu_memory_mb IS NOT NULL THEN 'gpu_memory_mb' END,
                         CASE WHEN d.gpu_temperature IS NOT NULL THEN 'gpu_temperature' END), '')
                     || ' at the top level (the legacy snapshot form) ignored: the document has a '
                     || CASE WHEN d.history IS NOT NULL THEN 'history list' ELSE 'latest object' END END,
           CASE WHEN d.gpus IS NOT NULL
                THEN 'gpus at the top level ignored: GPU readings belong to a step entry (history or latest); '
                     || 'a legacy snapshot''s one GPU is gpu_utilization, gpu_memory_mb, gpu_temperature' END
       ) AS problems
FROM (
    -- the four times read by one rl_timestamp over their list: each expansion of the macro is bound
    -- and optimised on its own (eight cost the statement ~70 ms of planning in a small ingest)
    SELECT *, list_transform([created_at, started_at, ended_at, updated_at], lambda x: rl_timestamp(x)) AS rl_times
    FROM raw_docs
) d
JOIN batch_files f ON f.read_path = d.filename
"""

# Every step entry with its origin: the history list, then `latest`, else the legacy snapshot.
# `latest` and legacy snapshots without a timestamp take the snapshot's updated_at (one that is a
# timestamp: a refused one is said once, of the job); `stand_in`
# marks an entry that did (the merge lets such a latest replace no history entry of its file:
# updated_at says when the snapshot was written, not when the step finished; stored as
# steps.ts_stand_in, the row counts as untimed against a later ingest of its step). A view:
# batch_steps and batch_gpus each read what they need of the entries, so that the entries'
# GPU readings are never copied into a table of their own. `place` (for warnings) is NULL for
# history entries, whose place follows from `pos`: building a string per entry costs seconds.
BATCH_ENTRIES = """
CREATE OR REPLACE TEMP VIEW batch_entries AS
WITH stand_ins AS (
    -- an updated_at refused at the job level (said there) stands in for no entry's timestamp
    SELECT *, CASE WHEN rl_timestamp(updated_at) IS NOT NULL THEN updated_at END AS stand_in FROM raw_docs
), entries AS (
    SELECT filename, CAST(NULL AS VARCHAR) AS place, pos, false AS stand_in, e
    FROM (SELECT filename, unnest(history) AS e, generate_subscripts(history, 1) AS pos FROM raw_docs)
    UNION ALL
    SELECT filename, 'latest', len(coalesce(history, [])) + 1, latest.timestamp IS NULL AND stand_in IS NOT NULL,
           struct_pack(step := latest.step, timestamp := coalesce(latest.timestamp, stand_in),
                       loss := latest.loss, eval_loss := latest.eval_loss,
                       learning_rate := latest.learning_rate,
                       samples_per_second := latest.samples_per_second,
                       iteration_time := latest.iteration_time, samples := latest.samples,
                       gpus := latest.gpus)
    FROM stand_ins WHERE latest IS NOT NULL
    UNION ALL
    SELECT filename, 'snapshot', 1, timestamp IS NULL AND stand_in IS NOT NULL,
           struct_pack(step := step, timestamp := coalesce(timestamp, stand_in),
                       loss := loss, eval_loss := eval_loss, learning_rate := learning_rate,
                       samples_per_second := samples_per_second, iteration_time := iteration_time,
                       samples := samples,
                       gpus := CASE WHEN coalesce(gpu_utilization, gpu_memory_mb, gpu_temperature) IS NOT NULL
                                    -- no index: the GPU is index 0 by its place, and one whose values
                                    -- are all refused is no GPU (GPUS_SELECT's unusable)
                                    THEN [struct_pack("index" := CAST(NULL AS JSON), uuid := CAST(NULL AS JSON),
                                                      utilization_percent := gpu_utilization,
                                                      memory_used_mb := gpu_memory_mb,
                                                      memory_total_mb := CAST(NULL AS JSON),
                                                      temperature_c := gpu_temperature,
                                                      power_w := CAST(NULL AS JSON))] END)
    FROM stand_ins WHERE history IS NULL AND latest IS NULL AND step IS NOT NULL
)
SELECT j.file_id, j.seq, j.job_id,
       -- history entries the fast road read (fast.py) are not in raw_docs; `latest` follows them
       x.pos + CASE WHEN x.place = 'latest' THEN j.history_entries ELSE 0 END AS pos, x.place, x.stand_in, x.e
FROM entries x
JOIN (SELECT file_id, seq, job_id, read_path, history_entries FROM batch_jobs) j ON j.read_path = x.filename
"""

# Each value is parsed once (`parsed`), then checked once (`checked`); the layers keep DuckDB
# from evaluating a macro's argument again in every branch of the checks. {entries} is
# batch_entries, or piece_entries for the pieces of a large file (see PIECE_ENTRIES).
STEPS_SELECT = """
WITH parsed AS (
    SELECT file_id, seq, job_id, pos, place, stand_in, e,
           rl_exact(e.step) AS step_exact, rl_double(e.step) AS step, rl_timestamp(e.timestamp) AS ts,
           rl_double(e.loss) AS loss, rl_double(e.eval_loss) AS eval_loss, rl_double(e.learning_rate) AS learning_rate,
           rl_double(e.samples_per_second) AS samples_per_second,
           rl_double(e.iteration_time) AS iteration_time, rl_exact(e.samples) AS samples_exact,
           rl_double(e.samples) AS samples
    FROM {entries}
), checked AS (
    SELECT file_id, seq, job_id, pos, place, stand_in, e, ts,
           rl_whole_checked(step_exact, step, 0, 1000000000000000000) AS step,
           rl_checked(loss, -1e308, 1e308, false) AS loss,
           rl_checked(eval_loss, -1e308, 1e308, false) AS eval_loss,
           rl_checked(learning_rate, -1e308, 1e308, false) AS learning_rate,
           rl_checked(samples_per_second, 0, 1e308, false) AS samples_per_second,
           rl_checked(iteration_time, 0, 1e308, false) AS iteration_time,
           rl_whole_checked(samples_exact, samples, 0, 1000000000000000000) AS samples
    FROM parsed
)
SELECT file_id, seq, job_id, pos, place, stand_in, step, ts, loss, eval_loss, learning_rate,
       samples_per_second, iteration_time, samples,
       -- the raw entry, kept only when a value was refused (for its warning)
       CASE WHEN step IS NULL
                 OR (e.timestamp IS NOT NULL AND ts IS NULL)
                 OR (e.loss IS NOT NULL AND loss IS NULL)
                 OR (e.eval_loss IS NOT NULL AND eval_loss IS NULL)
                 OR (e.learning_rate IS NOT NULL AND learning_rate IS NULL)
                 OR (e.samples_per_second IS NOT NULL AND samples_per_second IS NULL)
                 OR (e.iteration_time IS NOT NULL AND iteration_time IS NULL)
                 OR (e.samples IS NOT NULL AND samples IS NULL)
            THEN e END AS refused
FROM checked
"""
BATCH_STEPS = "CREATE OR REPLACE TEMP TABLE batch_steps AS " + STEPS_SELECT.format(entries="batch_entries")

# GPU readings of entries that have a step; a reading without an index takes its position (in
# the list as written: an item dropped before it does not move it). An item that names no GPU and
# holds no reading (null, {}, or an object none of whose fields is left once checked) is no GPU:
# `unusable` says which, and the item is dropped with a warning (ROW_WARNINGS; fast.STAGED_GPUS
# leaves it out): a row of nothing would count as one more GPU of the job (its GPU hours).
GPUS_SELECT = """
WITH stepped AS (
    SELECT file_id, seq, job_id, pos, place, rl_whole(e.step, 0, 1000000000000000000) AS step, e.gpus AS gpus
    FROM {entries}
), readings AS (
    SELECT file_id, seq, job_id, step, pos, place, unnest(gpus) AS g, generate_subscripts(gpus, 1) AS gpos
    FROM stepped
    WHERE step IS NOT NULL AND gpus IS NOT NULL
), parsed AS (
    SELECT file_id, seq, job_id, step, pos, place, gpos, g,
           rl_double(g."index") AS gpu_index, rl_string(g.uuid) AS gpu_uuid,
           rl_double(g.utilization_percent) AS utilization_percent,
           rl_double(g.memory_used_mb) AS memory_used_mb, rl_double(g.memory_total_mb) AS memory_total_mb,
           rl_double(g.temperature_c) AS temperature_c, rl_double(g.power_w) AS power_w
    FROM readings
), checked AS (
    SELECT file_id, seq, job_id, step, pos, place, gpos, g, gpu_uuid,
           rl_checked(gpu_index, 0, 1e6, true) AS gpu_index,
           rl_checked(utilization_percent, 0, 100, false) AS utilization_percent,
           rl_checked(memory_used_mb, 0, 1e308, false) AS memory_used_mb,
           rl_checked(memory_total_mb, 0, 1e308, false) AS memory_total_mb,
           rl_checked(temperature_c, -273.15, 1e308, false) AS temperature_c,
           rl_checked(power_w, 0, 1e308, false) AS power_w
    FROM parsed
)
SELECT file_id, seq, job_id, step, pos, place, gpos,
       CAST(coalesce(gpu_index, gpos - 1) AS INTEGER) AS gpu_index, gpu_uuid, utilization_percent,
       memory_used_mb, memory_total_mb, temperature_c, power_w,
       CASE WHEN (g."index" IS NOT NULL AND gpu_index IS NULL)
                 OR (g.uuid IS NOT NULL AND gpu_uuid IS NULL)
                 OR (g.utilization_percent IS NOT NULL AND utilization_percent IS NULL)
                 OR (g.memory_used_mb IS NOT NULL AND memory_used_mb IS NULL)
                 OR (g.memory_total_mb IS NOT NULL AND memory_total_mb IS NULL)
                 OR (g.temperature_c IS NOT NULL AND temperature_c IS NULL)
                 OR (g.power_w IS NOT NULL AND power_w IS NULL)
            THEN g END AS refused,
       CASE WHEN g IS NULL THEN 'null'
            WHEN gpu_index IS NULL AND (gpu_uuid IS NULL OR regexp_full_match(gpu_uuid, '[ \t\n\r\f\v]*'))
                 AND utilization_percent IS NULL AND memory_used_mb IS NULL AND memory_total_mb IS NULL
                 AND temperature_c IS NULL AND power_w IS NULL
            THEN 'empty' END AS unusable
FROM checked
"""
BATCH_GPUS = "CREATE OR REPLACE TEMP TABLE batch_gpus AS " + GPUS_SELECT.format(entries="batch_entries")

BATCH_CHECKPOINTS = """
CREATE OR REPLACE TEMP TABLE batch_checkpoints AS
WITH items AS (
    SELECT filename, unnest(checkpoints) AS c, generate_subscripts(checkpoints, 1) AS pos
    FROM raw_docs
    WHERE checkpoints IS NOT NULL
)
SELECT j.file_id, j.seq, j.job_id, i.pos,
       rl_whole(i.c.step, 0, 1000000000000000000) AS step,
       -- an empty or blank path names no folder: none, as an empty uuid is no uuid
       CASE WHEN NOT regexp_full_match(rl_string(i.c.path), '[[:space:]]*') THEN rl_string(i.c.path) END AS path,
       rl_timestamp(i.c.saved_at) AS saved_at,
       rl_number(i.c.eval_loss, -1e308, 1e308, false) AS eval_loss,
       concat_ws('; ',
           CASE WHEN i.c.step IS NULL THEN 'no step: checkpoint skipped' END,
           rl_whole_problem('step', i.c.step, 0, 1000000000000000000) || ': checkpoint skipped',
           CASE WHEN i.c.path IS NOT NULL AND rl_string(i.c.path) IS NULL
                THEN 'path ' || left(CAST(i.c.path AS VARCHAR), 40) || ' is not a string, dropped' END,
           rl_timestamp_problem('saved_at', i.c.saved_at),
           rl_number_problem('eval_loss', i.c.eval_loss, -1e308, 1e308, false)
       ) AS problems
FROM items i
JOIN batch_jobs j ON j.read_path = i.filename
"""

# The warnings of refused values, from {steps} and {gpus} (batch_steps and batch_gpus, or the
# rows of a large file's pieces).
ROW_WARNINGS = """
SELECT file_id, pos, 0,
       coalesce(place, 'history[' || CAST(pos - 1 AS VARCHAR) || ']')
       || coalesce(' (step ' || CAST(step AS VARCHAR) || ')', '') || ': ' || concat_ws('; ',
           CASE WHEN refused.step IS NULL THEN 'no step: entry skipped' END,
           rl_whole_problem('step', refused.step, 0, 1000000000000000000) || ': entry skipped',
           rl_timestamp_problem('timestamp', refused.timestamp),
           rl_number_problem('loss', refused.loss, -1e308, 1e308, false),
           rl_number_problem('eval_loss', refused.eval_loss, -1e308, 1e308, false),
           rl_number_problem('learning_rate', refused.learning_rate, -1e308, 1e308, false),
           rl_number_problem('samples_per_second', refused.samples_per_second, 0, 1e308, false),
           rl_number_problem('iteration_time', refused.iteration_time, 0, 1e308, false),
           rl_whole_problem('samples', refused.samples, 0, 1000000000000000000))
FROM {steps} WHERE refused IS NOT NULL
UNION ALL
SELECT file_id, pos, gpos,
       coalesce(place, 'history[' || CAST(pos - 1 AS VARCHAR) || ']')
       || ' (step ' || CAST(step AS VARCHAR) || ')'
       -- a legacy snapshot's one GPU is its flat fields: named as the file names them
       || CASE WHEN place = 'snapshot' THEN ': ' ELSE ' gpus[' || CAST(gpos - 1 AS VARCHAR) || ']: ' END
       || concat_ws('; ',
           rl_number_problem('index', refused."index", 0, 1e6, true),
           CASE WHEN refused.uuid IS NOT NULL AND rl_string(refused.uuid) IS NULL
                THEN 'uuid ' || left(CAST(refused.uuid AS VARCHAR), 40) || ' is not a string, dropped' END,
           rl_number_problem(CASE WHEN place = 'snapshot' THEN 'gpu_utilization' ELSE 'utilization_percent' END,
                             refused.utilization_percent, 0, 100, false),
           rl_number_problem(CASE WHEN place = 'snapshot' THEN 'gpu_memory_mb' ELSE 'memory_used_mb' END,
                             refused.memory_used_mb, 0, 1e308, false),
           rl_number_problem('memory_total_mb', refused.memory_total_mb, 0, 1e308, false),
           rl_number_problem(CASE WHEN place = 'snapshot' THEN 'gpu_temperature' ELSE 'temperature_c' END,
                             refused.temperature_c, -273.15, 1e308, false),
           rl_number_problem('power_w', refused.power_w, 0, 1e308, false),
           CASE WHEN unusable = 'null' THEN 'null, not a GPU reading: dropped'
                -- a legacy snapshot's GPU is its values: their warnings say they were dropped
                WHEN unusable = 'empty' AND place IS DISTINCT FROM 'snapshot'
                THEN 'no index, uuid or reading: not a GPU, dropped' END)
FROM {gpus} WHERE refused IS NOT NULL OR unusable IS NOT NULL
"""

BATCH_WARNINGS = f"""
CREATE OR REPLACE TEMP TABLE batch_warnings AS
SELECT file_id, 0 AS pos, 0 AS sub, problems AS message FROM batch_jobs WHERE problems <> ''
UNION ALL
{ROW_WARNINGS.format(steps="batch_steps", gpus="batch_gpus")}
UNION ALL
SELECT file_id, 1000000000 + pos, 0, 'checkpoints[' || CAST(pos - 1 AS VARCHAR) || ']: ' || problems
FROM batch_checkpoints WHERE problems <> ''
"""

STAGE = (BATCH_JOBS, BATCH_ENTRIES, BATCH_STEPS, BATCH_GPUS, BATCH_CHECKPOINTS, BATCH_WARNINGS)

# A large file the fast road refused is read in pieces (fast.split): its document without the
# history, read as any file, and pieces of its history entries, each read and checked alone
# into split_steps, split_gpus and split_warnings, so that DuckDB never holds the whole history.
# A piece is {"history": [...]}; `offset` is the number of entries before it, so that positions
# (and the warnings' history[i]) are those of the whole file. The merge reads the pieces' rows
# where they are, with the job of batch_jobs (fast.py's staged_steps): never copied.
PIECE_TABLES = f"""
CREATE OR REPLACE TEMP TABLE piece (file_id INTEGER, "offset" BIGINT);
CREATE OR REPLACE TEMP TABLE piece_docs (history {_ENTRY}[]);
CREATE OR REPLACE TEMP VIEW piece_entries AS
SELECT p.file_id, CAST(NULL AS INTEGER) AS seq, CAST(NULL AS VARCHAR) AS job_id, x.pos + p."offset" AS pos,
       CAST(NULL AS VARCHAR) AS place, false AS stand_in, x.e
FROM (SELECT unnest(history) AS e, generate_subscripts(history, 1) AS pos FROM piece_docs) x, piece p;
CREATE OR REPLACE TEMP TABLE split_steps AS {STEPS_SELECT.format(entries="piece_entries")} LIMIT 0;
CREATE OR REPLACE TEMP TABLE split_gpus AS {GPUS_SELECT.format(entries="piece_entries")} LIMIT 0;
CREATE OR REPLACE TEMP TABLE split_warnings (file_id INTEGER, pos BIGINT, sub BIGINT, message VARCHAR);
"""
READ_PIECE = f"""
INSERT INTO piece_docs
SELECT history FROM read_json($files, columns = {{'history': '{_ENTRY}[]'}}, format = 'unstructured',
                               maximum_object_size = $max_bytes)
"""
PIECE_ROWS = (
    "INSERT INTO split_steps " + STEPS_SELECT.format(entries="piece_entries"),
    "INSERT INTO split_gpus " + GPUS_SELECT.format(entries="piece_entries"),
)
# Whether the piece tables hold rows: only then are they made anew (making them costs tens of
# milliseconds, as much as the rest of a batch of small files' staging).
PIECES_IN_USE = """
SELECT EXISTS (FROM piece) OR EXISTS (FROM piece_docs) OR EXISTS (FROM split_steps) OR EXISTS (FROM split_gpus)
       OR EXISTS (FROM split_warnings)
"""
PIECE_OF = "INSERT INTO piece VALUES ($file_id, $offset)"
CLEAR_PIECE = "DELETE FROM piece; DELETE FROM piece_docs"
DROP_SPLIT = [
    f"DELETE FROM {table} WHERE file_id = $file_id" for table in ("split_steps", "split_gpus", "split_warnings")
]
# after BATCH_WARNINGS: the warnings of the pieces of the files still in the batch
KEPT = "(SELECT * FROM {table} WHERE file_id IN (SELECT file_id FROM batch_jobs))"
SPLIT_WARNINGS = (
    "INSERT INTO batch_warnings "
    + ROW_WARNINGS.format(steps=KEPT.format(table="split_steps"), gpus=KEPT.format(table="split_gpus"))
    + " UNION ALL SELECT * FROM "
    + KEPT.format(table="split_warnings")
)


def buffer_bytes(paths: list[str]) -> int:
    """The maximum_object_size for reading these files: twice the largest, within the bounds."""
    largest = max((_size(path) for path in paths), default=0)
    return min(MAX_FILE_BYTES, max(MIN_BUFFER_BYTES, 2 * largest))


def read_docs(con: duckdb.DuckDBPyConnection, paths: list[str], rests: str | None = None) -> None:
    """Parse the files into ``raw_docs``; raises duckdb.Error naming a file that is not JSON.

    ``rests`` (one of ``paths``) is fast.py's file of documents, each named by its REST_KEY.
    """
    params = {"files": db.exact_paths(paths), "rests": rests, "columns": {**COLUMNS, REST_KEY: "JSON"}}
    try:
        con.execute(READ_DOCS, {**params, "max_bytes": buffer_bytes(paths)})
    except UnicodeDecodeError as error:
        # DuckDB's message quotes the offending value cut short, possibly mid-character, and the
        # Python binding then fails to decode it: raise the error DuckDB meant, file name intact
        raw = error.object if isinstance(error.object, bytes) else bytes(error.object)
        raise duckdb.InvalidInputException(raw.decode("utf-8", errors="replace")) from None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def stage(con: duckdb.DuckDBPyConnection, pieces: bool = False) -> None:
    """Build the batch tables from ``raw_docs`` and ``batch_files`` (and the pieces' rows)."""
    for statement in STAGE:
        con.execute(statement)
    if pieces:
        con.execute(SPLIT_WARNINGS)


def start_pieces(con: duckdb.DuckDBPyConnection) -> None:
    """Empty tables for the pieces of a batch's large files (and the last batch's memory back)."""
    try:
        in_use = bool(db.one(con, PIECES_IN_USE)[0])
    except duckdb.CatalogException:  # the run's first batch: not made yet
        in_use = True
    if in_use:
        con.execute(PIECE_TABLES)


def read_piece(con: duckdb.DuckDBPyConnection, file_id: int, offset: int, path: str, data: bytes) -> None:
    """Read and check one piece of a large file (``data``: its bytes, at ``path``) into the split
    tables; raises duckdb.InvalidInputException as read_docs does for a piece DuckDB refuses."""
    con.execute(CLEAR_PIECE)
    con.execute(PIECE_OF, {"file_id": file_id, "offset": offset})
    files, max_bytes = db.exact_paths([path]), buffer_bytes([path])
    try:
        try:
            con.execute(READ_PIECE, {"files": files, "max_bytes": max_bytes})
        except UnicodeDecodeError as error:
            raw = error.object if isinstance(error.object, bytes) else bytes(error.object)
            raise duckdb.InvalidInputException(raw.decode("utf-8", errors="replace")) from None
        for statement in PIECE_ROWS:
            con.execute(statement)
        if b"null" in data:
            con.execute(PIECE_NULL_DOCS, {"files": files, "file_id": file_id, "offset": offset, "max_bytes": max_bytes})
            con.execute(SPLIT_NULL_WARNINGS, NULL_FIELDS)
    finally:
        con.execute(CLEAR_PIECE)


def drop_pieces(con: duckdb.DuckDBPyConnection, file_id: int) -> None:
    """Forget the rows read from a file's pieces (it is read again, repaired, or leaves the batch)."""
    for statement in DROP_SPLIT:
        con.execute(statement, {"file_id": file_id})


def diagnose(data: bytes, age_seconds: float | None = None) -> tuple[str, str]:
    """Why bytes that DuckDB could not read as one JSON object are not usable.

    Returns ``('pending', reason)`` for a file that looks cut short (empty, or ending mid-value:
    a writer is probably still at it), or caught half rewritten in place (a whole document, then
    an older, longer document's tail) when it changed ``age_seconds`` ago, at most
    ``TORN_TAIL_SECONDS``; ``('failed', reason)`` otherwise (a document that breaks before its
    end: docs/decisions.md, "A progress.json that breaks mid-document").
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # a Windows editor's "Unicode" (PowerShell's Out-File)
        return "failed", "not UTF-8: UTF-16 (its byte order mark, bytes FF FE or FE FF); JSON is read as UTF-8"
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        return "pending", "file is empty (being written?)"
    if text.startswith("version https://git-lfs"):
        return "failed", "not JSON: a Git LFS pointer was committed in place of the file"
    try:
        value = json_text.loads(text)
    except json.JSONDecodeError as error:
        if _cut_short(text, error):
            return "pending", f"JSON ends early at line {error.lineno} column {error.colno} (being written?)"
        fresh = age_seconds is not None and age_seconds <= TORN_TAIL_SECONDS
        if error.msg == "Extra data" and fresh and not _whole_values(text[error.pos :]):
            return "pending", (
                f"a whole document up to line {error.lineno} column {error.colno}, then an older document's"
                " tail (being rewritten in place?)"
            )
        return "failed", f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
    except RecursionError:
        return "failed", "invalid JSON: nested too deeply"
    if not isinstance(value, dict):
        return "failed", f"top-level JSON value is {type(value).__name__}, not an object"
    return "failed", "JSON could not be read by DuckDB"


# What a document cut short can end with where the parser stops: the start of a value (`tr`, `-`,
# `-Inf`, `Na`: Python's decoder reports the error where the value starts), or the rest of a
# number it read a shorter number from (`1.` and `1e+` read as 1, then `.` or `e+`)
_VALUE_START = re.compile(r"-?(I(n(f(i(n(i(ty?)?)?)?)?)?)?)?|N(aN?)?|t(r(ue?)?)?|f(a(l(se?)?)?)?|n(u(ll?)?)?")
_NUMBER_REST = re.compile(r"[.eE][0-9eE+-]*")


def _cut_short(text: str, error: json.JSONDecodeError) -> bool:
    """True when ``text`` is the start of a JSON document the decoder ran out of: nothing but a
    value's first characters after where it stopped. A document followed by one more character
    (`{...}}`) or a value missing (`"status": }`) is no cut: neither can be a document's start."""
    if error.msg.startswith("Unterminated string"):
        return True
    rest = text[error.pos :].rstrip()
    if not rest:
        return True
    if error.msg == "Expecting value":
        return _VALUE_START.fullmatch(rest) is not None
    return error.msg.startswith("Expecting") and _NUMBER_REST.fullmatch(rest) is not None


def _whole_values(text: str) -> bool:
    """True when ``text`` is whole JSON values one after another (a file of two documents),
    not the tail of a longer document that an in-place rewrite left behind."""
    decoder, pos = json.JSONDecoder(parse_int=json_text.whole), 0
    try:
        while pos < len(text):
            if text[pos].isspace():
                pos += 1
                continue
            _, pos = decoder.raw_decode(text, pos)
    except (ValueError, RecursionError):
        return False
    return True


def repair(data: bytes, offset: int = 0) -> tuple[str, list[str]] | None:
    """A copy of a progress file whose lists and objects have the shapes DuckDB's reader needs.

    DuckDB refuses a whole file when, say, a ``history`` item is a number or ``gpus`` is a
    string. Such parts are removed here, each with a warning, so that the rest of the file is
    ingested (inputs.md: skip what can't be read, say why, go on). None when the bytes are not
    a JSON object at all. ``offset``: the history entries before these (a piece of a large file).
    """
    try:
        # bytes that are not UTF-8 are read as U+FFFD (the caller warns: json_text.not_utf8); a
        # byte order mark, which DuckDB passes over, is no JSON for Python
        doc = json_text.loads(data.removeprefix(json_text.UTF8_BOM).decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    warnings: list[str] = []
    try:
        doc = _scrubbed(doc, "", offset, warnings)
    except RecursionError:
        return None
    history = doc.get("history")
    if "history" in doc and not isinstance(history, list):
        warnings.append("history is not a list: ignored")
        del doc["history"]
    elif isinstance(history, list):
        for i, entry in enumerate(history):
            history[i] = _repaired_entry(entry, f"history[{offset + i}]", warnings)
    if "latest" in doc and doc["latest"] is not None:
        if isinstance(doc["latest"], dict):
            doc["latest"] = _repaired_entry(doc["latest"], "latest", warnings)
        else:
            warnings.append("latest is not an object: ignored")
            del doc["latest"]
    checkpoints = doc.get("checkpoints")
    if "checkpoints" in doc and not isinstance(checkpoints, list):
        warnings.append("checkpoints is not a list: ignored")
        del doc["checkpoints"]
    elif isinstance(checkpoints, list):
        # an item that is no object is one of no step, in its place: "checkpoints[1]: no step: checkpoint skipped"
        doc["checkpoints"] = [c if isinstance(c, dict) else {} for c in checkpoints]
    return json.dumps(doc, allow_nan=True), warnings


def _scrubbed(value: Any, place: str, offset: int, warnings: list[str]) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD, each
    string so changed with a warning naming its place (``config.output_dir``, ``history[3].loss``)."""
    if isinstance(value, str):
        if json_text.LONE_SURROGATE.search(value) is None:
            return value
        warnings.append(
            f"{place or 'a key'}: {value[:40]!r} holds a lone surrogate escape (not valid Unicode): replaced by U+FFFD"
        )
        return json_text.without_surrogates(value)
    if isinstance(value, dict):
        scrubbed = {}
        for key, item in value.items():
            name = _scrubbed(key, f"{place}.{key!r}" if place else repr(key), offset, warnings)
            where = f"{place}.{name}" if place else name
            scrubbed[name] = _scrubbed(item, where, offset, warnings)
        return scrubbed
    if isinstance(value, list):
        first = offset if place == "history" else 0  # a piece of a large file's history
        return [_scrubbed(item, f"{place}[{first + i}]", offset, warnings) for i, item in enumerate(value)]
    return value


def _repaired_entry(entry: object, place: str, warnings: list[str]) -> dict:
    if not isinstance(entry, dict):
        return {}  # staged as an entry without a step: skipped with that warning
    gpus = entry.get("gpus")
    if "gpus" in entry and gpus is not None and not isinstance(gpus, list):
        warnings.append(f"{place}: gpus is not a list: dropped")
        del entry["gpus"]
    elif isinstance(gpus, list):
        # An item that is no object is one that names no GPU and holds no reading, in its place:
        # dropped with the warning of GPUS_SELECT's `unusable` ("gpus[0]: no index, uuid or
        # reading: not a GPU, dropped"), and a reading after it without an index keeps the index
        # of its place as written. (Session 30: such items were taken out of the list, and the
        # readings after them given their index here: an empty one, `{}`, then named a GPU, and
        # a null's warning named the place before its own.)
        entry["gpus"] = [g if g is None or isinstance(g, dict) else {} for g in gpus]
    return entry


# Numeric fields holding JSON null. DuckDB's reader makes a null an SQL NULL, which the SQL
# above can't tell from an absent field; inputs.md asks for a warning. So the files that contain
# `null` at all are read again, each entry as a MAP, which keeps a key whose value is null.
# Entries are numbered as in BATCH_ENTRIES (history, then latest, else the legacy snapshot).
# `step` is not among the fields, and entries without a valid step get no null warning: such an
# entry is skipped, with a warning of its own. A null timestamp is dropped as a null number is (a
# `latest` or a legacy snapshot then takes updated_at's stand-in, as without one); so are the job's
# own times and step counts, and a checkpoint's path, saved_at and eval_loss (a checkpoint without
# a valid step is skipped, with a warning of its own).
ENTRY_NUMBERS = ["timestamp", "loss", "eval_loss", "learning_rate", "samples_per_second", "iteration_time", "samples"]
GPU_NUMBERS = ["index", "utilization_percent", "memory_used_mb", "memory_total_mb", "temperature_c", "power_w"]
SNAPSHOT_NUMBERS = [*ENTRY_NUMBERS, "gpu_utilization", "gpu_memory_mb", "gpu_temperature"]
JOB_FIELDS = ["created_at", "started_at", "ended_at", "updated_at", "current_step", "total_steps", "max_steps"]
CHECKPOINT_FIELDS = ["path", "saved_at", "eval_loss"]

NULL_FIELDS = {
    "entry_fields": ENTRY_NUMBERS,
    "gpu_fields": GPU_NUMBERS,
    "snapshot_fields": SNAPSHOT_NUMBERS,
    "job_fields": JOB_FIELDS,
    "checkpoint_fields": CHECKPOINT_FIELDS,
}
# json_type of each of JOB_FIELDS ('NULL' for a JSON null, NULL where absent): one parse of the document
_JOB_PATHS = "[" + ", ".join(f"'$.{name}'" for name in JOB_FIELDS) + "]"

FILES_WITH_NULL = "SELECT filename FROM read_text($files) WHERE contains(content, 'null')"

NULL_DOCS = f"""
CREATE OR REPLACE TEMP TABLE null_docs AS
WITH docs AS (
    SELECT filename, json,
           TRY_CAST(json AS STRUCT(history MAP(VARCHAR, JSON)[], latest MAP(VARCHAR, JSON),
                                   checkpoints MAP(VARCHAR, JSON)[])) AS doc
    FROM read_json_objects($files, format = 'unstructured', filename = true, maximum_object_size = $max_bytes)
)
SELECT f.file_id, coalesce(f.history_entries, 0) AS history_entries, 0 AS history_offset, d.doc.history AS history,
       d.doc.latest AS latest, d.doc.checkpoints AS checkpoints, json_type(d.json, {_JOB_PATHS}) AS job_types,
       CASE WHEN d.doc.history IS NULL AND d.doc.latest IS NULL THEN TRY_CAST(d.json AS MAP(VARCHAR, JSON)) END
           AS flat
FROM docs d
JOIN batch_files f
  ON f.read_path = CASE WHEN d.filename = $rests THEN d.filename || '#' || (d.json ->> '$.{REST_KEY}')
                        ELSE d.filename END
"""

# A piece of a large file (PIECE_TABLES): its history only, positions after `offset` entries.
PIECE_NULL_DOCS = """
CREATE OR REPLACE TEMP TABLE null_docs AS
SELECT CAST($file_id AS INTEGER) AS file_id, 0 AS history_entries, CAST($offset AS BIGINT) AS history_offset,
       TRY_CAST(json AS STRUCT(history MAP(VARCHAR, JSON)[])).history AS history,
       CAST(NULL AS MAP(VARCHAR, JSON)) AS latest, CAST(NULL AS MAP(VARCHAR, JSON)[]) AS checkpoints,
       CAST(NULL AS VARCHAR[]) AS job_types, CAST(NULL AS MAP(VARCHAR, JSON)) AS flat
FROM read_json_objects($files, format = 'unstructured', maximum_object_size = $max_bytes)
"""

NULL_WARNINGS = """
INSERT INTO {target}
WITH entries AS (
    SELECT file_id, 'history[' || CAST(pos - 1 AS VARCHAR) || ']' AS place, pos, m, false AS flat
    FROM (SELECT file_id, unnest(history) AS m, generate_subscripts(history, 1) + history_offset AS pos
          FROM null_docs)
    UNION ALL
    SELECT file_id, 'latest', len(coalesce(history, [])) + history_entries + 1, latest, false
    FROM null_docs WHERE latest IS NOT NULL
    UNION ALL
    SELECT file_id, 'snapshot', 1, flat, true FROM null_docs WHERE flat['step'] IS NOT NULL
), labelled AS (
    SELECT file_id, pos, m, flat,
           place || ' (step ' || CAST(rl_whole(m['step'], 0, 1000000000000000000) AS VARCHAR) || ')'
               AS label
    FROM entries
), found AS (
    SELECT file_id, pos, 0 AS sub, label,
           list_filter(CASE WHEN flat THEN $snapshot_fields ELSE $entry_fields END,
                       lambda k: map_contains(m, k) AND m[k] IS NULL) AS nulls
    FROM labelled
    WHERE label IS NOT NULL
    UNION ALL
    SELECT file_id, pos, gpos, label || ' gpus[' || CAST(gpos - 1 AS VARCHAR) || ']',
           list_filter($gpu_fields, lambda k: map_contains(g, k) AND g[k] IS NULL)
    FROM (
        SELECT file_id, pos, label, unnest(gpus) AS g, generate_subscripts(gpus, 1) AS gpos
        FROM (SELECT file_id, pos, label, TRY_CAST(m['gpus'] AS MAP(VARCHAR, JSON)[]) AS gpus
              FROM labelled WHERE label IS NOT NULL AND NOT flat AND contains(m['gpus'], 'null'))
    )
    UNION ALL
    SELECT file_id, 0, 1, NULL, list_filter($job_fields, lambda k, i: job_types[i] = 'NULL')
    FROM null_docs WHERE job_types IS NOT NULL
    UNION ALL
    SELECT file_id, 1000000000 + cpos, 1, 'checkpoints[' || CAST(cpos - 1 AS VARCHAR) || ']',
           list_filter($checkpoint_fields, lambda k: map_contains(c, k) AND c[k] IS NULL)
    FROM (SELECT file_id, unnest(checkpoints) AS c, generate_subscripts(checkpoints, 1) AS cpos
          FROM null_docs WHERE checkpoints IS NOT NULL)
    WHERE rl_whole(c['step'], 0, 1000000000000000000) IS NOT NULL
)
SELECT file_id, pos, sub,
       concat_ws(': ', label, array_to_string(list_transform(nulls, lambda k: k || ' is null, dropped'), '; '))
FROM found
WHERE len(nulls) > 0
"""
BATCH_NULL_WARNINGS = NULL_WARNINGS.format(target="batch_warnings")
SPLIT_NULL_WARNINGS = NULL_WARNINGS.format(target="split_warnings")  # a piece of a large file's (read_piece)


def add_null_warnings(con: duckdb.DuckDBPyConnection, paths: list[str], rests: str | None = None) -> None:
    """Add to ``batch_warnings`` a warning for every numeric field of these files holding null."""
    try:
        found = [path for (path,) in con.execute(FILES_WITH_NULL, {"files": db.exact_paths(paths)}).fetchall()]
    except sql.READ_ERRORS:  # not UTF-8, say: read them all
        found = paths
    if not found:
        return
    con.execute(NULL_DOCS, {"files": db.exact_paths(found), "rests": rests, "max_bytes": buffer_bytes(found)})
    con.execute(BATCH_NULL_WARNINGS, NULL_FIELDS)


def looks_complete(path: Path, size: int) -> bool:
    """Cheap check that a file starts with '{' and ends with '}' (ignoring whitespace)."""
    if size == 0:
        return False
    with path.open("rb") as f:
        head = f.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()
        while not head and (block := f.read(_SCAN_BYTES)):  # padding at the start: read on past it
            head = block.lstrip()
        f.seek(max(0, size - 64))
        tail = f.read().rstrip()
        end = max(0, size - 64)
        while not tail and end > 0:  # padding at the end: read back past it
            start = max(0, end - _SCAN_BYTES)
            f.seek(start)
            tail = f.read(end - start).rstrip()
            end = start
    return head.startswith(b"{") and tail.endswith(b"}")


# looks_complete's reads past leading or trailing whitespace (JSON allows any amount of it)
_SCAN_BYTES = 64 << 10
