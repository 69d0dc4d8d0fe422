"""GPU sample spools (inputs.md section 2): each file read on from where the last run stopped.

A run opens no file whose size and modification time match its ledger record (``ledger.Stat``'s
fingerprint) and that was read to its end: the cost of a run follows what is new, not the size
of the spool. An empty file is never opened (recorded at offset 0, so that a rotated copy of it
is known: ``_plan``). Every other file is opened and told by its bytes (``_identity``, the ledger's
``read_digest``): its first line and the last line before the read offset. A file that holds
both where its record says is the file read before, read on from the offset; any other file (a
new name, or a name whose file was replaced: rotated, truncated, rewritten, of any size) is
looked for among the records whose file is gone or was replaced this run (``_plan``), in the
same folder: a file that holds one of them (the old file renamed, ``gpu.jsonl`` to
``gpu-1.jsonl`` or logrotate's ``gpu.jsonl.1``) is read on from that record's offset, so the
old file's last lines are read whatever its new name; one that holds none is read from its
start (a ``*.jsonl`` file), or not read (a ``gpu.jsonl.1`` that continues no record: named in
the run's problems), unless the file it is named after was read to offset 0 only (empty, or a
line still being written): the newest such copy is then read from its start. A replaced file
whose old file no file of the spool holds warns that the old file's last lines, if it got any
after the last run, are lost. The record of a file gone from a folder of the spool that no file
of it holds is dropped (a file deleted, compressed), so that it is not looked for again.

Files are read in pieces and stored in batches of several files (``gpu_samples.BATCH_BYTES``
of text a transaction): a run's memory stays bounded whatever the spool's size, and each
batch's samples and the files' new offsets are committed together, so a run stopped between
batches resumes where the last batch ended.

A file's last line without its newline waits for the next run (the offset before it) until the
file is ``ledger.final`` (settled): then a line that is whole JSON is read as any other, while
one that is not (a line cut mid-write: the file server's clock may be behind, so a file being
written can look settled) waits, unwarned, until its record has had the file's size and time for
``ledger.SETTLED_SECONDS`` by this machine's clock (``_quiet``): then it is read as a bad line.
"""

from __future__ import annotations

import codecs
import os
import stat
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from runlytics.ingest import gpu_samples, gpu_store, json_text, ledger
from runlytics.ingest.discover import is_utf8, shown
from runlytics.warehouse import db, results

from .base import Context, file_type, link_to_nothing
from .tool_log import DIGEST_BYTES, bytes_before, digest

KIND = "spool"
SKIPPED = (
    "a GPU sample of a minute already rolled up and past the raw window (--keep-raw-days), skipped: "
    "that minute's rollup stands"
)
# a file read from its start because the file read before under its name was replaced (or cut),
# when no file of the spool holds that old file (renamed out of the spool, compressed, deleted)
LOST = (
    "replaced or truncated since the last run (rotated?), read from its start: no file of the spool holds "
    "the old file, read up to line {lines}; lines written to it after that run, if any, are lost"
)


