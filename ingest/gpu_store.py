"""Storing staged GPU samples: the one way samples enter the warehouse, whatever file they came from.

Readers (``gpu_samples.read_spool``, the nvidia-smi parser) stage a batch in the temporary
table ``batch_gpu_samples`` (the columns of ``gpu_samples.STAGE``, ``seq`` giving the order they
were read in); ``store_staged`` stores it in the caller's transaction.

Samples of the current hour (``parts.cutoff``) go to the hot table ``gpu_samples_hot``; older
ones straight to sealed Parquet parts (warehouse/parts.py), so a first ingest of a day-long spool
never passes through the DuckDB file. A sample seen twice is stored once, the later one winning,
wherever the earlier one lies: the hot table, or a part (rewritten without it).
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from runlytics.warehouse import db, parts, retention, rollups
from runlytics.warehouse.dialect import render

TABLE = parts.GPU_SAMPLES

# The GPU a sample belongs to: its UUID when it has one, else its index (schema.gpu_samples).
GPU_KEY = "coalesce(gpu_uuid, '#' || CAST(gpu_index AS VARCHAR))"

# A batch seldom holds a sample twice (a file read twice, a sampler restarted within a second):
# the window that keeps the later read (a sort of the batch) runs only when one does, and deletes
# the earlier reads from the staged batch (seq is unique in a batch). DUPLICATES counts the keys'
# hashes, half the CPU of grouping by the key's four columns; a collision of two hashes only
# runs DEDUP, which compares the keys themselves.
DUPLICATES = f"""
SELECT count(*) <> count(DISTINCT hash(job_id, host, {GPU_KEY}, ts)) FROM batch_gpu_samples
"""
DEDUP = f"""
DELETE FROM batch_gpu_samples WHERE seq IN (
    SELECT seq FROM batch_gpu_samples
    QUALIFY row_number() OVER (PARTITION BY job_id, host, {GPU_KEY}, ts ORDER BY seq DESC) > 1)
RETURNING seq, job_id, host, {GPU_KEY}, ts
"""
# The batch in the stored columns, and its cold part: views, not copies (a first ingest's batch is
# ~all cold, and copying it twice cost more than the parse). The source and the cutoff are values
# of batch_gpu_params, bound once.
PARAMS = "CREATE OR REPLACE TEMP TABLE batch_gpu_params AS SELECT $source AS source, $cutoff AS cutoff"
ROWS = f"""
CREATE OR REPLACE TEMP VIEW batch_gpu_rows AS
SELECT job_id, host, gpu_index, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb,
       temperature_c, power_w, sm_clock_mhz, clocks_event_reasons, p.source, {GPU_KEY} AS gpu_key
