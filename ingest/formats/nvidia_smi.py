"""nvidia-smi ``--query-gpu`` CSV logs (inputs.md section 2), imported for a job named on the command line."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from runlytics.ingest import gpu_samples, ledger, nvidia_smi
from runlytics.ingest.discover import JobFolder
from runlytics.warehouse import db, results, retention

from .base import Candidate, Context, Rejection, not_ingested
from .spool import SKIPPED

KIND = "nvidia_smi"

# What the ledger knows of a log's earlier import (its fingerprint holds the import's arguments;
# read_offset and read_digest: the bytes it read, and their SHA-256).
PREVIOUS = """
SELECT fingerprint, outcome, job_id, rows, read_offset, read_digest
FROM ingest_files WHERE kind = $kind AND path = $path
"""
# The stored samples of a job and host within a span (_clashes): those a log's new lines are about
# to replace. A sample's own values, in gpu_samples.COLUMNS' order after its key.
_VALUES = gpu_samples.COLUMNS[4:]
STORED_IN_SPAN = f"""
SELECT gpu_key, ts, {", ".join(_VALUES)} FROM gpu_samples
WHERE job_id = $job_id AND host = $host AND ts BETWEEN $lo AND $hi
"""


@dataclass(frozen=True)
class CsvImport:
    """An nvidia-smi CSV log to import for a job (its timestamps are local time in ``timezone``)."""

    path: Path
    job_id: str
    timezone: str = "UTC"
    host: str = ""
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class _ImportStat(ledger.Stat):
    """A log's size and time with the arguments it is imported with: the same unchanged file
    imported for another job, zone, host or column list is another import (inputs.md: the job and
    the zone are named at import), and a failed import is retried with other arguments."""

    arguments: str = ""
    # recorded for a log the next run must read again (its last line still being written, or
    # changed within FRESH_SECONDS): a fingerprint no stat has ("-" for the size and time), which
    # still names the arguments, so that an import with a corrected zone or host finds what this
    # one stored and replaces it
    again: bool = False

    @property
    def fingerprint(self) -> str | None:
        if self.again:
            return f"- {self.arguments}"
        plain = super().fingerprint
        return None if plain is None else f"{plain} {self.arguments}"


def _arguments(item: CsvImport) -> str:
    """A digest of the import's arguments, then the arguments themselves (base64 of JSON: no
    space), so that a later import for the same job with other ones can remove this one's samples."""
    named = json.dumps([item.job_id, item.timezone, item.host, list(item.columns) if item.columns else None])
    digest = hashlib.sha256(named.encode()).hexdigest()[:16]
    return f"{digest} {base64.urlsafe_b64encode(named.encode()).decode()}"


def _earlier_import(previous: tuple[Any, ...], item: CsvImport) -> CsvImport | None:
    """The ledger's earlier import of this log, when it stored samples for the same job with other
    arguments that its fingerprint holds (rows recorded before session 12 hold only a digest)."""
    fingerprint, outcome, job_id, rows, *_ = previous
    if outcome != "ingested" or not rows or job_id != item.job_id or fingerprint is None:
        return None
    tokens = fingerprint.split(" ")
    if len(tokens) != 3:
        return None
    try:
        named = json.loads(base64.urlsafe_b64decode(tokens[2].encode()))
        job, timezone, host, columns = named
    except (ValueError, TypeError):  # not what _arguments wrote: unknown arguments
        return None
    if tokens[1] == _arguments(item).split(" ")[0] or job != item.job_id:
        return None  # the same arguments (the log changed): an upsert
    return CsvImport(item.path, job, timezone, host, tuple(columns) if columns else None)


def _replace_earlier(ctx: Context, earlier: CsvImport, data: bytes) -> list[str]:
    """Remove the samples the earlier import of this log stored for the job (read again from the
    log with its arguments); the warnings that say so."""
    try:
        columns = list(earlier.columns) if earlier.columns else None
        # a last line without its newline too: that import may have read it as final (settled)
        parsed = nvidia_smi.parse(data, timezone=earlier.timezone, columns=columns)
    except (nvidia_smi.NotNvidiaSmiCsv, UnicodeError, ValueError):
        return []  # the log no longer reads with those arguments: nothing known to remove
    # all of them: those this import stores again are stored after the removal, in its transaction
    gone = [{**row, "job_id": earlier.job_id, "host": earlier.host} for row in parsed.rows]
    # those still holding that import's values: a sample another log stored since at the same key
    # (another machine's log of the job, imported without its own --host) is that log's, and stays
    stored = _stored(ctx, earlier.job_id, earlier.host, gone)
    removed = gpu_samples.remove(
        ctx.con, [row for row in gone if (now := stored.get(_gpu_instant(row))) is not None and _same_values(row, now)]
    )
    said = f"imported before for job {earlier.job_id!r} with other arguments (timezone, host or columns)"
    warnings = [f"{said}: its {removed} sample(s) replaced by this import's"]
    window = retention.window_start(ctx.con)
    old = 0
    for row in gone:
        ts = row["ts"]
        old += window is not None and isinstance(ts, datetime) and ts < window
    if old:
        warnings.append(f"{old} sample(s) of that import lie before the raw window: their minutes' rollups stay")
    return warnings


