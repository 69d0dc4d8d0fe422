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
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
ISO_DATE_AND_TIME = re.compile(r"\d{4}-?\d{2}-?\d{2}[Tt ]\d{2}:?\d{2}", re.ASCII)  # a date and a time
# How far back a GPU's next line may go and still be read as written out of order, not a restart
# after the clocks went back (docs/ingest.md, "The hour the clocks go back")
OUT_OF_ORDER = timedelta(minutes=5)
NUMBER = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-zA-Z%]*)", re.ASCII)
# at most 9 digits: a GPU index is stored as a 32-bit INTEGER
GPU_INDEX = re.compile(r"\d{1,9}", re.ASCII)
UNIT_SUFFIX = re.compile(r"\s*\[[^\]]*\]$")
QUERY_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*", re.ASCII)
LINE_NUMBER = re.compile(r"line ([0-9]+):")

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
    # (not compared: a parse's outcome is its rows and warnings)
    numbers: list[int] = field(default_factory=list, compare=False)  # the line of each row
    # the bytes of the data read: its lines, less a last line left out or a character cut short
    read: int = field(default=0, compare=False)
    # of the first ``seen`` bytes (parse's argument), the lines read whole there: lines 1 to seen_lines
    seen_lines: int = field(default=0, compare=False)
    # the lines of rows whose local time happens twice (the hour the clocks go back): settled by the
    # lines around them, so a read of fewer lines may have put them at the other instant
    twice: list[int] = field(default_factory=list, compare=False)

    def is_new(self, number: int) -> bool:
        """Whether line ``number`` lies beyond what an earlier read of the first ``seen`` bytes read."""
        return number > self.seen_lines

    def settled_since(self) -> bool:
        """Whether a line of the first ``seen`` bytes has a time that happens twice: the lines read
        since may have settled it otherwise than the read of those bytes alone did."""
        return any(number <= self.seen_lines for number in self.twice)

    def new_warnings(self) -> list[str]:
        """The warnings of the lines beyond ``seen_lines`` (every warning of a parse names its line)."""
        return [w for w in self.warnings if self.is_new(line_number(w))]


class NotNvidiaSmiCsv(ValueError):
    """The whole file can't be read as an nvidia-smi CSV log (the message says why)."""


def parse(
    data: bytes,
    *,
    timezone: str = "UTC",
    columns: list[str] | None = None,
    complete_only: bool = False,
    seen: int = 0,
) -> Parsed:
    """Read an nvidia-smi ``--query-gpu`` CSV log into sample rows with naive UTC ``ts``.

    ``timezone`` is the IANA zone of the host that wrote the log (its timestamps carry none);
    ``columns`` names the columns of a ``--format=csv,noheader`` log, in order. With
    ``complete_only``, a last line without its line end (the logger was mid-write) is left out
    and ``unterminated`` says so. ``seen``: the ``read`` of an earlier parse of data that began
    with the same bytes; ``seen_lines`` then counts the lines that parse read whole.
    """
    zone = _zone(timezone)
    layout = _columns_layout(columns) if columns is not None else None
    parsed = Parsed()
    text, held, codec = _decode(data)
    if text.lstrip("\ufeff \t\r\n").startswith("<"):  # no CSV line starts with a tag
        raise NotNvidiaSmiCsv(XML)
    if 0 < seen <= len(data) - held:
        parsed.seen_lines = _lines_read(text, len(_decode(data[:seen])[0]))
    parsed.read = len(data) - held
    if complete_only and text and not text.endswith(("\n", "\r")):
        cut = max(text.rfind("\n"), text.rfind("\r")) + 1
        parsed.read -= len(text[cut:].encode(codec, "surrogatepass"))
        text = text[:cut]
        parsed.unterminated = True
    lines: list[_Line] = []
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
        read = _row(number, fields, layout, zone, parsed.warnings)
        if read is not None:
            lines.append(read)
    parsed.rows = _resolve(lines, zone, parsed.warnings)
    parsed.numbers = [line.number for line in lines]
    parsed.twice = [line.number for line in lines if len(line.instants) > 1]
    parsed.warnings.sort(key=line_number)  # (a stable sort: each line's warnings keep their order)
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


