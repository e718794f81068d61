"""HTTP/2 connections to the endpoints: streams multiplexed over a bounded number per endpoint.

A stream goes on the open connection of its endpoint that carries the fewest streams and still has
room under the server's `MAX_CONCURRENT_STREAMS` (and the cluster's own cap); when every one is full,
another connection is opened, up to `max_connections_per_endpoint`. A connection that received GOAWAY
takes no new stream: streams above its last stream id fail as `upstream_goaway` (they provably never
reached the application, so they are retried elsewhere); the others finish, then it closes.

What flows through an upstream stream is reported to its `StreamSink` (the client side's stream):
1xx heads, the response head, data, trailers, the end, a reset (the frames: `http2_wire`). A stream's
response data is acknowledged to the server (its stream window reopened) only when the sink says it
has passed the bytes on (`consumed`), so a slow app slows its own stream and the proxy never holds
more than one stream window of it; the connection's window is reopened as the bytes arrive, so the
other apps' streams on the same connection go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from h2.errors import ErrorCodes

from sidecars.ambassador.cluster import http2_frames
from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.ambassador.cluster.http2_frames import Header
from sidecars.ambassador.cluster.http2_wire import ClientWire, WireError
from sidecars.ambassador.cluster.upstream_connect import open_h2

if TYPE_CHECKING:
    from sidecars.ambassador.cluster.config import Http2UpstreamConfig
    from sidecars.ambassador.cluster.upstream_tls import UpstreamTls


class Counters(Protocol):
    """What the pool counts (the listener's stats implement it)."""

    def error(self, reason: str) -> None: ...
    def upstream_opened(self, endpoint: str) -> None: ...
    def upstream_closed(self, endpoint: str) -> None: ...


class StreamSink(Protocol):
    """The client side of one upstream stream: what the upstream connection reports to."""

    def on_response(self, headers: list[Header], end_stream: bool) -> None: ...
    def on_informational(self, headers: list[Header]) -> None: ...
    def on_data(self, data: bytes, flow_len: int, end: bool = False) -> None: ...
    def on_trailers(self, headers: list[Header]) -> None: ...
    def on_end(self) -> None: ...
    def on_reset(self, reason: str, code: int) -> None: ...
    def on_window(self) -> None: ...


class Upstream(ClientWire, asyncio.Protocol):
    """One HTTP/2 connection to one endpoint (an asyncio protocol; its frames: `ClientWire`)."""

    def __init__(self, pool: Http2Pool, endpoint: Endpoint) -> None:
        cfg = pool.config
        super().__init__(
            stream_window=cfg.initial_stream_window_bytes,
            connection_window=cfg.connection_window_bytes,
            max_header_list=cfg.max_header_list_bytes,
            connection_buffer=cfg.connection_buffer_bytes,
        )
        self.pool = pool
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.sinks: dict[int, StreamSink] = {}
        self.reserved = 0  # streams promised to callers waiting for this connection to open
        self.goaway = False
        self.closed = False
        self.dirty = False
        self.writable = True

    # -- capacity ---------------------------------------------------------------------------------

    def capacity(self) -> int:
        if self.goaway or self.closed:
            return 0
        limit = min(self.remote_max_streams, self.pool.config.max_streams_per_connection)
        return limit - len(self.sinks) - self.reserved

    # -- asyncio protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            self.receive(data)
        except WireError as exc:
            self.pool.stats.error("upstream_protocol_error")
            self.flush()
            self._fail_all("upstream_protocol_error", exc.error_code)
            self.abort()
            return
        self.pool.writes.flush()
        self.flush()

    # -- ClientWire: what the endpoint sent -------------------------------------------------------

    def on_response(self, stream_id: int, headers: list[Header], end_stream: bool) -> None:
        sink = self.sinks.get(stream_id)
        if sink is not None:
            sink.on_response(headers, end_stream)
            if end_stream:
                self._ended(stream_id)

    def on_informational(self, stream_id: int, headers: list[Header]) -> None:
        sink = self.sinks.get(stream_id)
        if sink is not None:
            sink.on_informational(headers)

    def on_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        sink = self.sinks.get(stream_id)
        if sink is None:
            self.credit(stream_id, flow_len)
        elif end_stream:
            self._ended(stream_id, data, flow_len)  # the last data and the end
        elif data or flow_len:
            sink.on_data(data, flow_len)

    def on_trailers(self, stream_id: int, headers: list[Header]) -> None:
        sink = self.sinks.get(stream_id)
        if sink is not None:
            sink.on_trailers(headers)
        self._ended(stream_id)

    def on_stream_reset(self, stream_id: int, code: int) -> None:
        sink = self.sinks.pop(stream_id, None)
        if sink is not None:
            reason = "upstream_refused_stream" if code == ErrorCodes.REFUSED_STREAM else "upstream_reset"
            sink.on_reset(reason, code)
            self.pool.changed(self)

    def on_stream_error(self, stream_id: int, reason: str) -> None:
        sink = self.sinks.pop(stream_id, None)
        self.pool.stats.error("upstream_protocol_error")
        if sink is not None:
            sink.on_reset("upstream_protocol_error", int(ErrorCodes.PROTOCOL_ERROR))
            self.pool.changed(self)

    def on_window(self, stream_id: int) -> None:
        if stream_id:
            sink = self.sinks.get(stream_id)
            if sink is not None:
                sink.on_window()
        else:
            for sink in list(self.sinks.values()):
                sink.on_window()

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        self.goaway = True
        self.pool.stats.error("upstream_goaway")
        for stream_id in [s for s in self.sinks if s > last_stream_id]:
            self.sinks.pop(stream_id).on_reset("upstream_goaway", int(ErrorCodes.REFUSED_STREAM))
        if code != ErrorCodes.NO_ERROR:
            self._fail_all("upstream_reset", code)
        self.pool.changed(self)
        if not self.sinks:
            self.close()

    def _ended(self, stream_id: int, data: bytes = b"", flow_len: int = 0) -> None:
        sink = self.sinks.pop(stream_id, None)
        if sink is not None:
            if data or flow_len:
                sink.on_data(data, flow_len, True)
            else:
                sink.on_end()
            self.pool.changed(self)
            if self.goaway and not self.sinks:
                self.close()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        for sink in list(self.sinks.values()):
            sink.on_window()
        self.pool.writes.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._fail_all("upstream_reset", int(ErrorCodes.CONNECT_ERROR))
        self.pool.lost(self)

    # -- used by the client side ------------------------------------------------------------------

    def open_stream(self, headers: list[Header], end_stream: bool, sink: StreamSink) -> int:
        stream_id = self.request(headers, end_stream)
        self.sinks[stream_id] = sink
        self.pool.writes.mark(self)
        return stream_id

    def send_some(self, stream_id: int, data: bytes) -> int:
        """Bytes of `data` queued on the stream (0 while the server's window or our write buffer is full)."""
        if not self.writable or stream_id not in self.sinks:
            return 0
        sent = self.send(stream_id, data)
        if sent:
            self.pool.writes.mark(self)
        return sent

    def end_stream(self, stream_id: int, trailers: list[Header] | None) -> None:
        if stream_id not in self.sinks:
            return
        self.finish(stream_id, trailers)
        self.pool.writes.mark(self)

    def consumed(self, stream_id: int, flow_len: int) -> None:
        """The sink passed `flow_len` response bytes on: the server may send that many more."""
        self.credit(stream_id, flow_len)
        if self.out:
            self.pool.writes.mark(self)

    def reset(self, stream_id: int, code: int = ErrorCodes.CANCEL) -> None:
        self.sinks.pop(stream_id, None)
        self.rst(stream_id, code)
        self.pool.writes.mark(self)
        self.pool.changed(self)
        if self.goaway and not self.sinks:
            self.close()

    def carries(self, stream_id: int, sink: StreamSink) -> bool:
        return self.sinks.get(stream_id) is sink

    def flush(self) -> None:
        transport = self.transport
        if self.out and transport is not None and not transport.is_closing():
            transport.write(self.data_to_send())

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.send_goaway()
            self.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, reason: str, code: int) -> None:
        sinks, self.sinks = self.sinks, {}
        for sink in sinks.values():
            sink.on_reset(reason, code)