FROM batch_gpu_samples, batch_gpu_params p
"""
COLD = """
CREATE OR REPLACE TEMP VIEW batch_gpu_cold AS
SELECT * FROM batch_gpu_rows WHERE ts < (SELECT cutoff FROM batch_gpu_params)
"""
COLD_ROWS = "SELECT count(*) FROM batch_gpu_cold"
DROP_ROWS = "DROP VIEW batch_gpu_cold; DROP VIEW batch_gpu_rows; DROP TABLE batch_gpu_params"
# gpu_samples_hot has no key (revision 0026: its index was most of the DuckDB file that every
# snapshot copies): a sample seen again replaces the stored one by a delete, then an insert
DELETE_RESENT_HOT = """
DELETE FROM gpu_samples_hot h USING batch_gpu_rows b
WHERE b.ts >= $cutoff AND h.job_id = b.job_id AND h.host = b.host AND h.gpu_key = b.gpu_key AND h.ts = b.ts
"""
INSERT_HOT = "INSERT INTO gpu_samples_hot SELECT * FROM batch_gpu_rows WHERE ts >= $cutoff"
# a hot sample not yet sealed (the hour turned during the run) that a cold one replaces
DELETE_REPLACED_HOT = """
DELETE FROM gpu_samples_hot h
USING batch_gpu_cold c
WHERE h.job_id = c.job_id AND h.host = c.host AND h.gpu_key = c.gpu_key AND h.ts = c.ts
"""

# Samples of days past the raw window (--keep-raw-days) whose minute is already rolled up: its raw
# samples may have aged out. When the samples at hand (the batch's, and the raw ones left that the
# batch does not replace) hold again every sample the rollup counted (WHOLE: the same count, first
# and last time, GPU, and per figure the same count, ordered sum, minimum and maximum) and none
# before its first, the minute is recomputed from them with the batch's later ones, as one ingest
# of the final files computes it (an nvidia-smi log imported while it grew is read whole again).
# A minute's last sample counts until the next one, so that holds only when every rolled-up minute
# of the GPU after it, up to the window, is found whole too (else the next sample may be one no
# longer at hand). Otherwise the rollup stands and each such sample is skipped with a warning. Any
# other old sample (a late backfill of a day never seen) is stored as usual, rolled up, and pruned
# later like the rest.
# a sample's own columns (GPU_SAMPLES' without its key's job and host, its source and its gpu_key)
_SAMPLE_COLUMNS = tuple(c for c in parts.GPU_SAMPLES.columns if c not in ("job_id", "host", "source", "gpu_key"))
FINGERPRINT = (
    "gpu_index", "gpu_uuid", "samples", "first_ts", "last_ts",
    *(f"{f}_{x}" for f in rollups.FIGURES for x in ("n", "sum", "min", "max")),
    "memory_total_mb_max", "nonfinite",
    "interval_seconds", "utilization_seconds", "idle_seconds", "reasons_seconds", "throttled_seconds",
)  # fmt: skip
# The time-weighted sums of FINGERPRINT tell a moved sample or changed clocks_event_reasons: the
# samples at hand are computed with their intervals within the minute, and the minute's last one
# with the interval its rollup counted (NEXT_TS: that interval is the rollup's interval_seconds less
# the span first_ts to last_ts, which the others add up to, in whole microseconds; none when 0). The
# next sample's power is not at hand: energy_wh is compared where that interval is none.
_B_KEY = "coalesce(b.gpu_uuid, '#' || CAST(b.gpu_index AS VARCHAR))"
_LAST_US = "CAST(round((m.interval_seconds - @seconds_between(m.first_ts; m.last_ts)) * 1e6) AS BIGINT)"
NEXT_TS = f"CASE WHEN {_LAST_US} >= 1 THEN m.last_ts + to_microseconds({_LAST_US}) END AS next_ts"
_AGAIN = """(SELECT a.*, @seconds_between(a.ts; coalesce(lead(a.ts) OVER w, t.next_ts)) AS interval_seconds,
           lead(a.power_w) OVER w AS next_power_w
    FROM available a JOIN touched t
      ON t.job_id = a.job_id AND t.host = a.host AND t.gpu_key = a.gpu_key AND t.minute = date_trunc('minute', a.ts)
    WHERE a.ts >= t.first_ts AND a.ts <= t.last_ts
    WINDOW w AS (PARTITION BY a.job_id, a.host, a.gpu_key, t.minute ORDER BY a.ts))"""
WHOLE = f"""
CREATE OR REPLACE TEMP TABLE {rollups.WHOLE} AS
WITH touched AS (
    SELECT m.*, {render(NEXT_TS)} FROM gpu_minutes m
    SEMI JOIN (SELECT DISTINCT job_id, host, {GPU_KEY} AS gpu_key, date_trunc('minute', ts) AS minute
               FROM batch_gpu_samples WHERE ts < $first) b
        ON m.job_id = b.job_id AND m.host = b.host AND m.gpu_key = b.gpu_key AND m.minute = b.minute
    WHERE m.minute >= $lo AND m.minute < $first
), available AS (
    SELECT job_id, host, {GPU_KEY} AS gpu_key, {", ".join(_SAMPLE_COLUMNS)} FROM batch_gpu_samples WHERE ts < $first
    UNION ALL
    SELECT s.job_id, s.host, s.gpu_key, {", ".join(f"s.{c}" for c in _SAMPLE_COLUMNS)}
    FROM gpu_samples s
    WHERE s.ts >= $lo AND s.ts < $first
      AND EXISTS (SELECT 1 FROM touched t
                  WHERE t.job_id = s.job_id AND t.host = s.host AND t.gpu_key = s.gpu_key
                    AND t.minute = date_trunc('minute', s.ts))
      AND NOT EXISTS (SELECT 1 FROM batch_gpu_samples b
                      WHERE b.job_id = s.job_id AND b.host = s.host AND {_B_KEY} = s.gpu_key AND b.ts = s.ts)
), again AS ({render(rollups.ROLLUP_TEMPLATE.format(source=_AGAIN))}
), early AS (
    SELECT DISTINCT t.job_id, t.host, t.gpu_key, t.minute
    FROM available a JOIN touched t
      ON t.job_id = a.job_id AND t.host = a.host AND t.gpu_key = a.gpu_key AND t.minute = date_trunc('minute', a.ts)
    WHERE a.ts < t.first_ts
), found AS (
    SELECT t.job_id, t.host, t.gpu_key, t.minute
    FROM touched t
    JOIN again a ON a.job_id = t.job_id AND a.host = t.host AND a.gpu_key = t.gpu_key AND a.minute = t.minute
    ANTI JOIN early e ON e.job_id = t.job_id AND e.host = t.host AND e.gpu_key = t.gpu_key AND e.minute = t.minute
    WHERE {" AND ".join(f"a.{c} IS NOT DISTINCT FROM t.{c}" for c in FINGERPRINT)}
      AND (t.next_ts IS NOT NULL OR a.energy_wh IS NOT DISTINCT FROM t.energy_wh)
), blocked AS (
    SELECT m.job_id, m.host, m.gpu_key, max(m.minute) AS minute
    FROM gpu_minutes m
    SEMI JOIN touched t ON t.job_id = m.job_id AND t.host = m.host AND t.gpu_key = m.gpu_key
    ANTI JOIN found f ON f.job_id = m.job_id AND f.host = m.host AND f.gpu_key = m.gpu_key AND f.minute = m.minute
    WHERE m.minute >= $lo AND m.minute < $first
    GROUP BY m.job_id, m.host, m.gpu_key
)
SELECT f.* FROM found f
LEFT JOIN blocked b ON b.job_id = f.job_id AND b.host = f.host AND b.gpu_key = f.gpu_key
WHERE b.minute IS NULL OR f.minute > b.minute
"""
FIRST_OLD = "SELECT date_trunc('minute', min(ts)) FROM batch_gpu_samples WHERE ts < $first"
SKIP_ROLLED_UP = f"""
DELETE FROM batch_gpu_samples b
WHERE b.ts < $first
  AND EXISTS (SELECT 1 FROM gpu_minutes m
              WHERE m.job_id = b.job_id AND m.host = b.host AND m.gpu_key = {_B_KEY}
                AND m.minute = date_trunc('minute', b.ts))
  AND NOT EXISTS (SELECT 1 FROM {rollups.WHOLE} w
                  WHERE w.job_id = b.job_id AND w.host = b.host AND w.gpu_key = {_B_KEY}
                    AND w.minute = date_trunc('minute', b.ts))
