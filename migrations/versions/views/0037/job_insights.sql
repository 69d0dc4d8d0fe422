-- job_insights: every insight of every job (insights.md), one row per insight: the union of
-- insight_steps (every rule that reads a job's rows), insight_peers and insight_gpus.
-- insight_results holds it materialised per job, with as_of. gpu_key (GPU kinds: the GPU's
-- UUID, else '#<index>') is not an insight field of the contract: it tells apart two GPUs of one
-- host under one index in the order of a job's insights (warehouse/insight_list.py, revision 0037).
SELECT CAST(job_id AS VARCHAR) AS job_id, CAST(kind AS VARCHAR) AS kind, CAST(severity AS VARCHAR) AS severity,
       CAST(first_step AS BIGINT) AS first_step, CAST(last_step AS BIGINT) AS last_step,
       CAST(start_time AS TIMESTAMP) AS start_time, CAST(end_time AS TIMESTAMP) AS end_time,
       CAST(host AS VARCHAR) AS host, CAST(gpu_index AS INTEGER) AS gpu_index, CAST(gpu_key AS VARCHAR) AS gpu_key,
       CAST(value AS DOUBLE PRECISION) AS value, CAST(reference AS DOUBLE PRECISION) AS reference, CAST(message AS VARCHAR) AS message
FROM (
    SELECT job_id, kind, severity, first_step, last_step, start_time, end_time,
           CAST(NULL AS VARCHAR) AS host, CAST(NULL AS INTEGER) AS gpu_index, CAST(NULL AS VARCHAR) AS gpu_key,
           value, reference, message
    FROM insight_steps
    UNION ALL
    SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, NULL, NULL, NULL, value, reference, message
    FROM insight_peers
    UNION ALL
    SELECT job_id, kind, severity, NULL, NULL, NULL, NULL, host, gpu_index, gpu_key, value, reference, message
    FROM insight_gpus
) i
WHERE i.job_id IN (SELECT job_id FROM jobs)
