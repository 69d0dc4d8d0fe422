"""The warehouse's tables, as SQLAlchemy Core metadata (the schema at the head revision).

Times are TIMESTAMP in UTC (no zone stored: every writer converts to UTC first).
Floats are DOUBLE and keep NaN/Infinity as read; the views leave non-finite values out.
Migrations under ``migrations/versions`` build this schema; ``tests/test_migrations.py``
checks that the head revision and this module agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("status", String, nullable=False),  # the vocabulary of inputs.md, or 'unknown'
    Column("created_at", DateTime),
    Column("started_at", DateTime),
    Column("ended_at", DateTime),
    Column("updated_at", DateTime),
    Column("config", JSON),  # kept whole, as written
    Column("model_name", String),  # the known config keys, extracted for the views
    Column("batch_size", Double),
    Column("save_steps", BigInteger),
    Column("target_samples_per_second", Double),
    Column("gpu_count", BigInteger),
    Column("current_step", BigInteger),
    Column("total_steps", BigInteger),
    Column("source_dir", String),
    Column("source_file", String),
    Column("ingested_at", DateTime, nullable=False),
)

steps = Table(
    "steps",
    metadata,
    Column("job_id", String, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("ts", DateTime),
    Column("loss", Double),
    Column("eval_loss", Double),
    Column("learning_rate", Double),
    Column("samples_per_second", Double),
    Column("iteration_time", Double),
    Column("samples", BigInteger),
    # true: ts is the snapshot's updated_at standing in for a missing timestamp (revision 0039);
    # a later ingest of the step then wins as over an untimed row
    Column("ts_stand_in", Boolean),
)

step_gpus = Table(
    "step_gpus",
    metadata,
    Column("job_id", String, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("gpu_index", Integer, nullable=False),
    Column("gpu_uuid", String),
    Column("utilization_percent", Double),
    Column("memory_used_mb", Double),
    Column("memory_total_mb", Double),
    Column("temperature_c", Double),
    Column("power_w", Double),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("job_id", String, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("path", String),
    Column("saved_at", DateTime),
    Column("eval_loss", Double),
    Column("source", String, nullable=False),  # 'list', 'folder' or 'trainer_state'
    PrimaryKeyConstraint("job_id", "step"),
)

ingest_files = Table(
    "ingest_files",
    metadata,
    Column("path", String, primary_key=True),
    Column("kind", String, nullable=False),  # 'progress'
    Column("job_id", String),
    Column("size", BigInteger),
    Column("mtime_ns", BigInteger),
    # size:mtime_ns of the bytes last read; NULL while the file was too fresh to trust it
    Column("fingerprint", String),
    Column("outcome", String, nullable=False),  # 'ingested', 'pending' or 'failed'
    Column("rows", BigInteger, nullable=False),
    Column("warning_count", BigInteger, nullable=False),
    Column("warnings", JSON),  # the first warnings, as a list of strings
    Column("error", String),
    Column("first_seen_at", DateTime, nullable=False),
    Column("last_read_at", DateTime, nullable=False),
    # after last_read_at, where the chain's ADD COLUMN put them (a direct build must match)
    Column("read_offset", BigInteger),  # spool files: bytes read up to the last complete line (0004)
    # what tells the file read before from another (0012), by kind (docs/views.md, ingest_files):
    # spool: 16 hex digits, CRC32Cs of the first line and of the last line before read_offset (8, the
    # CRC32C of the 64 bytes before it, in a record of before session 19); trainers' logs: CRC32C of
    # the 64 bytes before read_offset (LLaMA-Factory: before the lines read); an MLflow run's
    # meta.yaml: its experiment's meta.yaml as read, size:mtime_ns, absent, fresh or unreadable (...);
    # nvidia_smi: SHA-256 of the read_offset bytes read; NULL for the other kinds
    Column("read_digest", String),
)

# Hugging Face Trainer states (revision 0002). A step's trainer-log fields; where a
# progress.json row has the same field for the same step, the progress value wins (view step_facts).
trainer_steps = Table(
    "trainer_steps",
    metadata,
    Column("job_id", String, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("loss", Double),
    Column("eval_loss", Double),
    Column("learning_rate", Double),
    Column("grad_norm", Double),
    Column("epoch", Double),
    Column("metrics", JSON),  # every other numeric key of the step's entries (eval_*, token accuracy, …)
    Column("state_step", BigInteger),  # global_step of the trainer state the row was read from
)

trainer_runs = Table(
    "trainer_runs",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("global_step", BigInteger),
    Column("max_steps", BigInteger),
    Column("save_steps", BigInteger),
    Column("logging_steps", BigInteger),
    Column("train_batch_size", BigInteger),
    Column("best_model_checkpoint", String),
    Column("best_metric", Double),
    Column("completed", Boolean, nullable=False),  # a final summary seen, or global_step reached max_steps
    Column("train_runtime", Double),
    Column("train_samples_per_second", Double),
    Column("train_loss", Double),
    Column("source_file", String),
)

# GPU samples (revision 0004): NVML sampler spools and nvidia-smi CSV logs, tied to a job.
# Keyed by (job, host, gpu_key, ts) (revision 0010): a sample ingested twice is stored once. host
# is '' when unknown. gpu_key is the GPU's UUID (a MIG instance's own) when the sample has one,
# else '#<index>': indexes are not unique on a host (containers and Slurm cgroups number their
# GPUs from 0), UUIDs are.
# Since revision 0014 this table holds only the samples not yet sealed (the current hour, about);
# older ones live in Parquet parts listed by gpu_parts, and readers query the VIEW gpu_samples
# (this table UNION ALL the live parts, same columns; warehouse/parts.py).
gpu_samples_hot = Table(
    "gpu_samples_hot",
    metadata,
    Column("job_id", String, nullable=False),
    Column("host", String, nullable=False),
    Column("gpu_index", Integer, nullable=False),
    Column("ts", DateTime, nullable=False),
    Column("gpu_uuid", String),
    Column("utilization_percent", Double),
    Column("memory_used_mb", Double),
    Column("memory_total_mb", Double),
    Column("temperature_c", Double),
    Column("power_w", Double),
    Column("sm_clock_mhz", Double),
    Column("clocks_event_reasons", BigInteger),  # NVML's clocks-event (throttle) reasons bitmask
    Column("source", String, nullable=False),  # 'spool' or 'nvidia-smi'
    Column("gpu_key", String, nullable=False),
    # one row per (job_id, host, gpu_key, ts), kept by ingest (a delete, then an insert): no key on
    # DuckDB since revision 0026 (its index was most of the file each snapshot copies). PostgreSQL
    # has no such table since revision 0028: its samples are packed one row per GPU and minute
    # (warehouse/pg_samples.py, key job_id, host, gpu_key, minute), copied from DuckDB's, and
    # nothing there enforces one sample per ts either
)

# GPU samples rolled up per job, host, GPU and minute (revision 0015, warehouse/rollups.py),
# maintained at ingest and never pruned: the per-job GPU views read these rows, not the samples.
# Per figure: <f>_n finite readings, <f>_sum their sum (ascending order), <f>_min, <f>_max.
# The *_seconds and energy_wh are job_gpus' time-weighted sums, each sample's interval (to the
# same GPU's next sample) counted in the minute of the sample that starts it.
# From revision 0021 on DuckDB the table is gpu_minutes_hot (the minutes not yet sealed) and
# gpu_minutes a view over it and the minutes' Parquet parts (warehouse/parts.py, GPU_MINUTES); on
# PostgreSQL it stays the table gpu_minutes.
_ROLLED_UP = ("utilization_percent", "memory_used_mb", "temperature_c", "power_w", "sm_clock_mhz")
gpu_minutes_hot = Table(
    "gpu_minutes_hot",
    metadata,
    Column("job_id", String, nullable=False),
    Column("host", String, nullable=False),
    Column("gpu_key", String, nullable=False),
    Column("minute", DateTime, nullable=False),
    Column("gpu_index", Integer, nullable=False),  # the index of the minute's last sample
    Column("gpu_uuid", String),
    Column("samples", BigInteger, nullable=False),
    Column("first_ts", DateTime, nullable=False),
    Column("last_ts", DateTime, nullable=False),
    *(
        Column(f"{figure}_{part}", BigInteger if part == "n" else Double)
        for figure in _ROLLED_UP
        for part in ("n", "sum", "min", "max")
    ),
    Column("memory_total_mb_max", Double),
    Column("nonfinite", BigInteger),  # samples with a non-finite utilization, memory or temperature
    Column("interval_seconds", Double),
    Column("utilization_seconds", Double),
    Column("idle_seconds", Double),  # utilization below 10 %
    Column("reasons_seconds", Double),
    Column("throttled_seconds", Double),
    Column("energy_wh", Double),
    PrimaryKeyConstraint("job_id", "host", "gpu_key", "minute"),
)

# The GPUs (host, gpu_key) each job's samples were rolled up for, with their first and last
# minute (revision 0020): gpu_minutes grouped by job, host and GPU, kept with it by
# warehouse/rollups.py, so that job_gpu_hours counts a job's GPUs and a chart finds its span in
# a few rows instead of grouping every minute of the fleet per request.
job_gpu_series = Table(
    "job_gpu_series",
    metadata,
    Column("job_id", String, nullable=False),
    Column("host", String, nullable=False),
    Column("gpu_key", String, nullable=False),
    Column("first_minute", DateTime, nullable=False),
    Column("last_minute", DateTime, nullable=False),
    PrimaryKeyConstraint("job_id", "host", "gpu_key"),
)

# The live Parquet parts of sealed tables (revision 0014): path relative to <db>.parts/, the
# table they belong to ('gpu_samples'), their (day, host) and time range, rows and size on disk.
# It changes only in the transaction that changes the data, with the view that names the parts.
gpu_parts = Table(
    "gpu_parts",
    metadata,
    Column("path", String, primary_key=True),
    Column("table_name", String, nullable=False),
    Column("day", Date, nullable=False),
    Column("host", String, nullable=False),
    Column("min_ts", DateTime, nullable=False),
    Column("max_ts", DateTime, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

# Parts replaced (rewritten, compacted, pruned) whose files wait until no kept snapshot can name
# them: after_snapshot is the newest snapshot's number when they were retired (NULL: none).
gpu_parts_retired = Table(
    "gpu_parts_retired",
    metadata,
    Column("path", String, primary_key=True),
    Column("table_name", String, nullable=False),
    Column("retired_at", DateTime, nullable=False),
    Column("after_snapshot", BigInteger),
)

# The (host, day)s whose raw GPU samples retention pruned (revision 0044): a later sample of such a
# day does not make it whole again, so readers and the raw window ask here, not the manifest.
gpu_pruned_days = Table(
    "gpu_pruned_days",
    metadata,
    Column("host", String, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("pruned_at", DateTime, nullable=False),
)

# One row per ingest run (revision 0005): written when the run starts ('running') and completed
# when it ends; a run killed on the way stays 'running' until the next run marks it 'interrupted'.
ingest_runs = Table(
    "ingest_runs",
    metadata,
    Column("run_id", BigInteger, primary_key=True, autoincrement=False),  # nanoseconds since the epoch at the start
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Column("outcome", String, nullable=False),  # 'running', 'ok', 'files_failed', 'error'
    Column("files_seen", BigInteger),
    Column("ingested", BigInteger),
    Column("unchanged", BigInteger),
    Column("pending", BigInteger),
    Column("failed", BigInteger),
    Column("rows", BigInteger),
    Column("warnings", BigInteger),
    Column("jobs_changed", BigInteger),
    Column("seconds", Double),
    Column("error", String),
    Column("host", String),
    Column("pid", BigInteger),
)

# The jobs owed a refresh of their derived rows (revision 0009): queued in the transaction that
# changes their facts, removed in the one that refreshes them, so a kill between loses nothing.
refresh_queue = Table(
    "refresh_queue",
    metadata,
    Column("job_id", String, primary_key=True),
)

# Every scalar of trainers' own logs and of trainer states, under its own name (revision 0012):
# one value per (job, name, step), the last written. source: 'trainer_state', 'tensorboard',
# 'lightning_csv', 'mlflow' or 'llamafactory'. The view metric_points reads it; the well-known
# names of the tools' logs feed step_facts (its mapping table). No key since revision 0017 (its
# index cost more than reading the points): ingest replaces a stored (job, name, step) itself.
metric_values = Table(
    "metric_values",
    metadata,
    Column("job_id", String, nullable=False),
    Column("name", String, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("ts", DateTime),
    Column("value", Double),
    Column("source", String, nullable=False),
)

# Insights (revision 0011, warehouse/insights.py): the thresholds of insights.md by name, the
# view job_insights materialised per job with the as_of it was computed at, and the as_of of
# every job computed (one with no insights too).
insight_settings = Table(
    "insight_settings",
    metadata,
    Column("name", String, primary_key=True),
    Column("value", Double, nullable=False),
)

insight_results = Table(
    "insight_results",
    metadata,
    Column("job_id", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("severity", String, nullable=False),
    Column("first_step", BigInteger),
    Column("last_step", BigInteger),
    Column("start_time", DateTime),
    Column("end_time", DateTime),
    Column("host", String),
    Column("gpu_index", Integer),
    # the GPU kinds' GPU (its UUID, else '#<index>'): two GPUs of a host can share an index, and
    # the fleet's keyset pages order by it (revision 0037)
    Column("gpu_key", String),
    Column("value", Double),
    Column("reference", Double),
    Column("message", String),
    Column("as_of", DateTime, nullable=False),
)

insight_jobs = Table(
    "insight_jobs",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("as_of", DateTime, nullable=False),
)

# Ingest into PostgreSQL through a stage (revision 0022, ingest/postgres.py). On the stage (a
# DuckDB warehouse): the jobs owed a publish, and named marks (the newest run published). On
# PostgreSQL: the ingester that published each job. Each engine leaves the other's tables empty.
publish_queue = Table(
    "publish_queue",
    metadata,
    Column("job_id", String, primary_key=True),
)

publish_marks = Table(
    "publish_marks",
    metadata,
    Column("name", String, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

job_owners = Table(
    "job_owners",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("ingester", String, nullable=False),
    Column("published_at", DateTime, nullable=False),
)

# PostgreSQL (revision 0027, ingest/postgres.py): the models whose slow_vs_peers a publish's batch
# made stale, until a recompute takes them. No key (concurrent batches insert without waiting).
# DuckDB has the table and leaves it empty.
peer_changes = Table(
    "peer_changes",
    metadata,
    Column("model_name", String, nullable=False),
    Column("ingester", String, nullable=False),
    Column("changed_at", DateTime, nullable=False),
)

# Tables derived from the views, created by migrations with CREATE TABLE AS (their columns are
# the view's): job_results materialises job_analytics, utilization_minutes sums
# gpu_utilization_readings per job and minute (warehouse/results.py).
DERIVED_TABLES = ("job_results", "utilization_minutes")

# Stage only, DuckDB (revision 0024, warehouse/telemetry_outbox.py): per GPU, the minutes
# [lo, hi) a stage's ingest recomputed and PostgreSQL has not received yet; recorded only in a
# stage (publish_marks holds 'telemetry_outbox'). PostgreSQL has the table and leaves it empty.
pg_telemetry_outbox = Table(
    "pg_telemetry_outbox",
    metadata,
    Column("job_id", String, nullable=False),
    Column("host", String, nullable=False),
    Column("gpu_key", String, nullable=False),
    Column("lo", DateTime, nullable=False),
    Column("hi", DateTime, nullable=False),
)
