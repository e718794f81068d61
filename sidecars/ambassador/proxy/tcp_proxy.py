"""TCP mode: an opaque byte splice between the app and one upstream endpoint per connection.

The endpoint is picked when the app connects; a refused or timed-out connect (or a failed TLS
handshake, with a `tls` cluster) moves on to another endpoint (nothing was sent yet, so that is
always safe). Bytes are passed on as they arrive, in both
directions, with the peer's reading paused while a write buffer is full. A half-close travels to the
other side (`write_eof`), so request/response protocols that signal the end of input by shutting down
their sending side keep working. A session quiet for `idle_timeout_secs` either way is closed; its
default in tcp mode is an hour (Envoy's tcp_proxy default), since database and cache clients keep
pooled connections idle for long, which the http default of a few seconds would cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from sidecars.ambassador.cluster.connect import UpstreamTlsError, open_connection
from sidecars.ambassador.cluster.endpoint import LOCAL_ERRNOS, Endpoint, Outcome
from sidecars.ambassador.cluster.upstream_tls import UpstreamTls

if TYPE_CHECKING:
    from sidecars.ambassador.cluster.view import ClusterView
    from sidecars.ambassador.proxy.stats import ListenerStats
    from sidecars.ambassador.settings import ListenerConfig


class TcpProxy:
    """Per-listener state of a TCP listener."""

    def __init__(
        self, config: ListenerConfig, cluster: ClusterView, stats: ListenerStats, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.stats = stats
        self.loop = loop
        self.tls: UpstreamTls | None = getattr(cluster, "tls", None)  # sessions are opaque: TLS ends with them
        self.sessions: set[TcpSession] = set()
        self.clock = loop.time()
        self.draining = False

    def __call__(self) -> TcpSession:
        return TcpSession(self)

    def sweep(self) -> None:
        now = self.clock = self.loop.time()
        limit = now - self.config.idle_timeout_secs
        for session in list(self.sessions):
            if session.last_active < limit:
                self.stats.error("idle_timeout")
                session.close()

    def start_drain(self) -> None:
        """Sessions are opaque: nothing can be told to them; they finish or are cut at the budget's end."""
        self.draining = True

    def close_all(self) -> None:
        for session in list(self.sessions):
            session.close()


class TcpSession(asyncio.Protocol):
    """The app's side of one session; owns its upstream side."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.p = proxy
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.upstream: _UpstreamSide | None = None
        self.endpoint: Endpoint | None = None
        self.pending: list[bytes] = []
        self.connector: asyncio.Task[None] | None = None
        self.last_active = proxy.clock
        self.t0 = 0.0
        self.eof_in = False
        self.eof_out = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.p.sessions.add(self)
        self.p.stats.client_connections += 1
        self.p.stats.tcp_sessions += 1
        self.transport.pause_reading()  # nothing to send it to yet
        self.connector = self.p.loop.create_task(self._connect())

    async def _connect(self) -> None:
        p = self.p
        cfg = p.config
        tried: list[Endpoint] = []
        breaker = p.cluster.breaker
        failure = "connect_failed"
        for attempt in range(cfg.retries + 1 if "connect-failure" in cfg.retry_on else 1):
            ep = p.cluster.pick(None, tried) if tried else p.cluster.pick(None)
            if ep is None:
                break
            if attempt:
                p.stats.retry("connect_failed")
            if not breaker.try_acquire_connection():
                p.stats.error("overflow")
                self.close()
                return
            side = _UpstreamSide(self)
            ep.start_request()
            t0 = time.perf_counter()
            try:
                await open_connection(p.loop, lambda s=side: s, ep, p.tls, cfg.connect_timeout_secs)  # type: ignore[misc]
            except (OSError, TimeoutError) as exc:
                breaker.release_connection()
                failure = exc.reason if isinstance(exc, UpstreamTlsError) else "connect_failed"
                if exc.errno in LOCAL_ERRNOS:
                    ep.end_request(Outcome.LOCAL_ERROR, time.perf_counter() - t0)
                    p.stats.error("local_resources_exhausted")
                    self.close()
                    return
                ep.end_request(Outcome.CONNECT_FAILURE, time.perf_counter() - t0)
                tried.append(ep)
                continue
            except asyncio.CancelledError:
                breaker.release_connection()
                ep.end_request(Outcome.LOCAL_ERROR, time.perf_counter() - t0)
                raise
            self.t0 = t0
            self.endpoint = ep
            self.upstream = side
            p.stats.upstream_opened(ep.key)
            if self.closed:
                side.transport.close()
                return
            if self.pending:
                side.transport.writelines(self.pending)
                self.pending = []
            if self.eof_in and side.transport.can_write_eof():
                side.transport.write_eof()
            self.transport.resume_reading()
            return
        p.stats.error("no_healthy_upstream" if not tried else failure)
        self.close()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.p.clock
        self.p.stats.bytes_in += len(data)
        up = self.upstream
        if up is not None:
            up.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        self.eof_in = True
        up = self.upstream
        if up is not None and up.transport.can_write_eof():
            up.transport.write_eof()
        if self.eof_out:
            self.close()
        return True  # keep our sending side open: the upstream may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.p.sessions.discard(self)
        self.p.stats.client_connections -= 1
        if self.connector is not None and not self.connector.done():
            self.connector.cancel()
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.transport.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self.upstream.transport.is_closing():
            self.upstream.transport.resume_reading()

    def upstream_eof(self) -> None:
        self.eof_out = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.eof_in:
            self.close()

    def upstream_lost(self) -> None:
        ep = self.endpoint
        if ep is not None:
            self.endpoint = None
            ep.end_request(Outcome.OK, time.perf_counter() - self.t0)
            self.p.stats.upstream_closed(ep.key)
        self.p.cluster.breaker.release_connection()
        self.upstream = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.transport.close()
            up = self.upstream
            if up is not None:
                up.transport.close()


class _UpstreamSide(asyncio.Protocol):
    """The upstream's side of a session: forwards to the app and reports the end of the stream."""

    def __init__(self, session: TcpSession) -> None:
        self.session = session
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        s = self.session
        s.last_active = s.p.clock
        s.p.stats.bytes_out += len(data)
        s.transport.write(data)

    def eof_received(self) -> bool:
        self.session.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.upstream_lost()

    def pause_writing(self) -> None:
        self.session.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.session.closed:
            self.session.transport.resume_reading()
