-- insight_losses: the loss insights of insights.md, one row per insight: nonfinite_loss,
-- loss_spike, loss_divergence, overfitting. Computed with every other insight of a job's rows
-- by insight_steps (one sort of the rows for all of them).
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference, message
FROM insight_steps
WHERE kind IN ('nonfinite_loss', 'loss_spike', 'loss_divergence', 'overfitting')
