"""GPU sample spools (inputs.md section 2): each file read on from where the last run stopped."""

from __future__ import annotations

from pathlib import Path

from runlytics.ingest import gpu_samples, ledger
from runlytics.warehouse import db, results

from .base import Context

KIND = "spool"


def files(spools: list[Path]) -> list[Path]:
    """The spool files of these folders; a folder that is not one is a usage error."""
    found = []
    for spool in spools:
        if not spool.is_dir():
            raise FileNotFoundError(f"spool {spool} is not a folder")
        found.extend(sorted(p.resolve() for p in spool.rglob("*.jsonl") if p.is_file()))
    return found


def ingest(ctx: Context, paths: list[Path]) -> None:
    offsets = ledger.load_offsets(ctx.con, KIND)
    for path in paths:
        _ingest_file(ctx, path, offsets.get(str(path), (0, 0)))


def _ingest_file(ctx: Context, path: Path, resume: tuple[int, int]) -> None:
    """Read a spool file from where the last run stopped (bytes, lines), up to its last complete line."""
    summary = ctx.summary
    summary.files_seen += 1
    offset, lines = resume
    try:
        st = ledger.stat(path)
    except OSError:
        summary.files_seen -= 1
        return
    if st.size < offset:  # replaced or truncated: read it from the start
        offset, lines = 0, 0
    if st.size == offset:
        summary.unchanged += 1
        return
    chunk = gpu_samples.read_spool(path, offset, lines + 1)
    if chunk.consumed == 0:  # only a line still being written
        summary.unchanged += 1
        return
    with db.atomic(ctx.con):
        changed = gpu_samples.store(ctx.con, chunk.rows, "spool")
        results.enqueue(ctx.con, changed)
        ledger.record(
            ctx.con, str(path), KIND, st, "ingested", None, None, lines + chunk.lines, chunk.warnings,
            read_offset=offset + chunk.consumed,
        )  # fmt: skip
    summary.job_ids |= changed
    summary.ingested += 1
    summary.gpu_samples += len(chunk.rows)
    summary.warnings += len(chunk.warnings)
