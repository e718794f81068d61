"""HTTP/2 from the app: one client connection, its streams, each balanced on its own to an endpoint.

- `Http2Proxy` is the listener's shared state (pool of upstream HTTP/2 connections, counters); calling
  it makes the protocol of one client connection, `Http2Client`.
- `Http2Client` runs the client's bytes through `InboundGuard` (floods) and its framing
  (`http2_wire.ServerWire`), and owns the streams. Limits: streams beyond `max_concurrent_streams`
  refused (REFUSED_STREAM), twice as many at once end the connection (the wire), header lists over
  `max_header_list_bytes` (HPACK bombs: the wire ends the connection with ENHANCE_YOUR_CALM).
- A stream whose endpoint has an open connection with room goes out from the read that brought it,
  without a task; a task runs its tries only when one must wait (a connection to open, room, a
  retry's backoff).
- `Stream` is one request through all its tries. Its head is sent to the endpoint the cluster picks;
  until the response head is passed on, a failed try is retried when that is safe (below). After
  that the stream is spliced: data both ways, trailers both ways.

Flow control end to end: request bytes are acknowledged to the app (its stream window reopened) only
once they went into an upstream stream, response bytes to the upstream only once they went to the
app; connection windows reopen as the bytes arrive while the connection holds less than its
`connection_buffer_bytes`, past it as bytes are passed on (`http2_wire`). So each direction of each
stream holds at most one stream window in the proxy (`buffered` sums them), each connection at most
its buffer plus its connection window, a slow reader holds up its own stream and nothing else, and a
transport whose write buffer is full takes no more bytes (its streams wait for `resume_writing`).

Retries (`retries`, the cluster's retry budget, the overall deadline) happen while the response head
has not been passed on and the request body so far is held (`max_retry_body_bytes`): always for a
stream that provably never reached the application (connect failure, REFUSED_STREAM, above a
GOAWAY's last stream id), for a reset, timeout or 5xx as `retry_on` says for the methods in
`retry_methods`, and for gRPC calls answered with a status in `retry_on_grpc_status` (gRPC's own
policy: any method).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

import h2.exceptions
from h2.errors import ErrorCodes

from sidecars.ambassador.cluster import http2_frames
from sidecars.ambassador.cluster.endpoint import LOCAL_ERRNOS, Endpoint, Outcome
from sidecars.ambassador.cluster.http2_frames import PREFACE, Header
from sidecars.ambassador.cluster.http2_pool import Http2Pool, StreamSink
from sidecars.ambassador.cluster.http2_wire import ServerWire, WireError
from sidecars.ambassador.cluster.upstream_tls import TLS_REASONS, UpstreamTlsError
from sidecars.ambassador.proxy import grpc
from sidecars.ambassador.proxy.http2_limits import InboundGuard
from sidecars.ambassador.proxy.http2_to_http1 import Http1Pool
from sidecars.core.backoff import FULL_JITTER, jittered_backoff

if TYPE_CHECKING:
    from sidecars.ambassador.cluster.view import ClusterView
    from sidecars.ambassador.proxy.access_log import AccessLog
    from sidecars.ambassador.proxy.stats import ListenerStats
    from sidecars.ambassador.settings import ListenerConfig

perf_counter = time.perf_counter

# Fields that are connection-specific in HTTP/1.1 and forbidden in HTTP/2 (RFC 9113 §8.2.2). The
# header checks reject them on receipt; this set keeps them out of what the proxy itself writes.
CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"}
)

# 1xx responses (103 Early Hints) passed on per stream; more are dropped.
MAX_INFORMATIONAL = 8

# Reasons a try failed that say the application never saw the request.
NEVER_REACHED = frozenset({"connect_failed", *TLS_REASONS, "upstream_refused_stream", "upstream_goaway"})
CONNECT_FAILURES = frozenset({"connect_failed", *TLS_REASONS})


class _TryFailed(Exception):
    def __init__(self, reason: str, outcome: Outcome, granted: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome
        self.granted = granted  # the retry is already decided (and the budget spent)


class ClientSide(Protocol):
    """What the listener's housekeeping needs of a client connection, HTTP/2 or HTTP/1.1."""

    streams: dict[int, Stream]
    going_away: bool

    def check_timeouts(self, now: float) -> None: ...
    def goaway(self) -> None: ...
    def abort(self) -> None: ...


