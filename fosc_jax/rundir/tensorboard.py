"""TensorBoard event files without TensorFlow: scalars and histograms per epoch.

Writes ``WORKDIR/events.out.tfevents.<time>.<host>.<pid>`` (TFRecord framing with masked
CRC32C, ``Event``/``Summary``/``HistogramProto`` protobufs encoded by hand), so
``tensorboard --logdir runs/`` shows every run. metrics.jsonl stays the source of truth; this
is a view of it. A new file per process: TensorBoard merges the files of a run folder. A
resume replays the epochs after its checkpoint, so :func:`truncate_events` first drops their
events from the earlier files (as metrics.jsonl drops their rows): each epoch shows once.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Mapping, Optional

import numpy as np

from fosc_jax.rundir import integrity

EVENT_PREFIX = "events.out.tfevents."

# ----------------------------------------------------------------------------- CRC32C


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc(length)) + data
            + struct.pack("<I", masked_crc(data)))


# ----------------------------------------------------------------------------- protobuf


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _double(field: int, x: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", x)


def _float(field: int, x: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", x)


def _packed_doubles(field: int, xs: np.ndarray) -> bytes:
    return _bytes(field, np.asarray(xs, "<f8").tobytes())


def _event(step: int, wall_time: float, *, summary: bytes = b"", file_version: str = "") -> bytes:
    """tensorflow.Event: wall_time (1), step (2), file_version (3), summary (5)."""
    out = _double(1, wall_time) + _key(2, 0) + _varint(step)
    if file_version:
        out += _bytes(3, file_version.encode())
    if summary:
        out += _bytes(5, summary)
    return out


def _scalar_value(tag: str, value: float) -> bytes:
    """Summary.Value: tag (1), simple_value (2)."""
    return _bytes(1, tag.encode()) + _float(2, value)


def histogram_proto(values: np.ndarray, bins: int = 30) -> bytes:
    """HistogramProto: min, max, num, sum, sum_squares, bucket_limit, bucket (fields 1-7)."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        v = np.zeros(1)
    lo, hi = float(v.min()), float(v.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    counts, _ = np.histogram(v, edges)
    return (_double(1, lo) + _double(2, hi) + _double(3, float(v.size))
            + _double(4, float(v.sum())) + _double(5, float(np.sum(v * v)))
            + _packed_doubles(6, edges[1:]) + _packed_doubles(7, counts.astype(np.float64)))


def _histogram_value(tag: str, values: np.ndarray) -> bytes:
    """Summary.Value: tag (1), histo (5)."""
    return _bytes(1, tag.encode()) + _bytes(5, histogram_proto(values))


# ----------------------------------------------------------------------------- writer


class EventWriter:
    """Appends scalar and histogram summaries to one new event file in ``logdir``."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = (f"{EVENT_PREFIX}{int(time.time())}.{socket.gethostname()}."
                f"{os.getpid()}")
        self.path = os.path.join(logdir, name)
        self._write(_event(0, time.time(), file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        with open(self.path, "ab") as f:
            f.write(tfrecord(event))
            f.flush()

    def write(self, step: int, scalars: Mapping[str, float],
              histograms: Optional[Mapping[str, np.ndarray]] = None) -> None:
        """One event at ``step`` holding every finite numeric scalar and each histogram."""
        values = [_scalar_value(tag, float(v)) for tag, v in scalars.items()
                  if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                  and np.isfinite(v)]
        values += [_histogram_value(tag, h) for tag, h in (histograms or {}).items()
                   if np.isfinite(np.asarray(h, np.float64)).any()]
        summary = b"".join(_bytes(1, v) for v in values)
        self._write(_event(int(step), time.time(), summary=summary))


def write_epoch(writer: EventWriter, row: Mapping, fosc: np.ndarray,
                num_steps: np.ndarray) -> None:
    """A metrics.jsonl row's scalars (step = its epoch) and the epoch's FOSC / attack-step
    histograms."""
    scalars = {k: v for k, v in row.items() if k != "epoch"}
    writer.write(int(row["epoch"]), scalars, {"fosc": fosc, "attack_steps": num_steps})


# ----------------------------------------------------------------------------- resume


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def event_step(event: bytes) -> int:
    """The step (field 2) of an encoded Event; 0 if it has none."""
    i = 0
    while i < len(event):
        key, i = _read_varint(event, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(event, i)
            if field == 2:
                return value
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _read_varint(event, i)
            i += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return 0


def read_records(data: bytes) -> list[bytes]:
    """The payloads of the whole TFRecords in ``data`` (a torn last record is left out)."""
    out, i = [], 0
    while i + 12 <= len(data):
        (size,) = struct.unpack("<Q", data[i:i + 8])
        end = i + 12 + size + 4
        if end > len(data):
            break
        out.append(data[i + 12:i + 12 + size])
        i = end
    return out


def truncate_events(logdir: str, epoch: int) -> None:
    """Drop events of epochs >= ``epoch`` (steps are 1-based epochs) from the event files in
    ``logdir``, rewriting a file only where something is dropped (atomically)."""
    if not os.path.isdir(logdir):
        return
    for name in sorted(os.listdir(logdir)):
        path = os.path.join(logdir, name)
        if not name.startswith(EVENT_PREFIX) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        records = read_records(data)
        kept = [r for r in records if event_step(r) < epoch]
        if len(kept) < len(records) or sum(len(r) + 16 for r in records) != len(data):
            integrity.atomic_write(path, lambda f: f.write(b"".join(map(tfrecord, kept))),
                                   binary=True)
