-- gpu_sample_intervals: one row per GPU sample: each sample stands for the time until the same GPU's
-- next sample (the last one for none). A GPU is its gpu_key (its UUID when known): two GPUs
-- that two samplers both call index 0 stay two GPUs.
SELECT g.*,
       @seconds_between(g.ts; lead(g.ts) OVER w) AS interval_seconds,
       lead(g.power_w) OVER w AS next_power_w
FROM gpu_samples g
WINDOW w AS (PARTITION BY g.job_id, g.host, g.gpu_key ORDER BY g.ts)
