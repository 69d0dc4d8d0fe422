-- step_gpu_alignment: each timed step row with every GPU's latest sample at or before the step's
-- timestamp (a GPU is its gpu_key, its UUID when known): DuckDB's ASOF JOIN, PostgreSQL's LATERAL
-- subquery over its packed minutes (warehouse/dialect.py, asof_sample_left_join; revision 0028).
WITH gpus AS (SELECT job_id, host, gpu_key, max(gpu_index) AS gpu_index FROM gpu_samples GROUP BY job_id, host, gpu_key),
step_gpu AS (
    SELECT s.job_id, s.step, s.ts, g.host, g.gpu_key, g.gpu_index
    FROM step_facts s
    JOIN gpus g ON g.job_id = s.job_id
    WHERE s.ts IS NOT NULL
)
SELECT sg.job_id, sg.step, sg.ts, sg.host, sg.gpu_index,
       x.ts AS sample_ts, x.utilization_percent, x.memory_used_mb, x.temperature_c, x.power_w,
       x.sm_clock_mhz, x.clocks_event_reasons
FROM step_gpu sg
@asof_sample_left_join(x; sg.job_id = x.job_id AND sg.host = x.host AND sg.gpu_key = x.gpu_key; sg.ts)
