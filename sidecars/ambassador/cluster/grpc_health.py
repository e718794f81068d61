"""The `grpc` active health check: `grpc.health.v1.Health/Check` over a fresh HTTP/2 connection
(h2c, or TLS with ALPN h2 to a cluster with TLS settings: the data plane's verification and identity).

The request and the answer are tiny protobuf messages, written and read here by hand (a string field
1, `service`; an enum field 1, `status`, where 1 is SERVING), so the check needs no generated code.
Everything read is bounded: the answer's bytes, its header list, the time (the caller's timeout).
"""

from __future__ import annotations

import asyncio

import h2.events
import h2.exceptions

from sidecars.ambassador.cluster import http2_frames
from sidecars.ambassador.cluster.config import HealthCheckConfig
from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.ambassador.cluster.upstream_connect import H2, open_h2
from sidecars.ambassador.cluster.upstream_tls import UpstreamTls, UpstreamTlsError

PATH = b"/grpc.health.v1.Health/Check"
SERVING = 1
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
MAX_ANSWER_BYTES = 4096  # a HealthCheckResponse is a few bytes


def request_message(service: str) -> bytes:
    """A length-prefixed gRPC message holding HealthCheckRequest{service}."""
    name = service.encode()
    body = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def status_of_answer(data: bytes) -> int | None:
    """`status` of a length-prefixed HealthCheckResponse (0 when absent, as protobuf defaults it)."""
    if len(data) < 5 or data[0] != 0:
        return None
    body = data[5 : 5 + int.from_bytes(data[1:5], "big")]
    at = 0
    while at < len(body):
        key = body[at]
        at += 1
        if key == 0x08:  # field 1, varint
            value, shift = 0, 0
            while at < len(body):
                byte = body[at]
                at += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80 or shift > 63:
                    break
            return value
        return None  # an unknown field: not a HealthCheckResponse this check understands
    return 0


class _Check(asyncio.Protocol):
    def __init__(self, host: str) -> None:
        self.scheme = b"http"
        self.conn = http2_frames.connection(client=True, stream_window=65535, max_header_list=16384, max_streams=1)
        self.host = host.encode()
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.answer = bytearray()
        self.grpc_status: bytes | None = None
        self.http_status = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        http2_frames.start(self.conn, 65535)

    def send(self, service: str) -> None:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", self.scheme),
            (b":authority", self.host),
            (b":path", PATH),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", b"sidecars-ambassador-health"),
        ]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, request_message(service), end_stream=True)
        http2_frames.write_out(self.conn, self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._settle(f"HTTP/2 protocol error: {exc}"[:120])
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                for name, value in event.headers:
                    if name == b":status":
                        self.http_status = value
                    elif name == b"grpc-status":
                        self.grpc_status = value
            elif isinstance(event, h2.events.DataReceived):
                self.answer += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if len(self.answer) > MAX_ANSWER_BYTES:
                    self._settle("answer too large")
                    return
            elif isinstance(event, h2.events.StreamReset):
                self._settle(f"stream reset ({event.error_code!s})")
                return
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._settle("connection closed by GOAWAY before an answer")
                return
            if getattr(event, "stream_ended", None) is not None:
                self._settle(self._verdict())
                return
        http2_frames.write_out(self.conn, self.transport)

    def _verdict(self) -> str | None:
        if self.http_status != b"200":
            return f"HTTP status {self.http_status.decode('latin-1')[:8]}"
        if self.grpc_status != b"0":
            return f"grpc-status {(self.grpc_status or b'missing').decode('latin-1')[:8]}"
        status = status_of_answer(bytes(self.answer))
        if status is None:
            return "not a HealthCheckResponse"
        return None if status == SERVING else STATUS_NAMES.get(status, f"status {status}")

    def _settle(self, reason: str | None) -> None:
        if not self.done.done():
            self.done.set_result(reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle("connection closed before an answer")


async def probe(config: HealthCheckConfig, endpoint: Endpoint, tls: UpstreamTls | None = None) -> str | None:
    """None when the endpoint answers SERVING; else a reason ("NOT_SERVING", "connect: refused",
    "tls_alpn: ...")."""
    loop = asyncio.get_running_loop()
    check = _Check(config.host_header or endpoint.key)
    try:
        transport, protocol = await open_h2(loop, lambda: check, endpoint, config.timeout_secs, tls)
    except UpstreamTlsError as exc:
        return str(exc)[:200]
    except OSError as exc:
        return f"connect: {exc.strerror or exc}"
    if protocol == H2:
        check.scheme = b"https"
    try:
        check.send(config.grpc_service)
        return await check.done
    finally:
        transport.close()


__all__ = ["probe", "request_message", "status_of_answer"]
