"""Shared encoding of a batch: timestamps and the JSON document of each line.

One document shape for every JSON sink (stdout, http, file, elasticsearch):
`{"timestamp": RFC 3339 with nanoseconds, "message": line, "labels": {...}}`; when the line was
parsed as JSON its fields are merged at the top level instead of the raw `message` (the fields
carry it), and the sink's own keys win over a field of the same name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson

from sidecars.tailer.sinks.base import Batch, Stream

_SECONDS: dict[int, str] = {}


def rfc3339_ns(ts_ns: int) -> str:
    """`2024-05-01T12:00:00.123456789Z`; the date part is cached per second (a batch shares few)."""
    sec, frac = divmod(ts_ns, 1_000_000_000)
    return f"{_second(sec)}.{frac:09d}Z"


def rfc3339_us(ts_ns: int) -> str:
    """Microsecond precision, the most RFC 5424 allows."""
    sec, frac = divmod(ts_ns, 1_000_000_000)
    return f"{_second(sec)}.{frac // 1000:06d}Z"


def documents(stream: Stream, timestamp_key: str = "timestamp", labels_key: str = "labels") -> Iterator[Any]:
    """The document of each line of `stream`, in order."""
    labels = dict(stream.labels)
    lines, stamps = stream.lines, stream.timestamps_ns
    if stream.fields is None:
        for line, ts in zip(lines, stamps, strict=True):
            yield {timestamp_key: rfc3339_ns(ts), "message": line, labels_key: labels}
        return
    for line, ts, fields in zip(lines, stamps, stream.fields, strict=True):
        if fields:
            doc = dict(fields)
            doc[timestamp_key] = rfc3339_ns(ts)
            doc[labels_key] = labels
            yield doc
        else:
            yield {timestamp_key: rfc3339_ns(ts), "message": line, labels_key: labels}


def encoded_documents(stream: Stream, timestamp_key: str = "timestamp") -> list[bytes]:
    """Each line's document as JSON bytes (no newline); the hot path of every JSON sink.

    Without parsed fields only the line itself is encoded per line (`orjson.dumps` mapped over the
    lines: no Python frame per line); the constant parts of the document are encoded once per
    stream and a timestamp once per distinct value.
    """
    if stream.fields is not None:
        dumps = orjson.dumps
        return [dumps(doc) for doc in documents(stream, timestamp_key)]
    if not stream.lines:
        return []
    messages = list(map(orjson.dumps, stream.lines))
    start = b"{" + orjson.dumps(timestamp_key) + b':"'
    tail = b',"labels":' + orjson.dumps(dict(stream.labels)) + b"}"
    heads: list[bytes] = []
    last, head = -1, b""
    for ts in stream.timestamps_ns:
        if ts != last:  # lines read together share their time: format it once
            sec, frac = divmod(ts, 1_000_000_000)
            head = b'%b%b.%09dZ","message":' % (start, _second(sec).encode(), frac)
            last = ts
        heads.append(head)
    return [h + m + tail for h, m in zip(heads, messages, strict=True)]


def _second(sec: int) -> str:
    prefix = _SECONDS.get(sec)
    if prefix is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        prefix = _SECONDS[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return prefix


def ndjson(batch: Batch) -> bytes:
    """The whole batch as NDJSON, one document per line, each ended by a newline."""
    parts = [doc for stream in batch.streams for doc in encoded_documents(stream)]
    parts.append(b"")
    return b"\n".join(parts)


def raw_lines(batch: Batch) -> bytes:
    """The lines as they were read, each ended by a newline."""
    text = "\n".join(line for stream in batch.streams for line in stream.lines)
    return (text + "\n").encode("utf-8", "replace") if text or len(batch) else b""
