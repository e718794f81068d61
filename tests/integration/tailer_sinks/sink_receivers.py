"""Real HTTP receivers on 127.0.0.1 that check each sink's wire format strictly.

Each receiver records every request (raw body as received, decompressed body, headers) and answers
from a script: queued responses first, then the format's normal acknowledgement. A body that breaks
the format is answered 400 and its fault recorded in `violations`, which tests assert empty.
"""

from __future__ import annotations

import gzip
import re
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from sidecars.tailer.sinks import Batch, Stream

RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
LOKI_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost: (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def make_batch(
    *streams: tuple[str, list[str]], labels: dict[str, str] | None = None, t0: int = 1_700_000_000_000_000_000
) -> Batch:
    """A batch with one stream per (path, lines); labels = `labels` + {"path": path}."""
    out = []
    ts = t0
    for path, lines in streams:
        stamps = list(range(ts, ts + len(lines)))
        ts += len(lines)
        out.append(Stream(path=path, labels={**(labels or {}), "path": path}, lines=lines, timestamps_ns=stamps))
    return Batch(out)


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    body: bytes


Response = tuple[int, dict[str, str], bytes]


@dataclass
class Receiver:
    """One aiohttp server; `url` is its base URL once started."""

    validate: Callable[[Received], Any]  # raises AssertionError on a format fault; returns parsed body
    answer: Callable[[Received, Any], Response]
    requests: list[Received] = field(default_factory=list)
    parsed: list[Any] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    queued: list[Response] = field(default_factory=list)
    delay: Callable[[], Awaitable[None]] | None = None
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No automatic decompression: the test sees exactly the bytes the sink sent.
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = raw
        if request.headers.get("Content-Encoding") == "gzip":
            try:
                body = gzip.decompress(raw)
            except OSError as e:
                self.violations.append(f"bad gzip: {e}")
                return web.Response(status=400, text="bad gzip")
        rec = Received(request.path, dict(request.query), dict(request.headers), raw, body)
        self.requests.append(rec)
        if self.delay is not None:
            await self.delay()
        if request.method != "POST":
            self.violations.append(f"method {request.method}")
            return web.Response(status=405)
        try:
            parsed = self.validate(rec)
        except (AssertionError, ValueError, KeyError, TypeError) as e:
            self.violations.append(f"{type(e).__name__}: {e}")
            return web.Response(status=400, text=f"invalid: {e}")
        if self.queued:
            status, headers, payload = self.queued.pop(0)
        else:
            self.parsed.append(parsed)
            status, headers, payload = self.answer(rec, parsed)
        return web.Response(status=status, headers=headers, body=payload)


# --- NDJSON -------------------------------------------------------------------------------------


def validate_ndjson(rec: Received) -> list[dict[str, Any]]:
    assert rec.headers.get("Content-Type") == "application/x-ndjson", rec.headers.get("Content-Type")
    assert rec.body.endswith(b"\n"), "NDJSON body must end with a newline"
    docs = []
    for line in rec.body[:-1].split(b"\n"):
        doc = orjson.loads(line)
        assert isinstance(doc, dict), f"not an object: {line!r}"
        assert RFC3339_NS.match(doc["timestamp"]), doc["timestamp"]
        assert isinstance(doc["labels"], dict)
        docs.append(doc)
    return docs


def ack_204(rec: Received, parsed: Any) -> Response:
    return 204, {}, b""


# --- Loki push API ------------------------------------------------------------------------------


def validate_loki(rec: Received) -> list[dict[str, Any]]:
    assert rec.path == "/loki/api/v1/push", rec.path
    assert rec.headers.get("Content-Type") == "application/json"
    doc = orjson.loads(rec.body)
    assert set(doc) == {"streams"}, set(doc)
    for stream in doc["streams"]:
        assert set(stream) == {"stream", "values"}, set(stream)
        assert stream["stream"], "a stream needs at least one label"
        for name, value in stream["stream"].items():
            assert LOKI_LABEL.match(name), f"invalid label name {name!r}"
            assert isinstance(value, str)
        last = 0
        for entry in stream["values"]:
            assert isinstance(entry, list) and len(entry) == 2, entry
            ts, line = entry
            assert isinstance(ts, str) and ts.isdigit(), f"timestamp must be a string of nanoseconds: {ts!r}"
            assert isinstance(line, str)
            assert int(ts) >= last, "entries out of order within a stream"
            last = int(ts)
    streams: list[dict[str, Any]] = doc["streams"]
    return streams


# --- Elasticsearch / OpenSearch _bulk -----------------------------------------------------------


def validate_bulk(rec: Received) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, index, document) per pair; an action without its document is a fault."""
    assert rec.path == "/_bulk", rec.path
    assert rec.headers.get("Content-Type") == "application/x-ndjson"
    assert rec.body.endswith(b"\n"), "_bulk body must end with a newline"
    lines = rec.body[:-1].split(b"\n")
    assert len(lines) % 2 == 0, "action and document lines must pair up"
    out = []
    for i in range(0, len(lines), 2):
        action = orjson.loads(lines[i])
        assert isinstance(action, dict) and len(action) == 1, action
        ((name, meta),) = action.items()
        assert name in ("create", "index"), name
        assert isinstance(meta["_index"], str) and meta["_index"], meta
        doc = orjson.loads(lines[i + 1])
        assert isinstance(doc, dict), doc
        assert RFC3339_NS.match(doc["@timestamp"]), doc
        out.append((name, meta["_index"], doc))
    return out


def bulk_answer(item_status: Callable[[dict[str, Any]], tuple[int, str | None]]) -> Callable[[Received, Any], Response]:
    """A 200 with one item per document; `item_status(doc)` -> (status, error type or None)."""

    def answer(rec: Received, parsed: list[tuple[str, str, dict[str, Any]]]) -> Response:
        items, errors = [], False
        for action, index, doc in parsed:
            status, error = item_status(doc)
            item: dict[str, Any] = {"_index": index, "status": status}
            if error:
                errors = True
                item["error"] = {"type": error, "reason": f"failed to parse field [{error}]"}
            items.append({action: item})
        return 200, {"Content-Type": "application/json"}, orjson.dumps({"took": 3, "errors": errors, "items": items})

    return answer


# --- OTLP/HTTP logs (JSON) ----------------------------------------------------------------------


def _any_value(value: Any) -> None:
    assert isinstance(value, dict) and len(value) <= 1, value
    for kind, inner in value.items():
        assert kind in ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue"), kind
        if kind == "intValue":
            assert isinstance(inner, str) and inner.lstrip("-").isdigit(), inner
        if kind == "kvlistValue":
            for kv in inner["values"]:
                assert isinstance(kv["key"], str)
                _any_value(kv["value"])
        if kind == "arrayValue":
            for v in inner["values"]:
                _any_value(v)


def validate_otlp(rec: Received) -> list[dict[str, Any]]:
    """The log records, each with its resource attributes as a dict under `_resource`."""
    assert rec.path == "/v1/logs", rec.path
    assert rec.headers.get("Content-Type") == "application/json"
    doc = orjson.loads(rec.body)
    assert set(doc) == {"resourceLogs"}, set(doc)
    records = []
    for rl in doc["resourceLogs"]:
        attrs = {}
        for kv in rl["resource"]["attributes"]:
            _any_value(kv["value"])
            attrs[kv["key"]] = kv["value"]["stringValue"]
        for sl in rl["scopeLogs"]:
            assert isinstance(sl["scope"]["name"], str)
            for r in sl["logRecords"]:
                assert isinstance(r["timeUnixNano"], str) and r["timeUnixNano"].isdigit(), r
                _any_value(r["body"])
                for kv in r.get("attributes", []):
                    _any_value(kv["value"])
                records.append({**r, "_resource": attrs})
    return records


def otlp_answer(rejected: int = 0) -> Callable[[Received, Any], Response]:
    def answer(rec: Received, parsed: Any) -> Response:
        body: dict[str, Any] = {}
        if rejected:
            body = {"partialSuccess": {"rejectedLogRecords": str(rejected), "errorMessage": "too old"}}
        return 200, {"Content-Type": "application/json"}, orjson.dumps(body)

    return answer
