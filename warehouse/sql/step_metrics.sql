-- step_metrics: one row per step row, with what the row covers (analytics.md, "One job"):
-- delta = iterations since the previous (timing) row, seconds and samples as the rules derive them.
-- A job's timing rows are its progress.json rows (those progress.json contributed to) when it
-- has any, else all its rows (a job known from trainer states or tool logs alone): delta, the
-- previous timestamp, seconds and samples run over the timing rows only, so a trainer's or a
-- tool's log between two progress.json entries does not cut their interval. A row only from a
-- trainer state or tool log in a job with progress.json rows covers no interval of its own
-- (delta, seconds and samples null; its losses count as any row's). timing_no numbers the
-- timing rows (null on the others), timing_count counts them: job_duration's first row, the ETA's recent rows.
WITH facts AS (
    SELECT s.*,
           s.source IN ('progress', 'progress+tool_log', 'both', 'both+tool_log') AS from_progress
    FROM step_facts s
), windowed AS (
    -- one window level: t runs over the job's progress.json rows and, apart, over its other rows,
    -- which are its timing rows when it has no progress.json row (its rows in t and in w are then
    -- the same); a row of t that is not a timing row is cleared below
    SELECT f.*,
           row_number() OVER w AS row_no,
           count(*) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS row_count,
           f.from_progress OR NOT bool_or(f.from_progress) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING
                                                                    AND UNBOUNDED FOLLOWING) AS timing_row,
           f.step - coalesce(lag(f.step) OVER t, 0) AS t_delta,
           lag(f.ts) OVER t AS t_prev_ts,
           row_number() OVER t AS t_no,
           count(*) OVER (t ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS t_count
    FROM facts f
    WINDOW w AS (PARTITION BY f.job_id ORDER BY f.step),
           t AS (PARTITION BY f.job_id, f.from_progress ORDER BY f.step)
), ordered AS (
    SELECT m.*,
           CASE WHEN m.timing_row THEN m.t_delta END AS delta,
           CASE WHEN m.timing_row THEN m.t_prev_ts END AS prev_ts,
           CASE WHEN m.timing_row THEN m.t_no END AS timing_no,
           CASE WHEN m.timing_row THEN m.t_count END AS timing_count
    FROM windowed m
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
           WHEN NOT t.timing_row THEN NULL
           WHEN t.samples IS NOT NULL THEN CAST(t.samples AS DOUBLE PRECISION)
           WHEN j.batch_size IS NOT NULL THEN @fmul(j.batch_size; t.delta)
           WHEN @finite(t.samples_per_second) AND t.seconds IS NOT NULL
               THEN @fmul(t.samples_per_second; t.seconds)
       END AS samples,
       t.loss, t.eval_loss, t.learning_rate, t.samples_per_second, t.iteration_time,
       t.grad_norm, t.epoch, t.metrics, t.source, t.timing_no, t.timing_count
FROM timed t
LEFT JOIN job_settings j ON j.job_id = t.job_id
