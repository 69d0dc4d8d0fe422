-- The head's tables in DuckDB's SQL: warehouse/schema.py compiled by duckdb_engine (head.table_ddl).
-- Generated: edit schema.py, then run `python -m runlytics.warehouse.head`.
CREATE TABLE checkpoints (
	job_id VARCHAR NOT NULL,
	step BIGINT NOT NULL,
	path VARCHAR,
	saved_at TIMESTAMP WITHOUT TIME ZONE,
	eval_loss DOUBLE PRECISION,
	source VARCHAR NOT NULL,
	PRIMARY KEY (job_id, step)
);

CREATE TABLE gpu_minutes_hot (
	job_id VARCHAR NOT NULL,
	host VARCHAR NOT NULL,
	gpu_key VARCHAR NOT NULL,
	minute TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	gpu_index INTEGER NOT NULL,
	gpu_uuid VARCHAR,
	samples BIGINT NOT NULL,
	first_ts TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	last_ts TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	utilization_percent_n BIGINT,
	utilization_percent_sum DOUBLE PRECISION,
	utilization_percent_min DOUBLE PRECISION,
	utilization_percent_max DOUBLE PRECISION,
	memory_used_mb_n BIGINT,
	memory_used_mb_sum DOUBLE PRECISION,
	memory_used_mb_min DOUBLE PRECISION,
	memory_used_mb_max DOUBLE PRECISION,
	temperature_c_n BIGINT,
	temperature_c_sum DOUBLE PRECISION,
	temperature_c_min DOUBLE PRECISION,
	temperature_c_max DOUBLE PRECISION,
	power_w_n BIGINT,
	power_w_sum DOUBLE PRECISION,
	power_w_min DOUBLE PRECISION,
	power_w_max DOUBLE PRECISION,
	sm_clock_mhz_n BIGINT,
	sm_clock_mhz_sum DOUBLE PRECISION,
	sm_clock_mhz_min DOUBLE PRECISION,
	sm_clock_mhz_max DOUBLE PRECISION,
	memory_total_mb_max DOUBLE PRECISION,
	nonfinite BIGINT,
	interval_seconds DOUBLE PRECISION,
	utilization_seconds DOUBLE PRECISION,
	idle_seconds DOUBLE PRECISION,
	reasons_seconds DOUBLE PRECISION,
	throttled_seconds DOUBLE PRECISION,
	energy_wh DOUBLE PRECISION,
	PRIMARY KEY (job_id, host, gpu_key, minute)
);

CREATE TABLE gpu_parts (
	path VARCHAR NOT NULL,
	table_name VARCHAR NOT NULL,
	day DATE NOT NULL,
	host VARCHAR NOT NULL,
	min_ts TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	max_ts TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	rows BIGINT NOT NULL,
	bytes BIGINT NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (path)
);

CREATE TABLE gpu_parts_retired (
	path VARCHAR NOT NULL,
	table_name VARCHAR NOT NULL,
	retired_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	after_snapshot BIGINT,
	PRIMARY KEY (path)
);

CREATE TABLE gpu_pruned_days (
	host VARCHAR NOT NULL,
	day DATE NOT NULL,
	pruned_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (host, day)
);

CREATE TABLE gpu_samples_hot (
	job_id VARCHAR NOT NULL,
	host VARCHAR NOT NULL,
	gpu_index INTEGER NOT NULL,
	ts TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	gpu_uuid VARCHAR,
	utilization_percent DOUBLE PRECISION,
	memory_used_mb DOUBLE PRECISION,
	memory_total_mb DOUBLE PRECISION,
	temperature_c DOUBLE PRECISION,
	power_w DOUBLE PRECISION,
	sm_clock_mhz DOUBLE PRECISION,
	clocks_event_reasons BIGINT,
	source VARCHAR NOT NULL,
	gpu_key VARCHAR NOT NULL
);

CREATE TABLE ingest_files (
	path VARCHAR NOT NULL,
	kind VARCHAR NOT NULL,
	job_id VARCHAR,
	size BIGINT,
	mtime_ns BIGINT,
	fingerprint VARCHAR,
	outcome VARCHAR NOT NULL,
	rows BIGINT NOT NULL,
	warning_count BIGINT NOT NULL,
	warnings JSON,
	error VARCHAR,
	first_seen_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	last_read_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	read_offset BIGINT,
	read_digest VARCHAR,
	PRIMARY KEY (path)
);

CREATE TABLE ingest_runs (
	run_id BIGINT NOT NULL,
	started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	ended_at TIMESTAMP WITHOUT TIME ZONE,
	outcome VARCHAR NOT NULL,
	files_seen BIGINT,
	ingested BIGINT,
	unchanged BIGINT,
	pending BIGINT,
	failed BIGINT,
	rows BIGINT,
	warnings BIGINT,
	jobs_changed BIGINT,
	seconds DOUBLE PRECISION,
	error VARCHAR,
	host VARCHAR,
	pid BIGINT,
	PRIMARY KEY (run_id)
);