# the files of a spool read as GPU samples; the others (a.ndjson) are named in the run's
# problems, not read. A rotated copy named after one (``gpu.jsonl.1``, ``gpu.jsonl-20260301``)
# is read only on from where the file it holds was read to (``_plan``)
SUFFIX = ".jsonl"
LISTED_SKIPPED = 5
# a file is told by its first line and by the last line before its read offset (with at least
# the DIGEST_BYTES before the offset), each up to these bytes: lines carry their own time
HEAD_BYTES = 4096
TAIL_BYTES = 4096
LEGACY_DIGEST = 8  # the length of a read_digest written before session 19: the 64 bytes before the offset
# a record whose file a rotated copy continues, its own path gone: the copy's record takes its place
FORGET = """
DELETE FROM ingest_files
WHERE kind = $kind AND path = $path AND read_offset = $offset AND read_digest IS NOT DISTINCT FROM $digest
"""
# a record found to hold its file's bytes again (``_fingerprint``): the digest of those bytes
SET_DIGEST = "UPDATE ingest_files SET read_digest = $digest WHERE path = $path AND kind = $kind"
# the records of files gone from a folder of the spool that no file of it holds (``_plan``)
DROP = "DELETE FROM ingest_files WHERE kind = $kind AND path IN (SELECT unnest($paths::VARCHAR[]))"
# a file whose last line waits, read nothing of this run: its record takes the file's size and time,
# and the run's time, from which ``_quiet`` counts how long the file has kept them; and the warnings
# of this read, none: the ledger keeps a file's last read's, and a run lists those of the files read
# since it began (ingest_status.RUN_WARNINGS), so an earlier read's, said then, are not its own
WAITING = """
UPDATE ingest_files
SET size = $size, mtime_ns = $mtime_ns, fingerprint = $fingerprint, last_read_at = now()::TIMESTAMP,
    warning_count = 0, warnings = '[]'
WHERE path = $path AND kind = $kind
"""
# what the spool's ledger knows of its files (ledger.load and ledger.load_resume, and the times)
LOAD = """
SELECT path, read_offset, rows, read_digest, mtime_ns, fingerprint, outcome, epoch(last_read_at)
FROM ingest_files WHERE kind = $kind
"""


def files(spools: list[Path]) -> list[Path]:
    """The files of these folders (``ingest`` reads those named *.jsonl and says which others it
    left); a folder that is not one is a usage error."""
    found = []
    for spool in spools:
        if not spool.is_dir():
            raise FileNotFoundError(f"spool {spool} is not a folder")
        for p in sorted(spool.rglob("*")):
            if p.is_file():
                found.append(p.resolve())
            elif (p.name.endswith(SUFFIX) or _rotated(p)) and (p.is_symlink() or not p.is_dir()):
                # named as a spool file, yet none (a folder of that name is walked: its files are read),
                # its folder resolved as the files' are: ``ingest`` says so
                found.append(p.parent.resolve() / p.name)
    return found


def _not_a_file(path: Path) -> str | None:
    """Why an entry named as a spool file is not read (a FIFO would block the run, a link to
    /dev/zero never end), or None for a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return link_to_nothing(path)
        return None  # gone since it was listed: nothing to read
    except OSError as error:  # a link that loops
        return f"cannot stat: {error.strerror or error}: not read"
    return None if stat.S_ISREG(mode) else f"not a regular file ({file_type(mode)}): not read"


def _rotated(path: Path) -> bool:
    """A rotated copy's name: a spool file's name and more (``gpu.jsonl.1``, ``gpu.jsonl-20260301``)."""
    return SUFFIX in path.name and not path.name.endswith(SUFFIX)


def _base(name: str) -> str:
    """The spool file's name a file's name is made of (``gpu.jsonl`` of ``gpu.jsonl.1``)."""
    return name[: name.index(SUFFIX) + len(SUFFIX)] if SUFFIX in name else name


@dataclass(frozen=True)
class _Mark:
    """A file's ledger record: where its last read stopped and the digest telling that file."""

    path: str
    offset: int
    lines: int
    digest: str | None
    # the file's modification time when recorded (None: not known): a file that holds the record's
    # bytes and more was written since, so an older one is not opened to look (``_holds``)
    mtime_ns: int | None = None
    ingested: bool = True  # a record of a file read (not one failed)
    fingerprint: str | None = None  # the file's size and time when recorded (None: fresh then)
    read_at: float | None = None  # when recorded (epoch seconds, this machine's clock)

    @property
    def legacy(self) -> bool:
        return self.digest is not None and len(self.digest) == LEGACY_DIGEST


@dataclass
class _File:
    """A spool file being read this run: where it started and what it gave so far."""

    path: Path
    stat: ledger.Stat
    offset: int  # bytes read and stored
    lines: int  # lines up to offset
    head: bytes = b""  # the file's first bytes (up to HEAD_BYTES), when read
    before: bytes = b""  # the last bytes before offset (up to TAIL_BYTES), for the ledger's digest
    warnings: list[str] = field(default_factory=list)
    counted: bool = False  # in the summary's ingested files
    # recorded even when nothing is read: a file read from where another's record stopped, or
    # one that replaced the file read before under its name (the record no longer holds)
    record: bool = False
    moved: _Mark | None = None  # the record of a file now gone that this one holds: forgotten


