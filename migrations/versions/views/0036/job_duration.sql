-- job_duration: the duration section, one row per job: start, end, total, training and overhead
-- seconds, each from the step rows and the job's own times alone (analytics.md): a trainer's
-- train_runtime is not a step row's seconds (job_settings shows it), so a job whose rows carry no
-- timestamps or iteration times has no training time, and one without a start or end no total
-- and no overhead (null, never 0).
-- A start epoch no timestamp can hold (a first row whose iteration_time is absurd, say 1e308
-- seconds, puts it before any date) gives no start_time, instead of failing every query.
WITH edges AS (
    SELECT job_id,
           max(ts) FILTER (WHERE row_no = row_count) AS last_ts,
           max(@seconds_between(TIMESTAMP '1970-01-01 00:00:00'; ts) - seconds)
               FILTER (WHERE row_no = 1) AS first_row_start_epoch,
           @ordered_fsum(seconds) AS timed_seconds
    FROM step_metrics
    GROUP BY job_id
), bounds AS (
    SELECT j.job_id,
           CASE WHEN j.started_at IS NOT NULL
                    THEN @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; j.started_at)
                ELSE e.first_row_start_epoch END AS start_epoch,
           CASE WHEN j.status IN ('completed', 'failed', 'cancelled') AND j.ended_at IS NOT NULL
                    THEN j.ended_at
                ELSE greatest(e.last_ts, j.updated_at) END AS end_ts,
           e.timed_seconds
    FROM jobs j
    LEFT JOIN edges e ON e.job_id = j.job_id
), spans AS (
    SELECT job_id, start_epoch, end_ts,
           @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; end_ts) - start_epoch AS span_seconds,
           timed_seconds AS training_seconds
    FROM bounds
)
SELECT job_id,
       @from_epoch(CASE WHEN abs(start_epoch) < 1e12 THEN start_epoch END) AS start_time,
       end_ts AS end_time,
       span_seconds AS total_seconds,
       training_seconds,
       -- greatest() skips NULLs in DuckDB, so unknown parts are tested first
       CASE WHEN span_seconds IS NOT NULL AND training_seconds IS NOT NULL
                THEN greatest(0, span_seconds - training_seconds) END AS overhead_seconds
FROM spans
