"""TensorBoard event files (``events.out.tfevents.*``): every scalar, under its tag.

An event file is a TFRecord file: records of ``length`` (8 bytes, little-endian), the masked
CRC32C of those 8 bytes, ``length`` bytes of data, the masked CRC32C of the data. Both CRCs are
checked (``google_crc32c``). The data is an ``Event`` protocol buffer, decoded with the
definitions of the ``tensorboard`` package (no TensorFlow). A scalar is a summary value's
``simple_value`` (torch, tensorboardX, Keras) or a 0-d float tensor of the ``scalars`` plugin
(TF 2 ``tf.summary.scalar``, which names its plugin in the first value of a tag only); images,
histograms, text, graphs, hparams and run metadata are skipped. The event's ``wall_time`` is the
point's time, its ``step`` the point's step.

A record cut mid-write (fewer bytes than its header announces) waits for the next run; a length
above 2 GiB (no protocol buffer is that large) is lost framing, as a bad length CRC. A record
whose data CRC fails, or that does not decode, is skipped with a warning naming file offset; a
header whose length CRC fails loses the framing: the reader looks for the next offset where a
whole record checks out (both CRCs) and reads on from there, with a warning naming the bytes
skipped; with none, the rest read so far is skipped and the next run reads on from its end.

A read is decoded as columns when it can be (``_parse_columns``, described above it: two calls
of the protobuf library for the whole read), else record by record (``_parse_records``); both
give the same chunk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from runlytics.ingest import ledger
from runlytics.ingest.discover import LIGHTNING_HPARAMS, TENSORBOARD, JobFolder

from . import lightning_csv
from .base import DEFAULT_MAX_FILE_MB, Candidate, examine
from .text_logs import MAX_STEP, Chunk, Events, RunInfo, utc_from_wall
from .tool_log import ToolLogParser

HEADER = 12  # length (8) + its masked CRC (4)
FOOTER = 4  # the data's masked CRC
MAX_RECORD = 2**31 - 1  # bytes: a protocol buffer message is below 2 GiB (a larger length is lost framing)
SCALARS_PLUGIN = "scalars"
MASK_DELTA = 0xA282EAD8

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEAD = struct.Struct("<QI")  # a record's length and the masked CRC of its 8 bytes
# 0-d tensors of these types are scalars; the field holding the value when not in tensor_content
_TENSOR_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", "<f"),
    types_pb2.DT_DOUBLE: ("double_val", "<d"),
    types_pb2.DT_HALF: ("half_val", "<e"),
    types_pb2.DT_BFLOAT16: ("half_val", None),
    types_pb2.DT_INT32: ("int_val", "<i"),
    types_pb2.DT_INT64: ("int64_val", "<q"),
}


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


class TensorBoardParser(ToolLogParser):
    kind = TENSORBOARD
    overlapping = True  # a run's event files (resumed writers) log the same tags

    def parse(self, job: JobFolder, path: Path, data: bytes, offset: int, lines: int) -> Chunk:
        return parse(data, offset)

    def read(self, c: Candidate, data: bytes, offset: int, lines: int, seen: int) -> Chunk:
        """A record cut mid-write waits for the writer; in a file that has settled it is said (a
        writer stopped mid-write), once: the next run finds the file unchanged."""
        chunk = self.parse(c.job, c.path, data, offset, lines)
        if chunk.consumed < len(data) and ledger.settled(c.stat):
            chunk.warnings.append(
                f"offset {offset + chunk.consumed}: the last record is cut short ({len(data) - chunk.consumed} bytes)"
                " and the file has settled: not read (read on if the file grows)"
            )
        return chunk

    def job_info(self, job: JobFolder) -> tuple[RunInfo | None, list[str]]:
        """A Lightning TensorBoardLogger's ``hparams.yaml`` beside the event files is the run's config."""
        hparams = job.path / LIGHTNING_HPARAMS
        if not job.is_tool_run or not hparams.is_file():
            return None, []
        try:
            # the checks every job file passes before it is opened (a link out of the root, a FIFO, …)
            _, problem = examine(hparams, job, DEFAULT_MAX_FILE_MB << 20)
            if problem is not None:
                return None, [f"{LIGHTNING_HPARAMS}: {problem}, config not read"]
            data = hparams.read_bytes()
        except OSError as error:
            return None, [f"{LIGHTNING_HPARAMS}: cannot read ({error}), config not read"]
        config, warnings = lightning_csv.load_hparams(data)
        return RunInfo(config=config, model_name=lightning_csv.model_name(config)), [
            f"{LIGHTNING_HPARAMS}: {w}" for w in warnings
        ]


def parse(data: bytes, offset: int = 0) -> Chunk:
    """The scalars of the whole records of ``data``, read from an event file at ``offset``."""
    chunk = _parse_columns(data, offset)
    return chunk if chunk is not None else _parse_records(data, offset)


# the wall times of years 1-9999 (seconds since the epoch): datetime's range, the warehouse's
FIRST_WALL, END_WALL = -62_135_596_800.0, 253_402_300_800.0


def _untimed(chunk: Chunk) -> None:
    """One warning for the events of a read whose wall_time is no time (NaN, infinite, outside
    years 1-9999): their values are kept, untimed."""
    events = chunk.events
    if events is None or not len(events.counts):
        return
    walls = np.asarray(events.walls, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~((walls >= FIRST_WALL) & (walls < END_WALL)))
    if len(bad):
        first = int(bad[0])
        more = f" (and {len(bad) - 1} more events)" if len(bad) > 1 else ""
        chunk.warnings.append(
            f"offset {int(events.orders[first])}: wall_time {float(walls[first])!r} is no time (years 1-9999){more},"
            " the values kept untimed"
        )


def _parse_records(data: bytes, offset: int) -> Chunk:
    """``parse``, record by record: a decoded Event and a look at each of its values."""
    events = Events()
    chunk = Chunk(events=events)
    plugins: dict[str, str] = {}  # tag -> plugin named by its first value in this read
    position, end, records = 0, len(data), 0
    started: float | None = None
    last_step = 0
    crc, head, footer, decode = google_crc32c.value, _HEAD.unpack_from, _CRC.unpack_from, _event_from
    while end - position >= HEADER:
        length, length_crc = head(data, position)
        c = crc(data[position : position + 8])
        if length_crc != (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF:
            position = _skip(data, position, end, offset, "bad record length CRC (not a TFRecord here)", chunk)
            continue
        stop = position + HEADER + length + FOOTER
        if length > MAX_RECORD:  # its CRC holds, yet no Event is that large: the framing is lost
            why = f"record length {length} is larger than any event (2 GiB)"
            position = _skip(data, position, end, offset, why, chunk)
            continue
        if stop > end:
            break  # cut mid-write: the writer is still at it
        body = data[position + HEADER : stop - FOOTER]
        c = crc(body)
        at = offset + position
        records += 1
        if footer(data, stop - FOOTER)[0] != (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF:
            chunk.warnings.append(f"offset {at}: bad record data CRC, record skipped")
            position = stop
            continue
        position = stop
        try:
            event = decode(body)
        except DecodeError as error:
            chunk.warnings.append(f"offset {at}: not an Event record ({error}), skipped")
            continue
        wall = event.wall_time
        if started is None or wall < started:
            started = wall
        step = _add_event(event, at, plugins, events, chunk.warnings)
        if step > last_step:
            last_step = step
    chunk.consumed = position  # a record boundary: what follows is cut mid-write and waits
    chunk.lines = records
    if last_step:
        chunk.info.current_step = last_step
    if started is not None:
        chunk.info.started_at = utc_from_wall(started)
    _untimed(chunk)
    return chunk


def _add_event(event: Any, at: int, plugins: dict[str, str], events: Events, warnings: list[str]) -> int:
    """The scalars of a decoded Event (record at file offset ``at``) appended to ``events``; the
    event's step if it held any, else 0."""
    summary_values = event.summary.value
    if not summary_values:
        return 0
    step: int = event.step
    if step < 0:
        warnings.append(f"offset {at}: step {step} is negative, the event's values dropped")
        return 0
    if step > MAX_STEP:
        warnings.append(f"offset {at}: step {step} is out of range (above 10^18), the event's values dropped")
        return 0
    names, values = events.names, events.values
    before = len(names)
    for value in summary_values:
        number = value.simple_value
        # 0.0 is also what a value of another kind (a tensor, an image) reads as: look closer
        if number == 0.0 and value.WhichOneof("value") != "simple_value":
            number = _tensor_value(value, plugins)
            if number is None:
                continue
        names.append(value.tag)
        values.append(number)
    found = len(names) - before
    if not found:
        return 0
    events.counts.append(found)
    events.steps.append(step)
    events.walls.append(event.wall_time)
    events.orders.append(at)
    return step