def ingest(ctx: Context, paths: list[Path]) -> None:
    # entries named as spool files that are none (``files``): failed, said every run while they are there
    regular = []
    for path in paths:
        why = _not_a_file(path)
        if why is None:
            regular.append(path)
            continue
        ctx.summary.files_seen += 1
        ctx.summary.failed += 1
        ctx.summary.to_retry += 1
        ctx.summary.problems.append({"path": shown(path), "outcome": "failed", "reason": why})
    paths = regular
    found = {str(path) for path in paths}
    readable = [path for path in paths if path.name.endswith(SUFFIX) or (_rotated(path) and is_utf8(path))]
    kept = set(readable)
    unread = {path for path in paths if path not in kept}
    readable = [path for path in readable if not _not_utf8(ctx, path)]
    marks, known = _load(ctx)
    planned, left = _plan(ctx, readable, found, marks, known)
    _name_skipped(ctx, [path for path in paths if path in left or path in unread])
    batch: list[tuple[_File, gpu_samples.Piece]] = []
    size = 0
    # the files that take up another's record first: a run stopped between batches has then
    # recorded them before the files that replaced theirs
    files = [planned[path] for path in readable if path in planned]
    for file in sorted(files, key=lambda file: not (file.record and file.offset > 0)):
        path = file.path
        read = False
        mark = marks.get(str(path))
        # a final file's last line without its newline is its last line (read_pieces), if whole
        for piece in gpu_samples.read_pieces(path, file.offset, file.lines + 1, gpu_samples.PIECE_BYTES, file.stat):
            if piece.unterminated and not _whole(piece.raw) and not _quiet(file, mark, piece.offset):
                continue  # a line cut mid-write: left for the next run, the offset before it
            read = True
            batch.append((file, piece))
            size += len(piece.data)
            if size >= gpu_samples.BATCH_BYTES:
                _store(ctx, batch)
                batch, size = [], 0
        if not read:  # nothing new, or only a line still being written
            ctx.summary.unchanged += 1
            if file.record:
                _record_unread(ctx, file)
            elif mark is not None and mark.fingerprint != file.stat.fingerprint:
                _record_waiting(ctx, file)
    _store(ctx, batch)


def _whole(raw: bytes) -> bool:
    """Whether a file's last line without its newline is whole: JSON (a writer may never write a
    final newline), not a line cut mid-write. A line cut after a CR (a line break to the careful
    road, ``gpu_samples.stage``) is cut: the text after it is the line."""
    try:
        json_text.loads(raw[raw.rfind(b"\r") + 1 :])
    except (ValueError, RecursionError):  # (JSONDecodeError and UnicodeDecodeError are ValueErrors)
        return False
    return True


def _quiet(file: _File, mark: _Mark | None, offset: int) -> bool:
    """Whether no writer has been at the file for ``ledger.SETTLED_SECONDS`` by this machine's
    clock, whatever its time says: its record, stopped at ``offset`` (just before its last line),
    has had the file's size and time that long. A line cut mid-write is then the file's last line
    for good (its writer stopped), read as a bad one, once."""
    return (
        mark is not None and mark.offset == offset and mark.read_at is not None
        and file.stat.fingerprint is not None and mark.fingerprint == file.stat.fingerprint
        and time.time() - mark.read_at > ledger.SETTLED_SECONDS
    )  # fmt: skip


def _record_waiting(ctx: Context, file: _File) -> None:
    """Give the record of a file read nothing of, its last line waiting, the file's size and time
    and the run's time (``_quiet`` counts from them), and no warnings (this read's; the read offset,
    rows and digest are kept)."""
    st = file.stat
    values = {"size": st.size, "mtime_ns": st.mtime_ns, "fingerprint": st.fingerprint}
    ctx.con.execute(WAITING, {**values, "path": ledger.storable(str(file.path)), "kind": KIND})


