-- job_gpus: one row per GPU of a job (from its samples, rolled up per minute in gpu_minutes):
-- averages, peaks, energy, throttling, idleness. A GPU is its gpu_key (its UUID when known);
-- gpu_index is the index it was last sampled under, for display (not unique: each container or
-- cgroup numbers its GPUs from 0). Counts and peaks are the samples' own; a mean is the sum of
-- the minutes' sums over their count, and the time-weighted sums add the minutes' sums (each
-- sample's interval to the GPU's next sample counts in its own minute): the raw figures up to
-- float rounding, and they stay when the raw samples age out.
WITH per_gpu AS (
    SELECT job_id, host, gpu_key,
           @first_by(gpu_index; minute DESC) AS gpu_index,
           max(gpu_uuid) AS gpu_uuid,
           CAST(sum(samples) AS BIGINT) AS samples,
           min(first_ts) AS first_sample,
           max(last_ts) AS last_sample,
           @fdiv(@ordered_fsum(utilization_percent_sum); nullif(sum(utilization_percent_n), 0)) AS average_utilization,
           @fdiv(@ordered_fsum(memory_used_mb_sum); nullif(sum(memory_used_mb_n), 0)) AS average_memory_mb,
           max(memory_used_mb_max) AS peak_memory_mb,
           @fdiv(@ordered_fsum(temperature_c_sum); nullif(sum(temperature_c_n), 0)) AS average_temp_celsius,
           max(temperature_c_max) AS peak_temp_celsius,
           @fdiv(@ordered_fsum(power_w_sum); nullif(sum(power_w_n), 0)) AS average_power_w,
           -- trapezoids between consecutive samples, in watt-hours
           @ordered_fsum(energy_wh) AS energy_wh,
           @ordered_fsum(reasons_seconds) AS reasons_seconds,
           -- throttled: the NVML clocks-event reasons that mean the GPU was held back (mask 0xEC:
           -- SW power cap, HW slowdown, SW thermal, HW thermal, HW power brake; warehouse/rollups.py)
           @ordered_fsum(throttled_seconds) AS throttled_seconds,
           @ordered_fsum(utilization_seconds) AS utilization_seconds,
           -- idle: utilization below 10 %
           @ordered_fsum(idle_seconds) AS idle_seconds
    FROM gpu_minutes
    GROUP BY job_id, host, gpu_key
)
SELECT job_id, host, gpu_index, gpu_uuid, samples, first_sample, last_sample,
       average_utilization, average_memory_mb, peak_memory_mb, average_temp_celsius, peak_temp_celsius,
       average_power_w, energy_wh,
       CASE WHEN reasons_seconds > 0 THEN coalesce(throttled_seconds, 0) / reasons_seconds END AS throttled_share,
       CASE WHEN utilization_seconds > 0 THEN coalesce(idle_seconds, 0) / utilization_seconds END AS idle_share,
       CASE WHEN utilization_seconds > 0 THEN coalesce(idle_seconds, 0) / utilization_seconds > 0.5 END AS idle
FROM per_gpu