def _skip(data: bytes, position: int, end: int, offset: int, why: str, chunk: Chunk) -> int:
    """Where reading goes on after a record that is no record (the next one whose framing holds,
    else the end read so far), with a warning naming the offset and the bytes skipped."""
    resync = _next_record(data, position + 1)
    skipped_to = resync if resync is not None else end
    rest = "" if resync is not None else " to the end read so far"
    chunk.warnings.append(f"offset {offset + position}: {why}, {skipped_to - position} bytes skipped{rest}")
    return skipped_to


def _next_record(data: bytes, start: int) -> int | None:
    """The first offset from ``start`` where a whole record checks out (both CRCs), or None."""
    end = len(data)
    for position in range(start, end - HEADER - FOOTER + 1):
        header = data[position : position + 8]
        if _CRC.unpack_from(data, position + 8)[0] != masked_crc(header):
            continue
        (length,) = _LENGTH.unpack(header)
        stop = position + HEADER + length + FOOTER
        if stop <= end and _CRC.unpack_from(data, stop - FOOTER)[0] == masked_crc(data[position + HEADER : stop - 4]):
            return position
    return None


def _tensor_value(value: Any, plugins: dict[str, str]) -> float | None:
    """A value not stored as ``simple_value`` (a tensor, or a value naming its plugin): its number
    when it is a scalar, else None."""
    if value.WhichOneof("value") != "tensor" and not value.HasField("metadata"):
        return None
    tag = value.tag
    plugin = value.metadata.plugin_data.plugin_name
    if plugin:
        plugins[tag] = plugin
    # TF 2 names the plugin in a tag's first value only: a later read (from an offset) sees none,
    # and a 0-d number without a plugin is a scalar (images and text are not 0-d numbers)
    if value.WhichOneof("value") != "tensor" or plugins.get(tag, SCALARS_PLUGIN) != SCALARS_PLUGIN:
        return None
    return _scalar(value.tensor)


