"""What an ingest run did, as the command line and the heartbeat report it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class Summary:
    MAX_LISTED_WARNINGS: ClassVar[int] = 1000  # a run with millions of warnings keeps its summary small

    files_seen: int = 0
    ingested: int = 0
    unchanged: int = 0
    pending: int = 0
    failed: int = 0
    to_retry: int = 0  # of the failed: failures of the moment, read again by the next run
    rows: int = 0  # step rows (progress.json steps, trainer states' log_history steps)
    # scalars read from trainers' own logs (TensorBoard, Lightning, MLflow, LLaMA-Factory): one a
    # (metric, step), many to a step row, so not counted as rows
    points: int = 0
    gpu_samples: int = 0
    warnings: int = 0
    seconds: float = 0.0
    problems: list[dict[str, str]] = field(default_factory=list)
    # (path, message) of this run's warnings, as the ledger keeps them (the first 50 of each file)
    listed_warnings: list[tuple[str, str]] = field(default_factory=list)
    job_ids: set[str] = field(default_factory=set)  # jobs whose facts this run changed
    # jobs this run stored GPU samples for that the warehouse has no job row of (ingest/unknown_jobs.py)
    unknown_jobs: list[str] = field(default_factory=list)
    # trainers' logs whose last line waits for its newline or for the file to settle: not reported
    # (no file is left unread), but the next run must read on (ingest/quick.py's shortcut must not)
    waiting: int = 0

    def as_dict(self, *, warning_list: bool = False) -> dict[str, object]:
        """The counts and problems; with ``warning_list``, the listed warnings too (not in the heartbeat)."""
        counts: dict[str, object] = {
            "files_seen": self.files_seen,
            "ingested": self.ingested,
            "unchanged": self.unchanged,
            "pending": self.pending,
            "failed": self.failed,
            "to_retry": self.to_retry,
            "rows": self.rows,
            "points": self.points,
            "gpu_samples": self.gpu_samples,
            "warnings": self.warnings,
            "jobs_changed": len(self.job_ids),
            "seconds": round(self.seconds, 3),
            "problems": self.problems,
        }
        if self.unknown_jobs:
            counts["unknown_jobs"] = self.unknown_jobs
        if warning_list:
            counts["warning_list"] = [{"path": path, "message": message} for path, message in self.listed_warnings]
        return counts
