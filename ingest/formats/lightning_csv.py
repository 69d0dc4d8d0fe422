"""PyTorch Lightning's CSVLogger: ``<save_dir>/<name>/version_N/metrics.csv`` and ``hparams.yaml``.

``metrics.csv`` has a header of metric names, ``step`` and ``epoch`` among them, and one row per
``log_metrics`` call: step rows, validation rows and epoch rows are separate sparse rows, an
empty cell meaning "not logged in this row". Every column other than ``step`` is a metric under
its name, ``epoch`` included; the row's ``step`` is its step. A row without a step is skipped
with a warning. When a run logs a key it had not logged before, Lightning rewrites the file with
the wider header; a header line met again further down (a writer that appends a new header
instead) starts a new column layout from that line on.

``hparams.yaml`` is the run's config. Lightning writes it with ``yaml.dump``, so it may carry
Python tags (``!!python/object:neuralforecast.losses.pytorch.MAE``, ``OrderedDict``): they are
read by a safe loader that builds no Python object, turning a tagged node into plain data.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from runlytics.ingest.discover import LIGHTNING_CSV, JobFolder

from .text_logs import Chunk, Point, clean_strings, complete_lines, exact_integer, utc_from_seconds, whole
from .tool_log import ToolLogParser

FILE_NAME = "metrics.csv"
HPARAMS = "hparams.yaml"
STEP = "step"
MODEL_KEYS = ("model_name", "model_name_or_path", "model", "base_model", "pretrained_model_name_or_path")
TAG = "__tag__"  # the key that keeps a tagged mapping's tag (``!!python/object:…``) in its plain form
ORDERED_DICT = "tag:yaml.org,2002:python/object/apply:collections.OrderedDict"
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 100


class LightningCsvParser(ToolLogParser):
    """A version folder's ``metrics.csv`` (read on from the last complete row) and ``hparams.yaml``
    (read whole when it changes: the config).

    Neither file holds a clock time, and Lightning rewrites both at every flush; the folder's
    modification time moves whenever a file is made in it (``metrics.csv`` at the first flush,
    ``checkpoints/`` at ModelCheckpoint's first save). The run's start is when the version folder
    was made (Lightning makes it as the run starts; its birth time, ``birth_time``, where the file
    system records one), or an earlier modification time of the folder or its two files (a copy's
    folder is made when copied), else the earliest of those. Its end (``ended_at`` and
    ``updated_at``) is the time of the last write to ``metrics.csv`` (the latest flush while it
    runs: a CSV does not say whether the run ended, so the status stays ``unknown``). Where the
    folder's birth time is known, both are read from the files as they are now and replace the
    stored ones (``times_final``), so that a run read before its first checkpoint and after it
    equals one read once after it. Without one (NFS) the start is the files' modification times,
    which the first checkpoint moves: the earliest seen stays (``least()``), as before, so that a
    run read before its first checkpoint keeps its start. Points have no time.
    """

    kind = LIGHTNING_CSV
    reads_lines = True

    def grows(self, path: Path) -> bool:
        return path.name == FILE_NAME

    def parse(self, job: JobFolder, path: Path, data: bytes, offset: int, lines: int) -> Chunk:
        if path.name != FILE_NAME:
            config, warnings = load_hparams(data)
            chunk = Chunk(warnings=warnings, consumed=len(data))
            chunk.info.config = config
            chunk.info.model_name = model_name(config)
            return chunk
        header = header_before(path, offset) if offset else None
        chunk, _ = parse(data, offset, lines + 1, header)
        chunk.info.started_at, chunk.info.ended_at, born = _file_times(job.path, path)
        # the last write to metrics.csv is when the run last wrote (updated_at, the end of a job whose
        # status is not terminal): a Lightning run, always ``unknown``, has a duration like other tools' runs
        chunk.info.updated_at = chunk.info.ended_at
        # the times of the files as they are now, not the earliest seen, where the folder's birth time
        # is known (a checkpoint does not move it), in a run folder of this tool alone (beside another
        # tool's logs, the earliest start of them all stays). Without a birth time (NFS) the start is
        # the files' modification times, which the first checkpoint moves: the earliest seen stays.
        chunk.info.times_final = born and job.is_tool_run and set(job.tool_files) == {LIGHTNING_CSV}
        return chunk


def _file_times(folder: Path, metrics: Path) -> tuple[dt.datetime | None, dt.datetime | None, bool]:
    """The run's start and end, and whether the start saw the folder's birth time."""
    times = []
    for path in (folder, folder / HPARAMS, metrics):
        try:
            times.append(os.stat(path).st_mtime)
        except OSError:
            continue
    born = birth_time(folder)
    if born is not None:
        times.append(born)
    if not times:
        return None, None, False
    try:
        last = os.stat(metrics).st_mtime
    except OSError:
        last = max(times)
    return utc_from_seconds(min(times)), utc_from_seconds(last), born is not None


STATX_BTIME = 0x800  # statx(2)'s mask bit of stx_btime
AT_FDCWD = -100
STATX_SIZE = 256  # struct statx
BTIME_AT = 80  # offset of stx_btime (struct statx_timestamp: int64 seconds, uint32 nanoseconds)
_statx: list[Callable[..., int] | None] = []  # libc's statx, once looked up (None: there is none)


def birth_time(path: Path) -> float | None:
    """When the file system made ``path``, in epoch seconds: ``st_birthtime`` where ``os.stat`` has
    it, statx(2)'s ``stx_btime`` on Linux (glibc 2.28+; ext4, XFS, Btrfs, tmpfs record it), else
    None (NFS and older file systems record none; a Python without ctypes can't ask)."""
    try:
        born = getattr(os.stat(path), "st_birthtime", None)
    except OSError:
        return None
    if born is not None:
        return float(born) or None
    if not _statx:
        _statx.append(_libc_statx())
    statx = _statx[0]
    if statx is None:
        return None
    import ctypes  # found by _libc_statx

    buffer = ctypes.create_string_buffer(STATX_SIZE)
    if statx(AT_FDCWD, os.fsencode(path), 0, STATX_BTIME, buffer) != 0:
        return None
    (mask,) = struct.unpack_from("=I", buffer.raw, 0)
    seconds, nanoseconds = struct.unpack_from("=qI", buffer.raw, BTIME_AT)
    if not mask & STATX_BTIME or (seconds, nanoseconds) == (0, 0):
        return None
    return seconds + nanoseconds / 1e9


def _libc_statx() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:  # imported here: a Python built without _ctypes has no statx (no birth time), not no ingest
        import ctypes
    except ImportError:
        return None
    try:
        statx = ctypes.CDLL(None, use_errno=True).statx
    except (OSError, AttributeError):  # a libc without statx (glibc before 2.28, musl before 1.2.5)
        return None
    statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    statx.restype = ctypes.c_int
    return statx


BOM = "\ufeff"  # UTF-8's byte order mark, decoded


def header_before(path: Path, offset: int) -> list[str] | None:
    """The header in force at ``offset``: the last header line before it (the first line, unless a
    writer appended another header further down)."""
    with path.open("rb") as f:
        prefix = f.read(offset)
    end = len(prefix)
    while (found := prefix.rfind(STEP.encode(), 0, end)) >= 0:
        start = prefix.rfind(b"\n", 0, found) + 1
        stop = prefix.find(b"\n", found)
        line = prefix[start : stop if stop >= 0 else len(prefix)].removesuffix(b"\r")
        try:
            cells = next(csv.reader([decoded(line)[0].removeprefix(BOM) if start == 0 else decoded(line)[0]]))
        except (csv.Error, StopIteration):
            cells = []
        if start == 0 or _is_header(cells):
            return [c.strip() for c in cells] if cells else None
        end = start
    first = prefix.split(b"\n", 1)[0].removesuffix(b"\r")
    try:
        return [c.strip() for c in next(csv.reader([decoded(first)[0].removeprefix(BOM)]))]
    except (csv.Error, StopIteration):
        return None


def decoded(line: bytes) -> tuple[str, str | None]:
    """A line as text, bytes that are not UTF-8 replaced by U+FFFD, and what the first such byte
    was and its column in characters, as an editor shows it (None when the line is UTF-8), for the
    warning."""
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as error:
        bad = " ".join(f"0x{b:02x}" for b in line[error.start : error.end])
        column = len(line[: error.start].decode("utf-8")) + 1  # the bytes before it are UTF-8
        return line.decode("utf-8", errors="replace"), f"byte {bad} at column {column}"


def parse(
    data: bytes, offset: int = 0, first_line: int = 1, header: list[str] | None = None
) -> tuple[Chunk, list[str] | None]:
    """The complete rows of ``data``, read from the file at ``offset`` (the header read before given
    as ``header``; at offset 0 the first line is the header), and the header in force at the end."""
    lines, consumed = complete_lines(data, offset)
    chunk = Chunk(consumed=consumed, lines=len(lines))
    current = -1
    not_utf8 = 0  # lines holding bytes that are not UTF-8: one warning names the first
    warned_at = -1  # that warning's place
    for number_, (position, line) in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        text, bad = decoded(line)
        if position == 0:  # a byte order mark opening the file is no part of its header
            text = text.removeprefix(BOM)
        if bad is not None:
            if not not_utf8:
                warned_at = len(chunk.warnings)
                chunk.warnings.append(f"line {number_}: not valid UTF-8 ({bad}), read with U+FFFD in its place")
            not_utf8 += 1
        try:
            # Lightning quotes nothing but names with commas or quotes: split the rest directly
            cells = text.split(",") if '"' not in text else next(csv.reader([text]))
        except csv.Error as error:
            chunk.warnings.append(f"line {number_}: not a CSV row ({error}), skipped")
            continue
        if header is None or _is_header(cells):
            header = [c.strip() for c in cells]
            if STEP not in header:
                chunk.warnings.append(f"line {number_}: the header has no {STEP} column: its rows are skipped")
            continue
        if STEP not in header:
            continue
        if len(cells) != len(header):
            chunk.warnings.append(f"line {number_}: {len(cells)} cells for {len(header)} columns, skipped")
            continue
        written = cells[header.index(STEP)]
        exact = exact_integer(written)
        step = whole(exact if exact is not None else _cell(written))
        if step is None:
            chunk.warnings.append(f"line {number_}: step {cells[header.index(STEP)][:40]!r} is not a step, skipped")
            continue
        current = max(current, step)
        for name, text in zip(header, cells, strict=True):
            if not text or name == STEP or text.isspace():
                continue
            value = _cell(text)
            if value is None:
                chunk.warnings.append(f"line {number_}: {name} {text[:40]!r} is not a number, dropped")
            elif overflows(value, text):
                chunk.warnings.append(f"line {number_}: {name} {text[:40]!r} {OUT_OF_RANGE}, dropped")
            else:
                chunk.points.append(Point(name, step, None, value, position))
    if not_utf8 > 1:
        chunk.warnings[warned_at] += f" (and {not_utf8 - 1} more line{'s' if not_utf8 > 2 else ''})"
    if current >= 0:
        chunk.info.current_step = current
    return chunk, header


OUT_OF_RANGE = "is out of range (beyond a double's 1.8e308)"


def overflows(value: float, text: str | bytes) -> bool:
    """True for a number written in digits that a double can't hold (``1`` and 400 zeros, ``1e400``):
    read as +-inf, which it does not say (``inf`` and ``Infinity`` do, and are kept)."""
    return math.isinf(value) and ("inf" not in text.lower() if isinstance(text, str) else b"inf" not in text.lower())


def _cell(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_header(cells: list[str]) -> bool:
    """A header line met again: it names the step column and holds no number."""
    return STEP in (c.strip() for c in cells) and all(_cell(c) is None for c in cells if c.strip())


def load_hparams(data: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """``hparams.yaml`` as plain JSON-ready data (None and a warning when it is not a YAML mapping)."""
    try:
        doc = load_yaml(data)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        return None, [f"{where}not YAML ({getattr(error, 'problem', None) or error}), config not read"]
    if doc is None:
        return {}, []
    if not isinstance(doc, dict):
        return None, [f"not a YAML mapping but {type(doc).__name__}, config not read"]
    try:
        plain = _plain(doc, [MAX_CONFIG_NODES], 0)
    except _TooLarge:
        return None, [f"more than {MAX_CONFIG_NODES} values once its aliases are expanded, or nested "
                      f"deeper than {MAX_CONFIG_DEPTH}: config not read"]  # fmt: skip
    warnings: list[str] = []
    return clean_strings(plain, "", warnings), warnings


def load_yaml(data: bytes) -> Any:
    """A YAML document as plain data (``PlainDataLoader``); yaml.YAMLError when it is not one."""
    if _FAST_LOADER is not None:
        try:
            return yaml.load(data, Loader=_FAST_LOADER)  # noqa: S506 - PlainDataLoader's constructors
        except Exception:  # noqa: BLE001 - PlainDataLoader says why, in the words the warnings quote
            pass
    try:
        return yaml.load(data, Loader=PlainDataLoader)  # noqa: S506 - a SafeLoader that builds plain data only
    except RecursionError:  # PyYAML composes nested collections recursively
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as error:  # a value its tag can't build (``!!int abc``, ``!!float x``)
        raise yaml.YAMLError(f"a value can't be read: {str(error)[:80]}") from None


def model_name(config: dict[str, Any] | None) -> str | None:
    for key in MODEL_KEYS:
        value = (config or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return None


class PlainDataLoader(yaml.SafeLoader):
    """SafeLoader that reads any tag it doesn't know (``!!python/object…``, a custom ``!Tag``) as the
    plain mapping, list or string under it, instead of refusing the file or building an object."""


def _unknown(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return {TAG: _short(node.tag), **loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.SequenceNode):
        items = loader.construct_sequence(node, deep=True)
        if node.tag == ORDERED_DICT and len(items) == 1 and isinstance(items[0], list):
            pairs = items[0]  # OrderedDict([[key, value], ...]): the mapping it was
            if all(isinstance(p, list) and len(p) == 2 for p in pairs):
                return {str(k): v for k, v in pairs}
        return {TAG: _short(node.tag), "args": items}
    text = loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
    return text or _short(node.tag)  # ``!!python/name:module.function`` says all in its tag


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _int(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """An integer; one of more digits than Python converts (4,300: a plain ValueError that stopped
    the run) is +-inf, as float() reads it and as a JSON line's such integer is read."""
    try:
        return loader.construct_yaml_int(node)
    except ValueError:
        text = str(node.value).strip().replace("_", "")
        if not text.lstrip("+-").isdigit() or not text.isascii():
            raise
        return -math.inf if text.startswith("-") else math.inf


PlainDataLoader.add_constructor(None, _unknown)
PlainDataLoader.add_constructor("tag:yaml.org,2002:int", _int)

_FAST_LOADER: type | None = None
if yaml.__with_libyaml__:

    class _CPlainDataLoader(yaml.CSafeLoader):
        """PlainDataLoader's constructors over libyaml's parser: the same data for a sixth of the
        time (an hparams.yaml took 3 ms); a document it refuses is read again by PlainDataLoader."""

    _CPlainDataLoader.add_constructor(None, _unknown)
    _CPlainDataLoader.add_constructor("tag:yaml.org,2002:int", _int)
    _FAST_LOADER = _CPlainDataLoader


class _TooLarge(ValueError):
    pass


def _plain(value: Any, budget: list[int], depth: int) -> Any:
    """What JSON can hold: sets as sorted lists, times as ISO text, bytes as text, NaN as text.

    YAML aliases share one object: a file of a few lines can name 10^9 values once expanded
    (or itself), so the values written out are counted against ``budget``."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_CONFIG_DEPTH:
        raise _TooLarge
    if isinstance(value, dict):
        return {str(k): _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, budget, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_plain(v, budget, depth + 1) for v in value), key=repr)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
