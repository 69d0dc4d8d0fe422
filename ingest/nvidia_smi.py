"""nvidia-smi ``--query-gpu`` CSV logs (inputs.md section 2) as GPU sample rows. Pure: no database.

What real logs look like (realdata/SOURCES.md): a header such as
``timestamp, index, utilization.gpu [%], memory.used [MiB]`` (units in the names, a space after
each comma), values with or without units (``98 %``, ``17200 MiB``), ``[N/A]`` / ``[Not Supported]``
for what a GPU does not report, the header again before every sample when nvidia-smi was called in
a loop, GPUs interleaved line by line, UTF-16 with a BOM when PowerShell redirected the output, and a
last line cut short when the logger was killed. Timestamps are the host's local time with no zone.

A line that can't be a sample is skipped and a value that can't be read is dropped, each with a
warning "line N: reason"; only a file that can't be such a log at all raises NotNvidiaSmiCsv.
"""

from __future__ import annotations

import codecs
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .gpu_samples import COLUMNS, RANGES

# the keys of a parsed row: a GPU sample's columns, less the job and host named at import
ROW_KEYS = tuple(c for c in COLUMNS if c not in ("job_id", "host"))

# query field -> row key. utilization.memory is memory *bandwidth*, not memory use, and is not read.
# clocks.sm and clocks.current.sm are two spellings nvidia-smi accepts for the same clock.
FIELDS = {
    "utilization.gpu": "utilization_percent",
    "memory.used": "memory_used_mb",
    "memory.total": "memory_total_mb",
    "temperature.gpu": "temperature_c",
    "power.draw": "power_w",
    "clocks.sm": "sm_clock_mhz",
    "clocks.current.sm": "sm_clock_mhz",
}

# --query-gpu fields (nvidia-smi --help-query-gpu) that hold no reading a sample stores, and the
# families of such fields by their prefix: a header of timestamp and these alone is still an
# nvidia-smi log (inputs.md: "any subset that includes timestamp"), read as samples without readings
OTHER_QUERY_FIELDS = frozenset(
    {
        "timestamp", "driver_version", "count", "name", "gpu_name", "serial", "gpu_serial", "gpu_uuid",
        "gpu_bus_id", "vbios_version", "display_mode", "display_active", "display_attached",
        "persistence_mode", "compute_mode", "compute_cap", "pstate", "fan.speed", "enforced.power.limit",
        "addressing_mode", "vgpu_device_capability.fractional_multivgpu",
    }
)  # fmt: skip
OTHER_QUERY_FAMILIES = (
    "pci.", "pcie.", "memory.", "utilization.", "temperature.", "power.", "clocks.", "clocks_throttle_reasons.",
    "clocks_event_reasons.", "clocks_event_reasons_counters.", "ecc.", "retired_pages.", "remapped_rows.",
    "encoder.", "fbc.", "inforom.", "driver_model.", "gom.", "mig.", "accounting.", "fabric.", "reset_status.",
    "gsp.", "protected_memory.", "platform.", "module_power.", "gpu_power.", "c2c.", "vgpu_",
)  # fmt: skip

# the unit nvidia-smi prints after each value (none with csv,nounits); any other unit is a value we
# would misread (GiB for MiB...), so it is dropped rather than guessed
UNITS = {
    "utilization_percent": "%",
    "memory_used_mb": "MiB",
    "memory_total_mb": "MiB",
    "temperature_c": "C",
    "power_w": "W",
    "sm_clock_mhz": "MHz",
}

# what nvidia-smi writes for a value the GPU or driver does not report: missing, not zero, no warning
MISSING = {"", "n/a", "[n/a]", "not supported", "[not supported]"}

SMI_TIME_FORMATS = ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S")
NUMBER = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-zA-Z%]*)", re.ASCII)
# at most 9 digits: a GPU index is stored as a 32-bit INTEGER
GPU_INDEX = re.compile(r"\d{1,9}", re.ASCII)
UNIT_SUFFIX = re.compile(r"\s*\[[^\]]*\]$")
QUERY_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*", re.ASCII)

# how far a sample's time may lie before the previous one's and still count as going forward
OUT_OF_ORDER = timedelta(minutes=1)

# the normalized column names of a header (or of --columns), in order
Layout = tuple[str, ...]

NO_HEADER = "no header line with a timestamp column; name the columns with --columns"
# an `nvidia-smi -q -x` report (one snapshot of every field, as XML): --columns cannot help there
XML = (
    "an XML document (nvidia-smi -q -x output?), not an nvidia-smi --query-gpu CSV log: XML is not read;"
    " log with nvidia-smi --query-gpu=timestamp,index,uuid,utilization.gpu,... --format=csv -l SECONDS"
)


