"""Prometheus remote write 1.0's WriteRequest, encoded by hand.

Four small messages (WriteRequest, TimeSeries, Label, Sample) are all remote write 1.0 needs; writing
their wire format here keeps a protobuf runtime and generated code out of the image, and encoding
straight into bytes is faster in Python than building message objects first.

    WriteRequest { repeated TimeSeries timeseries = 1; }
    TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    Label        { string name = 1; string value = 2; }
    Sample       { double value = 1; int64 timestamp = 2; }
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

Labels = tuple[tuple[str, str], ...]
_DOUBLE = struct.Struct("<d")


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 on the wire: two's complement in ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def encode_labels(labels: Labels) -> bytes:
    """The `labels` fields of a TimeSeries; the pairs must be sorted by name, `__name__` among them."""
    out = []
    for name, value in labels:
        out.append(_field(1, _field(1, name.encode()) + _field(2, value.encode())))
    return b"".join(out)


def encode_sample(value: float, timestamp_ms: int) -> bytes:
    body = b"\x09" + _DOUBLE.pack(value) + b"\x10" + varint(timestamp_ms)
    return b"\x12" + varint(len(body)) + body


def encode_write_request(series: Iterable[tuple[bytes, Sequence[tuple[int, float]]]]) -> bytes:
    """A WriteRequest from (encoded labels, [(timestamp ms, value)...]) per series, samples in time order."""
    out = []
    for labels, samples in series:
        body = labels + b"".join(encode_sample(v, t) for t, v in samples)
        out.append(b"\x0a" + varint(len(body)) + body)
    return b"".join(out)
