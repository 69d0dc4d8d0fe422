"""nvidia-smi ``--query-gpu`` CSV logs (inputs.md section 3), imported for a job named on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runlytics.ingest import gpu_samples, ledger, nvidia_smi
from runlytics.ingest.discover import JobFolder
from runlytics.warehouse import db, results

from .base import Candidate, Context, Rejection, not_ingested

KIND = "nvidia_smi"


@dataclass(frozen=True)
class CsvImport:
    """An nvidia-smi CSV log to import for a job (its timestamps are local time in ``timezone``)."""

    path: Path
    job_id: str
    timezone: str = "UTC"
    host: str = ""
    columns: tuple[str, ...] | None = None


def check(imports: list[CsvImport]) -> None:
    """A log that is not a file is a usage error, said before the run starts."""
    for item in imports:
        if not item.path.is_file():
            raise FileNotFoundError(f"nvidia-smi CSV {item.path} is not a file")


def ingest(ctx: Context, imports: list[CsvImport]) -> None:
    for item in imports:
        _import(ctx, item)


def _import(ctx: Context, item: CsvImport) -> None:
    """Import one nvidia-smi CSV log for a job (again only when it changed)."""
    summary = ctx.summary
    summary.files_seen += 1
    path = item.path.resolve()
    st = ledger.stat(path)
    if ledger.is_unchanged(ledger.load(ctx.con, KIND).get(str(path)), st):
        summary.unchanged += 1
        return
    candidate = Candidate(path, JobFolder(path.parent), st)
    try:
        columns = list(item.columns) if item.columns else None
        parsed = nvidia_smi.parse(path.read_bytes(), timezone=item.timezone, columns=columns, complete_only=True)
    except (nvidia_smi.NotNvidiaSmiCsv, UnicodeError) as error:
        not_ingested(ctx, Rejection(candidate, "failed", str(error)), KIND)
        return
    rows = [{**row, "job_id": item.job_id, "host": item.host} for row in parsed.rows]
    # a log still being written (its last line cut short) is recorded without its size and time:
    # the next run reads it again, whole (the samples already stored are the same rows again)
    recorded = None if parsed.unterminated else st
    with db.atomic(ctx.con):
        changed = gpu_samples.store(ctx.con, rows, "nvidia-smi")
        results.enqueue(ctx.con, changed)
        ledger.record(ctx.con, str(path), KIND, recorded, "ingested", None, item.job_id, len(rows), parsed.warnings)
    summary.job_ids |= changed
    summary.ingested += 1
    summary.gpu_samples += len(rows)
    summary.warnings += len(parsed.warnings)
