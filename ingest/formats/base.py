"""What every input format's reader shares: the run's context, its files, and how a file fails.

A format is one module of ``ingest/formats/`` holding one reader class, made anew for each
run: the files of a job folder it owns, how it reads what is new since the ledger's record of
them, stages rows into the common staging tables and merges them (each merge one transaction
with its ledger rows), and its warnings. ``ingest/pipeline.py`` runs the readers in the order
of ``formats.JOB_FORMATS``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from runlytics.ingest import ledger
from runlytics.ingest.discover import JobFolder, is_utf8, shown
from runlytics.ingest.summary import Summary

if TYPE_CHECKING:
    import duckdb

Phase = Literal["discover", "read", "merge", "publish"]
# on_progress(phase, done, total): ``done`` of ``total`` files through ``phase`` so far
ProgressCallback = Callable[[Phase, int, int], None]


DEFAULT_MAX_FILE_MB = 2048
# the folder each job id is stored for (one folder per job id: docs/ingest.md)
STORED_DIRS = "SELECT job_id, source_dir FROM jobs WHERE job_id IN (SELECT unnest($job_ids))"


@dataclass
class Context:
    """One ingest run, as its readers see it: the open warehouse and the run's counts."""

    con: duckdb.DuckDBPyConnection
    summary: Summary
    on_progress: ProgressCallback | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_MB << 20
    # job folders whose progress.json claims another folder's job id (this run): their trainer
    # states and checkpoint folders are not read either
    conflicts: dict[Path, str] = field(default_factory=dict)
    # the folders the run walked (its roots, resolved): where a folder problem named before and
    # not now is looked at again, even when the run found no job folder there
    roots: tuple[Path, ...] = ()

    def progress(self, phase: Phase, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(phase, done, total)


class JobFormat(Protocol):
    """A reader of the files that a job folder holds in one format."""

    kind: str  # the ledger's name for its files (``ingest_files.kind``)

    def files(self, job: JobFolder) -> list[Path]:
        """The files of this job folder that this format reads."""
        ...

    def prefetch(self, jobs: list[JobFolder], max_file_bytes: int) -> None:
        """A new warehouse (every file is new): start reading while the migrations build it, or do nothing.

        Only files that pass ``entry_problem`` may be opened here too.
        """
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
    retry: bool = False  # a failure of the moment (permission, vanished, full disk): read again next run
    conflict: bool = False  # its job id belongs to another folder


def changed_files(ctx: Context, kind: str, files: list[tuple[JobFolder, Path]]) -> list[Candidate]:
    """The files whose size or time differ from the ledger's record; the others count as unchanged."""
    known = ledger.load(ctx.con, kind)
    candidates: list[Candidate] = []
    for job, path in files:
        ctx.summary.files_seen += 1
        try:
            st, problem = examine(path, job, ctx.max_file_bytes)
        except FileNotFoundError:
            if os.path.islink(path):  # a link to nothing: say so, every run while it is there
                reason = link_to_nothing(path)
                not_ingested(ctx, Rejection(Candidate(path, job, NO_STAT), "failed", reason, True), kind)
                continue
            ctx.summary.files_seen -= 1  # vanished between discovery and now: nothing to read
            continue
        except OSError as error:
            not_ingested(ctx, Rejection(Candidate(path, job, NO_STAT), "failed", f"cannot stat: {error}", True), kind)
            continue
        candidate = Candidate(path, job, st)
        record = known.get(str(path))
        if problem is not None and problem.startswith(TOO_LARGE) and ledger.is_unchanged(record, st):
            ctx.summary.unchanged += 1  # read whole under a larger limit, and not read again: unchanged
        elif problem is not None:
            # checked again every run (it is never opened, so that costs a stat): a failure as long as
            # it is there, read once it is fixed, renamed, or (--max-file-mb raised) allowed
            not_ingested(ctx, Rejection(candidate, "failed", problem, retry=True), kind)
        elif ledger.is_unchanged(record, st):
            ctx.summary.unchanged += 1
        else:
            candidates.append(candidate)
    return candidates


NO_STAT = ledger.Stat(0, 0, True)
# entry_problem's last test: a file over --max-file-mb (an unchanged one, read before under a
# larger limit, stays unchanged: the limit is on reads, and none is due)
TOO_LARGE = "larger than --max-file-mb"


def link_to_nothing(path: Path) -> str:
    """Why a symbolic link to nothing is not read."""
    return f"a symbolic link to {shown(Path(os.path.realpath(path)))}, which does not exist: not read"


def openable(files: list[tuple[JobFolder, Path]], max_file_bytes: int) -> list[Candidate]:
    """The files that may be opened (no ``entry_problem``), for a read ahead of ``changed_files``."""
    candidates = []
    for job, path in files:
        try:
            st, problem = examine(path, job, max_file_bytes)
        except OSError:  # changed_files reports it
            continue
        if problem is None:
            candidates.append(Candidate(path, job, st))
    return candidates


def read_again(ctx: Context, kind: str, job: JobFolder, path: Path) -> Candidate | None:
    """A file ``changed_files`` counted unchanged that must be read all the same (a watched file,
    a file whose job moved), as a Candidate; None when it can't be opened: vanished (its record
    stands), a problem ``changed_files`` failed it for, or over a --max-file-mb it passed as
    unchanged (failed here: a read is due)."""
    try:
        st, problem = examine(path, job, ctx.max_file_bytes)
    except OSError:
        return None
    if problem is not None and not problem.startswith(TOO_LARGE):
        return None
    ctx.summary.unchanged -= 1
    if problem is not None:
        not_ingested(ctx, Rejection(Candidate(path, job, st), "failed", problem, retry=True), kind)
        return None
    return Candidate(path, job, st)


def examine(path: Path, job: JobFolder, max_bytes: int) -> tuple[ledger.Stat, str | None]:
    """A job folder's file, with one stat in the common case: its ledger stat, and why it must not
    be opened at all (``entry_problem``), or None."""
    st = os.lstat(path)
    # discovery walks real folders under a resolved root: only a link, or a file in a subfolder
    # (a checkpoint-<step>/ that may itself be a link), can lead outside the root
    linked = stat.S_ISLNK(st.st_mode) or path.parent != job.path
    if linked:
        st = os.stat(path)
    return ledger.stat_of(st), entry_problem(path, job, st.st_mode, st.st_size, max_bytes, linked)


def entry_problem(path: Path, job: JobFolder, mode: int, size: int, max_bytes: int, linked: bool) -> str | None:
    """Why a file of a job folder must not be opened at all, or None.

    Checked before any read: a FIFO would block the run forever, a device (a link to /dev/zero)
    never ends, and a name that is not UTF-8 can't be stored.
    """
    if not job.name_is_utf8 or not is_utf8(path):
        return "its path is not valid UTF-8: rename the folder"
    if linked and job.root is not None:  # job.root is resolved by discovery
        real = os.path.realpath(path)
        if os.path.commonpath([real, str(job.root)]) != str(job.root):
            return f"a symbolic link to {shown(Path(real))}, outside the ingest root {shown(job.root)}"
    if not stat.S_ISREG(mode):
        return f"not a regular file ({file_type(mode)}): not read"
    if size > max_bytes:
        return f"{TOO_LARGE} ({_mib(size)} MiB > {_mib(max_bytes)} MiB): not read"
    return None


def _mib(size: int) -> str:
    """A size in MiB as a person reads it: whole from 10 on, else 3 significant digits (a limit of
    0.5 read "0 MiB", and a file of 1.4 MiB over it "1 MiB")."""
    mib = size / 2**20
    return f"{mib:.0f}" if mib >= 10 else f"{mib:.3g}"


def file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return name
    return "not a plain file"


def not_ingested(ctx: Context, r: Rejection, kind: str) -> None:
    """Record a file that was not ingested (failed or pending) in the ledger and the summary."""
    st = r.candidate.stat if r.outcome == "failed" and not r.retry else None
    path = shown(r.candidate.path)
    ledger.record(ctx.con, path, kind, st, r.outcome, r.reason)
    if r.outcome == "failed":
        ctx.summary.failed += 1
        ctx.summary.to_retry += r.retry
    else:
        ctx.summary.pending += 1
    ctx.summary.problems.append({"path": path, "outcome": r.outcome, "reason": r.reason})


def stored_owner(stored_dir: str | None) -> str | None:
    """The folder that holds a job id: the one stored for it while it exists (a job folder moved
    elsewhere takes its job along: the id is then the first claiming folder's), else None."""
    return stored_dir if stored_dir and os.path.isdir(stored_dir) else None
