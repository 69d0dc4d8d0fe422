-- step_metrics: one row per step row, with what the row covers (analytics.md, "One job"):
-- delta = iterations since the previous row, seconds and samples as the rules derive them.
WITH ordered AS (
    SELECT s.*,
           s.step - coalesce(lag(s.step) OVER w, 0) AS delta,
           lag(s.ts) OVER w AS prev_ts,
           row_number() OVER w AS row_no,
           count(*) OVER (PARTITION BY s.job_id) AS row_count
    FROM step_facts s
    WINDOW w AS (PARTITION BY s.job_id ORDER BY s.step)
), timed AS (
    SELECT o.*,
           CASE
               WHEN @finite(o.iteration_time) THEN @fmul(o.iteration_time; o.delta)
               WHEN o.ts IS NOT NULL AND o.prev_ts IS NOT NULL AND o.ts >= o.prev_ts
                   THEN @seconds_between(o.prev_ts; o.ts)
           END AS seconds
    FROM ordered o
)
SELECT t.job_id, t.step, t.ts, t.delta, t.seconds, t.row_no, t.row_count,
       CASE
           WHEN t.samples IS NOT NULL THEN CAST(t.samples AS DOUBLE PRECISION)
           WHEN j.batch_size IS NOT NULL THEN @fmul(j.batch_size; t.delta)
           WHEN @finite(t.samples_per_second) AND t.seconds IS NOT NULL
               THEN @fmul(t.samples_per_second; t.seconds)
       END AS samples,
       t.loss, t.eval_loss, t.learning_rate, t.samples_per_second, t.iteration_time,
       t.grad_norm, t.epoch, t.metrics, t.source
FROM timed t
LEFT JOIN job_settings j ON j.job_id = t.job_id
