"""GPU samples rolled up per job, host, GPU and minute (``gpu_minutes``), maintained at ingest.

The per-job GPU views (job_gpus, job_resources, insight_gpus, utilization_minutes) read these
rows: a job's refresh costs its minutes, not its samples, and its figures stay when the raw
samples age out. Every figure is a grouping of the raw computation's own terms (docs/views.md,
"Exact from rollups"): counts, minima and maxima are the same; sums and means add per-minute
sums, so they equal the raw ones up to float rounding, in one order whatever the threads.

A sample stands for the time until the same GPU's next sample (``gpu_sample_intervals``); its
interval counts in the minute of the sample that starts it. So a batch changes the minutes from
the one holding each GPU's last sample before the batch (its interval now ends at the batch's
first sample) through the minute of the batch's last sample, and ``update`` recomputes exactly
those from ``gpu_samples`` (the hot table and the sealed parts alike). Those before the raw window
whose rollups stand (their samples may be gone) are re-ended from their rollups instead: their last
sample's interval ends at its new next sample.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from . import db, parts, retention, telemetry_outbox
from .dialect import render

# The rollups' idle threshold (utilization below it), insights.md's default gpu_idle.utilization
# (insights.py, the one constant); insight_gpus reads the raw samples for any other threshold.
from .insights import IDLE_UTILIZATION

FIGURES = ("utilization_percent", "memory_used_mb", "temperature_c", "power_w", "sm_clock_mhz")


# One row per (job, host, GPU, minute) of the relation {source}: the samples with their
# interval_seconds and next_power_w (gpu_sample_intervals' columns). The time-weighted sums are
# job_gpus' (see there for the 236 mask); nonfinite counts as job_resources does. Each filtered
# figure is computed once as a column that is NULL where the filter fails (aggregates skip NULLs:
# the same rows, the same ascending order), not as a FILTER per aggregate: a quarter less CPU.
_CLEAN = ",\n       ".join(f"CASE WHEN @finite({f}) THEN {f} END AS {f}_f" for f in FIGURES)
_FIGURE_AGGREGATES = ",\n       ".join(
    f"count({f}_f) AS {f}_n, @ordered_sum({f}_f) AS {f}_sum, min({f}_f) AS {f}_min, max({f}_f) AS {f}_max"
    for f in FIGURES
)
ROLLUP_TEMPLATE = f"""
SELECT job_id, host, gpu_key, date_trunc('minute', ts) AS minute,
       arg_max(gpu_index, ts) AS gpu_index,
       max(gpu_uuid) AS gpu_uuid,
       count(*) AS samples, min(ts) AS first_ts, max(ts) AS last_ts,
       {_FIGURE_AGGREGATES},
       max(memory_total_mb_f) AS memory_total_mb_max,
       count(*) FILTER (WHERE (utilization_percent IS NOT NULL AND utilization_percent_f IS NULL)
                           OR (memory_used_mb IS NOT NULL AND memory_used_mb_f IS NULL)
                           OR (temperature_c IS NOT NULL AND temperature_c_f IS NULL)) AS nonfinite,
       @ordered_sum(interval_seconds) AS interval_seconds,
       @ordered_sum(utilization_interval) AS utilization_seconds,
       @ordered_sum(idle_interval) AS idle_seconds,
       @ordered_sum(reasons_interval) AS reasons_seconds,
       @ordered_sum(throttled_interval) AS throttled_seconds,
       @ordered_sum(energy_term) / 3600 AS energy_wh