def _gpu_instant(row: dict[str, object]) -> tuple[object, object]:
    """A sample's key within its job and host: its GPU (UUID, else index) and time (gpu_store.GPU_KEY)."""
    return (row["gpu_uuid"] if row["gpu_uuid"] is not None else f"#{row['gpu_index']}", row["ts"])


def _moved(head: bytes, item: CsvImport, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The samples the last import of this log stored (``head``: the bytes it read, with the same
    arguments) at an instant where this reading of the whole log (``rows``) has none: lines whose
    time happens twice, settled otherwise now that later lines tell which."""
    columns = list(item.columns) if item.columns else None
    # complete_only=False: ``head`` ends where that read ended (a line left for the next run is not in it)
    before = nvidia_smi.parse(head, timezone=item.timezone, columns=columns)
    now = {_gpu_instant(row) for row in rows}
    return [{**row, "job_id": item.job_id, "host": item.host} for row in before.rows if _gpu_instant(row) not in now]


def _remove_moved(ctx: Context, moved: list[dict[str, object]]) -> list[str]:
    """Remove the samples an earlier reading of the log put at instants it now settles otherwise
    (their minutes recomputed: gpu_store.remove_staged); a warning where some lie before the raw
    window, whose minutes' rollups stand (their raw samples may be gone: they can't be recomputed)."""
    gpu_samples.remove(ctx.con, moved)
    window = retention.window_start(ctx.con)
    old = sum(window is not None and isinstance(row["ts"], datetime) and row["ts"] < window for row in moved)
    if not old:
        return []
    return [
        f"{old} sample(s) an earlier import of this log stored at times its later lines settle otherwise"
        " (the hour the clocks go back) lie before the raw window: their minutes' rollups stay"
    ]


def _stored(ctx: Context, job_id: str, host: str, rows: list[dict[str, Any]]) -> dict[tuple[object, object], list[Any]]:
    """(GPU, time) -> values of the stored raw samples of the job and host within ``rows``' span."""
    times = [row["ts"] for row in rows if isinstance(row["ts"], datetime)]
    if not times:
        return {}
    params = {"job_id": job_id, "host": host, "lo": min(times), "hi": max(times)}
    return {(key, ts): values for key, ts, *values in ctx.con.execute(STORED_IN_SPAN, params).fetchall()}


def _same_values(row: dict[str, Any], stored: list[Any]) -> bool:
    """Whether a parsed sample holds the stored one's values (NaN equal to NaN)."""
    return all(
        a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        for a, b in zip((row[c] for c in _VALUES), stored, strict=True)
    )


