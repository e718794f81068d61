"""HTTP/2 from the app, HTTP/1.1 to the endpoints (`protocol: http1`): each stream one request on a
keep-alive connection of its own while it runs.

The stream's head becomes a request line and `Host` (from `:authority`); the body goes out with the
client's `content-length`, or chunked (with the client's trailers in the last chunk). The response
head comes back lower-cased without the connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2).
A connection whose exchange ended cleanly goes back to a small idle list per endpoint. To a cluster
with TLS settings the connections are TLS (ALPN http/1.1), opened as the HTTP/1.1 path opens its own;
a rotation of the material retires the idle ones and those in use once their exchange ends.

Flow control: response bytes the app's stream has not taken stop this connection's reading beyond one
stream window; request bytes are written as the transport takes them (its write buffer paused).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpResponseParser

from sidecars.ambassador.cluster.connect import open_connection
from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.ambassador.cluster.http2_frames import Header, Writes
from sidecars.ambassador.cluster.http2_pool import StreamSink
from sidecars.ambassador.proxy.headers import connection_tokens

if TYPE_CHECKING:
    from sidecars.ambassador.cluster.upstream_tls import UpstreamTls
    from sidecars.ambassador.proxy.stats import ListenerStats

_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te", b"content-length"}
)
MAX_IDLE_PER_ENDPOINT = 16


class Http1Upstream(asyncio.Protocol):
    """One HTTP/1.1 connection to an endpoint carrying one stream at a time."""

    def __init__(self, pool: Http1Pool, endpoint: Endpoint) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.generation = pool.generation
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.sink: StreamSink | None = None
        self.stream_id = 0
        self.chunked = False
        self.fields: list[Header] = []
        self.unconsumed = 0
        self.reading = True
        self.writable = True
        self.request_done = False
        self.response_done = False
        self.keep_alive = True
        self.head_only = False
        self.close_delimited = False

    # -- asyncio protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.stats.upstream_opened(self.endpoint.key)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            self.pool.stats.error("upstream_protocol_error")
            self._fail("upstream_protocol_error")
            if self.transport is not None:
                self.transport.abort()
        self.pool.writes.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.forget(self)
        self.pool.stats.upstream_closed(self.endpoint.key)
        if not self.response_done and self.close_delimited:
            self.on_message_complete()  # a body without length or chunks ends with the connection
        if not self.response_done:
            self._fail("upstream_reset")
        self.pool.writes.flush()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self.sink is not None:
            self.sink.on_window()
        self.pool.writes.flush()

    # -- the parser's callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self.fields = []
            return  # interim responses are not passed on
        named = {t for n, v in self.fields if n == b"connection" for t in connection_tokens(v)}
        headers = [(b":status", b"%d" % status)]
        headers += [(n, v) for n, v in self.fields if n not in _DROPPED or n == b"content-length" if n not in named]
        self.keep_alive = self.parser.should_keep_alive()
        self.close_delimited = not any(n in (b"content-length", b"transfer-encoding") for n, _ in self.fields)
        no_body = self.head_only or status in (204, 304)
        if self.sink is not None:
            self.sink.on_response(headers, no_body)
        if no_body:
            self._response_complete()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.unconsumed += len(body)
            self.sink.on_data(body, len(body))
            if self.unconsumed > self.pool.window and self.reading and self.transport is not None:
                self.reading = False
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if not self.response_done and self.fields is not None and self.parser.get_status_code() >= 200:
            sink = self.sink
            self._response_complete()
            if sink is not None:
                sink.on_end()

    def _response_complete(self) -> None:
        self.response_done = True
        self.sink = None
        if self.request_done and self.keep_alive and self.transport is not None:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()

    def _fail(self, reason: str) -> None:
        sink, self.sink = self.sink, None
        self.response_done = True
        if sink is not None:
            sink.on_reset(reason, 0)

    # -- what the stream calls (as on an HTTP/2 upstream connection) ----------------------------------

    def open_stream(self, headers: list[Header], end_stream: bool, sink: StreamSink) -> int:
        assert self.transport is not None
        self.sink = sink
        self.stream_id = 1
        self.fields = []
        self.unconsumed = 0
        self.response_done = False
        self.request_done = end_stream
        self.parser = HttpResponseParser(self)
        method, path, authority = b"GET", b"/", b""
        lines = []
        length: bytes | None = None
        for name, value in headers:
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority" or name == b"host":
                # One Host line: HTTP/2 may carry the authority in either (the checks made them
                # agree), and two Host fields are a 400 at a conforming origin (RFC 9112 §3.2).
                authority = authority or value
            elif name == b"content-length":
                length = value
            elif not name.startswith(b":") and name not in _DROPPED:
                lines.append(b"%s: %s\r\n" % (name, value))
        self.head_only = method == b"HEAD"
        self.chunked = False
        if length is not None:
            lines.append(b"content-length: %s\r\n" % length)
        elif end_stream:
            if method in (b"POST", b"PUT", b"PATCH"):
                lines.append(b"content-length: 0\r\n")
        else:
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        host = authority or self.endpoint.key.encode()
        self.transport.write(b"%s %s HTTP/1.1\r\nhost: %s\r\n%s\r\n" % (method, path, host, b"".join(lines)))
        return 1

    def send_some(self, stream_id: int, data: bytes) -> int:
        if self.transport is None or not self.writable or self.sink is None:
            return 0
        if data:
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        return len(data)

    def end_stream(self, stream_id: int, trailers: list[Header] | None) -> None:
        if self.transport is None:
            return
        if self.chunked:
            fields = b"".join(b"%s: %s\r\n" % (n, v) for n, v in trailers or ())
            self.transport.write(b"0\r\n%s\r\n" % fields)
        self.request_done = True
        if self.response_done and self.keep_alive:
            self.pool.release(self)

    def consumed(self, stream_id: int, size: int) -> None:
        self.unconsumed -= size
        if not self.reading and self.unconsumed <= self.pool.window // 2 and self.transport is not None:
            self.reading = True
            self.transport.resume_reading()

    def reset(self, stream_id: int, code: int = 0) -> None:
        """The stream is abandoned mid-exchange: HTTP/1.1 can only drop the connection."""
        self.sink = None
        if self.transport is not None and not (self.response_done and self.request_done):
            self.transport.close()

    def carries(self, stream_id: int, sink: StreamSink) -> bool:
        return self.sink is sink


class Http1Pool:
    """Idle keep-alive HTTP/1.1 connections per endpoint, for streams going out as HTTP/1.1."""

    def __init__(
        self,
        connect_timeout_secs: float,
        window: int,
        stats: ListenerStats,
        writes: Writes,
        loop: asyncio.AbstractEventLoop,
        tls: UpstreamTls | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout_secs
        self.window = window
        self.stats = stats
        self.writes = writes
        self.loop = loop
        self.tls = tls
        self.generation = 0  # of the TLS material: a connection of an older one is not reused
        self.idle: dict[Endpoint, list[Http1Upstream]] = {}
        if tls is not None:
            tls.on_rotate(self.retire)

    async def acquire(self, endpoint: Endpoint) -> Http1Upstream:
        idle = self.idle.get(endpoint)
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        conn = Http1Upstream(self, endpoint)
        # The HTTP/1.1 path's connect: plain, or TLS offering http/1.1 (the TLS's default profile
        # of an http listener), its failures UpstreamTlsError with the reason.
        await open_connection(self.loop, lambda: conn, endpoint, self.tls, self.connect_timeout)
        return conn

    def retire(self) -> None:
        """New TLS material: idle connections close, busy ones close when their exchange ends."""
        self.generation += 1
        for endpoint in list(self.idle):
            self.close_endpoint(endpoint)

    def release(self, conn: Http1Upstream) -> None:
        idle = self.idle.setdefault(conn.endpoint, [])
        if conn.generation == self.generation and len(idle) < MAX_IDLE_PER_ENDPOINT and conn not in idle:
            idle.append(conn)
        elif conn not in idle and conn.transport is not None:
            conn.transport.close()

    def forget(self, conn: Http1Upstream) -> None:
        idle = self.idle.get(conn.endpoint)
        if idle and conn in idle:
            idle.remove(conn)

    def close_endpoint(self, endpoint: Endpoint) -> None:
        for conn in self.idle.pop(endpoint, []):
            if conn.transport is not None:
                conn.transport.close()

    def close_all(self) -> None:
        for conns in list(self.idle.values()):
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.abort()
        self.idle.clear()


__all__ = ["Http1Pool", "Http1Upstream"]