_event_from = event_pb2.Event.FromString


def _scalar(tensor: Any) -> float | None:
    """A 0-d numeric tensor's value, or None for any other tensor."""
    if len(tensor.tensor_shape.dim) != 0:
        return None
    spec = _TENSOR_FIELDS.get(tensor.dtype)
    if spec is None:
        return None
    field, fmt = spec
    content: bytes = tensor.tensor_content
    if content:
        if fmt is None:  # bfloat16: the high half of a float32
            return float(struct.unpack("<f", b"\0\0" + content[:2])[0])
        if len(content) != struct.calcsize(fmt):
            return None
        return float(struct.unpack(fmt, content)[0])
    values = getattr(tensor, field)
    if len(values) != 1:
        return None
    if field == "half_val":  # float16/bfloat16 bits in an int
        bits = int(values[0])
        if fmt is None:
            return float(struct.unpack("<f", struct.pack("<I", bits << 16))[0])
        return float(struct.unpack("<e", struct.pack("<H", bits))[0])
    return float(values[0])


# ---- columns straight from the protobuf library (the fast road) ----
#
# A read's records are decoded by the protobuf library twice, in two calls for the whole read
# instead of one decode and a Python attribute read per value:
#
# 1. As ``tensorboard.Event`` messages (the package's own definitions), each record's bytes a
#    repeated field of a wrapper message (``Records``): this decides, exactly as decoding record
#    by record would, whether every record is an Event; and re-serialising it gives back the same
#    bytes only when no record holds a field twice (or out of order, or a non-minimal varint).
# 2. As one merged message of a column-shaped schema (``EventColumns``: repeated wall_time and
#    step, a singular summary whose singular value merges every value's tag and simple_value into
#    two lists). Protobuf merges concatenated messages, so the concatenation of every record
#    (each after a constant marker: a wall time, a step and a value of its own) decodes into
#    columns, the markers telling where each record's fields start.
#
# A record whose size is exactly that of its wall time, step and plain values (a tag and a
# simple_value each) pairs its i-th tag with its i-th value, as decoding it alone would; any other
# record (tensors, images, metadata, an empty tag, a negative or out-of-range step) is decoded alone, in file
# order. A bad CRC, a record that is no Event, one not canonical or a marker's value met in the
# data sends the whole read to the record-by-record road above, so both roads give the same
# points, warnings and offsets (tests/test_tool_logs.py compares them).