def _decode(data: bytes) -> tuple[str, int, str]:
    """UTF-16 when it starts with a BOM (PowerShell's ``>``), else UTF-8 with or without a BOM.
    The text, the bytes at the end left undecoded (a character cut short), and the codec whose
    bytes a piece of the text after the BOM takes."""
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    decoder = codecs.getincrementaldecoder("utf-16" if utf16 else "utf-8-sig")()
    try:
        # final=False: a character cut short at the end (a log still being written) is left out, and
        # its line then fails as any cut-short line does, instead of failing the whole file
        text = decoder.decode(data, final=False)
    except UnicodeDecodeError as error:
        encoding = "UTF-16" if utf16 else "UTF-8"
        raise NotNvidiaSmiCsv(f"not {encoding} text: {error.reason} at byte {error.start}") from None
    return text, len(decoder.getstate()[0]), "utf-16-le" if utf16 else "utf-8"


LINE_END = re.compile(r"\r\n|\r|\n")


def _lines_read(text: str, chars: int) -> int:
    """Of ``text``, the lines that a read of its first ``chars`` characters read whole: those ended
    there, and a last line without its end when it still ends there (a settled log's last line,
    read as it was; one written on since is another line now)."""
    head = text[:chars]
    lines = len(LINE_END.findall(head))  # a "\r" at its end, "\n" next: one line end either way
    if head and not head.endswith(("\n", "\r")) and (chars == len(text) or text[chars] in "\r\n"):
        lines += 1
    return lines


def _lines(text: str) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF, LF or CR ends a line.

    Not str.splitlines(): it also splits at form feeds and Unicode separators, which would make
    the line numbers in warnings disagree with what an editor shows.
    """
    return [(n, line) for n, line in enumerate(LINE_END.split(text), start=1) if line.strip()]


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


@dataclass
class _Line:
    """A sample line read, its time still to be settled (``_resolve``)."""

    number: int
    row: dict[str, object]
    text: str  # the timestamp as written
    wall: datetime  # the time as written, without its zone or offset
    instants: tuple[datetime, ...]  # what it stands for in UTC: one, or two in the hour the clocks go back


def _row(number: int, fields: list[str], layout: Layout, zone: ZoneInfo, warnings: list[str]) -> _Line | None:
    """One sample (its ``ts`` still None), or None (with a warning) when the line can't be one."""
    if len(fields) != len(layout):
        warnings.append(f"line {number}: {len(fields)} fields where the header has {len(layout)}; skipped")
        return None
    values: dict[str, str] = {}
    for name, value in zip(layout, fields, strict=True):
        values.setdefault(name, value)  # of a column named twice, the first is read
    text = values["timestamp"]
    try:
        moment = _read_time(text)
        instants = _instants(moment, zone)
        gpu_index = _gpu_index(values)
    except (ValueError, OverflowError) as error:
        warnings.append(f"line {number}: {error}; skipped")
        return None
    if not instants:
        warnings.append(
            f"line {number}: local time {_show(text)} does not exist in {zone.key} (its clocks skipped it); skipped"
        )
        return None
    uuid = values.get("uuid")
    row: dict[str, object] = dict.fromkeys(ROW_KEYS)
    row.update(gpu_index=gpu_index, gpu_uuid=None if uuid is None or uuid.lower() in MISSING else uuid)
    for name, key in FIELDS.items():
        if name in values and row[key] is None:
            try:
                row[key] = _number(values[name], key)
            except ValueError as error:
                warnings.append(f"line {number}: {name} {error}; dropped")
    return _Line(number, row, text, moment.replace(tzinfo=None), instants)


def _read_time(text: str) -> datetime:
    for fmt in SMI_TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        # (fromisoformat alone would take a date, an hour or a week date: no time of a GPU's sample)
        if ISO_DATE_AND_TIME.match(text):
            return datetime.fromisoformat(text)
    except ValueError:
        pass
    raise ValueError(f"timestamp {_show(text)} is not a time")


def _instants(moment: datetime, zone: ZoneInfo) -> tuple[datetime, ...]:
    """The instants (naive UTC) a time of the log stands for: its own, when it carries an offset (a
    writer that gave one knows better than --timezone); else those of the wall-clock time in
    ``zone``: one; two in the hour the clocks go back (the earlier first); none in the hour they
    skip (PEP 495: fold 0 takes the offset before a change, fold 1 the one after; they differ only
    there, the earlier one larger where the clocks go back). OverflowError beyond years 1-9999."""
    if moment.tzinfo is not None:
        return (moment.astimezone(UTC).replace(tzinfo=None),)
    before, after = zone.utcoffset(moment), zone.utcoffset(moment.replace(fold=1))
    assert before is not None and after is not None  # (a ZoneInfo always has an offset)
    if before == after:
        return (moment - before,)
    return (moment - before, moment - after) if before > after else ()


