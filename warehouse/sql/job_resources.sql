-- job_resources: the resource_utilization section, one row per job. Every figure from the job's GPU
-- samples (rolled up per minute) when it has any, else from the readings logged with its steps
-- (analytics.md): a figure the samples lack is null, not taken from the step readings.
WITH sampled AS (
    -- from the samples' minutes (gpu_minutes): the same counts and peaks, the means as the
    -- minutes' sums over their counts
    SELECT job_id,
           CAST(sum(samples) AS BIGINT) AS n,
           count(DISTINCT (host, gpu_key)) AS gpus,
           @fdiv(@ordered_fsum(utilization_percent_sum); nullif(sum(utilization_percent_n), 0)) AS util,
           @fdiv(@ordered_fsum(memory_used_mb_sum); nullif(sum(memory_used_mb_n), 0)) AS mem,
           max(memory_used_mb_max) AS peak_mem,
           @fdiv(@ordered_fsum(temperature_c_sum); nullif(sum(temperature_c_n), 0)) AS temp,
           max(temperature_c_max) AS peak_temp,
           CAST(sum(nonfinite) AS BIGINT) AS nonfinite
    FROM gpu_minutes
    GROUP BY job_id
), logged AS (
    SELECT job_id,
           count(*) AS n,
           count(DISTINCT gpu_index) AS gpus,
           @ordered_favg(utilization_percent) FILTER (WHERE @finite(utilization_percent)) AS util,
           @ordered_favg(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS mem,
           max(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS peak_mem,
           @ordered_favg(temperature_c) FILTER (WHERE @finite(temperature_c)) AS temp,
           max(temperature_c) FILTER (WHERE @finite(temperature_c)) AS peak_temp,
           count(*) FILTER (WHERE (utilization_percent IS NOT NULL AND NOT @finite(utilization_percent))
                               OR (memory_used_mb IS NOT NULL AND NOT @finite(memory_used_mb))
                               OR (temperature_c IS NOT NULL AND NOT @finite(temperature_c))) AS nonfinite
    FROM step_gpus
    GROUP BY job_id
)
SELECT j.job_id,
       CASE WHEN s.n > 0 THEN 'gpu_samples' WHEN l.n > 0 THEN 'step_readings' END AS gpu_source,
       coalesce(s.n, 0) + coalesce(l.n, 0) AS gpu_readings,
       coalesce(s.n, 0) AS gpu_samples,
       coalesce(s.gpus, l.gpus, 0) AS gpus_seen,
       CASE WHEN s.n > 0 THEN s.util ELSE l.util END AS average_gpu_utilization,
       CASE WHEN s.n > 0 THEN s.mem ELSE l.mem END AS average_gpu_memory_mb,
       CASE WHEN s.n > 0 THEN s.peak_mem ELSE l.peak_mem END AS peak_gpu_memory_mb,
       CASE WHEN s.n > 0 THEN s.temp ELSE l.temp END AS average_gpu_temp_celsius,
       CASE WHEN s.n > 0 THEN s.peak_temp ELSE l.peak_temp END AS peak_gpu_temp_celsius,
       CASE WHEN s.n > 0 THEN s.nonfinite ELSE coalesce(l.nonfinite, 0) END AS nonfinite_gpu_readings
FROM jobs j
LEFT JOIN sampled s ON s.job_id = j.job_id
LEFT JOIN logged l ON l.job_id = j.job_id
