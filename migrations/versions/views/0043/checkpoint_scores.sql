-- checkpoint_scores: each checkpoint with what ranks it: its eval loss (its own entry's, else the step
-- row's) and the training loss of the last step at or before it that has a finite loss;
-- nonfinite_eval_loss: its entry's eval_loss is NaN or infinite (left out, and counted by
-- job_checkpoints: revision 0043).
SELECT c.job_id,
       c.step,
       'checkpoint-' || CAST(c.step AS VARCHAR) AS name,
       c.step - coalesce(lag(c.step) OVER (PARTITION BY c.job_id ORDER BY c.step), 0) AS gap,
       CASE WHEN @finite(c.eval_loss) THEN c.eval_loss
            WHEN @finite(s.eval_loss) THEN s.eval_loss END AS eval_loss,
       (SELECT @first_by(t.loss; t.step DESC)
          FROM step_facts t
         WHERE t.job_id = c.job_id AND t.step <= c.step AND @finite(t.loss)) AS train_loss,
       coalesce(NOT @finite(c.eval_loss), false) AS nonfinite_eval_loss
FROM checkpoints c
LEFT JOIN step_facts s ON s.job_id = c.job_id AND s.step = c.step
