"""GPU samples (inputs.md section 2): the sampler's JSON Lines spool, and storing samples.

A spool file is appended to while it is read: it is read up to its last complete line, and
the next run resumes at that byte offset (kept in the ledger's ``read_offset``). A bad line
is skipped with its line number; the others are kept. Samples are keyed by
(job, host, GPU, ts), the GPU being its UUID when the sample has one (schema.gpu_samples): one
ingested twice is stored once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from . import gpu_store

COLUMNS = (
    "job_id",
    "host",
    "gpu_index",
    "ts",
    "gpu_uuid",
    "utilization_percent",
    "memory_used_mb",
    "memory_total_mb",
    "temperature_c",
    "power_w",
    "sm_clock_mhz",
    "clocks_event_reasons",
)

# numeric field -> (lowest, highest) accepted; outside is absurd and dropped with a warning
RANGES: dict[str, tuple[float, float]] = {
    "utilization_percent": (0, 100),
    "memory_used_mb": (0, math.inf),
    "memory_total_mb": (0, math.inf),
    "temperature_c": (-273.15, math.inf),
    "power_w": (0, math.inf),
    "sm_clock_mhz": (0, math.inf),
}

STAGE = """
CREATE OR REPLACE TEMP TABLE batch_gpu_samples AS
SELECT unnest($job_id) AS job_id, unnest($host) AS host, CAST(unnest($gpu_index) AS INTEGER) AS gpu_index,
       CAST(unnest($ts) AS TIMESTAMP) AS ts, CAST(unnest($gpu_uuid) AS VARCHAR) AS gpu_uuid,
       CAST(unnest($utilization_percent) AS DOUBLE) AS utilization_percent,
       CAST(unnest($memory_used_mb) AS DOUBLE) AS memory_used_mb,
       CAST(unnest($memory_total_mb) AS DOUBLE) AS memory_total_mb,
       CAST(unnest($temperature_c) AS DOUBLE) AS temperature_c,
       CAST(unnest($power_w) AS DOUBLE) AS power_w,
       CAST(unnest($sm_clock_mhz) AS DOUBLE) AS sm_clock_mhz,
       CAST(unnest($clocks_event_reasons) AS BIGINT) AS clocks_event_reasons,
       unnest($seq) AS seq
"""


@dataclass
class SpoolChunk:
    """What one read of a spool file gave: samples, warnings, and where to resume."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    consumed: int = 0  # bytes up to and including the last complete line
    lines: int = 0  # complete lines read


def store(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]], source: str) -> set[str]:
    """Upsert samples (in the caller's transaction); returns the jobs they belong to."""
    if not rows:
        return set()
    columns: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in COLUMNS}
    columns["seq"] = list(range(len(rows)))
    con.execute(STAGE, columns)
    return gpu_store.store_staged(con, source)


def read_spool(path: Path, offset: int, first_line: int) -> SpoolChunk:
    """Read a spool file from ``offset`` up to its last complete line."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
    chunk = SpoolChunk(consumed=end)
    for number, line in enumerate(data[:end].splitlines(), start=first_line):
        chunk.lines += 1
        if not line.strip():
            continue
        try:
            row, problems = parse_line(line)
        except ValueError as error:
            chunk.warnings.append(f"line {number}: {error}, skipped")
            continue
        chunk.rows.append(row)
        chunk.warnings.extend(f"line {number}: {problem}, dropped" for problem in problems)
    return chunk


def parse_line(line: bytes) -> tuple[dict[str, Any], list[str]]:
    """One spool line as a sample row and the values it dropped; ValueError if it can't be one."""
    try:
        doc = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"not JSON ({error})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    job_id = doc.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("no job_id")
    gpu_index = doc.get("gpu_index", doc.get("index"))
    if isinstance(gpu_index, bool) or not isinstance(gpu_index, int) or gpu_index < 0:
        raise ValueError(f"gpu_index {gpu_index!r} is not a GPU index")
    host = doc.get("host")
    uuid = doc.get("gpu_uuid")
    row: dict[str, Any] = {
        "job_id": job_id,
        "host": host if isinstance(host, str) else "",
        "gpu_index": gpu_index,
        "ts": parse_timestamp(doc.get("ts")),
        "gpu_uuid": uuid if isinstance(uuid, str) else None,
    }
    problems = []
    for name, (low, high) in RANGES.items():
        row[name] = _number(doc.get(name), low, high)
        if row[name] is None and doc.get(name) is not None:
            problems.append(f"{name} {str(doc.get(name))[:40]!r} is not a number in range")
    reasons = doc.get("clocks_event_reasons")
    row["clocks_event_reasons"] = reasons if isinstance(reasons, int) and not isinstance(reasons, bool) else None
    if row["clocks_event_reasons"] is None and reasons is not None:
        problems.append(f"clocks_event_reasons {str(reasons)[:40]!r} is not a bitmask")
    return row, problems


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 (no offset = UTC) or Unix epoch seconds, as a naive UTC datetime of years 1-9999.

    ValueError for anything else, out-of-range times included (Python's own errors there are
    OverflowError and OSError, which would stop the run instead of skipping the line).
    """
    try:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    except (ValueError, OverflowError, OSError):
        pass
    raise ValueError(f"ts {str(value)[:40]!r} is not a timestamp")


def _number(value: Any, low: float, high: float) -> float | None:
    """A finite number in range, a non-finite one as is, anything else None (dropped)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    if math.isfinite(value) and not low <= value <= high:
        return None
    return value