def _columns_pool() -> tuple[Any, Any, Any]:
    """The wrapper and column message classes, defined through the protobuf library."""
    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="runlytics/tensorboard_columns.proto",
        package="runlytics.tensorboard_columns",
        syntax="proto3",
        dependency=[event_pb2.DESCRIPTOR.name],
    )
    batch = proto.message_type.add(name="Records")
    batch.field.add(
        name="event", number=1, type=fd.TYPE_MESSAGE, type_name=".tensorboard.Event", label=fd.LABEL_REPEATED
    )
    values = proto.message_type.add(name="ValueColumns")
    values.field.add(name="tag", number=1, type=fd.TYPE_STRING, label=fd.LABEL_REPEATED)
    values.field.add(name="simple_value", number=2, type=fd.TYPE_FLOAT, label=fd.LABEL_REPEATED)
    for name, number in _OTHER_VALUE_FIELDS.items():
        values.field.add(name=name, number=number, type=fd.TYPE_BYTES, label=fd.LABEL_REPEATED)
    summary = proto.message_type.add(name="SummaryColumns")
    summary.field.add(
        name="value", number=1, type=fd.TYPE_MESSAGE, type_name=".runlytics.tensorboard_columns.ValueColumns",
        label=fd.LABEL_OPTIONAL,
    )  # fmt: skip
    event = proto.message_type.add(name="EventColumns")
    event.field.add(name="wall_time", number=1, type=fd.TYPE_DOUBLE, label=fd.LABEL_REPEATED)
    event.field.add(name="step", number=2, type=fd.TYPE_INT64, label=fd.LABEL_REPEATED)
    event.field.add(
        name="summary", number=5, type=fd.TYPE_MESSAGE, type_name=".runlytics.tensorboard_columns.SummaryColumns",
        label=fd.LABEL_OPTIONAL,
    )  # fmt: skip
    pool = descriptor_pool.Default()
    pool.Add(proto)  # the same file again (a module reloaded) is accepted
    classes = [
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{proto.package}.{name}"))
        for name in ("Records", "EventColumns")
    ]
    # what the markers read as, once through the same decoder (a NaN's payload as the decoder keeps it)
    marks = classes[1].FromString(_MARKER)
    wall_bits = np.array(marks.wall_time, dtype=np.float64).view(np.uint64)[0]
    value_bits = np.array(marks.summary.value.simple_value, dtype=np.float64).view(np.uint64)[0]
    return classes[0], classes[1], (int(wall_bits), int(value_bits))


