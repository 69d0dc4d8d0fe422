"""GPU samples rolled up per job, host, GPU and minute (``gpu_minutes``), maintained at ingest.

Placeholder: filled by the rollups work (revision 0015).
"""

from __future__ import annotations

import duckdb


def update(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute the minutes of the GPUs named in the temporary table ``stored_gpu_keys``
    (job_id, host, gpu_key, first_ts, last_ts: the samples a batch stored), in the caller's
    transaction, after the samples are stored and readable through the view ``gpu_samples``."""
