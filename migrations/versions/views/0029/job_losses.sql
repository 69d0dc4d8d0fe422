-- job_losses: the losses section, one row per job (finite values only): initial, final, best,
-- reduction, eval losses, and how many non-finite values were left out.
WITH agg AS (
    SELECT j.job_id,
           @first_by(s.loss; s.step) FILTER (WHERE @finite(s.loss)) AS initial_loss,
           @first_by(s.loss; s.step DESC) FILTER (WHERE @finite(s.loss)) AS final_loss,
           min(s.loss) FILTER (WHERE @finite(s.loss)) AS best_loss,
           @first_by(s.eval_loss; s.step DESC) FILTER (WHERE @finite(s.eval_loss)) AS final_eval_loss,
           min(s.eval_loss) FILTER (WHERE @finite(s.eval_loss)) AS best_eval_loss,
           count(*) FILTER (WHERE s.loss IS NOT NULL AND NOT @finite(s.loss)) AS nonfinite_losses,
           count(*) FILTER (WHERE s.eval_loss IS NOT NULL AND NOT @finite(s.eval_loss)) AS nonfinite_eval_losses
    FROM jobs j
    LEFT JOIN step_facts s ON s.job_id = j.job_id
    GROUP BY j.job_id
)
SELECT job_id, initial_loss, final_loss, best_loss,
       CASE WHEN initial_loss <> 0 THEN @fdiv(@fmul(100; @fsub(initial_loss; final_loss)); initial_loss) END
           AS loss_reduction_percent,
       final_eval_loss, best_eval_loss, nonfinite_losses, nonfinite_eval_losses
FROM agg
