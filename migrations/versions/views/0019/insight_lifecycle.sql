-- insight_lifecycle: the job insights of insights.md, one row per insight: work_at_risk (a
-- failed or cancelled job far past its last checkpoint) and silent_running (a running job that
-- has logged nothing for long, at insight_parameters.as_of). Computed with every other insight
-- of a job's rows by insight_steps.
SELECT job_id, kind, value, reference, message
FROM insight_steps
WHERE kind IN ('work_at_risk', 'silent_running')