class Http2Proxy:
    """Per-listener state shared by its HTTP/2 client connections."""

    def __init__(
        self,
        config: ListenerConfig,
        cluster: ClusterView,
        stats: ListenerStats,
        access_log: AccessLog,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.h2 = config.http2
        self.cluster = cluster
        self.stats = stats
        self.access_log = access_log
        self.loop = loop
        self.writes = http2_frames.Writes()
        tls = getattr(cluster, "tls", None)  # the cluster's TLS: both pools' connections use it
        self.pool = Http2Pool(config.cluster.http2, config.connect_timeout_secs, stats, self.writes, loop, tls)
        # protocol http1: streams go out as HTTP/1.1 requests (auto and http2: as HTTP/2 streams).
        self.to_http1 = config.cluster.protocol == "http1"
        self.http1_pool = Http1Pool(
            config.connect_timeout_secs, config.http2.initial_stream_window_bytes, stats, self.writes, loop, tls
        )
        self.clients: set[ClientSide] = set()
        self.draining = False
        self.retry_on = frozenset(config.retry_on)
        self.retry_methods = frozenset(m.encode() for m in config.retry_methods)
        self.retry_grpc = frozenset(grpc.CODES[name] for name in config.retry_on_grpc_status)
        self.max_retry_body = config.max_retry_body_bytes
        stats.h2_buffered = self.buffered

    def buffered(self) -> tuple[int, int]:
        """Body bytes every stream of every client holds: (request, response)."""
        request = response = 0
        for client in list(self.clients):
            for stream in list(client.streams.values()):
                request += len(stream.body)
                response += len(stream.out)
        return request, response

    def __call__(self) -> Http2Client:
        return Http2Client(self)

    def http1(self) -> asyncio.Protocol:
        """An HTTP/1.1 client connection whose requests go out as HTTP/2 streams (`protocol: http2`)."""
        from sidecars.ambassador.proxy.http2_from_http1 import Http1Client  # it builds on `Stream`

        return Http1Client(self)

    def on_endpoint_removed(self, endpoint: Endpoint) -> None:
        self.pool.close_endpoint(endpoint)
        self.http1_pool.close_endpoint(endpoint)

    def sweep(self) -> None:
        now = self.loop.time()
        for client in list(self.clients):
            client.check_timeouts(now)
        self.writes.flush()

    def start_drain(self) -> None:
        """GOAWAY to every client: open streams finish, new ones go to a new connection."""
        self.draining = True
        for client in list(self.clients):
            client.goaway()
        self.writes.flush()

    def close_all(self) -> None:
        for client in list(self.clients):
            client.abort()
        self.pool.close_all()
        self.http1_pool.close_all()


class Http2Client(ServerWire, asyncio.Protocol):
    """One HTTP/2 connection from the app (an asyncio protocol; its frames: `ServerWire`)."""

    def __init__(self, proxy: Http2Proxy) -> None:
        cfg = proxy.h2
        # Advertised: the limit; one stream over it is refused (REFUSED_STREAM), a client with twice as
        # many open at once ignores the setting and loses its connection.
        super().__init__(
            stream_window=cfg.initial_stream_window_bytes,
            connection_window=cfg.connection_window_bytes,
            max_header_list=cfg.max_header_list_bytes,
            max_streams=cfg.max_concurrent_streams,
            hard_max_streams=min(2 * cfg.max_concurrent_streams, 2**31 - 1),
            connection_buffer=cfg.connection_buffer_bytes,
        )
        self.p = proxy
        self.guard = InboundGuard(cfg)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.dirty = False
        self.writable = True
        self.preface_left = len(PREFACE)
        self.going_away = False
        self.last_active = proxy.loop.time()

    # -- asyncio protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.p.clients.add(self)
        self.p.stats.client_connections += 1
        self.initiate()
        self.flush()
        if self.p.draining:
            self.goaway()

    def data_received(self, data: bytes) -> None:
        start = 0
        if self.preface_left:
            start = min(self.preface_left, len(data))
            self.preface_left -= start
        reason = self.guard.feed(data, start)
        if reason:
            self.violation(reason, ErrorCodes.ENHANCE_YOUR_CALM)
            return
        self.last_active = self.p.loop.time()
        try:
            self.receive(data)
        except WireError as exc:
            self.violation(exc.reason, exc.error_code, sent=True)
            return
        self.p.writes.flush()
        self.flush()

    # -- ServerWire: what the app sent ------------------------------------------------------------

    def on_request(self, stream_id: int, headers: list[Header], end_stream: bool) -> None:
        if self.going_away:
            self.refuse(stream_id, "draining")
            return
        if len(self.streams) >= self.p.h2.max_concurrent_streams:
            self.refuse(stream_id, "h2_too_many_streams")
            return
        stream = Stream(self, stream_id, headers, end_stream)
        self.streams[stream_id] = stream
        stream.start()

    def on_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            self.ack(stream_id, flow_len)
        else:
            stream.request_data(data, flow_len)
            if end_stream:
                stream.request_end(None)

    def on_trailers(self, stream_id: int, headers: list[Header]) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.request_end(headers)

    def on_stream_reset(self, stream_id: int, code: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.cancelled("client_reset")

    def on_stream_error(self, stream_id: int, reason: str) -> None:
        """A malformed request (RFC 9113 §8.1.1): its stream is reset with PROTOCOL_ERROR. Such resets
        spend from the rapid-reset budget as the client's own do: a client can make the proxy reset
        streams it opened (a WINDOW_UPDATE of 0, DATA past content-length) without a RST_STREAM."""
        self.p.stats.error("h2_malformed_request")
        self.p.writes.mark(self)
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.cancelled("h2_malformed_request")
        if not self.guard.resets.take():
            raise WireError(
                "streams reset for the client's errors faster than max_resets_per_sec",
                ErrorCodes.ENHANCE_YOUR_CALM,
                "h2_rapid_reset",
            )

    def on_window(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.flush_response()
        else:
            for stream in list(self.streams.values()):
                stream.flush_response()

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        self.going_away = True
        if not self.streams:
            self.close()

    def refuse(self, stream_id: int, reason: str) -> None:
        self.p.stats.error(reason)
        self.rst(stream_id, ErrorCodes.REFUSED_STREAM)
        self.p.writes.mark(self)

    def violation(self, reason: str, code: int, *, sent: bool = False) -> None:
        """The client broke a limit or the protocol: counted, GOAWAY with `code`, connection closed."""
        self.p.stats.error(reason)
        self.p.stats.h2_violation(reason)
        if not sent:
            self.send_goaway(code, self.highest_inbound)
        self.flush()
        for stream in list(self.streams.values()):
            stream.cancelled(reason)
        self.streams.clear()
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        for stream in list(self.streams.values()):
            stream.flush_response()
        self.p.writes.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.p.clients.discard(self)
        self.p.stats.client_connections -= 1
        self.transport = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.cancelled("client_disconnected")
        self.p.writes.flush()

    # -- Downstream: used by streams ----------------------------------------------------------------

    def send_headers(self, stream_id: int, headers: list[Header], end_stream: bool) -> None:
        self.respond(stream_id, headers, end_stream)
        self.p.writes.mark(self)

    def informational(self, stream_id: int, headers: list[Header]) -> None:
        if self.writable:  # advisory: not queued behind a client that does not read
            self.respond(stream_id, headers, False)
            self.p.writes.mark(self)

    def send_some(self, stream_id: int, data: bytes, end: bool = False) -> int:
        sent = self.send(stream_id, data, end)
        if sent or end:
            self.p.writes.mark(self)
        return sent

    def end(self, stream_id: int, trailers: list[Header] | None) -> None:
        self.finish(stream_id, trailers)
        self.p.writes.mark(self)

    def ack(self, stream_id: int, size: int) -> None:
        self.credit(stream_id, size)
        if self.out:
            self.p.writes.mark(self)

    def reset(self, stream_id: int, code: int) -> None:
        self.rst(stream_id, code)
        self.p.writes.mark(self)

    def stream_done(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if self.going_away and not self.streams:
            self.p.loop.call_soon(self.close)

    def goaway(self) -> None:
        """A graceful GOAWAY (RFC 9113 §6.8): streams up to the last one seen finish, newer ones are refused."""
        if self.going_away or self.transport is None:
            return
        self.going_away = True
        self.graceful_goaway()
        self.flush()
        if not self.streams:
            self.close()

    def check_timeouts(self, now: float) -> None:
        idle = self.p.config.client_idle_timeout_secs
        if not self.streams and now - self.last_active > idle:
            self.goaway()
            return
        stall = self.p.h2.zero_window_timeout_secs
        stream_idle = self.p.config.stream_idle_timeout_secs
        for stream in list(self.streams.values()):
            if stream.out and stream.blocked_since and now - stream.blocked_since > stall:
                self.p.stats.h2_violation("h2_zero_window_stall")
                stream.abort("h2_zero_window_stall", ErrorCodes.CANCEL)
            elif now - stream.active > stream_idle:
                stream.abort("stream_idle_timeout", ErrorCodes.CANCEL)

    def flush(self) -> None:
        transport = self.transport
        if self.out and transport is not None and not transport.is_closing():
            transport.write(self.data_to_send())

    def close(self) -> None:
        if self.transport is not None:
            self.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class UpstreamSide(Protocol):
    """The endpoint's side of a stream: an HTTP/2 connection's stream, or an HTTP/1.1 exchange."""

    def open_stream(self, headers: list[Header], end_stream: bool, sink: StreamSink) -> int: ...
    def send_some(self, stream_id: int, data: bytes) -> int: ...
    def end_stream(self, stream_id: int, trailers: list[Header] | None) -> None: ...
    def consumed(self, stream_id: int, size: int) -> None: ...
    def reset(self, stream_id: int, code: int = ...) -> None: ...
    def carries(self, stream_id: int, sink: StreamSink) -> bool: ...


class Downstream(Protocol):
    """The app's side of streams: an HTTP/2 connection, or an HTTP/1.1 one carrying one at a time."""

    p: Http2Proxy
    writable: bool

    @property
    def transport(self) -> asyncio.Transport | None: ...
    def send_headers(self, stream_id: int, headers: list[Header], end_stream: bool) -> None: ...
    def informational(self, stream_id: int, headers: list[Header]) -> None:
        """A 1xx response (103 Early Hints) ahead of the final one."""
        ...

    def send_some(self, stream_id: int, data: bytes, end: bool = False) -> int:
        """Bytes of `data` taken; with `end`, the stream ends with them if all were taken."""
        ...

    def end(self, stream_id: int, trailers: list[Header] | None) -> None: ...
    def ack(self, stream_id: int, size: int) -> None: ...
    def reset(self, stream_id: int, code: int) -> None: ...
    def stream_done(self, stream_id: int) -> None: ...


class Stream:
    """One request stream from the app, and the upstream stream it is spliced to (a `StreamSink`)."""

    def __init__(self, client: Downstream, stream_id: int, headers: list[Header], ended: bool) -> None:
        self.client = client
        self.p = client.p
        self.id = stream_id
        self.t0 = perf_counter()
        self.active = self.p.loop.time()
        self.method = b""
        self.path = b""
        content_type: bytes | None = None
        timeout: bytes | None = None
        forward: list[Header] = []
        for name, value in headers:
            if name == b":method":
                self.method = value
            elif name == b":path":
                self.path = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
                continue  # re-written per try with the time that is left
            forward.append((name, value))
        self.headers = forward
        self.grpc = grpc.is_grpc(content_type)
        budget = self.p.config.overall_timeout_secs
        self.call_deadline: float | None = None
        if self.grpc and timeout is not None:
            secs = grpc.parse_timeout(timeout)
            if secs is not None:
                self.call_deadline = self.p.loop.time() + secs
                budget = min(budget, secs)
        self.deadline = self.p.loop.time() + budget
        self.retryable_method = self.method in self.p.retry_methods
        self.head_only = self.method == b"HEAD"
        # Request body: `body` holds the bytes from `body_base` on; while replayable, all of them.
        self.body = bytearray()
        self.body_base = 0
        self.replayable = True
        self.received = 0  # request bytes received in all
        self.acked = 0  # request bytes acknowledged to the client
        self.sent = 0  # request bytes sent in the current try
        self.req_ended = ended
        self.req_trailers: list[Header] | None = None
        self.req_end_sent = False
        # The current try.
        self.endpoint: Endpoint | None = None
        self.upstream: UpstreamSide | None = None
        self.up_id = 0
        self.waiter: asyncio.Future[None] | None = None
        self.tries = 0
        self.try_t0 = 0.0
        self.booked = False  # the endpoint's outcome of the current try is recorded
        # The response.
        self.responded = False
        self.status = 0
        self.grpc_status: int | None = None
        self.out = bytearray()  # response bytes not yet taken by the client's window
        self.out_end = False
        self.out_trailers: list[Header] | None = None
        self.informational = 0  # 1xx responses passed on
        self.blocked_since = 0.0
        self.done = False
        self.reason = ""
        self.task: asyncio.Task[None] | None = None
        self.inline = False  # the first try, made without a task, is under way
        self.try_timer: asyncio.TimerHandle | None = None
        self.tried: list[Endpoint] = []
        self.deadline_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """The first try goes out at once, without a task, when a connection with room is open: most
        streams then live in callbacks alone. Anything that must wait (a connection to open, room,
        a retry's backoff) runs in the stream's task."""
        p = self.p
        p.cluster.retry_budget.on_request()
        if p.to_http1:
            self.task = p.loop.create_task(self._run())
            return
        try:
            ep = self._pick(self.tried)
        except _TryFailed as failure:
            self.task = p.loop.create_task(self._run(failure))
            return
        up = p.pool.ready(ep)
        if up is None:
            self.task = p.loop.create_task(self._run(picked=ep))
            return
        now = p.loop.time()
        self.inline = True
        expiry = now + min(self.deadline - now, p.config.per_try_timeout_secs)
        self.try_timer = p.loop.call_at(expiry, self._try_expired)
        try:
            self._open(up)
        except _TryFailed as failure:
            self._settle(failure)

    def _try_expired(self) -> None:
        self.try_timer = None
        if self.inline and not self.done:
            late = self.p.loop.time() >= self.deadline
            self._settle(_TryFailed("deadline_exceeded" if late else "upstream_timeout", Outcome.TIMEOUT))

    # -- the tries ----------------------------------------------------------------------------------

    async def _run(self, failure: _TryFailed | None = None, picked: Endpoint | None = None) -> None:
        """The tries from here on: `failure` is how the inline first try ended, `picked` the endpoint
        it chose before finding no connection ready."""
        p = self.p
        cfg = p.config
        exclude = self.tried
        try:
            while True:
                if failure is None:
                    remaining = self.deadline - p.loop.time()
                    if remaining <= 0:
                        return self.fail("deadline_exceeded")
                    try:
                        async with asyncio.timeout(min(remaining, cfg.per_try_timeout_secs)):
                            await self._try(exclude, picked)
                        return
                    except TimeoutError:
                        failure = _TryFailed(
                            "deadline_exceeded" if p.loop.time() >= self.deadline else "upstream_timeout",
                            Outcome.TIMEOUT,
                        )
                    except _TryFailed as exc:
                        failure = exc
                    picked = None
                if self.done or self.responded:
                    return
                self._end_try(failure.outcome)
                if not failure.granted and (
                    failure.reason in ("no_healthy_upstream", "overflow") or not self._can_retry(failure.reason)
                ):
                    return self.fail(failure.reason)
                p.stats.retry(failure.reason)
                self.tries += 1
                backoff = jittered_backoff(
                    self.tries - 1, cfg.retry_backoff_base_secs, cfg.retry_backoff_max_secs, floor=FULL_JITTER
                )
                if backoff > 0 and failure.reason not in NEVER_REACHED:
                    await asyncio.sleep(min(backoff, max(0.0, self.deadline - p.loop.time())))
                failure = None
        except asyncio.CancelledError:
            self._end_try(Outcome.LOCAL_ERROR)
            raise

    def _can_retry(self, reason: str) -> bool:
        p = self.p
        if self.tries >= p.config.retries or self.p.loop.time() >= self.deadline or reason == "deadline_exceeded":
            return False
        if not self.replayable and self.received:
            return False
        if reason in NEVER_REACHED:
            return reason not in CONNECT_FAILURES or "connect-failure" in p.retry_on
        if reason.startswith("grpc_"):
            allowed = True
        elif reason == "upstream_reset":
            allowed = ("reset" in p.retry_on and self.retryable_method) or (
                self.grpc and grpc.UNAVAILABLE in p.retry_grpc
            )
        elif reason == "upstream_timeout":
            allowed = ("timeout" in p.retry_on and self.retryable_method) or (
                self.grpc and grpc.DEADLINE_EXCEEDED in p.retry_grpc
            )
        elif reason == "upstream_5xx":
            allowed = "5xx" in p.retry_on and self.retryable_method
        else:
            allowed = False
        return allowed and bool(p.cluster.retry_budget.can_retry())

    def _pick(self, exclude: list[Endpoint]) -> Endpoint:
        """The endpoint of the next try, booked as carrying one more request."""
        p = self.p
        ep = p.cluster.pick(None, exclude)
        if ep is None and exclude:
            ep = p.cluster.pick(None)  # every endpoint tried: try again where the balancer says
        if ep is None:
            raise _TryFailed("no_healthy_upstream", Outcome.LOCAL_ERROR)
        if not p.cluster.breaker.try_acquire_request():
            raise _TryFailed("overflow", Outcome.LOCAL_ERROR)
        self.endpoint = ep
        ep.start_request()
        self.try_t0 = perf_counter()
        exclude.append(ep)
        return ep

    async def _try(self, exclude: list[Endpoint], picked: Endpoint | None = None) -> None:
        p = self.p
        ep = picked if picked is not None else self._pick(exclude)
        up: UpstreamSide | None
        while True:
            try:
                up = await p.http1_pool.acquire(ep) if p.to_http1 else await p.pool.acquire(ep)
            except OSError as exc:
                outcome = Outcome.LOCAL_ERROR if exc.errno in LOCAL_ERRNOS else Outcome.CONNECT_FAILURE
                # A failed TLS handshake is a connect failure too (nothing was sent), named as such.
                reason = exc.reason if isinstance(exc, UpstreamTlsError) else "connect_failed"
                raise _TryFailed(reason, outcome) from None
            if up is not None:
                break
            # Every connection to this endpoint is open and full: wait for room, as a pending request
            # (bounded by the circuit breaker's max_pending and by this try's timeout).
            if not p.cluster.breaker.try_acquire_pending():
                raise _TryFailed("overflow", Outcome.LOCAL_ERROR)
            try:
                await p.pool.wait_for_room(ep)
            finally:
                p.cluster.breaker.release_pending()
        if self.done:
            return
        waiter = self.waiter = p.loop.create_future()
        self._open(up)
        p.writes.flush()
        await waiter

    def _open(self, up: UpstreamSide) -> None:
        """The try's upstream stream: its head, and the request body so far (written by the caller)."""
        p = self.p
        headers = self.headers
        if self.call_deadline is not None:
            headers = [*headers, (b"grpc-timeout", grpc.format_timeout(self.call_deadline - p.loop.time()))]
        self.upstream = up
        self.sent = 0
        self.req_end_sent = False
        # Nothing of an earlier try's answer is this one's (its stream was reset, its bytes not passed on).
        self.out.clear()
        self.out_trailers = None
        self.out_end = False
        self.blocked_since = 0.0
        no_body = self.req_ended and not self.body and self.req_trailers is None
        try:
            self.up_id = up.open_stream(headers, no_body, self)
        except h2.exceptions.H2Error:
            self.upstream = None
            raise _TryFailed("upstream_refused_stream", Outcome.LOCAL_ERROR) from None
        self.req_end_sent = no_body
        self.push_request()

    def _end_try(self, outcome: Outcome) -> None:
        up, self.upstream = self.upstream, None
        if up is not None and self.up_id:
            up.reset(self.up_id)
            p = self.p
            p.writes.flush()
        ep, self.endpoint = self.endpoint, None
        if ep is not None:
            ep.end_request(outcome, perf_counter() - self.try_t0)
            self.p.cluster.breaker.release_request()

    def _settle(self, failure: _TryFailed | None) -> None:
        if self.inline:
            # The inline first try is over: done, or the retries go on in the stream's task.
            self.inline = False
            if self.try_timer is not None:
                self.try_timer.cancel()
                self.try_timer = None
            if failure is not None:
                self.task = self.p.loop.create_task(self._run(failure))
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if failure is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(failure)

    # -- request body, client -> upstream -----------------------------------------------------------

    def request_data(self, data: bytes, flow_len: int) -> None:
        self.active = self.p.loop.time()
        padding = flow_len - len(data)
        if padding:
            self.client.ack(self.id, padding)
        self.received += len(data)
        self.body += data
        if self.replayable and self.received > self.p.max_retry_body:
            self.replayable = False
        self.push_request()

    def request_end(self, trailers: list[Header] | None) -> None:
        self.req_ended = True
        self.req_trailers = trailers
        self.push_request()

    def push_request(self) -> None:
        """Send what the upstream stream's window takes; acknowledge to the client what went out."""
        up = self.upstream
        if up is None or self.req_end_sent:
            return
        offset = self.body_base + len(self.body)  # total bytes held or passed
        at = self.sent - self.body_base
        if at < len(self.body):
            n = up.send_some(self.up_id, bytes(self.body[at:]))
            if n:
                self.sent += n
                if self.sent > self.acked:
                    self.client.ack(self.id, self.sent - self.acked)
                    self.acked = self.sent
                if not self.replayable:
                    del self.body[: self.sent - self.body_base]
                    self.body_base = self.sent
        if self.req_ended and self.sent == offset:
            up.end_stream(self.up_id, self.req_trailers)
            self.req_end_sent = True

    # -- StreamSink: upstream -> client -------------------------------------------------------------

    def on_window(self) -> None:
        self.push_request()

    def on_informational(self, headers: list[Header]) -> None:
        """A 1xx from the upstream: passed on ahead of the final response, at most
        `MAX_INFORMATIONAL` per stream (an upstream sending endless ones costs the app nothing)."""
        if self.done or self.responded or self.informational >= MAX_INFORMATIONAL:
            return
        self.informational += 1
        self.client.informational(self.id, [(n, v) for n, v in headers if n not in CONNECTION_FIELDS])

    def on_response(self, headers: list[Header], end_stream: bool) -> None:
        self.active = self.p.loop.time()
        status = 0
        for name, value in headers:
            if name == b":status":
                status = int(value)
                break
        if self.grpc and end_stream:
            code = grpc.status_of(headers)
            if code is not None and code in self.p.retry_grpc and code != grpc.OK:
                self.up_id = 0  # the upstream stream is over
                self._settle(_TryFailed(f"grpc_{grpc.STATUS_NAMES.get(code, code)}", Outcome.HTTP_5XX))
                return
        if (
            status >= 500
            and not self.grpc
            and "5xx" in self.p.retry_on
            and self.replayable
            and self._can_retry("upstream_5xx")
        ):
            # Retried: the 5xx's body and trailers must not reach the client, nor its bytes be
            # credited to the next try's stream. Otherwise (retries used up) it is passed on as sent.
            up = self.upstream
            if not end_stream and up is not None and self.up_id:
                up.reset(self.up_id)
                self.p.writes.flush()
            self.up_id = 0
            self._settle(_TryFailed("upstream_5xx", Outcome.HTTP_5XX, granted=True))
            return
        self.responded = True
        self.status = status
        ep = self.endpoint
        if ep is not None:
            self.booked = True
            ep.end_request(Outcome.HTTP_5XX if status >= 500 else Outcome.OK, perf_counter() - self.try_t0)
            self.p.stats.request(ep.key, status, perf_counter() - self.t0)
        if self.grpc and end_stream:
            self.grpc_status = grpc.status_of(headers)
        self._send_headers(headers, end_stream)
        if end_stream:
            self._finish("")
        elif self.call_deadline is not None:
            self.deadline_timer = self.p.loop.call_at(self.call_deadline, self._call_expired)
        self._settle(None)

    def on_data(self, data: bytes, flow_len: int, end: bool = False) -> None:
        self.active = self.p.loop.time()
        padding = flow_len - len(data)
        if padding and self.upstream is not None:
            self.upstream.consumed(self.up_id, padding)
        self.out += data
        if end:
            self.on_end()
        else:
            self.flush_response()

    def on_trailers(self, headers: list[Header]) -> None:
        self.out_trailers = [(n, v) for n, v in headers if n not in CONNECTION_FIELDS]
        if self.grpc:
            self.grpc_status = grpc.status_of(headers)
        self.on_end()

    def on_end(self) -> None:
        if not self.responded:
            self._settle(_TryFailed("upstream_protocol_error", Outcome.RESET))
            return
        self.out_end = True
        self.flush_response()

    def on_reset(self, reason: str, code: int) -> None:
        self.up_id = 0
        if not self.responded:
            self._settle(_TryFailed(reason, Outcome.LOCAL_ERROR if reason in NEVER_REACHED else Outcome.RESET))
            return
        self.abort(reason, ErrorCodes.INTERNAL_ERROR if code != ErrorCodes.CANCEL else ErrorCodes.CANCEL)

    def flush_response(self) -> None:
        client = self.client
        if self.done:
            return
        if not self.responded:
            return
        if self.out:
            if not client.writable:
                return
            last = self.out_end and not self.out_trailers  # the end goes with the last data
            n = client.send_some(self.id, bytes(self.out), last)
            if n:
                del self.out[:n]
                if self.upstream is not None:
                    self.upstream.consumed(self.up_id, n)
            if self.out:
                if not self.blocked_since:
                    self.blocked_since = self.p.loop.time()
                return
            self.blocked_since = 0.0
            if last:
                self._finish("")
                return
        if self.out_end:
            client.end(self.id, self.out_trailers)
            self._finish("")

    # -- endings ----------------------------------------------------------------------------------

    def _send_headers(self, headers: list[Header], end_stream: bool) -> None:
        self.client.send_headers(self.id, [(n, v) for n, v in headers if n not in CONNECTION_FIELDS], end_stream)

    def fail(self, reason: str) -> None:
        """Answer the stream with the proxy's own response: gRPC's Trailers-Only, or a short HTTP error."""
        if self.done or self.responded:
            return
        p = self.p
        p.stats.error(reason)
        if self.grpc:
            code = grpc.status_for(reason)
            self.grpc_status = code
            self.status = 200
            self._send_headers(grpc.trailers_only(code, _MESSAGES.get(reason, reason), reason), True)
        else:
            self.status = 504 if reason in ("deadline_exceeded", "upstream_timeout") else 503
            if reason in TLS_REASONS:
                self.status = 502  # as on HTTP/1.1: the endpoint answered, but not as the cluster requires
            body = f"{reason}\n".encode()
            self._send_headers(
                [
                    (b":status", b"%d" % self.status),
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(body)),
                    (b"x-ambassador-reason", reason.encode()),
                ],
                False,
            )
            self.client.send_some(self.id, body)
            self.client.end(self.id, None)
        p.stats.request("", self.status, perf_counter() - self.t0)
        self.responded = True
        self._finish(reason)
        p.writes.flush()

    def _call_expired(self) -> None:
        self.deadline_timer = None
        if self.done:
            return
        self.p.stats.error("deadline_exceeded")
        up, self.upstream = self.upstream, None
        if up is not None and self.up_id:
            up.reset(self.up_id)
        self.grpc_status = grpc.DEADLINE_EXCEEDED
        self.out.clear()
        self.client.end(
            self.id,
            [
                (b"grpc-status", b"%d" % grpc.DEADLINE_EXCEEDED),
                (b"grpc-message", b"deadline exceeded at the proxy"),
                (b"x-ambassador-reason", b"deadline_exceeded"),
            ],
        )
        self._finish("deadline_exceeded")
        self.p.writes.flush()

    def abort(self, reason: str, code: int) -> None:
        """Reset both sides of a stream that cannot go on."""
        if self.done:
            return
        self.p.stats.error(reason)
        self.client.reset(self.id, code)
        self.cancelled(reason)
        self.p.writes.flush()

    def cancelled(self, reason: str) -> None:
        """The client side is gone (reset, disconnected) or the stream was aborted."""
        if self.done:
            return
        up, self.upstream = self.upstream, None
        if up is not None and self.up_id:
            up.reset(self.up_id)
        self.out.clear()
        if not self.responded:
            if self.inline:
                self.inline = False  # no retry: `_finish` books the try
                if self.try_timer is not None:
                    self.try_timer.cancel()
                    self.try_timer = None
            else:
                self._settle(_TryFailed(reason, Outcome.LOCAL_ERROR))
            if self.task is not None:
                self.task.cancel()
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self.done:
            return
        self.done = True
        self.reason = reason
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        self.inline = False
        p = self.p
        up = self.upstream
        if up is not None and self.up_id and (not self.req_end_sent or up.carries(self.up_id, self)):
            up.reset(self.up_id)  # a request still being sent, or a response still coming
        self.upstream = None
        ep = self.endpoint
        if ep is not None:
            if not self.booked:
                ep.end_request(Outcome.LOCAL_ERROR, perf_counter() - self.try_t0)
            p.cluster.breaker.release_request()
            self.endpoint = None
        if not self.req_ended and self.client.transport is not None:
            # The response is over while the app is still sending: it may stop (RFC 9113 §8.1).
            self.client.reset(self.id, ErrorCodes.NO_ERROR)
        if self.grpc:
            p.stats.grpc_call(self.grpc_status)
        p.stats.http2_stream()
        p.access_log.call(
            self.method,
            self.path,
            self.status,
            self.grpc_status if self.grpc else None,
            self.reason,
            self.tries + 1,
            perf_counter() - self.t0,
        )
        self.client.stream_done(self.id)


_MESSAGES = {
    "no_healthy_upstream": "no healthy upstream",
    "connect_failed": "upstream connect failed",
    "upstream_reset": "upstream reset the stream",
    "upstream_refused_stream": "upstream refused the stream",
    "upstream_goaway": "upstream is going away",
    "deadline_exceeded": "deadline exceeded at the proxy",
    "upstream_timeout": "upstream timed out",
    "overflow": "too many requests in flight to the cluster",
    "upstream_protocol_error": "upstream broke the HTTP/2 protocol",
    "tls_verify": "upstream TLS verification failed",
    "tls_handshake": "upstream TLS handshake failed",
    "tls_alpn": "upstream does not speak HTTP/2 over TLS (ALPN h2 not selected)",
}

__all__ = ["Http2Client", "Http2Proxy", "Stream"]
