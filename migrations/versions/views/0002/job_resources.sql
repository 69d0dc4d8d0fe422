-- job_resources: the resource_utilization section, one row per job. Until GPU samples exist (a
-- later revision), the embedded per-step readings are the source.
SELECT j.job_id,
       CASE WHEN count(g.gpu_index) > 0 THEN 'step_readings' END AS gpu_source,
       count(g.gpu_index) AS gpu_readings,
       count(DISTINCT g.gpu_index) AS gpus_seen,
       avg(g.utilization_percent) FILTER (WHERE @finite(g.utilization_percent)) AS average_gpu_utilization,
       avg(g.memory_used_mb) FILTER (WHERE @finite(g.memory_used_mb)) AS average_gpu_memory_mb,
       max(g.memory_used_mb) FILTER (WHERE @finite(g.memory_used_mb)) AS peak_gpu_memory_mb,
       avg(g.temperature_c) FILTER (WHERE @finite(g.temperature_c)) AS average_gpu_temp_celsius,
       max(g.temperature_c) FILTER (WHERE @finite(g.temperature_c)) AS peak_gpu_temp_celsius,
       count(*) FILTER (WHERE (g.utilization_percent IS NOT NULL AND NOT @finite(g.utilization_percent))
                           OR (g.memory_used_mb IS NOT NULL AND NOT @finite(g.memory_used_mb))
                           OR (g.temperature_c IS NOT NULL AND NOT @finite(g.temperature_c)))
           AS nonfinite_gpu_readings
FROM jobs j
LEFT JOIN step_gpus g ON g.job_id = j.job_id
GROUP BY j.job_id
