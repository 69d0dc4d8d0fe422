"""TensorBoard event files (``events.out.tfevents.*``): every scalar, under its tag.

An event file is a TFRecord file: records of ``length`` (8 bytes, little-endian), the masked
CRC32C of those 8 bytes, ``length`` bytes of data, the masked CRC32C of the data. Both CRCs are
checked (``google_crc32c``). The data is an ``Event`` protocol buffer, decoded with the
definitions of the ``tensorboard`` package (no TensorFlow). A scalar is a summary value's
``simple_value`` (torch, tensorboardX, Keras) or a 0-d float tensor of the ``scalars`` plugin
(TF 2 ``tf.summary.scalar``, which names its plugin in the first value of a tag only); images,
histograms, text, graphs, hparams and run metadata are skipped. The event's ``wall_time`` is the
point's time, its ``step`` the point's step.

A record cut mid-write (fewer bytes than its header announces) waits for the next run. A record
whose data CRC fails, or that does not decode, is skipped with a warning naming file offset; a
header whose length CRC fails loses the framing: the reader looks for the next offset where a
whole record checks out (both CRCs) and reads on from there, with a warning naming the bytes
skipped; with none, the rest read so far is skipped and the next run reads on from its end.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import google_crc32c
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from runlytics.ingest.discover import LIGHTNING_HPARAMS, TENSORBOARD, JobFolder

from . import lightning_csv
from .base import DEFAULT_MAX_FILE_MB, examine
from .text_logs import Chunk, Events, RunInfo, utc_from_wall
from .tool_log import ToolLogParser

HEADER = 12  # length (8) + its masked CRC (4)
FOOTER = 4  # the data's masked CRC
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
    events = Events()
    chunk = Chunk(events=events)
    plugins: dict[str, str] = {}  # tag -> plugin named by its first value in this read
    position, end, records = 0, len(data), 0
    started: float | None = None
    last_step = 0
    crc, head, footer, decode = google_crc32c.value, _HEAD.unpack_from, _CRC.unpack_from, _event_from
    names, values = events.names, events.values
    add_name, add_value = names.append, values.append
    add_count, add_step, add_wall, add_order = (
        events.counts.append,
        events.steps.append,
        events.walls.append,
        events.orders.append,
    )
    while end - position >= HEADER:
        length, length_crc = head(data, position)
        c = crc(data[position : position + 8])
        if length_crc != (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF:
            resync = _next_record(data, position + 1)
            skipped_to = resync if resync is not None else end
            chunk.warnings.append(
                f"offset {offset + position}: bad record length CRC (not a TFRecord here), "
                f"{skipped_to - position} bytes skipped" + ("" if resync is not None else " to the end read so far")
            )
            position = skipped_to
            continue
        stop = position + HEADER + length + FOOTER
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
        summary_values = event.summary.value
        if not summary_values:
            continue
        step = event.step
        if step < 0:
            chunk.warnings.append(f"offset {at}: step {step} is negative, the event's values dropped")
            continue
        before = len(names)
        for value in summary_values:
            number = value.simple_value
            # 0.0 is also what a value of another kind (a tensor, an image) reads as: look closer
            if number == 0.0 and value.WhichOneof("value") != "simple_value":
                number = _tensor_value(value, plugins)
                if number is None:
                    continue
            add_name(value.tag)
            add_value(number)
        found = len(names) - before
        if found:
            add_count(found)
            add_step(step)
            add_wall(wall)
            add_order(at)
            if step > last_step:
                last_step = step
    chunk.consumed = position  # a record boundary: what follows is cut mid-write and waits
    chunk.lines = records
    if last_step:
        chunk.info.current_step = last_step
    if started is not None:
        chunk.info.started_at = utc_from_wall(started)
    return chunk


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