@dataclass
class Parsed:
    """The samples of one log, and a "line N: reason" for each skipped line or dropped value."""

    rows: list[dict[str, object]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unterminated: bool = False  # a last line without its line end was left out (complete_only)


class NotNvidiaSmiCsv(ValueError):
    """The whole file can't be read as an nvidia-smi CSV log (the message says why)."""


def parse(
    data: bytes, *, timezone: str = "UTC", columns: list[str] | None = None, complete_only: bool = False
) -> Parsed:
    """Read an nvidia-smi ``--query-gpu`` CSV log into sample rows with naive UTC ``ts``.

    ``timezone`` is the IANA zone of the host that wrote the log (its timestamps carry none);
    ``columns`` names the columns of a ``--format=csv,noheader`` log, in order. With
    ``complete_only``, a last line without its line end (the logger was mid-write) is left out
    and ``unterminated`` says so.
    """
    zone = _zone(timezone)
    layout = _columns_layout(columns) if columns is not None else None
    parsed = Parsed()
    text = _decode(data)
    if text.lstrip("\ufeff \t\r\n").startswith("<"):  # no CSV line starts with a tag
        raise NotNvidiaSmiCsv(XML)
    if complete_only and text and not text.endswith(("\n", "\r")):
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1]
        parsed.unterminated = True
    previous: datetime | None = None
    for number, line in _lines(text):
        fields = _split(line)
        if _is_header(fields):
            new = tuple(_normalize(f) for f in fields)
            if layout is None:
                _check_first_header(new)
            elif new != layout:
                parsed.warnings.append(f"line {number}: a different header; the lines after it are read by it")
            layout = new  # a repeat of the same header (nvidia-smi called in a loop) changes nothing
            continue
        if layout is None:
            raise NotNvidiaSmiCsv(_why_no_header(fields))
        row = _row(number, fields, layout, zone, previous, parsed.warnings)
        if row is not None:
            parsed.rows.append(row)
            previous = cast(datetime, row["ts"])
    return parsed


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name like 'Europe/Berlin')") from None


def _columns_layout(columns: list[str]) -> Layout:
    layout = tuple(_normalize(c) for c in columns)
    if "timestamp" not in layout:
        raise NotNvidiaSmiCsv(f"the columns named ({', '.join(columns)}) include no timestamp")
    return layout


def _decode(data: bytes) -> str:
    """UTF-16 when it starts with a BOM (PowerShell's ``>``), else UTF-8 with or without a BOM."""
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    decoder = codecs.getincrementaldecoder("utf-16" if utf16 else "utf-8-sig")()
    try:
        # final=False: a character cut short at the end (a log still being written) is left out, and
        # its line then fails as any cut-short line does, instead of failing the whole file
        return decoder.decode(data, final=False)
    except UnicodeDecodeError as error:
        encoding = "UTF-16" if utf16 else "UTF-8"
        raise NotNvidiaSmiCsv(f"not {encoding} text: {error.reason} at byte {error.start}") from None