def _load(ctx: Context) -> tuple[dict[str, _Mark], dict[str, tuple[str | None, str]]]:
    """The spool's records by path, and each one's (fingerprint, outcome) for ``ledger.is_unchanged``."""
    marks: dict[str, _Mark] = {}
    known: dict[str, tuple[str | None, str]] = {}
    rows = ctx.con.execute(LOAD, {"kind": KIND}).fetchall()
    for path, offset, lines, read_digest, mtime_ns, fingerprint, outcome, read_at in rows:
        ingested = outcome == "ingested"
        marks[path] = _Mark(path, offset or 0, lines or 0, read_digest, mtime_ns, ingested, fingerprint, read_at)
        known[path] = (fingerprint, outcome)
    return marks, known


def _name_skipped(ctx: Context, skipped: list[Path]) -> None:
    """Name in the run's problems the files of the spool it does not read."""
    if not skipped:
        return
    names = ", ".join(path.name for path in skipped[:LISTED_SKIPPED])
    more = f" and {len(skipped) - LISTED_SKIPPED} more" if len(skipped) > LISTED_SKIPPED else ""
    ctx.summary.problems.append(
        {
            "path": str(skipped[0].parent),
            "outcome": "skipped",
            "reason": f"{len(skipped)} spool file(s) not named *{SUFFIX} not read: {names}{more}",
        }
    )


