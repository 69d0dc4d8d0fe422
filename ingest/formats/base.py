"""What every input format's reader shares: the run's context, its files, and how a file fails.

A format is one module of ``ingest/formats/`` holding one reader class, made anew for each
run: the files of a job folder it owns, how it reads what is new since the ledger's record of
them, stages rows into the common staging tables and merges them (each merge one transaction
with its ledger rows), and its warnings. ``ingest/pipeline.py`` runs the readers in the order
of ``formats.JOB_FORMATS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from runlytics.ingest import ledger
from runlytics.ingest.discover import JobFolder
from runlytics.ingest.summary import Summary

if TYPE_CHECKING:
    import duckdb

ProgressCallback = Callable[[int, int], None]


@dataclass
class Context:
    """One ingest run, as its readers see it: the open warehouse and the run's counts."""

    con: duckdb.DuckDBPyConnection
    summary: Summary
    on_progress: ProgressCallback | None = None


class JobFormat(Protocol):
    """A reader of the files that a job folder holds in one format."""

    kind: str  # the ledger's name for its files (``ingest_files.kind``)

    def files(self, job: JobFolder) -> list[Path]:
        """The files of this job folder that this format reads."""
        ...

    def prefetch(self, jobs: list[JobFolder]) -> None:
        """A new warehouse (every file is new): start reading while the migrations build it, or do nothing."""
        ...

    def ingest(self, ctx: Context, jobs: list[JobFolder]) -> None:
        """Read what changed since the ledger's record, stage, merge and count it in ``ctx.summary``."""
        ...


@dataclass
class Candidate:
    """A file to read, with the size and time it had when the run found it."""

    path: Path
    job: JobFolder
    stat: ledger.Stat


@dataclass
class Rejection:
    candidate: Candidate
    outcome: str  # 'pending' (read again next run) or 'failed' (read again when it changes)
    reason: str


def changed_files(ctx: Context, kind: str, files: list[tuple[JobFolder, Path]]) -> list[Candidate]:
    """The files whose size or time differ from the ledger's record; the others count as unchanged."""
    known = ledger.load(ctx.con, kind)
    candidates: list[Candidate] = []
    for job, path in files:
        ctx.summary.files_seen += 1
        try:
            st = ledger.stat(path)
        except OSError:  # vanished between discovery and now: nothing to read
            ctx.summary.files_seen -= 1
            continue
        if ledger.is_unchanged(known.get(str(path)), st):
            ctx.summary.unchanged += 1
        else:
            candidates.append(Candidate(path, job, st))
    return candidates


def same_file(c: Candidate) -> bool:
    """True when the file still has the size and mtime it had before it was read."""
    try:
        now = ledger.stat(c.path)
    except OSError:
        return False
    return (now.size, now.mtime_ns) == (c.stat.size, c.stat.mtime_ns)


def not_ingested(ctx: Context, r: Rejection, kind: str) -> None:
    """Record a file that was not ingested (failed or pending) in the ledger and the summary."""
    stat = r.candidate.stat if r.outcome == "failed" else None
    ledger.record(ctx.con, str(r.candidate.path), kind, stat, r.outcome, r.reason)
    if r.outcome == "failed":
        ctx.summary.failed += 1
    else:
        ctx.summary.pending += 1
    ctx.summary.problems.append({"path": str(r.candidate.path), "outcome": r.outcome, "reason": r.reason})
