-- insight_gpus: the GPU insights of insights.md, one row per insight. Per GPU (gpu_idle,
-- gpu_straggler, gpu_throttled): over the job's GPU samples when it has any, time-weighted as in
-- job_gpus (each sample stands for the time until the same GPU's next one; a GPU is its
-- gpu_key); else over the readings logged with its steps, one GPU per gpu_index and each
-- reading counting once (host '', gpu_key '#<index>'). Each per-GPU row carries its gpu_key:
-- two GPUs of a host may share an index (told apart by UUID only), and the fleet's keyset
-- pages need a total order (revision 0037). At the default thresholds idle_share and throttled_share
-- are job_gpus' own (from the rollups, gpu_minutes); a gpu_idle.utilization other than 10
-- computes idle_share over the samples still kept raw. Per job (low_gpu_utilization, memory_headroom): job_results' figures.
WITH p AS (SELECT * FROM insight_parameters),
-- per GPU from its minutes (gpu_minutes), whose idle seconds are those below 10 %, the default
-- gpu_idle.utilization; any other threshold reads the samples still kept raw (raw_idle)
rolled AS (
    SELECT m.job_id, m.host, m.gpu_key,
           @first_by(m.gpu_index; m.minute DESC) AS gpu_index,
           @fdiv(@ordered_fsum(m.utilization_percent_sum); nullif(sum(m.utilization_percent_n), 0)) AS mean_utilization,
           @ordered_fsum(m.utilization_seconds) AS utilization_seconds,
           @ordered_fsum(m.idle_seconds) AS idle_seconds,
           @ordered_fsum(m.reasons_seconds) AS reasons_seconds,
           -- the NVML reasons that hold a GPU back (job_gpus says which)
           @ordered_fsum(m.throttled_seconds) AS throttled_seconds
    FROM gpu_minutes m
    GROUP BY m.job_id, m.host, m.gpu_key
),
raw_idle AS (
    SELECT g.job_id, g.host, g.gpu_key,
           @ordered_fsum(g.interval_seconds) FILTER (WHERE @finite(g.utilization_percent)) AS utilization_seconds,
           @ordered_fsum(g.interval_seconds) FILTER (WHERE @finite(g.utilization_percent) AND g.utilization_percent < g.gpu_idle_utilization)
               AS idle_seconds
    FROM (
        -- gpu_sample_intervals' intervals, with the threshold's test before the window: at 10
        -- DuckDB stops reading the samples at their first rows
        SELECT s.job_id, s.host, s.gpu_key, s.utilization_percent, p.gpu_idle_utilization,
               @seconds_between(s.ts; lead(s.ts) OVER w) AS interval_seconds
        FROM gpu_samples s, p
        WHERE p.gpu_idle_utilization <> 10
        WINDOW w AS (PARTITION BY s.job_id, s.host, s.gpu_key ORDER BY s.ts)
    ) g
    GROUP BY g.job_id, g.host, g.gpu_key
),
sampled AS (
    SELECT r.job_id, r.host, r.gpu_key, r.gpu_index, r.mean_utilization,
           CASE WHEN p.gpu_idle_utilization = 10 THEN r.utilization_seconds ELSE x.utilization_seconds END
               AS utilization_seconds,
           CASE WHEN p.gpu_idle_utilization = 10 THEN r.idle_seconds ELSE x.idle_seconds END AS idle_seconds,
           r.reasons_seconds, r.throttled_seconds
    FROM rolled r
    LEFT JOIN raw_idle x ON x.job_id = r.job_id AND x.host = r.host AND x.gpu_key = r.gpu_key, p
),
-- per GPU from the readings logged with the steps; the mean utilization in ascending order of the
-- values (the same last digit on every run) only for the jobs where a GPU can be a straggler: the
-- GPUs' plain means (the sum in any order, off the ordered one by far less than the margin of
-- 1e-6 of the largest reading) spread by more than gpu_straggler.points less that margin. Any
-- other job's means can be no straggler's, so the plain ones stand in there (NULL as often); a
-- window and a union rather than joins back, so that a filter on job_id reaches step_gpus.
logged_plain AS (
    SELECT g.job_id, g.gpu_index,
           @favg(g.utilization_percent) FILTER (WHERE @finite(g.utilization_percent)) AS rough_utilization,
           max(abs(g.utilization_percent)) FILTER (WHERE @finite(g.utilization_percent)) AS largest,
           CAST(count(*) FILTER (WHERE @finite(g.utilization_percent)) AS DOUBLE PRECISION) AS utilization_seconds,
           CAST(count(*) FILTER (WHERE @finite(g.utilization_percent) AND g.utilization_percent < p.gpu_idle_utilization)
                AS DOUBLE PRECISION) AS idle_seconds
    FROM step_gpus g, p
    WHERE NOT EXISTS (SELECT 1 FROM gpu_minutes x WHERE x.job_id = g.job_id)
    GROUP BY g.job_id, g.gpu_index
),
-- each GPU with whether its job's plain means spread by more than a straggler needs, less the margin
logged_spread AS (
    SELECT l.*,
           @fsub(max(l.rough_utilization) OVER (PARTITION BY l.job_id); min(l.rough_utilization) OVER (PARTITION BY l.job_id))
               > p.gpu_straggler_points - @fmul(1e-6; max(l.largest) OVER (PARTITION BY l.job_id)) - 1e-9 AS spread
    FROM logged_plain l, p
),
logged AS (
    SELECT l.job_id, '' AS host, '#' || CAST(l.gpu_index AS VARCHAR) AS gpu_key, l.gpu_index,
           @ordered_favg(g.utilization_percent) FILTER (WHERE @finite(g.utilization_percent)) AS mean_utilization,
           min(l.utilization_seconds) AS utilization_seconds, min(l.idle_seconds) AS idle_seconds,
           CAST(NULL AS DOUBLE PRECISION) AS reasons_seconds,
           CAST(NULL AS DOUBLE PRECISION) AS throttled_seconds
    FROM logged_spread l
    JOIN step_gpus g ON g.job_id = l.job_id AND g.gpu_index = l.gpu_index
    WHERE l.spread
    GROUP BY l.job_id, l.gpu_index
    UNION ALL
    SELECT l.job_id, '', '#' || CAST(l.gpu_index AS VARCHAR), l.gpu_index, l.rough_utilization,
           l.utilization_seconds, l.idle_seconds, NULL, NULL
    FROM logged_spread l
    WHERE NOT coalesce(l.spread, false)
),
per_gpu AS (
    SELECT u.*,
           CASE WHEN u.utilization_seconds > 0 THEN coalesce(u.idle_seconds, 0) / u.utilization_seconds END AS idle_share,
           CASE WHEN u.reasons_seconds > 0 THEN coalesce(u.throttled_seconds, 0) / u.reasons_seconds END AS throttled_share,
           count(u.mean_utilization) OVER (PARTITION BY u.job_id) AS gpus_with_utilization,
           @median(u.mean_utilization) OVER (PARTITION BY u.job_id) AS median_utilization
    FROM (SELECT * FROM sampled UNION ALL SELECT * FROM logged) u
),
idle AS (
    SELECT g.job_id, 'gpu_idle' AS kind, g.host, g.gpu_index, g.gpu_key, g.idle_share AS value, p.gpu_idle_share AS reference,
           @printf('GPU %d%s was below %.6g %% utilization for %s of its time (limit %s).'; g.gpu_index; CASE WHEN g.host <> '' THEN ' on ' || g.host ELSE '' END; p.gpu_idle_utilization;
                   CASE WHEN 100 * g.idle_share <> 100 * p.gpu_idle_share THEN @printf(@apart_format(100 * g.idle_share; 100 * p.gpu_idle_share; '%.1f') || ' %%'; 100 * g.idle_share)
                        ELSE @printf(@apart_format(g.idle_share; p.gpu_idle_share; '%.6g'); g.idle_share) END;
                   CASE WHEN 100 * g.idle_share <> 100 * p.gpu_idle_share THEN @printf(@apart_format(100 * g.idle_share; 100 * p.gpu_idle_share; '%.1f') || ' %%'; 100 * p.gpu_idle_share)
                        ELSE @printf(@apart_format(g.idle_share; p.gpu_idle_share; '%.6g'); p.gpu_idle_share) END) AS message
    FROM per_gpu g, p
    WHERE g.idle_share > p.gpu_idle_share
),
stragglers AS (
    SELECT g.job_id, 'gpu_straggler' AS kind, g.host, g.gpu_index, g.gpu_key, g.mean_utilization AS value,
           g.median_utilization AS reference,
           @printf('GPU %d%s averaged %s %% utilization, more than %.4g points below the median %s %% of the job''s GPUs.'; g.gpu_index; CASE WHEN g.host <> '' THEN ' on ' || g.host ELSE '' END;
                   @printf(@apart_format(g.mean_utilization; g.median_utilization - p.gpu_straggler_points; '%.4g'); g.mean_utilization);
                   p.gpu_straggler_points;
                   @printf(@apart_format(g.mean_utilization; g.median_utilization - p.gpu_straggler_points; '%.4g'); g.median_utilization)) AS message
    FROM per_gpu g, p
    WHERE g.gpus_with_utilization >= p.gpu_straggler_min_gpus
      -- not idle: a GPU whose idleness is unknown (one sample covers no time) is not idle
      AND NOT coalesce(g.idle_share > p.gpu_idle_share, false)
      AND g.mean_utilization < g.median_utilization - p.gpu_straggler_points
),
throttled AS (
    SELECT g.job_id, 'gpu_throttled' AS kind, g.host, g.gpu_index, g.gpu_key, g.throttled_share AS value,
           p.gpu_throttled_share AS reference,
           @printf('GPU %d%s was throttled (power or thermal) %s of its time (limit %s).'; g.gpu_index; CASE WHEN g.host <> '' THEN ' on ' || g.host ELSE '' END;
                   CASE WHEN 100 * g.throttled_share <> 100 * p.gpu_throttled_share THEN @printf(@apart_format(100 * g.throttled_share; 100 * p.gpu_throttled_share; '%.1f') || ' %%'; 100 * g.throttled_share)
                        ELSE @printf(@apart_format(g.throttled_share; p.gpu_throttled_share; '%.6g'); g.throttled_share) END;
                   CASE WHEN 100 * g.throttled_share <> 100 * p.gpu_throttled_share THEN @printf(@apart_format(100 * g.throttled_share; 100 * p.gpu_throttled_share; '%.1f') || ' %%'; 100 * p.gpu_throttled_share)
                        ELSE @printf(@apart_format(g.throttled_share; p.gpu_throttled_share; '%.6g'); p.gpu_throttled_share) END) AS message
    FROM per_gpu g, p
    WHERE g.throttled_share > p.gpu_throttled_share
),
-- memory_headroom's total: the largest memory_total_mb of the readings job_resources took the
-- peak from (the samples when the job has any, else the step readings)
totals AS (
    SELECT j.job_id,
           CASE WHEN s.n > 0 THEN s.total ELSE l.total END AS memory_total_mb
    FROM jobs j
    LEFT JOIN (SELECT job_id, sum(samples) AS n, max(memory_total_mb_max) AS total
               FROM gpu_minutes GROUP BY job_id) s ON s.job_id = j.job_id
    LEFT JOIN (SELECT job_id, max(memory_total_mb) FILTER (WHERE @finite(memory_total_mb)) AS total
               FROM step_gpus GROUP BY job_id) l ON l.job_id = j.job_id
),
low_utilization AS (
    SELECT a.job_id, 'low_gpu_utilization' AS kind, a.average_gpu_utilization AS value,
           p.low_gpu_utilization_percent AS reference,
           @printf('The GPUs averaged %s %% utilization over %.6g s of training, below %s %%.';
                   @printf(@apart_format(a.average_gpu_utilization; p.low_gpu_utilization_percent; '%.4g'); a.average_gpu_utilization);
                   a.training_seconds;
                   @printf(@apart_format(a.average_gpu_utilization; p.low_gpu_utilization_percent; '%.4g'); p.low_gpu_utilization_percent)) AS message
    FROM job_results a, p
    WHERE a.average_gpu_utilization < p.low_gpu_utilization_percent
      AND a.training_seconds >= p.low_gpu_utilization_min_training_seconds
),
headroom AS (
    -- the share printed in percent of the share compared (100 x peak / total rounds otherwise:
    -- 1.2 of 3 MiB is 0.39999999999999997, below 0.4, and 40.0 %)
    SELECT h.job_id, 'memory_headroom' AS kind, h.value, h.reference,
           @printf('Peak GPU memory was %.6g MiB, %s of the %.6g MiB the GPU has (below %s).'; h.peak;
                   CASE WHEN 100 * h.value <> 100 * h.reference THEN @printf(@apart_format(100 * h.value; 100 * h.reference; '%.1f') || ' %%'; 100 * h.value)
                        ELSE @printf(@apart_format(h.value; h.reference; '%.6g'); h.value) END;
                   h.total;
                   CASE WHEN 100 * h.value <> 100 * h.reference THEN @printf(@apart_format(100 * h.value; 100 * h.reference; '%.1f') || ' %%'; 100 * h.reference)
                        ELSE @printf(@apart_format(h.value; h.reference; '%.6g'); h.reference) END) AS message
    FROM (
        SELECT a.job_id, a.peak_gpu_memory_mb AS peak, t.memory_total_mb AS total,
               @fdiv(a.peak_gpu_memory_mb; t.memory_total_mb) AS value, p.memory_headroom_fraction AS reference
        FROM job_results a
        JOIN totals t ON t.job_id = a.job_id, p
        WHERE t.memory_total_mb > 0
          AND @fdiv(a.peak_gpu_memory_mb; t.memory_total_mb) < p.memory_headroom_fraction
          AND a.training_seconds >= p.memory_headroom_min_training_seconds
    ) h
)
SELECT job_id, kind, 'warning' AS severity, CAST(nullif(host, '') AS VARCHAR) AS host, gpu_index, CAST(gpu_key AS VARCHAR) AS gpu_key,
       value, reference, message FROM idle
UNION ALL
SELECT job_id, kind, 'warning', CAST(nullif(host, '') AS VARCHAR), gpu_index, gpu_key, value, reference, message FROM stragglers
UNION ALL
SELECT job_id, kind, 'warning', CAST(nullif(host, '') AS VARCHAR), gpu_index, gpu_key, value, reference, message FROM throttled
UNION ALL
SELECT job_id, kind, 'warning', CAST(NULL AS VARCHAR), CAST(NULL AS INTEGER), CAST(NULL AS VARCHAR), value, reference, message
FROM low_utilization
UNION ALL
SELECT job_id, kind, 'info', CAST(NULL AS VARCHAR), CAST(NULL AS INTEGER), CAST(NULL AS VARCHAR), value, reference, message
FROM headroom
