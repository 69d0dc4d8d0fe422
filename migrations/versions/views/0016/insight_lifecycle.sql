-- insight_lifecycle: the job insights of insights.md, one row per insight: work_at_risk (a
-- failed or cancelled job far past its last checkpoint) and silent_running (a running job that
-- has logged nothing for long, at insight_parameters.as_of).
WITH p AS (SELECT * FROM insight_parameters),
edges AS (
    SELECT job_id,
           max(step) AS last_step,
           @first_by(ts; step DESC) AS last_ts,
           @median(@seconds_between(prev_ts; ts))
               FILTER (WHERE @seconds_between(prev_ts; ts) > 0) AS g
    FROM insight_rows
    GROUP BY job_id
),
at_risk AS (
    SELECT a.job_id, 'work_at_risk' AS kind,
           CAST(e.last_step - coalesce(c.last_checkpoint, 0) AS DOUBLE) AS value,
           a.checkpoint_frequency_steps AS reference,
           printf('The job ended %s at step %d, %d steps after its last checkpoint, more than %.6g x the checkpoint frequency of %.6g steps.',
                  a.status, e.last_step, e.last_step - coalesce(c.last_checkpoint, 0), p.work_at_risk_factor,
                  a.checkpoint_frequency_steps) AS message
    FROM job_results a
    JOIN edges e ON e.job_id = a.job_id
    LEFT JOIN (SELECT job_id, max(step) AS last_checkpoint FROM checkpoints GROUP BY job_id) c ON c.job_id = a.job_id, p
    WHERE a.status IN ('failed', 'cancelled')
      AND a.checkpoint_frequency_steps IS NOT NULL
      AND e.last_step - coalesce(c.last_checkpoint, 0) > p.work_at_risk_factor * a.checkpoint_frequency_steps
),
silence AS (
    SELECT j.job_id,
           -- greatest() skips NULLs in DuckDB: the later of those known
           @seconds_between(greatest(e.last_ts, j.updated_at); p.as_of) AS silent_seconds,
           CASE WHEN e.g IS NOT NULL THEN greatest(p.silent_running_min_seconds, p.silent_running_factor * e.g)
                ELSE p.silent_running_min_seconds END AS limit_seconds
    FROM jobs j
    LEFT JOIN edges e ON e.job_id = j.job_id, p
    WHERE j.status = 'running'
),
silent AS (
    SELECT s.job_id, 'silent_running' AS kind, s.silent_seconds AS value, s.limit_seconds AS reference,
           printf('The job is running but has logged nothing for %.6g s, longer than %.6g s.',
                  s.silent_seconds, s.limit_seconds) AS message
    FROM silence s
    WHERE s.silent_seconds > s.limit_seconds
)
SELECT job_id, kind, value, reference, message FROM at_risk
UNION ALL
SELECT job_id, kind, value, reference, message FROM silent