class Http2Pool:
    """Every endpoint's HTTP/2 connections of one listener."""

    def __init__(
        self,
        config: Http2UpstreamConfig,
        connect_timeout_secs: float,
        stats: Counters,
        writes: http2_frames.Writes,
        loop: asyncio.AbstractEventLoop,
        tls: UpstreamTls | None = None,
    ) -> None:
        self.config = config
        self.tls = tls  # the cluster's: connections are TLS with ALPN h2, else h2c
        self.connect_timeout = connect_timeout_secs
        self.stats = stats
        self.writes = writes
        self.loop = loop
        self.by_endpoint: dict[Endpoint, list[Upstream]] = {}
        self.opening: dict[Upstream, asyncio.Future[None]] = {}
        self.on_change: Callable[[], None] | None = None
        # Streams waiting for room on an endpoint whose connections are all open and full.
        self.waiters: dict[Endpoint, list[asyncio.Future[None]]] = {}

    async def wait_for_room(self, endpoint: Endpoint) -> None:
        """Until a stream of `endpoint` ends or one of its connections goes (the caller bounds the wait)."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.waiters.setdefault(endpoint, []).append(waiter)
        try:
            await waiter
        finally:
            waiting = self.waiters.get(endpoint)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self.waiters[endpoint]

    def _wake(self, endpoint: Endpoint) -> None:
        waiting = self.waiters.get(endpoint)
        if waiting:
            waiter = waiting.pop(0)
            if not waiter.done():
                waiter.set_result(None)

    def ready(self, endpoint: Endpoint) -> Upstream | None:
        """An open connection to `endpoint` with room for one more stream, if there is one now."""
        best: Upstream | None = None
        room = 0
        for up in self.by_endpoint.get(endpoint, ()):
            free = up.capacity()
            if free > room and up.transport is not None:
                best, room = up, free
        if best is None or best in self.opening:
            return None
        return best

    async def acquire(self, endpoint: Endpoint) -> Upstream | None:
        """A connection to `endpoint` with room for one more stream (opened if need be), or None when
        `max_connections_per_endpoint` are open and all full. OSError when a new one cannot be opened."""
        conns = self.by_endpoint.setdefault(endpoint, [])
        best: Upstream | None = None
        room = 0
        for up in conns:
            free = up.capacity()
            if free > room:
                best, room = up, free
        if best is not None:
            waiting = self.opening.get(best)
            if waiting is not None:
                best.reserved += 1
                try:
                    await asyncio.shield(waiting)
                finally:
                    best.reserved -= 1
                if best.closed or best.transport is None:
                    raise ConnectionResetError("upstream connection lost while opening")
            return best
        if len(conns) >= self.config.max_connections_per_endpoint:
            return None
        up = Upstream(self, endpoint)
        conns.append(up)
        opened: asyncio.Future[None] = self.loop.create_future()
        self.opening[up] = opened
        up.reserved += 1
        try:
            await open_h2(self.loop, lambda: up, endpoint, self.connect_timeout, self.tls)
        except BaseException as exc:
            up.closed = True
            self._forget(up)
            opened.set_exception(ConnectionRefusedError(str(exc)))
            opened.exception()  # retrieved: waiters see it through shield
            raise
        finally:
            up.reserved -= 1
            self.opening.pop(up, None)
        self.stats.upstream_opened(endpoint.key)
        if not opened.done():
            opened.set_result(None)
        return up

    def changed(self, up: Upstream) -> None:
        self._wake(up.endpoint)
        if self.on_change is not None:
            self.on_change()

    def lost(self, up: Upstream) -> None:
        if self._forget(up):
            self.stats.upstream_closed(up.endpoint.key)
        self._wake(up.endpoint)

    def _forget(self, up: Upstream) -> bool:
        conns = self.by_endpoint.get(up.endpoint)
        if conns is None or up not in conns:
            return False
        conns.remove(up)
        if not conns:
            del self.by_endpoint[up.endpoint]
        return True

    def close_endpoint(self, endpoint: Endpoint) -> None:
        """A removed endpoint: its connections take no new stream and close once their streams end."""
        for up in list(self.by_endpoint.get(endpoint, ())):
            up.goaway = True
            if not up.sinks:
                up.close()

    def close_all(self) -> None:
        for conns in list(self.by_endpoint.values()):
            for up in list(conns):
                up.abort()


__all__ = ["Http2Pool", "StreamSink", "Upstream"]