RETURNING seq, job_id, host, {GPU_KEY}, ts
"""

# What a batch stored, per GPU: the rollups recompute the minutes it touched.
STORED_KEYS = f"""
CREATE OR REPLACE TEMP TABLE stored_gpu_keys AS
SELECT job_id, host, {GPU_KEY} AS gpu_key, min(ts) AS first_ts, max(ts) AS last_ts
FROM batch_gpu_samples
GROUP BY ALL
"""
JOBS = "SELECT DISTINCT job_id FROM stored_gpu_keys"


def store_staged(
    con: duckdb.DuckDBPyConnection, source: str, on_skipped: Callable[[list[int]], None] = lambda seqs: None
) -> set[str]:
    """Store the staged batch (in the caller's transaction); returns the jobs it belongs to.
    ``on_skipped`` hears the ``seq`` of each sample not stored (SKIP_ROLLED_UP, and the earlier
    read of a sample read twice whose later read is skipped), so that the caller can name its file
    and line."""
    cutoff = {"cutoff": parts.cutoff(con, TABLE)}
    duplicated = con.execute(DUPLICATES).fetchone()
    # the earlier reads of a sample read twice: skipped (and warned about) with its later read
    superseded = con.execute(DEDUP).fetchall() if duplicated and duplicated[0] else []
    con.execute(rollups.WHOLE_EMPTY)
    window = retention.window_start(con)
    row = con.execute(FIRST_OLD, {"first": window}).fetchone() if window is not None else None
    if row and row[0] is not None:
        con.execute(WHOLE, {"first": window, "lo": row[0]})
        rows = con.execute(SKIP_ROLLED_UP, {"first": window}).fetchall()
        keys = {tuple(key) for (_, *key) in rows}
        skipped = [seq for (seq, *_) in rows] + [seq for (seq, *key) in superseded if tuple(key) in keys]
        if skipped:
            on_skipped(sorted(skipped))
    con.execute(PARAMS, {"source": source, **cutoff})
    con.execute(ROWS)
    con.execute(COLD)
    con.execute(DELETE_RESENT_HOT, cutoff)
    con.execute(INSERT_HOT, cutoff)
    if db.one(con, COLD_ROWS)[0]:
        con.execute(DELETE_REPLACED_HOT)
        parts.store_cold(con, TABLE, "batch_gpu_cold")
        parts.refresh_view(con, TABLE)
    con.execute(DROP_ROWS)
    # the view gpu_samples shows the stored rows now: the rollups read them there
    con.execute(STORED_KEYS)
    rollups.update(con, whole=True)
    return {job_id for (job_id,) in con.execute(JOBS).fetchall()}


# Samples to remove (remove_staged): the keys of the staged batch, wherever they lie.
GONE_TABLE = "gone_gpu_samples"
GONE = f"""
CREATE OR REPLACE TEMP TABLE {GONE_TABLE} AS
SELECT DISTINCT job_id, host, {GPU_KEY} AS gpu_key, ts FROM batch_gpu_samples
"""
DELETE_GONE_HOT = f"""
DELETE FROM {TABLE.hot} h USING {GONE_TABLE} g
WHERE {" AND ".join(f"h.{column} = g.{column}" for column in TABLE.key)}
RETURNING 1
"""
DROP_GONE = f"DROP TABLE {GONE_TABLE}"
GONE_KEYS = f"""
CREATE OR REPLACE TEMP TABLE stored_gpu_keys AS
SELECT job_id, host, gpu_key, min(ts) AS first_ts, max(ts) AS last_ts FROM {GONE_TABLE} GROUP BY ALL
"""
# rollups.update only widens a GPU's row of job_gpu_series: after a removal its span is its minutes' again
RESPAN = """
DELETE FROM job_gpu_series s USING stored_gpu_keys k
WHERE s.job_id = k.job_id AND s.host = k.host AND s.gpu_key = k.gpu_key;
INSERT INTO job_gpu_series
SELECT m.job_id, m.host, m.gpu_key, min(m.minute), max(m.minute)
FROM gpu_minutes m SEMI JOIN stored_gpu_keys k ON k.job_id = m.job_id AND k.host = m.host AND k.gpu_key = m.gpu_key
GROUP BY m.job_id, m.host, m.gpu_key
"""


def remove_staged(con: duckdb.DuckDBPyConnection) -> int:
    """Remove the samples whose keys the staged batch holds, from the hot table and the sealed
    parts (rewritten without them, as store_cold rewrites a part), and recompute their GPUs'
    minutes (in the caller's transaction). Returns the samples removed: fewer than staged when
    some were never stored, or were pruned past the raw window (their minutes then stay)."""
    con.execute(GONE)
    removed = len(con.execute(DELETE_GONE_HOT).fetchall())
    rewritten, from_parts = parts.remove_keys(con, TABLE, GONE_TABLE)
    if rewritten:
        parts.refresh_view(con, TABLE)
    removed += from_parts
    if removed:
        con.execute(GONE_KEYS)
        rollups.update(con)
        con.execute(RESPAN)
    con.execute(DROP_GONE)
    return removed