# Summary.Value's fields other than tag and simple_value (tensors, images, metadata, …)
_OTHER_VALUE_FIELDS = {
    "obsolete_old_style_histogram": 3, "image": 4, "histo": 5, "audio": 6, "node_name": 7, "tensor": 8, "metadata": 9,
}  # fmt: skip
_STEP_MARK = -(2**63)
_TAG_MARK = "\x00"
_MARK_VALUE = b"\x0a\x01\x00" + b"\x15" + struct.pack("<I", 0x7FC05254)  # tag "\0", simple_value a NaN
_MARK_SUMMARY = b"\x0a" + bytes([len(_MARK_VALUE)]) + _MARK_VALUE
_MARKER = (
    b"\x09" + struct.pack("<Q", 0x7FF8000052544221)  # wall_time: a NaN
    + b"\x10" + b"\x80" * 9 + b"\x01"  # step: -2**63
    + b"\x2a" + bytes([len(_MARK_SUMMARY)]) + _MARK_SUMMARY
)  # fmt: skip
assert len(_MARK_SUMMARY) < 0x80  # one-byte lengths above
_Records, _EventColumns, (_WALL_MARK_BITS, _VALUE_MARK_BITS) = _columns_pool()
# records decoded per library call: the copies and messages of a window bound the memory used
_WINDOW_RECORDS = 16384
_WINDOW_BYTES = 8 << 20


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINT_LIMITS = np.array([1 << bits for bits in range(7, 64, 7)], dtype=np.uint64)


def _varint_sizes(n: np.ndarray) -> np.ndarray:
    """The bytes of each number's varint (negative int64: 10)."""
    return np.searchsorted(_VARINT_LIMITS, n.astype(np.uint64), side="right") + 1


@dataclass
class _Columns:
    """Per record of a batch: wall time, step, how many plain values, whether it must be decoded
    alone; per plain value: its tag's code into ``table`` and its value."""

    walls: np.ndarray
    steps: np.ndarray
    counts: np.ndarray
    alone: np.ndarray
    codes: np.ndarray
    table: list[str]
    values: np.ndarray


def _parse_columns(data: bytes, offset: int) -> Chunk | None:
    """The chunk ``parse`` gives, through the fast road; None where only the slow road can say."""
    framed = _frames(data)
    if framed is None:
        return None
    starts, lengths, position = framed
    events = Events()
    chunk = Chunk(events=events, consumed=position, lines=len(starts))
    if not starts:
        return chunk
    parts = []
    lone = Events()  # the points of the records decoded alone, in file order
    plugins: dict[str, str] = {}  # a tag's plugin is named in its first value only
    for first, stop in _windows(lengths):
        # a window's records at a time: the copies and decoded messages stay bounded
        at, size = starts[first:stop], lengths[first:stop]
        bodies = [data[a + HEADER : a + HEADER + n] for a, n in zip(at, size, strict=True)]
        ends = np.array(at, dtype=np.int64) + HEADER + np.array(size, dtype=np.int64)
        checks = np.fromiter(map(google_crc32c.value, bodies), dtype=np.uint64, count=len(bodies))
        if not np.array_equal(_masked(checks), _stored_crc(np.frombuffer(data, dtype=np.uint8), ends)):
            return None
        part = _columns(bodies)
        if part is None:
            return None
        for i in np.flatnonzero(part.alone).tolist():
            _add_event(_event_from(bodies[i]), offset + starts[first + i], plugins, lone, chunk.warnings)
        parts.append(part)
    walls = np.concatenate([p.walls for p in parts])
    steps = np.concatenate([p.steps for p in parts])
    counts = np.concatenate([p.counts for p in parts])
    orders = np.asarray(starts, dtype=np.int64) + offset
    table = list(dict.fromkeys(name for p in parts for name in p.table))
    index = {name: i for i, name in enumerate(table)}
    codes = np.concatenate([np.array([index[n] for n in p.table], dtype=np.int64)[p.codes] for p in parts])
    values = np.concatenate([p.values for p in parts])
    # the earliest wall time as the record-by-record road finds it (a NaN first stays the start)
    started = walls[0] if np.isnan(walls[0]) else np.nanmin(walls)
    chunk.info.started_at = utc_from_wall(float(started))
    plain = counts > 0
    if len(lone):
        codes, table, values = _with_lone(codes, table, values, lone)
        counts = np.concatenate([counts[plain], np.frombuffer(lone.counts, dtype=np.int64)])
        steps = np.concatenate([steps[plain], np.frombuffer(lone.steps, dtype=np.int64)])
        walls = np.concatenate([walls[plain], np.frombuffer(lone.walls, dtype=np.float64)])
        orders = np.concatenate([orders[plain], np.frombuffer(lone.orders, dtype=np.int64)])
        by_order = np.argsort(orders, kind="stable")
        point_order = np.argsort(np.repeat(np.argsort(by_order), counts), kind="stable")
        codes, values = codes[point_order], values[point_order]
        counts, steps, walls, orders = counts[by_order], steps[by_order], walls[by_order], orders[by_order]
    else:
        counts, steps, walls, orders = counts[plain], steps[plain], walls[plain], orders[plain]
    if len(steps) and steps.max() > 0:
        chunk.info.current_step = int(steps.max())
    events.set_columns(codes, table, values, counts, steps, walls, orders)
    _untimed(chunk)
    return chunk


