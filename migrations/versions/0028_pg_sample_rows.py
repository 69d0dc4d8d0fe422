"""PostgreSQL's raw GPU samples packed one row per GPU and minute (issue #18); DuckDB: no data change.

PostgreSQL stored a raw sample as a row of gpu_samples_hot: about 393 bytes with its primary-key
entry. This revision replaces that table with ``gpu_sample_minutes``: one row per (job_id, host,
gpu_key, minute), each sample's offset from the minute in microseconds and every other column as
an array in time order (NULL items kept, the same doubles), compressed by TOAST
(warehouse/pg_samples.py). The view ``gpu_samples`` unnests it into the columns it had (same
names, types and order), so the views reading it give the same rows. Existing samples are
converted. Going back unpacks them into gpu_samples_hot again. DuckDB keeps its hot table and
Parquet parts.

``step_gpu_alignment`` finds each step's latest sample with the dialect's new
``asof_sample_left_join``: on PostgreSQL in the GPU's last two minutes up to the step, through the
packed table's key (a bound on the view's ts reaches no index); on DuckDB the same ASOF JOIN as
before (the view is created again, with the same SQL but for its comment).

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine, frozen
from runlytics.warehouse import dialect

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

# a sample's columns other than its key and time, in gpu_samples' order
PACKED = (
    "gpu_index", "gpu_uuid", "utilization_percent", "memory_used_mb", "memory_total_mb", "temperature_c",
    "power_w", "sm_clock_mhz", "clocks_event_reasons", "source",
)  # fmt: skip
# A row is a minute's samples: at least one, and every array one item per sample (the view's
# unnest would pad a shorter one with NULLs; a row without samples would hide the GPU's earlier
# minutes from step_gpu_alignment's lookup of its last two minutes, dialect.asof_sample_left_join)
SAME_LENGTH = "cardinality(offsets_us) > 0 AND " + " AND ".join(
    f"cardinality({name}) = cardinality(offsets_us)" for name in PACKED
)
CREATE = f"""
CREATE TABLE gpu_sample_minutes (
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_key VARCHAR NOT NULL, minute TIMESTAMP NOT NULL,
    offsets_us INTEGER[] NOT NULL, gpu_index INTEGER[] NOT NULL, gpu_uuid VARCHAR[] NOT NULL,
    utilization_percent DOUBLE PRECISION[] NOT NULL, memory_used_mb DOUBLE PRECISION[] NOT NULL,
    memory_total_mb DOUBLE PRECISION[] NOT NULL, temperature_c DOUBLE PRECISION[] NOT NULL,
    power_w DOUBLE PRECISION[] NOT NULL, sm_clock_mhz DOUBLE PRECISION[] NOT NULL,
    clocks_event_reasons BIGINT[] NOT NULL, source VARCHAR[] NOT NULL,
    PRIMARY KEY (job_id, host, gpu_key, minute),
    CONSTRAINT gpu_sample_minutes_arrays CHECK ({SAME_LENGTH})
)"""
# Every array compressed and kept in the row (bench/pg_telemetry.py, 351,360 samples): TOAST
# compresses a row's values only while the row is over toast_tuple_target (about 2 kB by default:
# 36.0 bytes a sample), and a lower target alone moves them out of the row into TOAST chunks
# (45.5); with STORAGE MAIN under a target of 128 each array is compressed and stays inline (31.1).
# The compression is the server's default_toast_compression (pglz; lz4 measured 33.2).
TUPLE_TARGET = "ALTER TABLE gpu_sample_minutes SET (toast_tuple_target = 128)"
STORAGE = "ALTER TABLE gpu_sample_minutes " + ", ".join(
    f"ALTER COLUMN {name} SET STORAGE MAIN" for name in ("offsets_us", *PACKED)
)
# the epoch of an interval is an exact NUMERIC in PostgreSQL 14 and later; each array in the order
# of ts, which gpu_samples_hot's key makes one sample's (so the i-th items are one sample)
FILL = f"""
INSERT INTO gpu_sample_minutes
SELECT job_id, host, gpu_key, date_trunc('minute', ts),
       array_agg(CAST(EXTRACT(EPOCH FROM ts - date_trunc('minute', ts)) * 1000000 AS INTEGER) ORDER BY ts),
       {", ".join(f"array_agg({name} ORDER BY ts)" for name in PACKED)}
FROM gpu_samples_hot
GROUP BY job_id, host, gpu_key, date_trunc('minute', ts)
"""
UNPACKED = f"""
CREATE OR REPLACE VIEW gpu_samples AS
SELECT m.job_id, m.host, u.gpu_index, m.minute + u.offset_us * INTERVAL '1 microsecond' AS ts, u.gpu_uuid,
       u.utilization_percent, u.memory_used_mb, u.memory_total_mb, u.temperature_c, u.power_w, u.sm_clock_mhz,
       u.clocks_event_reasons, u.source, m.gpu_key
FROM gpu_sample_minutes m
CROSS JOIN LATERAL unnest(m.offsets_us, {", ".join(f"m.{name}" for name in PACKED)})
    AS u(offset_us, {", ".join(PACKED)})
"""

# going back: revision 0014's table (key of revision 0010) and view
COLUMNS = (
    "job_id, host, gpu_index, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, "
    "temperature_c, power_w, sm_clock_mhz, clocks_event_reasons, source, gpu_key"
)
HOT = """
CREATE TABLE gpu_samples_hot (
    job_id VARCHAR NOT NULL, host VARCHAR NOT NULL, gpu_index INTEGER NOT NULL, ts TIMESTAMP NOT NULL,
    gpu_uuid VARCHAR, utilization_percent DOUBLE PRECISION, memory_used_mb DOUBLE PRECISION,
    memory_total_mb DOUBLE PRECISION, temperature_c DOUBLE PRECISION, power_w DOUBLE PRECISION,
    sm_clock_mhz DOUBLE PRECISION, clocks_event_reasons BIGINT, source VARCHAR NOT NULL, gpu_key VARCHAR NOT NULL,
    PRIMARY KEY (job_id, host, gpu_key, ts)
)"""
HOT_ONLY = f"CREATE OR REPLACE VIEW gpu_samples AS SELECT {COLUMNS} FROM gpu_samples_hot"


ALIGNMENT = "step_gpu_alignment"  # versions/views/0028/; its copy before: 0018's


def _alignment(revision: str) -> None:
    op.execute(frozen.copy(revision, ALIGNMENT).create_sql(dialect.for_bind(op.get_bind())))


def upgrade() -> None:
    if engine.on_postgres():
        op.execute(CREATE)
        op.execute(TUPLE_TARGET)
        op.execute(STORAGE)
        op.execute(FILL)
        op.execute(UNPACKED)
        op.execute("DROP TABLE gpu_samples_hot")
    _alignment("0028")


def downgrade() -> None:
    _alignment("0018")  # reads the view gpu_samples only
    if not engine.on_postgres():
        return
    op.execute(HOT)
    op.execute(f"INSERT INTO gpu_samples_hot SELECT {COLUMNS} FROM gpu_samples")
    op.execute(HOT_ONLY)
    op.execute("DROP TABLE gpu_sample_minutes")
