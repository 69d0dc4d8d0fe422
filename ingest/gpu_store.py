"""Storing staged GPU samples: the one way samples enter the warehouse, whatever file they came from.

Readers (``gpu_samples.read_spool``, the nvidia-smi parser) stage a batch in the temporary
table ``batch_gpu_samples`` (the columns of ``gpu_samples.STAGE``, ``seq`` giving the order they
were read in); ``store_staged`` stores it in the caller's transaction.
"""

from __future__ import annotations

import duckdb

from runlytics.warehouse import rollups

# The GPU a sample belongs to: its UUID when it has one, else its index (schema.gpu_samples).
GPU_KEY = "coalesce(gpu_uuid, '#' || CAST(gpu_index AS VARCHAR))"

# A sample seen twice (re-ingest, or twice in one file) is stored once: the later one wins.
UPSERT = f"""
INSERT INTO gpu_samples (job_id, host, gpu_index, ts, gpu_uuid, utilization_percent, memory_used_mb,
                         memory_total_mb, temperature_c, power_w, sm_clock_mhz, clocks_event_reasons, source, gpu_key)
SELECT job_id, host, gpu_index, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb,
       temperature_c, power_w, sm_clock_mhz, clocks_event_reasons, $source, {GPU_KEY}
FROM batch_gpu_samples
QUALIFY row_number() OVER (PARTITION BY job_id, host, {GPU_KEY}, ts ORDER BY seq DESC) = 1
ON CONFLICT (job_id, host, gpu_key, ts) DO UPDATE SET
    gpu_index = excluded.gpu_index, gpu_uuid = excluded.gpu_uuid, utilization_percent = excluded.utilization_percent,
    memory_used_mb = excluded.memory_used_mb, memory_total_mb = excluded.memory_total_mb,
    temperature_c = excluded.temperature_c, power_w = excluded.power_w,
    sm_clock_mhz = excluded.sm_clock_mhz, clocks_event_reasons = excluded.clocks_event_reasons,
    source = excluded.source
"""

# What a batch stored, per GPU: the rollups recompute the minutes it touched.
STORED_KEYS = f"""
CREATE OR REPLACE TEMP TABLE stored_gpu_keys AS
SELECT job_id, host, {GPU_KEY} AS gpu_key, min(ts) AS first_ts, max(ts) AS last_ts
FROM batch_gpu_samples
GROUP BY ALL
"""
JOBS = "SELECT DISTINCT job_id FROM stored_gpu_keys"


def store_staged(con: duckdb.DuckDBPyConnection, source: str) -> set[str]:
    """Store the staged batch (in the caller's transaction); returns the jobs it belongs to."""
    con.execute(UPSERT, {"source": source})
    con.execute(STORED_KEYS)
    rollups.update(con)
    return {job_id for (job_id,) in con.execute(JOBS).fetchall()}
