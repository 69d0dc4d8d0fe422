"""GPU samples named for a job the warehouse does not know (yet): stored, and said so.

inputs.md §2 attributes samples to a job by its id, named at import (nvidia-smi logs) or on each
line (spools); a job exists once its progress.json, trainer state or tool logs are ingested.
Samples may come first (a collector starts before the job's monitor writes): they are stored and
count in the job's analytics as soon as it exists, and the run that stored them warns, naming
the job, so that a mistyped --job-id does not pass unseen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from .summary import Summary

# the run's changed jobs (its sample imports add theirs) that have no job row
UNKNOWN = "SELECT job_id FROM unnest($ids) AS t(job_id) WHERE job_id NOT IN (SELECT job_id FROM jobs) ORDER BY job_id"


def message(job_id: str) -> str:
    return (
        f"GPU samples for job {job_id!r}, which has no progress.json, trainer state or tool logs yet: "
        "stored, they count in its analytics once the job is ingested"
    )


def warn(con: duckdb.DuckDBPyConnection, summary: Summary) -> None:
    """List in the run's summary (``unknown_jobs``) each job its samples named that the warehouse
    lacks. A note of the run, not a file's warning: the files' warning counts stay theirs."""
    if not summary.gpu_samples or not summary.job_ids:
        return
    summary.unknown_jobs = [job_id for (job_id,) in con.execute(UNKNOWN, {"ids": sorted(summary.job_ids)}).fetchall()]