def _plan(
    ctx: Context,
    paths: list[Path],
    found: set[str],
    marks: dict[str, _Mark],
    known: dict[str, tuple[str | None, str]],
) -> tuple[dict[Path, _File], set[Path]]:
    """The files to read and where from (a file left out has nothing new), and the rotated
    copies that continue no record (not read)."""
    summary = ctx.summary
    planned: dict[Path, _File] = {}
    unmatched: list[tuple[Path, ledger.Stat, _Mark | None]] = []  # new names, and files replaced
    doubtful: list[tuple[Path, ledger.Stat, _Held]] = []  # held by a record of before session 19
    empty: list[ledger.Outcome] = []  # empty files new to the ledger: recorded, not opened
    changed: set[str] = set()  # the records at offset 0 whose file changed since (a rotated copy may hold it)
    unsure: set[str] = set()  # folders with a file that could not be told: their gone records are kept
    for path in paths:
        try:
            st = ledger.stat(path)
        except OSError:
            unsure.add(str(path.parent))
            continue
        mark = marks.get(str(path))
        # the size and time of its record, and read to its end: not opened (a cron run's cost
        # follows what is new). A file with a line still being written is opened again
        if mark is not None and st.size == mark.offset and ledger.is_unchanged(known.get(str(path)), st):
            summary.files_seen += 1
            summary.unchanged += 1
            continue
        if st.size == 0 and not _rotated(path) and (mark is None or mark.offset == 0):
            # nothing to read: not opened, but recorded (at offset 0), so that the next run does not
            # look at it either, and a rotated copy of it is known to hold lines never read
            summary.files_seen += 1
            summary.unchanged += 1
            if mark is None:
                empty.append(ledger.Outcome(str(path), st, None, 0, [], 0, _identity(b"", b"", 0)))
            else:
                changed.add(mark.path)
                ledger.fingerprint(ctx.con, str(path), st)
            continue
        if mark is None:
            unmatched.append((path, st, None))
            continue
        if mark.offset == 0:  # nothing read yet (empty, or a line still being written): from its start
            summary.files_seen += 1
            changed.add(mark.path)
            planned[path] = _File(path, st, 0, 0)
            continue
        try:
            held = _holds(path, st, [mark])
        except OSError:
            unsure.add(str(path.parent))
            continue
        if held is None:  # replaced (rotated, truncated, rewritten): its record is free for its old file
            unmatched.append((path, st, mark))
        elif mark.legacy:  # told by 64 bytes only: decided once the other files are known
            doubtful.append((path, st, held))
        else:
            _read_on(ctx, planned, path, st, held)
    if empty:
        ledger.record_many(ctx.con, KIND, empty)
    # the records whose file is gone or was replaced: a file of their folder may hold it. Those of
    # a folder this run listed whose file is gone are dropped below unless one does
    folders = {os.path.dirname(path) for path in found}
    free: dict[str, list[_Mark]] = {}
    gone: list[_Mark] = []
    replaced = {str(path) for path, _, mark in unmatched if mark is not None}
    for mark in marks.values():
        folder = os.path.dirname(mark.path)
        if mark.path not in found and mark.ingested and _listed(folder, folders):
            gone.append(mark)
        if mark.offset > 0 and mark.digest is not None and (mark.path not in found or mark.path in replaced):
            free.setdefault(folder, []).append(mark)
    for _, _, held in doubtful:  # a rotated copy that holds them as well is the old file
        free.setdefault(os.path.dirname(held.mark.path), []).append(held.mark)
    continued: set[str] = set()
    fresh: list[tuple[_File, _Mark]] = []  # files read from their start in place of a replaced one
    left: dict[Path, ledger.Stat] = {}
    for path, st, own in unmatched:
        candidates = [
            m for m in free.get(str(path.parent), []) if m.path != str(path) and (_rotated(path) or not m.legacy)
        ]
        try:
            held = _holds(path, st, candidates, others=True) if candidates else None
        except OSError:
            unsure.add(str(path.parent))
            continue
        if held is not None:
            mark = held.mark
            continued.add(mark.path)
            moved = mark if mark.path not in found else None
            planned[path] = _File(path, st, mark.offset, mark.lines, held.head, held.before, record=True, moved=moved)
        elif not _rotated(path):
            # recorded even when nothing is read (a line still being written): a rotated copy of it
            # is then known to hold lines never read
            planned[path] = _File(path, st, 0, 0, record=True)
            if own is not None:
                fresh.append((planned[path], own))
        else:
            left[path] = st  # a rotated copy of nothing read: not read (unless of a file read to 0)
            continue
        summary.files_seen += 1
    zero = [
        m for m in marks.values()
        if m.offset == 0 and m.ingested and (m.path in changed or (m.path not in found and m.path not in continued))
    ]  # fmt: skip
    for mark in sorted(zero, key=lambda m: m.path) if left else []:
        taken = _first_copy(mark, left)
        if taken is not None:
            path, head = taken
            continued.add(mark.path)
            moved = mark if mark.path not in found else None
            planned[path] = _File(path, left.pop(path), 0, 0, head, record=True, moved=moved)
            summary.files_seen += 1
    for file, own in fresh:
        if own.path not in continued and not _kept(own, marks.values(), found):
            file.warnings.append(LOST.format(lines=own.lines))
            summary.warnings += 1
    for path, st, held in doubtful:
        # its 64 bytes before the offset are also in another new or replaced file of its folder
        # (an idle GPU's lines): which one is the old file is not known, so it is read from its
        # start (its samples are stored once), as that other file is, or read on (a rotated copy)
        others = [p for p, _, _ in unmatched if p.parent == path.parent and p != path]
        if held.mark.path in continued or any(_ends_alike(p, held.mark) for p in others):
            summary.files_seen += 1
            planned[path] = _File(path, st, 0, 0, record=True)
        else:
            _read_on(ctx, planned, path, st, held)
    dropped = [m.path for m in gone if m.path not in continued and os.path.dirname(m.path) not in unsure]
    if dropped:
        ctx.con.execute(DROP, {"kind": KIND, "paths": dropped})
    return planned, set(left)


def _listed(folder: str, folders: set[str]) -> bool:
    """Whether this run listed every file of ``folder``: it, or a folder above it, holds a file
    of the run (a spool folder is listed whole, its subfolders with it). Another spool's folders
    (a run given only some) are not, and their records are kept."""
    while folder not in folders:
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent
    return True


