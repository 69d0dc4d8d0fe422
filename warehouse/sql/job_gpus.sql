-- job_gpus: one row per GPU of a job (from its samples): averages, peaks, energy, throttling,
-- idleness. A GPU is its gpu_key (its UUID when known); gpu_index is the index it was last
-- sampled under, for display (not unique: each container or cgroup numbers its GPUs from 0).
WITH per_gpu AS (
    SELECT job_id, host, gpu_key,
           @first_by(gpu_index; ts DESC) AS gpu_index,
           max(gpu_uuid) AS gpu_uuid,
           count(*) AS samples,
           min(ts) AS first_sample,
           max(ts) AS last_sample,
           @ordered_avg(utilization_percent) FILTER (WHERE @finite(utilization_percent)) AS average_utilization,
           @ordered_avg(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS average_memory_mb,
           max(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS peak_memory_mb,
           @ordered_avg(temperature_c) FILTER (WHERE @finite(temperature_c)) AS average_temp_celsius,
           max(temperature_c) FILTER (WHERE @finite(temperature_c)) AS peak_temp_celsius,
           @ordered_avg(power_w) FILTER (WHERE @finite(power_w)) AS average_power_w,
           -- trapezoids between consecutive samples, in watt-hours
           @ordered_sum((power_w + next_power_w) / 2 * interval_seconds)
               FILTER (WHERE @finite(power_w) AND @finite(next_power_w)) / 3600 AS energy_wh,
           @ordered_sum(interval_seconds) FILTER (WHERE clocks_event_reasons IS NOT NULL) AS reasons_seconds,
           -- 236 = 0xEC, the NVML clocks-event reasons that mean the GPU was held back: SW power cap
           -- (0x4), HW slowdown (0x8), SW thermal (0x20), HW thermal (0x40), HW power brake (0x80).
           -- Idle (0x1), application clocks (0x2), sync boost (0x10), display clocks (0x100) are not.
           @ordered_sum(interval_seconds) FILTER (WHERE (clocks_event_reasons & 236) <> 0) AS throttled_seconds,
           @ordered_sum(interval_seconds) FILTER (WHERE @finite(utilization_percent)) AS utilization_seconds,
           @ordered_sum(interval_seconds) FILTER (WHERE utilization_percent < 10) AS idle_seconds
    FROM gpu_sample_intervals
    GROUP BY job_id, host, gpu_key
)
SELECT job_id, host, gpu_index, gpu_uuid, samples, first_sample, last_sample,
       average_utilization, average_memory_mb, peak_memory_mb, average_temp_celsius, peak_temp_celsius,
       average_power_w, energy_wh,
       CASE WHEN reasons_seconds > 0 THEN coalesce(throttled_seconds, 0) / reasons_seconds END AS throttled_share,
       CASE WHEN utilization_seconds > 0 THEN coalesce(idle_seconds, 0) / utilization_seconds END AS idle_share,
       CASE WHEN utilization_seconds > 0 THEN coalesce(idle_seconds, 0) / utilization_seconds > 0.5 END AS idle
FROM per_gpu