def _clashes(ctx: Context, item: CsvImport, rows: list[dict[str, Any]], numbers: list[int]) -> list[str]:
    """A warning when samples of the log's new lines (``rows``, at ``numbers``) replace stored ones of
    the job and host at the same GPU and time with other values: a sample is keyed by (job, host,
    GPU, time) and the later read wins (inputs.md), so another machine's log of the job imported
    without its own --host (or the spool's samples) would be overwritten without a word."""
    stored = _stored(ctx, item.job_id, item.host, rows)
    clashing = [
        n
        for row, n in zip(rows, numbers, strict=True)
        if (old := stored.get(_gpu_instant(row))) is not None and not _same_values(row, old)
    ]
    if not clashing:
        return []
    return [
        f"{len(clashing)} sample(s) (the first at line {min(clashing)}) replaced stored ones of job "
        f"{item.job_id!r}, host {item.host!r} at the same GPU and time with other values (this log rewritten, "
        "another log of the job, or the spool's samples; the later read wins): two machines' logs need "
        "each its own --host"
    ]


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
    plain = ledger.stat(path)
    st = _ImportStat(plain.size, plain.mtime_ns, plain.fresh, _arguments(item))
    previous = ctx.con.execute(PREVIOUS, {"kind": KIND, "path": str(path)}).fetchone()
    if previous and _same_import(previous, st, plain, item):
        summary.unchanged += 1
        return
    candidate = Candidate(path, JobFolder(path.parent), st)
    try:
        columns = list(item.columns) if item.columns else None
        data = path.read_bytes()
        # a last line without its line end is being written, unless the log has settled (and no
        # writer came back while it was read): then it is the log's last line, read as any other
        final = ledger.final(path, plain)
        seen = _seen(previous, st, data)
        parsed = nvidia_smi.parse(data, timezone=item.timezone, columns=columns, complete_only=not final, seen=seen)
    except (nvidia_smi.NotNvidiaSmiCsv, UnicodeError) as error:
        not_ingested(ctx, Rejection(candidate, "failed", str(error)), KIND)
        return
    rows = [{**row, "job_id": item.job_id, "host": item.host} for row in parsed.rows]
    # the log is read and stored whole (a time the clocks repeat is read by the whole log's steps),
    # but counted and warned of only beyond the lines an earlier read of the same bytes covered
    new_rows = sum(map(parsed.is_new, parsed.numbers))
    said = parsed.new_warnings()
    notes: list[str] = []  # of the import, not of a line
    # the samples of new lines that a rollup past the raw window stands for (gpu_store.store_staged:
    # the minute can't be recomputed from the log), not stored: said at their lines, as the spool does
    skipped: list[str] = []

    def skip(indexes: list[int]) -> None:
        numbers = [parsed.numbers[i] for i in indexes]
        skipped.extend(f"line {n}: {SKIPPED}" for n in numbers if parsed.is_new(n))

    earlier = _earlier_import(previous, item) if previous else None
    if (
        earlier is None
        and previous
        and previous[1] == "ingested"
        and previous[3]
        and _other_arguments(previous, st, item)
    ):
        # another job's samples are not removed: nothing asked for them to go, and a sample is
        # keyed by (job, host, GPU, time), so rows of another job are other rows
        notes.append(
            f"imported before for job {previous[2]!r} with other arguments (job, timezone, host or columns): "
            f"the {previous[3]} sample(s) of that import stay stored"
        )
    # a log still being written (its last line cut short) is recorded with a fingerprint no stat
    # has: the next run reads it again, whole (the samples already stored are the same rows again,
    # and the line, once complete or settled, is read whole: a sample is keyed by its time and GPU)
    recorded = replace(st, again=True) if parsed.unterminated or st.fingerprint is None else st
    # a log grown since its last import, whose lines that import read include a time the clocks
    # repeat: those lines are settled by the whole log, and may now stand an hour from where that
    # import stored them (a log that began in the repeated hour was read as its first pass)
    moved = _moved(data[:seen], item, rows) if parsed.settled_since() else []
    with db.atomic(ctx.con):
        if earlier is not None:
            # the same job's log read again with a corrected zone, host or columns: the earlier
            # reading of it goes, in this transaction (a kill leaves the earlier import whole)
            notes += _replace_earlier(ctx, earlier, data)
        if moved:
            notes += _remove_moved(ctx, moved)
        fresh = [i for i, n in enumerate(parsed.numbers) if parsed.is_new(n)]
        notes += _clashes(ctx, item, [rows[i] for i in fresh], [parsed.numbers[i] for i in fresh])
        changed = gpu_samples.store(ctx.con, rows, "nvidia-smi", skip)
        results.enqueue(ctx.con, changed)
        warnings = sorted(said + skipped, key=nvidia_smi.line_number) + notes
        ledger.record(
            ctx.con, str(path), KIND, recorded, "ingested", None, item.job_id, len(rows), warnings,
            parsed.read, _digest(data, parsed.read),
        )  # fmt: skip
    summary.job_ids |= changed
    summary.ingested += 1
    summary.gpu_samples += new_rows - len(skipped)
    summary.warnings += len(warnings)


def _digest(data: bytes, size: int) -> str:
    return hashlib.sha256(memoryview(data)[:size]).hexdigest()


def _seen(previous: tuple[Any, ...] | None, st: _ImportStat, data: bytes) -> int:
    """The bytes of the log that its last import, with the same arguments, read (0: none known):
    the ledger's read_offset, when the log still begins with the bytes it read there (their digest).
    Its samples and warnings were counted then; an import with other arguments reads other rows."""
    if previous is None:
        return 0
    fingerprint, outcome, _, _, offset, stored = previous
    if outcome != "ingested" or fingerprint is None or not offset or stored is None or offset > len(data):
        return 0
    tokens = fingerprint.split(" ")
    if len(tokens) < 2 or tokens[1] != st.arguments.split(" ")[0]:
        return 0
    return int(offset) if _digest(data, int(offset)) == stored else 0


def _same_import(previous: tuple[Any, ...], st: _ImportStat, plain: ledger.Stat, item: CsvImport) -> bool:
    """Whether the log was imported (or failed) unchanged with the same arguments. A ledger row
    written before the arguments were part of the fingerprint counts as the same import when it
    names the same job (the zone, host and columns it was read with are not known), and one
    written with their digest alone (session 11) when the digest is the same."""
    fingerprint, outcome, job_id, *_ = previous
    if ledger.is_unchanged((fingerprint, outcome), st):
        return True
    # a row of session 11: the arguments' digest without the arguments, the same import
    digest_only = _ImportStat(plain.size, plain.mtime_ns, plain.fresh, st.arguments.split(" ")[0])
    if ledger.is_unchanged((fingerprint, outcome), digest_only):
        return True
    legacy = fingerprint is not None and " " not in fingerprint
    return (
        legacy
        and outcome == "ingested"
        and job_id == item.job_id
        and ledger.is_unchanged((fingerprint, outcome), plain)
    )


def _other_arguments(previous: tuple[Any, ...], st: _ImportStat, item: CsvImport) -> bool:
    """Whether the earlier import (by its ledger row) had other arguments than this one: a digest
    that differs, or, for a row written before digests, another job."""
    fingerprint, _, job_id, *_ = previous
    if fingerprint is None:  # recorded before session 16 while being written: arguments not known
        return job_id != item.job_id
    tokens = fingerprint.split(" ")
    return tokens[1] != st.arguments.split(" ")[0] if len(tokens) > 1 else job_id != item.job_id