def _first_copy(mark: _Mark, left: dict[Path, ledger.Stat]) -> tuple[Path, bytes] | None:
    """Of the rotated copies that continue no record, the one that holds the file of a record
    at offset 0 (empty or a line still being written when read, since changed or gone): the
    newest of those named after the same file (``gpu.jsonl.1`` of ``gpu.jsonl``), written since
    the record, not empty, of text (a compressed copy is not read); with its first bytes."""
    folder, name = os.path.split(mark.path)
    copies = [
        (st.mtime_ns, str(path), path) for path, st in left.items()
        if str(path.parent) == folder and _base(path.name) == _base(name) and st.size > 0
        and (mark.mtime_ns is None or st.mtime_ns >= mark.mtime_ns)
    ]  # fmt: skip
    for _, _, path in sorted(copies, reverse=True):
        try:
            with path.open("rb") as f:
                head = f.read(HEAD_BYTES)
        except OSError:
            continue
        if b"\0" not in head:
            try:
                codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at its end is text
            except UnicodeDecodeError:
                continue
            return path, head
    return None


def _read_on(ctx: Context, planned: dict[Path, _File], path: Path, st: ledger.Stat, held: _Held) -> None:
    """Plan a file that holds its record: read on from its offset, or nothing new."""
    mark = held.mark
    ctx.summary.files_seen += 1
    if st.size == mark.offset:
        ctx.summary.unchanged += 1
        if st.fingerprint is not None or held.identity != mark.digest:
            # the same bytes: the record takes the fingerprint it lacked (and the digest of a
            # record written before session 19), and the next run opens nothing
            _fingerprint(ctx, path, st, held.identity or mark.digest)
        return
    planned[path] = _File(path, st, mark.offset, mark.lines, held.head, held.before)


def _ends_alike(path: Path, mark: _Mark) -> bool:
    """Whether ``path`` holds the 64 bytes a record of before session 19 keeps (``mark.legacy``)."""
    try:
        return path.stat().st_size >= mark.offset and digest(bytes_before(path, mark.offset)) == mark.digest
    except OSError:
        return False


def _kept(own: _Mark, marks: Iterable[_Mark], found: set[str]) -> bool:
    """Whether another file of the spool was read at least as far as ``own`` with its first line:
    the old file, taken up by an earlier run (one stopped between batches, before the file that
    replaced it was recorded)."""
    if own.legacy or own.digest is None:
        return False
    folder = Path(own.path).parent
    return any(
        m.path != own.path and m.path in found and Path(m.path).parent == folder and m.offset >= own.offset
        and m.digest is not None and not m.legacy and m.digest[:LEGACY_DIGEST] == own.digest[:LEGACY_DIGEST]
        for m in marks
    )  # fmt: skip


def _holds(path: Path, st: ledger.Stat, marks: Iterable[_Mark], others: bool = False) -> _Held | None:
    """Of these records, the one furthest read whose file ``path`` holds (its bytes where the
    record says); None if none. A record with no digest (written before revision 0012) holds;
    one of before session 19 (the 64 bytes before the offset) is told by those bytes only.

    The file is opened only where a record could hold: one read no further than its size, and,
    of ``others`` (the records of other files), one recorded no later than its time: a file
    holding another's bytes and more was written since (renamed, copied, compressed), so an
    older rotated copy is not opened again at each rotation."""
    fits = [m for m in marks if st.size >= m.offset and not (others and st.mtime_ns < (m.mtime_ns or 0))]
    if not fits:
        return None
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)

        def held(mark: _Mark) -> _Held:
            start = max(0, mark.offset - TAIL_BYTES)
            f.seek(start)
            before = f.read(mark.offset - start)
            return _Held(mark, head, before, _identity(head, before, mark.offset))

        for mark in sorted(fits, key=lambda m: -m.offset):
            if mark.offset == 0 or mark.digest is None:
                return held(mark)
            if mark.legacy:
                if digest(held(mark).before[-DIGEST_BYTES:]) == mark.digest:
                    return held(mark)
                continue
            first = _head(head, mark.offset)
            if first is not None and digest(first) != mark.digest[:LEGACY_DIGEST]:
                continue  # another first line: not this file (no second read)
            found = held(mark)
            if found.identity == mark.digest:
                return found
    return None


@dataclass(frozen=True)
class _Held:
    """A file found holding a record's bytes: its first bytes and those before the record's offset."""

    mark: _Mark
    head: bytes
    before: bytes
    identity: str | None  # None only where the file shrank while read


