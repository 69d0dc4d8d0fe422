-- job_duration: the duration section, one row per job: start, end, total, training and overhead
-- seconds, each from the step rows and the job's own times alone (analytics.md): a trainer's
-- train_runtime is not a step row's seconds (job_settings shows it), so a job whose rows carry no
-- timestamps or iteration times has no training time, and one without a start or end no total
-- and no overhead (null, never 0).
-- A start epoch no timestamp can hold (a first row whose iteration_time is absurd, say 1e308
-- seconds, puts it before any date) gives no start_time, instead of failing every query.
WITH edges AS (
    -- the first of the job's timing rows (step_metrics: its progress.json rows when it has any);
    -- the end's row time: the later of the last row's (by step, of all its rows: a tool log that
    -- runs ahead of progress.json moves it) and the last timing row's (analytics.md: the last
    -- row's timestamp, not the latest of all; the end is a time, no interval)
    SELECT job_id,
           greatest(max(ts) FILTER (WHERE row_no = row_count),
                    max(ts) FILTER (WHERE timing_no = timing_count)) AS last_ts,
           max(ts) FILTER (WHERE timing_no = 1) AS first_ts,
           max(seconds) FILTER (WHERE timing_no = 1) AS first_seconds,
           @ordered_fsum(seconds) AS timed_seconds
    FROM step_metrics
    GROUP BY job_id
), bounds AS (
    SELECT j.job_id,
           j.started_at,
           CASE WHEN j.started_at IS NOT NULL
                    THEN @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; j.started_at)
                ELSE @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; e.first_ts) - e.first_seconds END AS start_epoch,
           CASE WHEN j.status IN ('completed', 'failed', 'cancelled') AND j.ended_at IS NOT NULL
                    THEN j.ended_at
                ELSE greatest(e.last_ts, j.updated_at) END AS end_ts,
           e.first_ts, e.first_seconds, e.timed_seconds
    FROM jobs j
    LEFT JOIN edges e ON e.job_id = j.job_id
), spans AS (
    -- the exact difference of the two times first (then less the first row's seconds): epochs
    -- subtracted as doubles lose digits
    SELECT job_id, start_epoch, end_ts,
           CASE WHEN started_at IS NOT NULL THEN @seconds_between(started_at; end_ts)
                ELSE @fadd(@seconds_between(first_ts; end_ts); first_seconds) END AS span_seconds,
           timed_seconds AS training_seconds
    FROM bounds
)
SELECT job_id,
       @from_epoch(CASE WHEN abs(start_epoch) < 1e12 THEN start_epoch END) AS start_time,
       end_ts AS end_time,
       -- an end before the start (a clock skew, a hand-edited file) is no duration: null, and
       -- job_analytics says why
       CASE WHEN span_seconds >= 0 THEN span_seconds END AS total_seconds,
       training_seconds,
       -- greatest() skips NULLs in DuckDB, so unknown parts are tested first
       CASE WHEN span_seconds >= 0 AND training_seconds IS NOT NULL
                THEN greatest(0, span_seconds - training_seconds) END AS overhead_seconds
FROM spans