def _windows(lengths: list[int]) -> list[tuple[int, int]]:
    """The records in runs of at most _WINDOW_RECORDS records and about _WINDOW_BYTES bytes."""
    index = np.arange(len(lengths))
    window = np.maximum(np.cumsum(np.array(lengths, dtype=np.int64)) // _WINDOW_BYTES, index // _WINDOW_RECORDS)
    cuts = [0, *(np.flatnonzero(np.diff(window)) + 1).tolist(), len(lengths)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _frames(data: bytes) -> tuple[list[int], list[int], int] | None:
    """Each whole record's offset and length, and where the whole records end; None when a length's
    CRC fails (the data's CRCs are checked window by window)."""
    length_at = _LENGTH.unpack_from
    starts: list[int] = []
    lengths: list[int] = []
    add_start, add_length = starts.append, lengths.append
    position, end = 0, len(data)
    while end - position >= HEADER:
        length = length_at(data, position)[0]
        stop = position + HEADER + length + FOOTER
        if stop > end:  # cut mid-write, or a length that a bad length CRC explains
            head = data[position : position + 8]
            if length > MAX_RECORD or _CRC.unpack_from(data, position + 8)[0] != masked_crc(head):
                return None
            break
        add_start(position)
        add_length(length)
        position = stop
    n = len(starts)
    head_crcs = np.fromiter(map(google_crc32c.value, [data[at : at + 8] for at in starts]), dtype=np.uint64, count=n)
    at = np.array(starts, dtype=np.int64)
    if not np.array_equal(_masked(head_crcs), _stored_crc(np.frombuffer(data, dtype=np.uint8), at + 8)):
        return None
    return starts, lengths, position


def _masked(crc: np.ndarray) -> np.ndarray:
    return (((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(MASK_DELTA)) & np.uint64(0xFFFFFFFF)


def _stored_crc(raw: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The little-endian 4-byte numbers at each of ``at``."""
    out = np.zeros(len(at), dtype=np.uint64)
    for i in range(4):
        out |= raw[at + i].astype(np.uint64) << np.uint64(8 * i)
    return out


def _with_lone(
    codes: np.ndarray, table: list[str], values: np.ndarray, lone: Events
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The plain records' points followed by those of the records decoded alone."""
    lone_codes, lone_table = lone.name_codes()
    index = {name: i for i, name in enumerate(table)}
    table = table + [name for name in lone_table if name not in index]
    index = {name: i for i, name in enumerate(table)}
    to_table = np.array([index[name] for name in lone_table], dtype=np.int64)
    return (
        np.concatenate([codes, to_table[lone_codes]]),
        table,
        np.concatenate([values, np.frombuffer(lone.values, dtype=np.float64)]),
    )


def _columns(bodies: list[bytes]) -> _Columns | None:
    """A batch of records' columns; None when the batch is not for this road."""
    n = len(bodies)
    sizes = np.fromiter(map(len, bodies), dtype=np.int64, count=n)
    heads = {size: b"\x0a" + _varint(size) for size in set(sizes.tolist())}  # field 1, then the length
    wrapped: list[bytes] = [b""] * (2 * n)
    wrapped[0::2] = map(heads.__getitem__, sizes.tolist())
    wrapped[1::2] = bodies
    whole = b"".join(wrapped)
    try:
        records = _Records.FromString(whole)
        if records.SerializeToString() != whole:
            return None  # not canonical: a field twice, out of order, or unknown
        flat = _EventColumns.FromString(_MARKER + _MARKER.join(bodies))
    except DecodeError:
        return None
    value = flat.summary.value
    wall_all = np.array(flat.wall_time, dtype=np.float64)
    step_all = np.array(flat.step, dtype=np.int64)
    tags = list(value.tag)
    simple_all = np.array(value.simple_value, dtype=np.float64)
    wall_marks = np.flatnonzero(wall_all.view(np.uint64) == np.uint64(_WALL_MARK_BITS))
    step_marks = np.flatnonzero(step_all == _STEP_MARK)
    value_marks = np.flatnonzero(simple_all.view(np.uint64) == np.uint64(_VALUE_MARK_BITS))
    table = list(dict.fromkeys(tags))
    index = {name: i for i, name in enumerate(table)}
    codes = np.fromiter(map(index.__getitem__, tags), dtype=np.int64, count=len(tags))
    tag_marks = np.flatnonzero(codes == index[_TAG_MARK])
    if not (len(wall_marks) == len(step_marks) == len(value_marks) == len(tag_marks) == n):
        return None  # a marker's value met in the data
    walls, wall_count = _last_after_marks(wall_all, wall_marks, 0.0)
    steps, step_count = _last_after_marks(step_all, step_marks, 0)
    tag_count = np.diff(np.append(tag_marks, len(codes))) - 1
    value_count = np.diff(np.append(value_marks, len(simple_all))) - 1
    alone = (tag_count != value_count) | (wall_count > 1) | (step_count > 1) | (steps < 0) | (steps > MAX_STEP)
    if any(len(getattr(value, name)) for name in _OTHER_VALUE_FIELDS):
        # some value is not plain: a record without plain values may hold it (a tensor without a tag)
        alone |= tag_count == 0
    # A record whose values are all plain (a tag and a simple_value each, nothing else) has the
    # size of its wall_time, step and those values: then its i-th tag and i-th value are one
    # value's, as decoding it alone pairs them. Any other record is decoded alone.
    tag_bytes = np.array([len(t.encode()) for t in table], dtype=np.int64)
    value_size = 1 + _varint_sizes(tag_bytes) + tag_bytes + 5
    field_size = (1 + _varint_sizes(value_size) + value_size)[codes]
    field_size[tag_marks] = 0
    has = (tag_count > 0) & ~alone
    summary_size = np.zeros(n, dtype=np.int64)
    if np.any(has):
        summary_size[has] = np.add.reduceat(field_size, tag_marks)[has]
    expected = 9 * wall_count + step_count * (1 + _varint_sizes(steps)) + 1 + _varint_sizes(summary_size) + summary_size
    alone |= has & (expected != sizes)
    # the wall times of the others as the Event definitions read them (a field of the wrong wire
    # type is a value in the columns, unknown to an Event)
    events = records.event
    for i in np.flatnonzero(~has | alone).tolist():
        walls[i] = events[i].wall_time
    keep_tag = np.repeat(~alone, tag_count + 1)
    keep_tag[tag_marks] = False
    keep_value = np.repeat(~alone, value_count + 1)
    keep_value[value_marks] = False
    counts = np.where(alone, 0, tag_count)
    return _Columns(walls, steps, counts, alone, codes[keep_tag], table, simple_all[keep_value])


def _last_after_marks(column: np.ndarray, marks: np.ndarray, default: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per record, the last value written after its marker (``default`` for none), and how many."""
    ends = np.append(marks[1:], len(column))
    count = ends - marks - 1
    out = np.full(len(marks), default, dtype=column.dtype)
    some = count > 0
    out[some] = column[ends[some] - 1]
    return out, count