FROM (
    SELECT *,
       {_CLEAN},
       CASE WHEN @finite(memory_total_mb) THEN memory_total_mb END AS memory_total_mb_f,
       CASE WHEN @finite(utilization_percent) THEN interval_seconds END AS utilization_interval,
       -- idle time is time with a utilization reading (utilization_interval): -Infinity is none
       CASE WHEN @finite(utilization_percent) AND utilization_percent < {IDLE_UTILIZATION} THEN interval_seconds END
           AS idle_interval,
       CASE WHEN clocks_event_reasons IS NOT NULL THEN interval_seconds END AS reasons_interval,
       CASE WHEN (clocks_event_reasons & 236) <> 0 THEN interval_seconds END AS throttled_interval,
       CASE WHEN @finite(power_w) AND @finite(next_power_w) THEN (power_w + next_power_w) / 2 * interval_seconds END
           AS energy_term
    FROM {{source}}
)
GROUP BY job_id, host, gpu_key, minute
"""

# Every minute from every sample (tests that store samples directly). REBUILD is revision 0015's
# backfill into the table gpu_minutes as it was then; from revision 0021 gpu_minutes is a view
# over the hot table gpu_minutes_hot and sealed Parquet parts (warehouse/parts.py, GPU_MINUTES),
# and REBUILD_HOT fills a warehouse whose minutes are all hot (no minute part yet).
SELECT_ALL = render(ROLLUP_TEMPLATE).format(source="gpu_sample_intervals")
REBUILD = "DELETE FROM gpu_minutes; INSERT INTO gpu_minutes " + SELECT_ALL
REBUILD_HOT = "DELETE FROM gpu_minutes_hot; INSERT INTO gpu_minutes_hot " + SELECT_ALL

# job_gpu_series (revision 0020): gpu_minutes grouped by (job, host, GPU), its first and last
# minute, which job_gpu_hours counts and GPU charts span. A GPU's minutes are only ever replaced
# (update) or all recomputed (rebuild), never removed one by one; and a batch's range [lo, hi)
# starts and ends with minutes that have rows (lo: the minute of a sample, or of a rollup kept
# or recomputed; hi: the one after its last sample's), so widening each GPU's row to its ranges
# keeps the table equal to the grouping.
SERIES_FILL = """
INSERT INTO job_gpu_series
SELECT job_id, host, gpu_key, min(minute), max(minute) FROM gpu_minutes GROUP BY job_id, host, gpu_key
"""
SERIES_REFILL = "DELETE FROM job_gpu_series; " + SERIES_FILL
SERIES_ADD = """
INSERT INTO job_gpu_series
SELECT job_id, host, gpu_key, lo, hi - INTERVAL 1 MINUTE FROM rollup_ranges
ON CONFLICT DO UPDATE SET first_minute = least(first_minute, excluded.first_minute),
                          last_minute = greatest(last_minute, excluded.last_minute)
