"""GPU sample spools (inputs.md section 2): each file read on from where the last run stopped.

A run opens no file whose size and modification time match its ledger record (``ledger.Stat``'s
fingerprint) and that was read to its end: the cost of a run follows what is new, not the size
of the spool. Every other file is opened: its bytes before the read offset are checked against
the record's digest (a file replaced by another, of any size, is read from its start), then it
is read on from the offset.

Files are read in pieces and stored in batches of several files (``gpu_samples.BATCH_BYTES``
of text a transaction): a run's memory stays bounded whatever the spool's size, and each
batch's samples and the files' new offsets are committed together, so a run stopped between
batches resumes where the last batch ended.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from runlytics.ingest import gpu_samples, gpu_store, ledger
from runlytics.ingest.discover import is_utf8, shown
from runlytics.warehouse import db, results

from .base import Context
from .tool_log import DIGEST_BYTES, bytes_before, digest, same_prefix

KIND = "spool"
SKIPPED = (
    "a GPU sample of a minute already rolled up and past the raw window (--keep-raw-days), skipped: "
    "that minute's rollup stands"
)


# the files of a spool read as GPU samples; the others (a rotated gpu.jsonl.1, a.ndjson) are named
# in the run's problems, not read
SUFFIX = ".jsonl"
LISTED_SKIPPED = 5


def files(spools: list[Path]) -> list[Path]:
    """The files of these folders (``ingest`` reads those named *.jsonl and says which others it
    left); a folder that is not one is a usage error."""
    found = []
    for spool in spools:
        if not spool.is_dir():
            raise FileNotFoundError(f"spool {spool} is not a folder")
        found.extend(sorted(p.resolve() for p in spool.rglob("*") if p.is_file()))
    return found


@dataclass
class _File:
    """A spool file being read this run: where it started and what it gave so far."""

    path: Path
    stat: ledger.Stat
    offset: int  # bytes read and stored
    lines: int  # lines up to offset
    before: bytes = b""  # the last bytes before offset (up to DIGEST_BYTES), for the ledger's digest
    warnings: list[str] = field(default_factory=list)
    counted: bool = False  # in the summary's ingested files


def ingest(ctx: Context, paths: list[Path]) -> None:
    skipped = [path for path in paths if not path.name.endswith(SUFFIX)]
    if skipped:
        names = ", ".join(path.name for path in skipped[:LISTED_SKIPPED])
        more = f" and {len(skipped) - LISTED_SKIPPED} more" if len(skipped) > LISTED_SKIPPED else ""
        ctx.summary.problems.append(
            {
                "path": str(skipped[0].parent),
                "outcome": "skipped",
                "reason": f"{len(skipped)} spool file(s) not named *{SUFFIX} not read: {names}{more}",
            }
        )
        paths = [path for path in paths if path.name.endswith(SUFFIX)]
    paths = [path for path in paths if not _not_utf8(ctx, path)]
    resume = ledger.load_resume(ctx.con, KIND)
    known = ledger.load(ctx.con, KIND)
    batch: list[tuple[_File, gpu_samples.Piece]] = []
    size = 0
    for path in paths:
        file = _open(ctx, path, resume.get(str(path), (0, 0, None)), known.get(str(path)))
        if file is None:
            continue
        read = False
        # a final file's last line without its newline is its last line (read_pieces)
        for piece in gpu_samples.read_pieces(path, file.offset, file.lines + 1, gpu_samples.PIECE_BYTES, file.stat):
            read = True
            batch.append((file, piece))
            size += len(piece.data)
            if size >= gpu_samples.BATCH_BYTES:
                _store(ctx, batch)
                batch, size = [], 0
        if not read:  # only a line still being written
            ctx.summary.unchanged += 1
    _store(ctx, batch)


def _not_utf8(ctx: Context, path: Path) -> bool:
    """True for a file whose path is not UTF-8: named as failed (read again every run) and not
    read, as discovery does with a job folder's files (docs/ingest.md's outcome table)."""
    if is_utf8(path):
        return False
    reason = "its path is not valid UTF-8: rename the file"
    ledger.record(ctx.con, shown(path), KIND, None, "failed", reason)
    ctx.summary.files_seen += 1
    ctx.summary.failed += 1
    ctx.summary.to_retry += 1
    ctx.summary.problems.append({"path": shown(path), "outcome": "failed", "reason": reason})
    return True


def _open(
    ctx: Context, path: Path, resume: tuple[int, int, str | None], previous: tuple[str | None, str] | None
) -> _File | None:
    """The file to read from where the last run stopped (bytes, lines, digest of the bytes before),
    or None if nothing is new. ``previous``: its ledger record's (fingerprint, outcome)."""
    summary = ctx.summary
    offset, lines, before = resume
    try:
        st = ledger.stat(path)
    except OSError:
        return None
    summary.files_seen += 1
    # the size and time of its record, and read to its end: not opened (a cron run's cost follows
    # what is new). A file with a line still being written is opened again, for when it settles
    if st.size == offset and ledger.is_unchanged(previous, st):
        summary.unchanged += 1
        return None
    # changed since its record (or recorded within FRESH_SECONDS of a change, without a
    # fingerprint): replaced (rotated: renamed away and a new file of the same name, of any
    # size) or truncated, it is read from the start, as a trainer's log is (tool_log.py)
    if st.size < offset or (offset > 0 and not same_prefix(path, offset, before)):
        offset, lines = 0, 0
    if st.size == offset:
        summary.unchanged += 1
        if offset > 0 and st.fingerprint is not None:
            # the same bytes: the record takes the fingerprint it lacked, and the next run opens nothing
            ledger.fingerprint(ctx.con, str(path), st)
        return None
    return _File(path, st, offset, lines)