CREATE TABLE insight_jobs (
	job_id VARCHAR NOT NULL,
	as_of TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (job_id)
);

CREATE TABLE insight_results (
	job_id VARCHAR NOT NULL,
	kind VARCHAR NOT NULL,
	severity VARCHAR NOT NULL,
	first_step BIGINT,
	last_step BIGINT,
	start_time TIMESTAMP WITHOUT TIME ZONE,
	end_time TIMESTAMP WITHOUT TIME ZONE,
	host VARCHAR,
	gpu_index INTEGER,
	gpu_key VARCHAR,
	value DOUBLE PRECISION,
	reference DOUBLE PRECISION,
	message VARCHAR,
	as_of TIMESTAMP WITHOUT TIME ZONE NOT NULL
);

CREATE TABLE insight_settings (
	name VARCHAR NOT NULL,
	value DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (name)
);

CREATE TABLE job_gpu_series (
	job_id VARCHAR NOT NULL,
	host VARCHAR NOT NULL,
	gpu_key VARCHAR NOT NULL,
	first_minute TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	last_minute TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (job_id, host, gpu_key)
);

CREATE TABLE job_owners (
	job_id VARCHAR NOT NULL,
	ingester VARCHAR NOT NULL,
	published_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (job_id)
);

CREATE TABLE jobs (
	job_id VARCHAR NOT NULL,
	status VARCHAR NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE,
	started_at TIMESTAMP WITHOUT TIME ZONE,
	ended_at TIMESTAMP WITHOUT TIME ZONE,
	updated_at TIMESTAMP WITHOUT TIME ZONE,
	config JSON,
	model_name VARCHAR,
	batch_size DOUBLE PRECISION,
	save_steps BIGINT,
	target_samples_per_second DOUBLE PRECISION,
	gpu_count BIGINT,
	current_step BIGINT,
	total_steps BIGINT,
	source_dir VARCHAR,
	source_file VARCHAR,
	ingested_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (job_id)
);

CREATE TABLE metric_values (
	job_id VARCHAR NOT NULL,
	name VARCHAR NOT NULL,
	step BIGINT NOT NULL,
	ts TIMESTAMP WITHOUT TIME ZONE,
	value DOUBLE PRECISION,
	source VARCHAR NOT NULL
);

CREATE TABLE peer_changes (
	model_name VARCHAR NOT NULL,
	ingester VARCHAR NOT NULL,
	changed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL
);

CREATE TABLE pg_telemetry_outbox (
	job_id VARCHAR NOT NULL,
	host VARCHAR NOT NULL,
	gpu_key VARCHAR NOT NULL,
	lo TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	hi TIMESTAMP WITHOUT TIME ZONE NOT NULL
);

CREATE TABLE publish_marks (
	name VARCHAR NOT NULL,
	value BIGINT NOT NULL,
	PRIMARY KEY (name)
);

CREATE TABLE publish_queue (
	job_id VARCHAR NOT NULL,
	PRIMARY KEY (job_id)
);

CREATE TABLE refresh_queue (
	job_id VARCHAR NOT NULL,
	PRIMARY KEY (job_id)
);

CREATE TABLE step_gpus (
	job_id VARCHAR NOT NULL,
	step BIGINT NOT NULL,
	gpu_index INTEGER NOT NULL,
	gpu_uuid VARCHAR,
	utilization_percent DOUBLE PRECISION,
	memory_used_mb DOUBLE PRECISION,
	memory_total_mb DOUBLE PRECISION,
	temperature_c DOUBLE PRECISION,
	power_w DOUBLE PRECISION
);

CREATE TABLE steps (
	job_id VARCHAR NOT NULL,
	step BIGINT NOT NULL,
	ts TIMESTAMP WITHOUT TIME ZONE,
	loss DOUBLE PRECISION,
	eval_loss DOUBLE PRECISION,
	learning_rate DOUBLE PRECISION,
	samples_per_second DOUBLE PRECISION,
	iteration_time DOUBLE PRECISION,
	samples BIGINT,
	ts_stand_in BOOLEAN
);

CREATE TABLE trainer_runs (
	job_id VARCHAR NOT NULL,
	global_step BIGINT,
	max_steps BIGINT,
	save_steps BIGINT,
	logging_steps BIGINT,
	train_batch_size BIGINT,
	best_model_checkpoint VARCHAR,
	best_metric DOUBLE PRECISION,
	completed BOOLEAN NOT NULL,
	train_runtime DOUBLE PRECISION,
	train_samples_per_second DOUBLE PRECISION,
	train_loss DOUBLE PRECISION,
	source_file VARCHAR,
	PRIMARY KEY (job_id)
);

CREATE TABLE trainer_steps (
	job_id VARCHAR NOT NULL,
	step BIGINT NOT NULL,
	loss DOUBLE PRECISION,
	eval_loss DOUBLE PRECISION,
	learning_rate DOUBLE PRECISION,
	grad_norm DOUBLE PRECISION,
	epoch DOUBLE PRECISION,
	metrics JSON,
	state_step BIGINT
);

CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