"""

# Per GPU of the batch, the minutes to recompute [lo, hi) and the first sample at or after hi
# (the next sample of the range's last one). Both read gpu_minutes as it was before the batch:
# the batch stored nothing before first_ts or at/after hi, so the minute of the GPU's last sample
# before first_ts is the latest minute whose first sample is before first_ts. Minutes before
# $kept, the first time whose raw samples are kept (--keep-raw-days), that have a rollup keep it
# (their samples may have aged out): such a minute is neither lo's previous minute, nor deleted, nor
# inserted again; its last sample's interval is re-ended from the rollup after the insert where the
# batch brings it an earlier next sample (REENDED_ROWS). A minute before
# $kept without a rollup (a late backfill of an old day: store_staged keeps those samples) is
# computed like any other. The minutes read are the hot table's (RANGES), plus those of the sealed
# parts that may change the answer (PARTS_NEEDED; RANGES_WITH_PARTS): a cron run's minute reads the
# hot hour alone.
# The exception: a minute before $kept listed in WHOLE (store_staged found every sample its rollup
# counted again, in the batch or the raw samples left, and stored them) is recomputed like one
# inside the window, so a piece of it that arrives later is rolled up with the rest.
WHOLE = "rollup_whole"
WHOLE_EMPTY = f"CREATE OR REPLACE TEMP TABLE {WHOLE} (job_id VARCHAR, host VARCHAR, gpu_key VARCHAR, minute TIMESTAMP)"
_WHOLE_MATCH = "w.job_id = m.job_id AND w.host = m.host AND w.gpu_key = m.gpu_key AND w.minute = m.minute"


def _ranges(minutes: str, *, whole: bool) -> str:
    """rollup_ranges from the minutes of ``minutes`` (a table, or a parenthesised query of
    gpu_minutes' key and first_ts). ``whole``: minutes before $kept listed in WHOLE count as
    inside the window. Without (the PLAIN_ statements, for the runs that found no such minute:
    every cron run but a backfill's) the join to WHOLE here and its EXISTS in _delete and _insert
    are left out: they cost a cron run's update a third more, and find nothing."""
    recomputed = "(m.minute >= $kept OR w.minute IS NOT NULL)" if whole else "m.minute >= $kept"
    join_whole = f"LEFT JOIN {WHOLE} w ON {_WHOLE_MATCH}\n" if whole else ""
    return f"""
CREATE OR REPLACE TEMP TABLE rollup_ranges AS
SELECT s.job_id, s.host, s.gpu_key,
       coalesce(max(m.minute) FILTER (WHERE m.first_ts < s.first_ts AND {recomputed}),
                date_trunc('minute', s.first_ts)) AS lo,
       max(m.minute) FILTER (WHERE m.first_ts < s.first_ts AND {recomputed}) AS lo_found,
       date_trunc('minute', s.last_ts) + INTERVAL 1 MINUTE AS hi,
       min(m.first_ts) FILTER (WHERE m.minute >= date_trunc('minute', s.last_ts) + INTERVAL 1 MINUTE) AS next_ts
FROM stored_gpu_keys s
LEFT JOIN {minutes} m ON m.job_id = s.job_id AND m.host = s.host AND m.gpu_key = s.gpu_key
{join_whole}GROUP BY s.job_id, s.host, s.gpu_key, s.first_ts, s.last_ts
"""


# the hot minutes and those of the minute parts PARTS_NEEDED named ($files)
_MINUTE_COLUMNS = "job_id, host, gpu_key, minute, first_ts"
HOT_AND_PART_MINUTES = (
    f"(SELECT {_MINUTE_COLUMNS} FROM gpu_minutes_hot UNION ALL SELECT {_MINUTE_COLUMNS} FROM {parts.READ_FILES})"
)
RANGES = _ranges("gpu_minutes_hot", whole=True)
RANGES_WITH_PARTS = _ranges(HOT_AND_PART_MINUTES, whole=True)
PLAIN_RANGES = _ranges("gpu_minutes_hot", whole=False)
PLAIN_RANGES_WITH_PARTS = _ranges(HOT_AND_PART_MINUTES, whole=False)
# the minute parts' rows of the manifest, $t bound to this (parts.py binds the table's name alike)
MINUTE_PARTS = {"t": parts.GPU_MINUTES.name}
# The minute parts (a day of every host each) that may hold a minute deciding a range: within its
# GPU's minutes' span (job_gpu_series: a GPU never rolled up has none), and either before the batch's
# first sample and later than the hot table's answer for lo (or it has none), or at/after hi and
# earlier than the hot table's next sample. rollup_ranges holds the hot table's answers here.
PARTS_NEEDED = """
SELECT DISTINCT p.path
FROM rollup_ranges r
JOIN stored_gpu_keys s ON s.job_id = r.job_id AND s.host = r.host AND s.gpu_key = r.gpu_key
JOIN job_gpu_series g ON g.job_id = r.job_id AND g.host = r.host AND g.gpu_key = r.gpu_key
JOIN gpu_parts p ON p.table_name = $t
WHERE p.max_ts >= g.first_minute AND p.min_ts <= g.last_minute
  AND ((p.min_ts < s.first_ts AND p.max_ts >= $reach AND (r.lo_found IS NULL OR p.max_ts > r.lo_found))
       OR (p.max_ts >= r.hi AND (r.next_ts IS NULL OR p.min_ts < r.next_ts)))
ORDER BY p.path
"""
# The minute parts holding rows of a range (whose rows the update deletes or must see): moved back
# to the hot table first (parts.unseal), sealed again by the next seal. With them the part holding
# the range's next minute where that minute is before $kept: its rollup may be all that is left of
# its first sample, where the range's last interval ends (KEPT_MINUTES).
PARTS_TOUCHED = """
SELECT DISTINCT p.path
FROM rollup_ranges r
JOIN job_gpu_series g ON g.job_id = r.job_id AND g.host = r.host AND g.gpu_key = r.gpu_key
JOIN gpu_parts p ON p.table_name = $t
WHERE p.max_ts >= g.first_minute AND p.min_ts <= g.last_minute
  AND ((p.min_ts < r.hi AND p.max_ts >= r.lo)
       OR (r.next_ts < $kept AND p.min_ts <= date_trunc('minute', r.next_ts)
           AND p.max_ts >= date_trunc('minute', r.next_ts)))
ORDER BY p.path
"""
# the whole time span of the ranges, bound as constants so that the scans of gpu_samples skip
# the row groups (and Parquet parts) outside it
SPAN = "SELECT min(lo), max(coalesce(next_ts, hi)) FROM rollup_ranges"


def _delete(*, whole: bool) -> str:
    """Delete the ranges' minutes that are recomputed (``whole``: as in _ranges)."""
    recomputed = (
        f"(m.minute >= $kept OR EXISTS (SELECT 1 FROM {WHOLE} w WHERE {_WHOLE_MATCH}))"
        if whole
        else "m.minute >= $kept"
    )
    return f"""
DELETE FROM gpu_minutes_hot m USING rollup_ranges r
WHERE m.job_id = r.job_id AND m.host = r.host AND m.gpu_key = r.gpu_key AND m.minute >= r.lo AND m.minute < r.hi
  AND {recomputed}
"""


DELETE = _delete(whole=True)
PLAIN_DELETE = _delete(whole=False)
# The samples of the ranges plus each range's next sample, their intervals computed as
# gpu_sample_intervals does; the next sample itself is left out of the rollup.
RANGE_SAMPLES = """
(SELECT * FROM (
    SELECT g.*, r.hi,
           @seconds_between(g.ts; lead(g.ts) OVER w) AS interval_seconds,
           lead(g.power_w) OVER w AS next_power_w
    FROM gpu_samples g
    JOIN rollup_ranges r ON g.job_id = r.job_id AND g.host = r.host AND g.gpu_key = r.gpu_key
    WHERE g.ts >= $lo AND g.ts <= $last
      AND g.ts >= r.lo AND g.ts <= coalesce(r.next_ts, r.hi)
    WINDOW w AS (PARTITION BY g.job_id, g.host, g.gpu_key ORDER BY g.ts)
) WHERE ts < hi)
"""
# RANGE_SAMPLES where a range holds minutes before $kept whose rollups stand (KEPT_MINUTES, listed
# after DELETE: the range's minutes left in the hot table, and the range's next minute, at next_ts):
# their raw samples may have aged out, so a sample's lead() may run across such a minute to a later
# one, and count time its samples count already, or find no next sample at all (the range's last
# one, before a next minute whose samples are gone). Each interval ends at the first sample of the
# next kept minute instead (ASOF: the least first_ts after the sample), as one ingest of the same
# samples ends it; that sample's power is known when each of the minute's samples had the same
# finite one, else the energy term is dropped (unknown, not invented). A cron run's ranges lie
# inside the window: it never runs this. (inside: a minute of [lo, hi), re-ended after the insert.)
KEPT = "rollup_kept"
KEPT_MINUTES = f"""
CREATE OR REPLACE TEMP TABLE {KEPT} AS
SELECT m.job_id, m.host, m.gpu_key, m.first_ts,
       CASE WHEN m.power_w_n = m.samples AND m.power_w_min = m.power_w_max THEN m.power_w_min END AS first_power_w,
       m.minute, m.minute < r.hi AS inside
FROM gpu_minutes_hot m
JOIN rollup_ranges r ON m.job_id = r.job_id AND m.host = r.host AND m.gpu_key = r.gpu_key
WHERE ((m.minute >= r.lo AND m.minute < r.hi) OR m.first_ts = r.next_ts) AND m.minute < $kept
"""
CAPPED_RANGE_SAMPLES = f"""
(SELECT c.*, @seconds_between(c.ts; c.interval_end) AS interval_seconds FROM (
    SELECT s.*,
           CASE WHEN k.first_ts < coalesce(s.lead_ts, k.first_ts + INTERVAL 1 SECOND) THEN k.first_ts
                ELSE s.lead_ts END AS interval_end,
           CASE WHEN k.first_ts < coalesce(s.lead_ts, k.first_ts + INTERVAL 1 SECOND) THEN k.first_power_w
                ELSE s.lead_power_w END AS next_power_w
    FROM (
        SELECT g.*, r.hi, lead(g.ts) OVER w AS lead_ts, lead(g.power_w) OVER w AS lead_power_w
        FROM gpu_samples g
        JOIN rollup_ranges r ON g.job_id = r.job_id AND g.host = r.host AND g.gpu_key = r.gpu_key
        WHERE g.ts >= $lo AND g.ts <= $last
          AND g.ts >= r.lo AND g.ts <= coalesce(r.next_ts, r.hi)
        WINDOW w AS (PARTITION BY g.job_id, g.host, g.gpu_key ORDER BY g.ts)
    ) s
    ASOF LEFT JOIN {KEPT} k ON k.job_id = s.job_id AND k.host = s.host AND k.gpu_key = s.gpu_key AND k.first_ts > s.ts
    WHERE s.ts < s.hi
) c)
"""
# every minute of the ranges is in the hot table now (PARTS_TOUCHED unsealed)
_WHOLE_EXISTS = f"""   OR EXISTS (SELECT 1 FROM {WHOLE} w
              WHERE w.job_id = x.job_id AND w.host = x.host AND w.gpu_key = x.gpu_key AND w.minute = x.minute)
"""


def _insert(samples: str, *, whole: bool) -> str:
    """Insert the rollups of ``samples`` (RANGE_SAMPLES or CAPPED_RANGE_SAMPLES) whose minutes are
    recomputed (``whole``: as in _ranges) or have no rollup."""
    rollup = render(ROLLUP_TEMPLATE.format(source=samples))
    return f"""INSERT INTO gpu_minutes_hot SELECT * FROM ({rollup}) x
WHERE x.minute >= $kept
{_WHOLE_EXISTS if whole else ""}   OR NOT EXISTS (SELECT 1 FROM gpu_minutes_hot m
                  WHERE m.job_id = x.job_id AND m.host = x.host AND m.gpu_key = x.gpu_key AND m.minute = x.minute)
"""


INSERT = _insert(RANGE_SAMPLES, whole=True)
CAPPED_INSERT = _insert(CAPPED_RANGE_SAMPLES, whole=True)
PLAIN_INSERT = _insert(RANGE_SAMPLES, whole=False)
PLAIN_CAPPED_INSERT = _insert(CAPPED_RANGE_SAMPLES, whole=False)

# A minute whose rollup stands before the window (its raw samples may be gone) counts its last
# sample's interval until the next sample, and a batch may bring an earlier next one: a late sample in
# the gap after a pruned minute, or a GPU's next sample arriving after its previous day was pruned.
# Such a minute is re-ended from its rollup after the insert (REENDED_ROWS): the minutes standing
# inside the ranges (KEPT_MINUTES' inside ones), and the one holding a GPU's previous sample (its last
# before the batch's first) where that lies before the window. Inside the window (or found whole)
# that one is the range's lo and recomputed from its samples; a GPU whose range found no lo
# (lo_found) though job_gpu_series has minutes of it before lo has them all before the window, none in
# WHOLE. Its latest is looked up in the hot table, then in the minute parts that may hold it, the
# latest parts first, a few more each time, until no part left can hold a later one (PREVIOUS_IN):
# not every rolled-up minute of the GPU. A cron run finds no such GPU in WANTED_ROWS (one row per GPU
# of the batch) and reads nothing more.
WANTED = "rollup_wanted"
WANTED_ROWS = """
SELECT r.job_id, r.host, r.gpu_key, r.lo, g.first_minute
FROM rollup_ranges r
JOIN job_gpu_series g ON g.job_id = r.job_id AND g.host = r.host AND g.gpu_key = r.gpu_key
WHERE r.lo_found IS NULL AND g.first_minute < r.lo
"""


def _previous_in(minutes: str) -> str:
    """Per GPU of WANTED, its latest minute of ``minutes`` (a table or table function) before lo."""
    return f"""
SELECT w.job_id, w.host, w.gpu_key, max(m.minute)
FROM {minutes} m
JOIN {WANTED} w ON m.job_id = w.job_id AND m.host = w.host AND m.gpu_key = w.gpu_key
WHERE m.minute >= $since AND m.minute < $until AND m.minute >= w.first_minute AND m.minute < w.lo
GROUP BY ALL
"""


PREVIOUS_IN = _previous_in("gpu_minutes_hot")
PREVIOUS_IN_PARTS = _previous_in(parts.READ_FILES)  # the minute parts $files
PREVIOUS_CANDIDATES = f"""
SELECT path, min_ts, max_ts FROM {parts.MANIFEST}
WHERE table_name = $t AND max_ts >= $since AND min_ts < $until
ORDER BY max_ts DESC, path
"""
PREVIOUS = "rollup_previous"
PREVIOUS_TABLE = (
    f"CREATE OR REPLACE TEMP TABLE {PREVIOUS} (job_id VARCHAR, host VARCHAR, gpu_key VARCHAR, minute TIMESTAMP, "
    "sealed BOOLEAN)"
)
# the parts holding the sealed ones (unsealed with the ranges' parts: the minute is updated in place)
PREVIOUS_PARTS = f"""
SELECT DISTINCT p.path FROM {parts.MANIFEST} p
JOIN {PREVIOUS} v ON v.sealed AND p.min_ts <= v.minute AND p.max_ts >= v.minute
WHERE p.table_name = $t
ORDER BY p.path
"""
# Each such minute (STANDING) re-ended after the insert, when every minute of the ranges is hot: its
# new next sample is the first of the GPU's later minutes before hi, else the range's next_ts; that
# sample's power is its own where it is at hand, else its minute's where all of that minute's samples
# had one. Its old next sample is the one its rollup counted: the last sample's interval is
# interval_seconds less the span first_ts..last_ts, in whole microseconds (as ingest/gpu_store.py's
# WHOLE reads it), none when 0 (an open interval). A minute whose next sample is unchanged stays.
STANDING = "rollup_standing"
STANDING_ROWS = {
    PREVIOUS: f"SELECT job_id, host, gpu_key, minute FROM {PREVIOUS}",
    KEPT: f"SELECT job_id, host, gpu_key, minute FROM {KEPT} WHERE inside",
}
REENDED = "rollup_reended"
_SPAN = "@seconds_between(m.first_ts; m.last_ts)"
_LAST_US = f"CAST(round((m.interval_seconds - {_SPAN}) * 1e6) AS BIGINT)"
_NEXT = f"""
SELECT v.job_id, v.host, v.gpu_key, v.minute, coalesce(min(h.first_ts), r.next_ts) AS next_ts
FROM {STANDING} v
JOIN rollup_ranges r ON r.job_id = v.job_id AND r.host = v.host AND r.gpu_key = v.gpu_key
LEFT JOIN gpu_minutes_hot h ON h.job_id = v.job_id AND h.host = v.host AND h.gpu_key = v.gpu_key
                          AND h.minute > v.minute AND h.minute < r.hi
GROUP BY v.job_id, v.host, v.gpu_key, v.minute, r.next_ts
"""


# Whether the last sample counted in a time-weighted sum x, where the rollup tells (else NULL): with
# an old interval l_old, x holds it (then x >= l_old) or not (then x <= span, the rest's time); x
# below l_old, above span, or equal to interval_seconds (every interval counted) settles it.
def _counted(x: str) -> str:
    return (
        f"CASE WHEN l_old IS NULL THEN NULL WHEN {x} IS NULL OR {x} < l_old THEN false "
        f"WHEN {x} > span + 1e-6 OR {x} = interval_seconds THEN true END"
    )


# x with the last interval l_old replaced by l_new where the last sample counts in it (q true): the
# rest, plus l_new; NULL where nothing is left. Where the rollup can't tell (q NULL), x stands.
def _re_end(x: str, q: str) -> str:
    rest = f"CASE WHEN {q} AND l_old IS NOT NULL THEN nullif({x} - l_old, 0) ELSE {x} END"
    return (
        f"CASE WHEN {q} IS NULL THEN {x} WHEN {q} AND l_new IS NOT NULL THEN coalesce({rest}, 0) + l_new "
        f"ELSE {rest} END"
    )


# Per figure, whether the last sample counts in it: from the minute's counts where they say all or
# none of its samples do (a finite utilization; one below the idle threshold), else from the sum
# itself (clock reasons and throttling have no counts; no reasons, no throttling). The energy is
# exact where every sample of the minute had one finite power p (its trapezoids before the last are
# p * span); none where no sample had a finite power; where the old interval was open, the sum stands
# (the last sample's power is unknown: the new term dropped); else it is unknown (NULL), not the old
# gap's.
_DECIDED = f"""
    SELECT *,
           coalesce(CASE WHEN utilization_percent_n = samples THEN true WHEN utilization_percent_n = 0 THEN false END,
                    {_counted("utilization_seconds")}) AS q_utilization,
           coalesce(CASE WHEN utilization_percent_n < samples THEN NULL
                         WHEN utilization_percent_max < {IDLE_UTILIZATION} THEN true
                         WHEN utilization_percent_min >= {IDLE_UTILIZATION} THEN false END,
                    CASE WHEN utilization_percent_n = 0 AND nonfinite = 0 THEN false END,
                    {_counted("idle_seconds")}) AS q_idle,
           {_counted("reasons_seconds")} AS q_reasons,
           coalesce(CASE WHEN NOT ({_counted("reasons_seconds")}) THEN false END,
                    {_counted("throttled_seconds")}) AS q_throttled,
           CASE WHEN @finite(next_power_w) AND l_new IS NOT NULL THEN (p + next_power_w) / 2 * l_new END AS term
    FROM changed"""
_ENERGY = """CASE WHEN p IS NOT NULL THEN
                CASE WHEN samples > 1 OR term IS NOT NULL
                     THEN ((CASE WHEN samples > 1 THEN p * span ELSE 0 END) + coalesce(term, 0)) / 3600 END
            WHEN power_w_n = 0 OR l_old IS NULL THEN energy_wh END"""
REENDED_ROWS = render(f"""
CREATE OR REPLACE TEMP TABLE {REENDED} AS
WITH nxt AS (
    SELECT n.job_id, n.host, n.gpu_key, n.minute, n.next_ts,
           CASE WHEN s.ts IS NOT NULL THEN s.power_w
                WHEN k.power_w_n = k.samples AND k.power_w_min = k.power_w_max THEN k.power_w_min END AS next_power_w
    FROM ({_NEXT}) n
    LEFT JOIN gpu_samples s ON s.job_id = n.job_id AND s.host = n.host AND s.gpu_key = n.gpu_key
                         AND s.ts = n.next_ts AND s.ts >= $lo AND s.ts <= $last
    LEFT JOIN gpu_minutes_hot k ON k.job_id = n.job_id AND k.host = n.host AND k.gpu_key = n.gpu_key
                               AND k.minute = date_trunc('minute', n.next_ts) AND k.first_ts = n.next_ts
), measured AS (
    SELECT m.*, e.next_ts AS new_next, e.next_power_w, {_SPAN} AS span,
           CASE WHEN {_LAST_US} >= 1 THEN m.last_ts + to_microseconds({_LAST_US}) END AS old_next
    FROM gpu_minutes_hot m
    JOIN nxt e ON e.job_id = m.job_id AND e.host = m.host AND e.gpu_key = m.gpu_key AND e.minute = m.minute
), changed AS (
    SELECT *, @seconds_between(last_ts; old_next) AS l_old, @seconds_between(last_ts; new_next) AS l_new,
           CASE WHEN power_w_n = samples AND power_w_min = power_w_max THEN power_w_min END AS p
    FROM measured
    WHERE new_next IS DISTINCT FROM old_next AND (new_next IS NULL OR new_next > last_ts)
), decided AS ({_DECIDED}
)
SELECT job_id, host, gpu_key, minute,
       {_re_end("interval_seconds", "true")} AS interval_seconds,
       {_re_end("utilization_seconds", "q_utilization")} AS utilization_seconds,
       {_re_end("idle_seconds", "q_idle")} AS idle_seconds,
       {_re_end("reasons_seconds", "q_reasons")} AS reasons_seconds,
       {_re_end("throttled_seconds", "q_throttled")} AS throttled_seconds,
       {_ENERGY} AS energy_wh
FROM decided
""")
_RE_ENDED = (
    "interval_seconds", "utilization_seconds", "idle_seconds", "reasons_seconds", "throttled_seconds", "energy_wh"
)  # fmt: skip
RE_END = f"""
UPDATE gpu_minutes_hot m SET {", ".join(f"{c} = e.{c}" for c in _RE_ENDED)}
FROM {REENDED} e
WHERE m.job_id = e.job_id AND m.host = e.host AND m.gpu_key = e.gpu_key AND m.minute = e.minute
"""
# a stage owes PostgreSQL those minutes too
RECORD_REENDED = telemetry_outbox.recording(
    f"SELECT job_id, host, gpu_key, minute, minute + INTERVAL 1 MINUTE FROM {REENDED}"
)


def update(con: duckdb.DuckDBPyConnection, *, whole: bool = False) -> None:
    """Recompute the minutes of the GPUs named in the temporary table ``stored_gpu_keys``
    (job_id, host, gpu_key, first_ts, last_ts: the samples a batch stored), in the caller's
    transaction, after the samples are stored and readable through the view ``gpu_samples``.
    ``whole``: the temporary table WHOLE lists minutes before the raw window to recompute too
    (store_staged); it is dropped here. Minutes before the raw window whose rollups stand (the
    GPU's previous one, and those inside a range) are re-ended from their rollups where the batch
    gives their last sample an earlier next one (REENDED_ROWS)."""
    kept = {"kept": retention.window_start(con) or datetime.min}
    row = con.execute(f"SELECT min(minute) FROM {WHOLE}").fetchone() if whole else None
    found = row is not None and row[0] is not None
    reach = {"reach": min(kept["kept"], row[0]) if row and found else kept["kept"]}
    if found:
        ranges, ranges_with_parts, delete, insert, capped_insert = (
            RANGES, RANGES_WITH_PARTS, DELETE, INSERT, CAPPED_INSERT
        )  # fmt: skip
    else:
        ranges, ranges_with_parts, delete, insert, capped_insert = (
            PLAIN_RANGES, PLAIN_RANGES_WITH_PARTS, PLAIN_DELETE, PLAIN_INSERT, PLAIN_CAPPED_INSERT
        )  # fmt: skip
    con.execute(ranges, kept)
    needed = [path for (path,) in con.execute(PARTS_NEEDED, {**reach, **MINUTE_PARTS}).fetchall()]
    if needed:  # a GPU whose earlier or later minutes are sealed: the ranges again, with those parts
        con.execute(ranges_with_parts, {**kept, "files": _part_files(con, needed)})
    touched = [path for (path,) in con.execute(PARTS_TOUCHED, {**kept, **MINUTE_PARTS}).fetchall()]
    previous = kept["kept"] > datetime.min and _find_previous(con)
    if previous:
        touched = sorted({*touched, *(path for (path,) in con.execute(PREVIOUS_PARTS, MINUTE_PARTS).fetchall())})
    parts.unseal(con, parts.GPU_MINUTES, touched)
    lo, last = con.execute(SPAN).fetchone() or (None, None)
    if lo is not None:
        con.execute(delete, kept)
        capped = lo < kept["kept"]
        if capped:  # a range reaches before the window: cap the intervals at kept minutes
            con.execute(KEPT_MINUTES, kept)
            insert = capped_insert
        con.execute(insert, {"lo": lo, "last": last, **kept})
        if previous or capped:  # minutes standing before the window: re-ended at their new next samples
            standing = [STANDING_ROWS[t] for t, used in ((PREVIOUS, previous), (KEPT, capped)) if used]
            con.execute(f"CREATE OR REPLACE TEMP TABLE {STANDING} AS {' UNION ALL '.join(standing)}")
            con.execute(REENDED_ROWS, {"lo": lo, "last": last})
            con.execute(RE_END)
            telemetry_outbox.record(con, RECORD_REENDED)
            con.execute(f"DROP TABLE {REENDED}; DROP TABLE {STANDING}")
        if capped:
            con.execute(f"DROP TABLE {KEPT}")
        con.execute(SERIES_ADD)
        telemetry_outbox.record(con)  # a stage owes PostgreSQL these ranges (issue 18)
    con.execute(f"DROP TABLE rollup_ranges; DROP TABLE IF EXISTS {WHOLE}; DROP TABLE IF EXISTS {PREVIOUS}")


def _part_files(con: duckdb.DuckDBPyConnection, paths: list[str]) -> list[str]:
    """These minute parts' files, as parts.READ_FILES reads them ($files)."""
    folder = parts.root(con)
    return db.exact_paths([str(folder / path) for path in paths])


def _find_previous(con: duckdb.DuckDBPyConnection) -> bool:
    """Fill PREVIOUS with the latest minute before its range of each GPU of rollup_ranges whose
    range found none inside the window though it has earlier minutes (WANTED_ROWS); False if none.
    The hot table first, then the minute parts that may hold a later one, latest first."""
    wanted = con.execute(WANTED_ROWS).fetchall()
    if not wanted:
        return False
    con.execute(f"CREATE OR REPLACE TEMP TABLE {WANTED} AS {WANTED_ROWS}")
    span = {(job, host, gpu): (lo, first) for job, host, gpu, lo, first in wanted}
    bounds = {"since": min(first for _, first in span.values()), "until": max(lo for lo, _ in span.values())}
    best: dict[tuple[str, str, str], tuple[datetime, bool]] = {}  # the latest found, sealed or not
    for job, host, gpu, minute in con.execute(PREVIOUS_IN, bounds).fetchall():
        best[(job, host, gpu)] = (minute, False)
    candidates = con.execute(PREVIOUS_CANDIDATES, {**bounds, **MINUTE_PARTS}).fetchall()
    size = 1
    while True:
        candidates = [
            (path, lo_ts, hi_ts)
            for path, lo_ts, hi_ts in candidates
            if any(
                lo_ts < lo and hi_ts >= first and (key not in best or hi_ts > best[key][0])
                for key, (lo, first) in span.items()
            )
        ]
        if not candidates:
            break
        chunk, candidates = candidates[:size], candidates[size:]
        files = {"files": _part_files(con, [path for path, _, _ in chunk])}
        for job, host, gpu, minute in con.execute(PREVIOUS_IN_PARTS, {**bounds, **files}).fetchall():
            key = (job, host, gpu)
            if key not in best or minute > best[key][0]:
                best[key] = (minute, True)
        size *= 2
    con.execute(f"DROP TABLE {WANTED}")
    if not best:
        return False
    con.execute(PREVIOUS_TABLE)
    con.executemany(f"INSERT INTO {PREVIOUS} VALUES (?, ?, ?, ?, ?)", [(*k, m, s) for k, (m, s) in best.items()])
    return True


def rebuild(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute every minute from every sample (in the caller's transaction): the minute parts
    are retired, every minute is hot until the next seal."""
    parts.retire(con, parts.live_paths(con, parts.GPU_MINUTES))
    parts.refresh_view(con, parts.GPU_MINUTES)
    con.execute(REBUILD_HOT)
    con.execute(SERIES_REFILL)
