"""HTTP/1.1 from the app, HTTP/2 to the endpoints (`protocol: http2`): each request becomes a stream.

The request head is translated as RFC 9113 §8 requires: `:method`, `:scheme`, `:authority` (from
`Host`), `:path`; names lower-cased; the connection-specific fields (`Connection` and the fields it
names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `Host`) dropped; `TE` kept
only as `trailers`. The response goes back with `Content-Length` when the upstream sent one, chunked
otherwise, its trailers in the last chunk.

One request is in flight at a time; a pipelined one waits, read but not started, and reading stops
until the one before it is answered. Request bodies are read while the upstream stream takes them:
reading pauses when a stream window's worth is waiting.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from sidecars.ambassador.cluster.http2_frames import Header
from sidecars.ambassador.proxy.headers import connection_tokens
from sidecars.ambassador.proxy.http2_server import Stream

if TYPE_CHECKING:
    from sidecars.ambassador.proxy.http2_server import Http2Proxy

# Fields HTTP/2 forbids (RFC 9113 §8.2.2), dropped from an HTTP/1.1 request.
_DROPPED = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"})
_NO_BODY_STATUSES = frozenset({204, 304})


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class Http1Client(asyncio.Protocol):
    """One HTTP/1.1 connection from the app whose requests go out as HTTP/2 streams."""

    def __init__(self, proxy: Http2Proxy) -> None:
        self.p = proxy
        self.parser = HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.writable = True
        self.reading = True
        self.next_id = 1
        self.current: Stream | None = None
        self.waiting: list[Stream] = []  # pipelined requests, read while one is answered
        self.url = b""
        self.fields: list[Header] = []
        self.building: Stream | None = None
        self.chunked = False
        self.body_allowed = True
        self.close_after = False
        self.going_away = False
        self.last_active = proxy.loop.time()
        self.head_bytes = 0
        self.streams: dict[int, Stream] = {}  # for the proxy's sweep (stall and idle checks)

    # -- asyncio protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.p.clients.add(self)
        self.p.stats.client_connections += 1

    def data_received(self, data: bytes) -> None:
        self.last_active = self.p.loop.time()
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self._local(501, "upgrade_not_supported")
        except HttpParserError:
            self._local(400, "bad_request")
        self.p.writes.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.p.clients.discard(self)
        self.p.stats.client_connections -= 1
        self.transport = None
        for stream in [*self.streams.values()]:
            stream.cancelled("client_disconnected")
        self.streams.clear()
        self.p.writes.flush()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self.current is not None:
            self.current.flush_response()
        self.p.writes.flush()

    def eof_received(self) -> bool:
        return False

    # -- the parser's callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.fields = []
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        self.fields.append((name.lower(), value))

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.p.config.max_header_bytes:
            raise HttpParserError("request head too large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        named = {token for name, value in self.fields if name == b"connection" for token in connection_tokens(value)}
        authority = b""
        path = self.url
        if not path.startswith(b"/") and b"://" in path:  # absolute-form: the authority is in the target
            rest = path.split(b"://", 1)[1]
            authority, _, tail = rest.partition(b"/")
            path = b"/" + tail
        forward: list[Header] = []
        expect_continue = False
        for name, value in self.fields:
            if name == b"host":
                authority = authority or value
            elif name == b"expect":
                expect_continue = value.lower() == b"100-continue"
            elif name == b"te":
                if b"trailers" in value.lower():
                    forward.append((b"te", b"trailers"))
            elif name not in _DROPPED and name not in named:
                forward.append((name, value))
        method = parser.get_method()
        headers = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":authority", authority or b"localhost"),
            (b":path", path or b"/"),
            *forward,
        ]
        if not parser.should_keep_alive():
            self.close_after = True
        stream_id = self.next_id
        self.next_id += 2
        stream = Stream(self, stream_id, headers, False)
        self.building = stream
        self.streams[stream_id] = stream
        if self.current is None:
            self._begin(stream)
        else:
            self.waiting.append(stream)
            self._pause()
        if expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        stream = self.building
        if stream is not None:
            stream.request_data(body, len(body))
            if stream.received - stream.acked > self.p.h2.initial_stream_window_bytes:
                self._pause()  # the upstream is slower than the app: stop reading until it takes some

    def on_message_complete(self) -> None:
        stream, self.building = self.building, None
        if stream is not None:
            stream.request_end(None)

    # -- flow ---------------------------------------------------------------------------------------

    def _begin(self, stream: Stream) -> None:
        self.current = stream
        self.chunked = False
        self.body_allowed = True
        stream.start()

    def _pause(self) -> None:
        if self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()

    def _resume(self) -> None:
        if not self.reading and self.transport is not None and not self.waiting:
            self.reading = True
            self.transport.resume_reading()

    def _local(self, status: int, reason: str) -> None:
        self.p.stats.error(reason)
        self.p.access_log.bad_request(status, reason, self.url[:2048])
        if self.transport is not None:
            body = f"{reason}\n".encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nx-ambassador-reason: %s\r\n"
                b"connection: close\r\n\r\n%s" % (status, _reason(status), len(body), reason.encode(), body)
            )
            self.transport.close()

    # -- Downstream: used by the stream -------------------------------------------------------------

    def send_headers(self, stream_id: int, headers: list[Header], end_stream: bool) -> None:
        stream = self.current
        if stream is None or stream.id != stream_id or self.transport is None:
            return
        status = 200
        lines = []
        has_length = False
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif not name.startswith(b":"):
                if name == b"content-length":
                    has_length = True
                lines.append(b"%s: %s\r\n" % (name, value))
        self.body_allowed = not (stream.head_only or status in _NO_BODY_STATUSES or status < 200)
        if self.body_allowed and not has_length:
            if end_stream:
                lines.append(b"content-length: 0\r\n")
            else:
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
        if self.close_after or self.going_away:
            lines.append(b"connection: close\r\n")
        self.transport.write(b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, _reason(status), b"".join(lines)))

    def informational(self, stream_id: int, headers: list[Header]) -> None:
        """1xx responses go to HTTP/2 clients only: an HTTP/1.0 client must never see one (RFC 9110
        §15.2), and the final response says all an HTTP/1.1 client needs."""

    def send_some(self, stream_id: int, data: bytes, end: bool = False) -> int:
        stream = self.current
        if stream is None or stream.id != stream_id or self.transport is None:
            return 0
        if not self.writable:
            return 0
        if self.body_allowed and data:
            if self.chunked:
                self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.transport.write(data)
        if end:
            self.end(stream_id, None)
        return len(data)

    def end(self, stream_id: int, trailers: list[Header] | None) -> None:
        stream = self.current
        if stream is None or stream.id != stream_id or self.transport is None:
            return
        if self.chunked and self.body_allowed:
            fields = b"".join(b"%s: %s\r\n" % (n, v) for n, v in trailers or () if not n.startswith(b":"))
            self.transport.write(b"0\r\n%s\r\n" % fields)

    def ack(self, stream_id: int, size: int) -> None:
        stream = self.current
        if stream is not None and stream.received - stream.acked <= self.p.h2.initial_stream_window_bytes // 2:
            self._resume()

    def reset(self, stream_id: int, code: int) -> None:
        # HTTP/1.1 has no stream to reset: the connection carries it, so it goes.
        self.close_after = True
        if self.transport is not None:
            self.transport.close()

    def stream_done(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if self.current is None or self.current.id != stream_id:
            self.waiting = [s for s in self.waiting if s.id != stream_id]
            return
        self.current = None
        if self.close_after or (self.going_away and not self.waiting):
            if self.transport is not None:
                self.transport.close()
            return
        if self.waiting:
            self._begin(self.waiting.pop(0))
        self._resume()

    # -- the proxy's housekeeping -------------------------------------------------------------------

    def goaway(self) -> None:
        """Draining: the response in flight says `connection: close`; an idle connection closes now."""
        self.going_away = True
        if self.current is None and self.transport is not None:
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        if self.current is None and now - self.last_active > self.p.config.client_idle_timeout_secs:
            self.goaway()
        elif self.current is not None and now - self.current.active > self.p.config.stream_idle_timeout_secs:
            self.current.abort("stream_idle_timeout", 0)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


__all__ = ["Http1Client"]