def _lines(text: str) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF, LF or CR ends a line.

    Not str.splitlines(): it also splits at form feeds and Unicode separators, which would make
    the line numbers in warnings disagree with what an editor shows.
    """
    return [(n, line) for n, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1) if line.strip()]


def _split(line: str) -> list[str]:
    # nvidia-smi never quotes a field (no query value holds a comma), so a plain split is exact
    return [f.strip() for f in line.split(",")]


def _normalize(name: str) -> str:
    """``Memory.Used [MiB]`` -> ``memory.used``; a BOM left mid-file by concatenated logs goes too."""
    return UNIT_SUFFIX.sub("", name.strip().lstrip("\ufeff")).strip().lower()


def _is_header(fields: list[str]) -> bool:
    # a data line's timestamp field holds a time, never the word itself
    return any(_normalize(f) == "timestamp" for f in fields)


def _check_first_header(layout: Layout) -> None:
    """A header with a timestamp but nothing a sample holds is some other CSV (codecarbon's has
    ``timestamp,project_name,...``): refused, unless every column is an nvidia-smi --query-gpu
    field (``timestamp`` alone, ``timestamp,name,pci.bus_id``): a subset of a log's columns, whose
    samples are stored without readings (GPU 0)."""
    if not set(layout) & (set(FIELDS) | {"index", "uuid"}) and not all(map(_is_query_field, layout)):
        raise NotNvidiaSmiCsv(
            "the header names none of the columns a GPU sample is read from (index, uuid, "
            + ", ".join(dict.fromkeys(FIELDS))
            + ") and names columns nvidia-smi --query-gpu does not write: not an nvidia-smi --query-gpu log"
        )


def _is_query_field(name: str) -> bool:
    return name in OTHER_QUERY_FIELDS or (
        QUERY_NAME.fullmatch(name) is not None and name.startswith(OTHER_QUERY_FAMILIES)
    )


def _why_no_header(fields: list[str]) -> str:
    names = [_normalize(f) for f in fields]
    known = set(FIELDS) | {"index", "uuid", "name"}
    if all(QUERY_NAME.fullmatch(n) for n in names) and known & set(names):
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        return f"the header has no timestamp column ({shown}); log with --query-gpu=timestamp,..."
    return NO_HEADER


def _row(
    number: int,
    fields: list[str],
    layout: Layout,
    zone: ZoneInfo,
    previous: datetime | None,
    warnings: list[str],
) -> dict[str, object] | None:
    """One sample, or None (with a warning) when the line can't be one."""
    if len(fields) != len(layout):
        warnings.append(f"line {number}: {len(fields)} fields where the header has {len(layout)}; skipped")
        return None
    values: dict[str, str] = {}
    for name, value in zip(layout, fields, strict=True):
        values.setdefault(name, value)  # of a column named twice, the first is read
    try:
        ts = _timestamp(values["timestamp"], zone, previous)
        gpu_index = _gpu_index(values)
    except (ValueError, OverflowError) as error:
        warnings.append(f"line {number}: {error}; skipped")
        return None
    uuid = values.get("uuid")
    row: dict[str, object] = dict.fromkeys(ROW_KEYS)
    row.update(ts=ts, gpu_index=gpu_index, gpu_uuid=None if uuid is None or uuid.lower() in MISSING else uuid)
    for name, key in FIELDS.items():
        if name in values and row[key] is None:
            try:
                row[key] = _number(values[name], key)
            except ValueError as error:
                warnings.append(f"line {number}: {name} {error}; dropped")
    return row


def _timestamp(text: str, zone: ZoneInfo, previous: datetime | None) -> datetime:
    """nvidia-smi's ``2023/06/22 18:56:56.252`` (local time) or ISO-8601, as naive UTC."""
    moment = _read_time(text)
    if moment.tzinfo is not None:  # a writer that gave its own offset knows better than --timezone
        return moment.astimezone(UTC).replace(tzinfo=None)
    return _local_to_utc(moment, zone, previous)


def _read_time(text: str) -> datetime:
    for fmt in SMI_TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {_show(text)} is not a time") from None


def _local_to_utc(local: datetime, zone: ZoneInfo, previous: datetime | None) -> datetime:
    """A wall-clock time in ``zone`` as naive UTC.

    In the hour the clocks go back each wall-clock time happens twice. A log runs forward, so the
    earlier reading that does not go back before the previous sample is meant (less a little: GPUs
    of one sample can be stamped a few ms out of order); with none, or no previous sample, the first.
    """
    readings = {local.replace(tzinfo=zone, fold=f).astimezone(UTC).replace(tzinfo=None) for f in (0, 1)}
    forward = [moment for moment in readings if previous is None or moment >= previous - OUT_OF_ORDER]
    return min(forward or readings)


def _gpu_index(values: dict[str, str]) -> int:
    """The GPU's number: ``index``, or 0 when the log has no index column (a one-GPU log).

    A ``gpu`` column is not an nvidia-smi field: it comes from a user-written header
    (realdata/gpu_other/h100x8-nounits-own-header.csv: ``timestamp,gpu,index,...``) whose ``gpu``
    column counts the GPUs while ``index`` is 0 on every line. Where it holds an integer it is
    the writer's own GPU number, and taking ``index`` would merge eight GPUs into one.
    """
    gpu = values.get("gpu")
    if gpu is not None and GPU_INDEX.fullmatch(gpu):
        return int(gpu)
    index = values.get("index")
    if index is None:
        return 0
    if not GPU_INDEX.fullmatch(index):
        raise ValueError(f"index {_show(index)} is not a GPU index")
    return int(index)


def _number(text: str, key: str) -> float | None:
    """``98 %``, ``17200 MiB`` or ``301.20`` as a float; None for what nvidia-smi marks missing."""
    if text.lower() in MISSING:
        return None
    match = NUMBER.fullmatch(text)
    if match is None or match.group(2).lower() not in ("", UNITS[key].lower()):
        raise ValueError(f"{_show(text)} is not a number in {UNITS[key]}")
    value = float(match.group(1))
    low, high = RANGES[key]
    # math.isfinite: hundreds of digits make float() return inf, which is no reading either
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{_show(text)} is out of range")
    return value


def _show(text: str) -> str:
    return repr(text[:40])