def _head(start: bytes, offset: int) -> bytes | None:
    """The file's first line (up to HEAD_BYTES, and before ``offset``) from its first bytes
    ``start``; None when they are too few to tell it."""
    n = min(offset, HEAD_BYTES)
    cut = start.find(b"\n", 0, n)
    if cut >= 0:
        return start[: cut + 1]
    return start[:n] if len(start) >= n else None


def _tail(before: bytes, offset: int) -> bytes | None:
    """The last line before ``offset`` (up to TAIL_BYTES; at least the DIGEST_BYTES before the
    offset) from the bytes just before it, ``before``; None when they are too few to tell it."""
    whole = len(before) >= min(offset, TAIL_BYTES)
    before = before[-TAIL_BYTES:]
    cut = before.rfind(b"\n", 0, len(before) - 1)
    if not whole and (cut < 0 or len(before) < DIGEST_BYTES):
        return None
    return before[min(cut + 1, max(0, len(before) - DIGEST_BYTES)) :]


def _identity(head: bytes, before: bytes, offset: int) -> str | None:
    """The ledger's digest of a file read to ``offset`` (``read_digest``): of its first line and of
    the last line before the offset, from its first bytes ``head`` and those just before the
    offset, ``before``; None when they are too few to tell them."""
    first, last = _head(head, offset), _tail(before, offset)
    if first is None or last is None:
        return None
    return digest(first) + digest(last)


def _fingerprint(ctx: Context, path: Path, st: ledger.Stat, identity: str | None) -> None:
    ledger.fingerprint(ctx.con, str(path), st)
    ctx.con.execute(SET_DIGEST, {"digest": identity, "path": ledger.storable(str(path)), "kind": KIND})


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
            if piece.offset == 0 and not file.head:
                file.head = piece.raw[:HEAD_BYTES]
            file.before = (file.before + piece.raw[-TAIL_BYTES:])[-TAIL_BYTES:]
            file.offset, file.lines = piece.end, file.lines + piece.lines
            file.warnings += got.warnings + dropped
            summary.gpu_samples += got.rows - len(dropped)
            summary.warnings += len(got.warnings) + len(dropped)
            touched[file.path] = file
        ledger.record_many(
            ctx.con,
            KIND,
            [
                ledger.Outcome(str(file.path), file.stat, None, file.lines, file.warnings, file.offset, _digest(file))
                for file in touched.values()
            ],
        )
        _forget_moved(ctx, touched.values())
    summary.job_ids |= changed
    for file in touched.values():
        summary.ingested += not file.counted
        file.counted = True
        file.moved = None


def _record_unread(ctx: Context, file: _File) -> None:
    """Record a file this run read nothing of (read to where another record stopped, or in place
    of a replaced one): the next run reads it on from there."""
    with db.atomic(ctx.con):
        ledger.record(
            ctx.con, str(file.path), KIND, file.stat, "ingested", None, None, file.lines, file.warnings,
            file.offset, _digest(file),
        )  # fmt: skip
        _forget_moved(ctx, [file])
    file.moved = None


def _forget_moved(ctx: Context, files: Iterable[_File]) -> None:
    """Forget the records of gone files that these files hold (renamed): a file of that name
    later is a new file, not one that replaced them."""
    for file in files:
        if file.moved is not None:
            mark = file.moved
            ctx.con.execute(FORGET, {"kind": KIND, "path": mark.path, "offset": mark.offset, "digest": mark.digest})


def _digest(file: _File) -> str | None:
    """The ledger's digest of the file at its offset (``_identity``), from the bytes read where
    they tell it, else read from the file (None if it can't be read)."""
    identity = _identity(file.head, file.before, file.offset)
    if identity is not None:
        return identity
    try:
        with file.path.open("rb") as f:
            head = f.read(HEAD_BYTES)
            start = max(0, file.offset - TAIL_BYTES)
            f.seek(start)
            return _identity(head, f.read(file.offset - start), file.offset)
    except OSError:
        return None
