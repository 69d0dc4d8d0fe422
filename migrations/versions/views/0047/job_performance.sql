-- job_performance: the performance section, one row per job: iterations, samples, time-weighted
-- throughput, peak throughput, time per iteration, and the counts behind its warnings. From the
-- step rows alone (analytics.md): a trainer's train_samples_per_second is its summary's figure,
-- not a row's (job_settings shows it).
WITH agg AS (
    SELECT j.job_id,
           j.current_step,
           max(m.step) AS max_step,
           count(m.step) AS step_rows,
           count(m.seconds) AS timed_rows,
           count(m.timing_no) AS timing_rows,
           @ordered_fsum(m.samples) AS total_samples,
           @ordered_fsum(m.samples) FILTER (WHERE m.seconds IS NOT NULL) AS timed_samples,
           @ordered_fsum(m.seconds) FILTER (WHERE m.samples IS NOT NULL) AS timed_seconds,
           @ordered_fsum(m.seconds) AS known_seconds,
           sum(m.delta) FILTER (WHERE m.seconds IS NOT NULL) AS timed_iterations,
           @ordered_favg(m.samples_per_second) FILTER (WHERE @finite(m.samples_per_second)) AS mean_samples_per_second,
           max(m.samples_per_second) FILTER (WHERE @finite(m.samples_per_second)) AS peak_samples_per_second,
           count(*) FILTER (WHERE m.samples_per_second IS NOT NULL
                            AND NOT @finite(m.samples_per_second)) AS nonfinite_samples_per_second,
           count(*) FILTER (WHERE m.iteration_time IS NOT NULL
                            AND NOT @finite(m.iteration_time)) AS nonfinite_iteration_time
    FROM jobs j
    LEFT JOIN step_metrics m ON m.job_id = j.job_id
    GROUP BY j.job_id, j.current_step
)
SELECT job_id,
       step_rows,
       timed_rows,
       CASE WHEN max_step IS NULL THEN current_step
            WHEN current_step IS NULL THEN max_step
            ELSE greatest(max_step, current_step) END AS total_iterations,
       total_samples,
       -- rows with both whose seconds total 0: Σ samples / 0 has no value (analytics.md takes the
       -- plain mean only "when no row has both"), so null, and job_analytics says why; seconds
       -- whose sum overflowed leave the ratio unknown (NaN: job_analytics' overflow, not a 0)
       CASE WHEN timed_seconds > 0 AND NOT @finite(timed_seconds) THEN CAST('NaN' AS DOUBLE PRECISION)
            WHEN timed_seconds > 0 THEN @fdiv(timed_samples; timed_seconds)
            WHEN timed_seconds IS NOT NULL THEN NULL
            ELSE mean_samples_per_second END AS average_samples_per_second,
       timed_seconds IS NULL AND mean_samples_per_second IS NOT NULL AS throughput_is_plain_mean,
       peak_samples_per_second,
       CASE WHEN timed_iterations > 0 THEN @fdiv(known_seconds; timed_iterations) END AS average_iteration_time,
       known_seconds,
       nonfinite_samples_per_second,
       nonfinite_iteration_time,
       -- the rows that cover an interval (step_metrics' timing rows): those a missing time leaves untimed
       timing_rows
FROM agg