def _store(ctx: Context, batch: list[tuple[_File, gpu_samples.Piece]]) -> None:
    """Stage, store and record a batch of pieces in one transaction."""
    if not batch:
        return
    summary = ctx.summary
    staged = gpu_samples.stage(ctx.con, [piece for _, piece in batch])  # temporary tables only
    skipped: list[list[str]] = [[] for _ in batch]

    def skip(seqs: list[int]) -> None:
        # a piece's samples have seq starts[i] + 1 .. starts[i + 1], in line order
        starts = list(accumulate((piece.lines for _, piece in batch), initial=0))
        for seq in seqs:
            i = bisect_left(starts, seq) - 1
            line = batch[i][1].first_line + seq - starts[i] - 1
            skipped[i].append(f"line {line}: {SKIPPED}")

    with db.atomic(ctx.con):
        changed = gpu_store.store_staged(ctx.con, "spool", skip)
        results.enqueue(ctx.con, changed)
        touched: dict[Path, _File] = {}
        for (file, piece), got, dropped in zip(batch, staged, skipped, strict=True):
            file.before = (file.before + piece.raw[-DIGEST_BYTES:])[-DIGEST_BYTES:]
            file.offset, file.lines = piece.end, file.lines + piece.lines
            file.warnings += got.warnings + dropped
            summary.gpu_samples += got.rows - len(dropped)
            summary.warnings += len(got.warnings) + len(dropped)
            touched[file.path] = file
        ledger.record_many(
            ctx.con,
            KIND,
            [
                ledger.Outcome(
                    str(file.path), file.stat, None, file.lines, file.warnings, file.offset, _digest_before(file)
                )
                for file in touched.values()
            ],
        )
    summary.job_ids |= changed
    for file in touched.values():
        summary.ingested += not file.counted
        file.counted = True


def _digest_before(file: _File) -> str | None:
    """The digest of the last DIGEST_BYTES before the file's offset (fewer at its start), from the
    bytes read; read from the file when this run read fewer (None if it can't be read)."""
    if len(file.before) < min(DIGEST_BYTES, file.offset):
        try:
            file.before = bytes_before(file.path, file.offset)
        except OSError:
            return None
    return digest(file.before)
