-- job_duration: the duration section, one row per job: start, end, total, training and overhead
-- seconds.
WITH edges AS (
    SELECT job_id,
           max(ts) FILTER (WHERE row_no = row_count) AS last_ts,
           max(@seconds_between(TIMESTAMP '1970-01-01 00:00:00'; ts) - seconds)
               FILTER (WHERE row_no = 1) AS first_row_start_epoch,
           sum(seconds) AS training_seconds
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
           e.training_seconds
    FROM jobs j
    LEFT JOIN edges e ON e.job_id = j.job_id
)
SELECT job_id,
       @from_epoch(start_epoch) AS start_time,
       end_ts AS end_time,
       @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; end_ts) - start_epoch AS total_seconds,
       training_seconds,
       -- greatest() skips NULLs in DuckDB, so unknown parts are tested first
       CASE WHEN end_ts IS NOT NULL AND start_epoch IS NOT NULL AND training_seconds IS NOT NULL
            THEN greatest(0, @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; end_ts)
                             - start_epoch - training_seconds) END AS overhead_seconds
FROM bounds
