-- insight_speed: the speed insights of insights.md read from a job's rows, one row per
-- insight: throughput_drop and stall (slow_vs_peers compares jobs: insight_peers).
WITH p AS (SELECT * FROM insight_parameters),
-- each row with its gap to the previous row, its place among the rows with a known throughput,
-- and the job's T (median row throughput) and g (median positive gap)
base AS NOT MATERIALIZED (
    SELECT r.job_id, r.step, r.ts, r.prev_step, r.prev_ts, r.samples, r.seconds, r.throughput,
           @seconds_between(r.prev_ts; r.ts) AS gap,
           count(r.throughput) OVER (PARTITION BY r.job_id ORDER BY r.step
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS known_no,
           @median(r.throughput) OVER (PARTITION BY r.job_id) AS typical,
           @median(@seconds_between(r.prev_ts; r.ts)) FILTER (WHERE @seconds_between(r.prev_ts; r.ts) > 0)
               OVER (PARTITION BY r.job_id) AS g
    FROM insight_rows r
),
-- throughput_drop: among the rows with a known throughput, in row order, maximal runs of at
-- least min_rows rows each below fraction * T
slow AS (
    SELECT b.*, b.known_no - row_number() OVER (PARTITION BY b.job_id ORDER BY b.step) AS run
    FROM base b, p
    WHERE b.throughput < p.throughput_drop_fraction * b.typical
),
drops AS (
    SELECT s.job_id, 'throughput_drop' AS kind, 'warning' AS severity,
           min(s.step) AS first_step, max(s.step) AS last_step,
           @first_by(s.ts; s.step) AS start_time, @first_by(s.ts; s.step DESC) AS end_time,
           CASE WHEN @ordered_sum(s.seconds) FILTER (WHERE s.samples IS NOT NULL) > 0
                    THEN @ordered_sum(s.samples) FILTER (WHERE s.seconds IS NOT NULL)
                         / @ordered_sum(s.seconds) FILTER (WHERE s.samples IS NOT NULL)
                ELSE @ordered_avg(s.throughput) END AS value,
           min(s.typical) AS reference
    FROM slow s, p
    GROUP BY s.job_id, s.run, p.throughput_drop_min_rows
    HAVING count(*) >= p.throughput_drop_min_rows
),
-- stall: a row (so not the first) later than the row before it by more than
-- max(factor * g, min_seconds)
stalls AS (
    SELECT x.job_id, 'stall' AS kind, 'warning' AS severity, x.prev_step AS first_step, x.step AS last_step,
           x.prev_ts AS start_time, x.ts AS end_time, x.gap AS value, x.g AS reference
    FROM base x, p
    WHERE x.gap > p.stall_factor * x.g AND x.gap > p.stall_min_seconds
)
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       printf('Throughput fell to %.6g samples/s over steps %d-%d, against a median of %.6g samples/s.',
              value, first_step, last_step, reference) AS message
FROM drops
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       printf('No row was logged for %.6g s between steps %d and %d, against a median gap of %.6g s.',
              value, first_step, last_step, reference)
FROM stalls
