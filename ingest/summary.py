"""What an ingest run did, as the command line and the heartbeat report it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Summary:
    files_seen: int = 0
    ingested: int = 0
    unchanged: int = 0
    pending: int = 0
    failed: int = 0
    to_retry: int = 0  # of the failed: failures of the moment, read again by the next run
    rows: int = 0
    warnings: int = 0
    seconds: float = 0.0
    problems: list[dict[str, str]] = field(default_factory=list)
    job_ids: set[str] = field(default_factory=set)  # jobs whose facts this run changed

    def as_dict(self) -> dict[str, object]:
        return {
            "files_seen": self.files_seen,
            "ingested": self.ingested,
            "unchanged": self.unchanged,
            "pending": self.pending,
            "failed": self.failed,
            "to_retry": self.to_retry,
            "rows": self.rows,
            "warnings": self.warnings,
            "jobs_changed": len(self.job_ids),
            "seconds": round(self.seconds, 3),
            "problems": self.problems,
        }
