-- insight_rows: a job's step rows (step_metrics' rows: one per distinct step, in step order)
-- with what the row rules of insights.md read: the finite training and eval losses, whether the
-- loss is NaN or +-Inf, the row's throughput (samples / seconds when both are known and the
-- seconds are not 0, else a finite samples_per_second), the previous row's step and timestamp,
-- and the running figures of the row order. It reads step_facts and derives step_metrics' row
-- number, seconds and samples itself, with step_metrics' formulas, in the one sort of a job's
-- rows that also gives every running figure: a view over step_metrics would sort the same rows a
-- second time (tests/test_insights.py checks that these columns equal step_metrics'). Each
-- window function costs: the job's last row is the row without a next one (no count of the
-- rows), and loss_divergence's 10-row median is left to the jobs where recent_max leaves a
-- divergence possible (insight_steps; revision 0025).
-- The timing figures run over step_metrics' timing rows (a job's progress.json rows when it has
-- any, else all its rows): delta, prev_step and prev_ts are the previous timing row's (null on a
-- row that is not one: no seconds, samples or gap of its own), and last_timing_row marks the
-- job's last timing row (silent_running's last row, as job_duration's end).
SELECT t.job_id, t.step, t.ts, t.row_no, t.last_row, t.samples, t.seconds,
       t.finite_loss, t.nonfinite_loss, t.finite_eval_loss,
       CASE WHEN t.samples IS NOT NULL AND t.seconds IS NOT NULL AND t.seconds <> 0 THEN @fdiv(t.samples; t.seconds)
            WHEN @finite(t.samples_per_second) THEN t.samples_per_second END AS throughput,
       t.prev_step, t.prev_ts, t.lowest_before, t.finite_no, t.recent_max, t.last_timing_row
FROM (
    SELECT o.job_id, o.step, o.ts, o.row_no, o.last_row, o.seconds, o.samples_per_second,
           -- step_metrics' samples
           CASE WHEN NOT o.timing_row THEN NULL
                WHEN o.samples IS NOT NULL THEN CAST(o.samples AS DOUBLE PRECISION)
                WHEN j.batch_size IS NOT NULL THEN @fmul(j.batch_size; o.delta)
                WHEN @finite(o.samples_per_second) AND o.seconds IS NOT NULL THEN @fmul(o.samples_per_second; o.seconds)
           END AS samples,
           o.finite_loss, o.nonfinite_loss, o.finite_eval_loss, o.prev_step, o.prev_ts,
           o.lowest_before, o.finite_no, o.recent_max, o.last_timing_row
    FROM (
        SELECT d.*,
               -- step_metrics' seconds
               CASE WHEN @finite(d.iteration_time) THEN @fmul(d.iteration_time; d.delta)
                    WHEN d.ts IS NOT NULL AND d.prev_ts IS NOT NULL AND d.ts >= d.prev_ts
                        THEN @seconds_between(d.prev_ts; d.ts)
               END AS seconds
        FROM (
        -- step_metrics' delta (iterations since the previous timing row; the step on the first),
        -- and the previous timing row's step and timestamp: t's, on the timing rows only
        SELECT x.*,
               CASE WHEN x.timing_row THEN x.t_delta END AS delta,
               CASE WHEN x.timing_row THEN x.t_prev_step END AS prev_step,
               CASE WHEN x.timing_row THEN x.t_prev_ts END AS prev_ts,
               x.timing_row AND x.t_last AS last_timing_row
        FROM (
            SELECT s.job_id, s.step, s.ts, s.samples, s.samples_per_second, s.iteration_time,
                   s.finite_loss, s.nonfinite_loss, s.finite_eval_loss,
                   -- t: step_metrics' window over the job's progress.json rows and, apart, its others
                   s.step - coalesce(lag(s.step) OVER t, 0) AS t_delta,
                   lag(s.step) OVER t AS t_prev_step,
                   lag(s.ts) OVER t AS t_prev_ts,
                   lead(s.step) OVER t IS NULL AS t_last,
                   s.from_progress OR NOT bool_or(s.from_progress) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING
                                                                            AND UNBOUNDED FOLLOWING) AS timing_row,
                   row_number() OVER w AS row_no,
                   -- the job's last row: no row after it
                   lead(s.step) OVER w IS NULL AS last_row,
                   -- the lowest finite loss before this row: no median of earlier losses is below it
                   min(s.finite_loss) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS lowest_before,
                   -- finite losses up to this row: a row with a finite loss is the finite_no-th
                   -- (a job has one row per step: the default frame, to the current row's step, is
                   -- the rows up to this one)
                   count(s.finite_loss) OVER w AS finite_no,
                   -- the highest finite loss of the 10 rows ending here: loss_divergence's r, their
                   -- median, is at most that (a median over this frame costs four times this maximum)
                   max(s.finite_loss) OVER (w ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS recent_max
            FROM (
                SELECT s.job_id, s.step, s.ts, s.samples, s.samples_per_second, s.iteration_time,
                       CASE WHEN @finite(s.loss) THEN s.loss END AS finite_loss,
                       s.loss IS NOT NULL AND NOT @finite(s.loss) AS nonfinite_loss,
                       CASE WHEN @finite(s.eval_loss) THEN s.eval_loss END AS finite_eval_loss,
                       s.source IN ('progress', 'progress+tool_log', 'both', 'both+tool_log') AS from_progress
                FROM step_facts s
            ) s
            WINDOW w AS (PARTITION BY s.job_id ORDER BY s.step),
                   t AS (PARTITION BY s.job_id, s.from_progress ORDER BY s.step)
        ) x
        ) d
    ) o
    LEFT JOIN job_settings j ON j.job_id = o.job_id
) t