def _resolve(lines: list[_Line], zone: ZoneInfo, warnings: list[str]) -> list[dict[str, object]]:
    """The rows with their ``ts`` set: a time that happens twice (the hour the clocks go back) is the
    one nearest where its GPU's series leads: the GPU's sample next to it in the file, settled,
    plus (or less) the GPU's usual interval (the median of its positive steps of wall-clock time).

    The lines are settled forward from the first whose time happens once, then backward from it
    (a log that starts in that hour is read from its first unambiguous time); a GPU with no sample
    settled yet on that side follows the line next to it (the GPUs of one sample are stamped
    together). A log none of whose times happens once is read as the first pass, saying so.
    """
    if not lines:
        return []
    steps = _usual_steps(lines)
    start = next((i for i, line in enumerate(lines) if len(line.instants) == 1), None)
    if start is None:
        first = lines[0]
        warnings.append(
            f"line {first.number}: local time {_show(first.text)} happens twice in {zone.key} (its clocks were set"
            " back) and no time of the log tells which: read as the first, and the log on from it"
        )
        start = 0
    settled: list[datetime] = [line.instants[0] for line in lines]  # those that happen twice: settled below
    # forward from the first line whose time happens once, each GPU from its sample before ...
    before = {_gpu(lines[start]): settled[start]}
    for i in range(start + 1, len(lines)):
        settled[i] = _nearest(lines[i], before, steps, settled[i - 1], 1)
        before[_gpu(lines[i])] = settled[i]
    # ... then backward from it, each GPU from its sample after
    after: dict[tuple[object, object], datetime] = {}
    for i in range(len(lines) - 1, start - 1, -1):
        after[_gpu(lines[i])] = settled[i]
    for i in range(start - 1, -1, -1):
        settled[i] = _nearest(lines[i], after, steps, settled[i + 1], -1)
        after[_gpu(lines[i])] = settled[i]
    for line, moment in zip(lines, settled, strict=True):
        line.row["ts"] = moment
    return [line.row for line in lines]


def _gpu(line: _Line) -> tuple[object, object]:
    return line.row["gpu_index"], line.row["gpu_uuid"]


def _nearest(
    line: _Line,
    beside: dict[tuple[object, object], datetime],
    steps: dict[tuple[object, object] | None, timedelta],
    neighbour: datetime,
    sign: int,
) -> datetime:
    """The line's instant: its only one, or of two the nearest where its GPU's series leads (its
    sample ``beside`` it, settled, plus ``sign`` times its usual step), else the line next to it."""
    if len(line.instants) == 1:
        return line.instants[0]
    gpu = _gpu(line)
    anchor = beside.get(gpu)
    if anchor is None:
        return min(line.instants, key=lambda moment: abs(moment - neighbour))
    step = sign * steps.get(gpu, steps[None])
    # A log is written in time order: of the two, one that would put the GPU's series back by more
    # than a few minutes is a logger restarted after the clocks went back, not a line out of order
    onward = [moment for moment in line.instants if sign * (moment - anchor) >= -OUT_OF_ORDER] or line.instants
    # (the distance to anchor + step, computed so that no datetime passes year 9999)
    return min(onward, key=lambda moment: abs(moment - anchor - step))


def _usual_steps(lines: list[_Line]) -> dict[tuple[object, object] | None, timedelta]:
    """Each GPU's usual step between its samples: the median (the higher of two middle ones) of the
    positive steps of its wall-clock times from line to line; under None, that of every GPU's
    steps (for a GPU with none), else 0. The step across a change of the clocks is one of many."""
    last: dict[tuple[object, object], datetime] = {}
    steps: dict[tuple[object, object], list[timedelta]] = {}
    for line in lines:
        gpu = _gpu(line)
        if gpu in last and line.wall > last[gpu]:
            steps.setdefault(gpu, []).append(line.wall - last[gpu])
        last[gpu] = line.wall
    usual: dict[tuple[object, object] | None, timedelta] = {
        gpu: statistics.median_high(found) for gpu, found in steps.items()
    }
    every = [step for found in steps.values() for step in found]
    usual[None] = statistics.median_high(every) if every else timedelta(0)
    return usual


def line_number(warning: str) -> int:
    """The N of a warning "line N: ..." (every warning of a parse names its line)."""
    found = LINE_NUMBER.match(warning)
    return int(found.group(1)) if found else 0


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
