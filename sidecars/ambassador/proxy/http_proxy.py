"""The HTTP/1.1 request path: client connection -> exchange -> pooled upstream connection -> back.

Everything here runs in protocol callbacks (no task per request): llhttp (httptools) parses both
sides, each parser callback does the least it can and writes straight to the other transport.

- `ClientConnection` parses requests. Each request becomes an `Exchange`, queued in arrival order;
  only the head of the queue is sent upstream, so pipelined responses leave in order.
- `Exchange` is one request through all its tries: pick an endpoint, take a pooled connection or open
  one, write the head and body, and on failure decide whether a retry is safe (see `_can_retry`).
- `UpstreamConnection` parses the response and streams it to the client, re-framing the body when the
  two hops need different framing; afterwards it goes back to the pool.

Flow control both ways: a full write buffer on one side pauses reading on the other, so memory stays
bounded by the transports' high-water marks plus `max_retry_body_bytes` per request, never by a body.

This module is also compiled (see `setup.py`): `http_proxy.pxd` declares the classes as extension types
with typed attributes, which removes most of the interpreter's per-request work, and `engine.py` picks
the compiled twin when it was built from this very file. Hence every attribute is set in `__init__`
(no class-level defaults) and the protocols do not inherit from `asyncio.Protocol` (an extension type
cannot): the event loop calls their methods by name.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, NoReturn, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, HttpResponseParser

from sidecars.ambassador.cluster.connect import UpstreamTlsError, open_connection
from sidecars.ambassador.cluster.endpoint import LOCAL_ERRNOS, Endpoint, Outcome
from sidecars.ambassador.cluster.upstream_tls import UpstreamTls
from sidecars.ambassador.proxy.headers import (
    CONTINUE_100,
    CRLF,
    HOP_BY_HOP,
    LAST_CHUNK,
    RequestIds,
    connection_tokens,
    forwarded_for,
    local_response,
    split_absolute_target,
    status_line,
    transfer_codings,
)
from sidecars.ambassador.proxy.pool import Pool
from sidecars.core.backoff import FULL_JITTER, jittered_backoff

if TYPE_CHECKING:
    from sidecars.ambassador.cluster.view import ClusterView
    from sidecars.ambassador.proxy.access_log import AccessLog
    from sidecars.ambassador.proxy.stats import ListenerStats
    from sidecars.ambassador.settings import ListenerConfig

perf_counter = time.perf_counter

# Reasons a client connection has stopped reading (bits, so several can hold at once).
PAUSE_PIPELINE = 1  # too many requests queued behind the one in flight
PAUSE_BODY = 2  # request body buffered while no upstream connection can take it
PAUSE_UPSTREAM = 4  # upstream's write buffer is full
PAUSE_TUNNEL = 8  # upgrade requested, waiting for the upstream's 101
PAUSE_DONE = 16  # connection is finishing (bad request, closing)

MAX_PIPELINE = 32
SMALL_BODY = 4096  # a response body up to this size is joined with its head into one write
DRAIN_IDLE_GRACE_SECS = 1.0

# Response body framing towards the client.
BODY_NONE = 0
BODY_RAW = 1  # as received (content-length, or close-delimited to an HTTP/1.0 client)
BODY_CHUNKED = 2  # re-chunked: upstream sent chunked or close-delimited, client speaks HTTP/1.1

# Connection tokens that name no other field: nothing more to strip.
_PLAIN_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"})
_NO_TOKENS: list[bytes] = []  # shared, never mutated

# Members as module constants: `Outcome.OK` is a slow class attribute lookup on every response.
_OK = Outcome.OK
_HTTP_5XX = Outcome.HTTP_5XX

# Request fields common enough to be worth a fast path in `ClientConnection.on_header`.
_COMMON_REQUEST_FIELDS = (
    b"host",
    b"user-agent",
    b"accept",
    b"accept-encoding",
    b"accept-language",
    b"authorization",
    b"cookie",
    b"content-type",
    b"cache-control",
    b"referer",
    b"origin",
    b"traceparent",
)

_REQ_SPECIAL = HOP_BY_HOP | {b"expect", b"x-forwarded-for", b"forwarded"}
_SLASH = ord("/")  # first byte of an origin-form request target

# Response fields by how they are handled: 0 forwarded, 1 content-length, 2 transfer-encoding,
# 3 connection, 4 upgrade, 5 dropped. Common spellings are listed as sent so most fields cost one
# dict lookup (no lower-casing).
_RESP_KIND: dict[bytes, int] = {}
for _name, _kind in ((b"content-length", 1), (b"transfer-encoding", 2), (b"connection", 3), (b"upgrade", 4)):
    _RESP_KIND[_name] = _RESP_KIND[_name.title()] = _kind
for _name in HOP_BY_HOP - {b"content-length", b"transfer-encoding", b"connection", b"upgrade"}:
    _RESP_KIND[_name] = _RESP_KIND[_name.title()] = 5
for _name in (b"Server", b"Date", b"Content-Type", b"Cache-Control", b"Etag", b"ETag", b"Last-Modified", b"Vary"):
    _RESP_KIND[_name] = 0


class _Refused(Exception):
    """Raised in a parser callback to stop llhttp; the connection's `error_status`/`failure` say why."""


class HttpProxy:
    """Per-listener state shared by its connections: config hoisted into attributes, the pool, counters."""

    def __init__(
        self,
        config: ListenerConfig,
        cluster: ClusterView,
        stats: ListenerStats,
        access_log: AccessLog,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.stats = stats
        self.access_log = access_log
        self.loop = loop
        self.pool = Pool(config.max_idle_per_endpoint, config.idle_timeout_secs)
        # The cluster's TLS, None for plain endpoints: read once per new connection, never per request.
        self.tls: UpstreamTls | None = getattr(cluster, "tls", None)
        if self.tls is not None:
            self.tls.on_rotate(self.retire_pool)
        self.ids = RequestIds()
        self.clients: set[ClientConnection] = set()
        self.draining = False
        self.clock = loop.time()  # coarse, refreshed by `sweep()`: cheap activity stamps
        self.max_header_bytes = config.max_header_bytes
        self.max_retry_body = config.max_retry_body_bytes
        self.id_header = config.request_id_header.encode()
        self.req_special = _REQ_SPECIAL | ({self.id_header} if self.id_header else set())
        self.forwarded_mode = ("none", "x-forwarded-for", "forwarded").index(config.forwarded)
        # Host is never a plain field: the proxy writes it (from host_rewrite, an absolute-form target
        # or the client's one field), so it is hashed from there too.
        self.hash_host = config.hash_header == "host"
        self.hash_header = config.hash_header.encode() if config.hash_header and not self.hash_host else None
        if self.hash_header:
            self.req_special = self.req_special | {self.hash_header}
        self.host_line = b"host: " + config.host_rewrite.encode() + CRLF if config.host_rewrite else None
        # Common request fields as usually spelled -> is it Host: these are taken without lower-casing
        # the name; anything else (or special here) takes the general path.
        self.req_plain = {
            spelling: lname == b"host"
            for lname in _COMMON_REQUEST_FIELDS
            if lname not in self.req_special
            for spelling in (lname, lname.title())
        }
        self.retry_connect = "connect-failure" in config.retry_on
        self.retry_on = frozenset(config.retry_on)
        self.retry_methods = frozenset(m.encode() for m in config.retry_methods)
        self.connect_timeout = config.connect_timeout_secs
        self.per_try = config.per_try_timeout_secs
        self.overall = config.overall_timeout_secs
        self.endpoint_host_lines: dict[str, bytes] = {}
        self.deadlines: deque[tuple[float, Exchange, int]] = deque()
        self._deadline_timer: asyncio.TimerHandle | None = None

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    def host_line_for(self, endpoint: Endpoint) -> bytes:
        line = self.endpoint_host_lines.get(endpoint.key)
        if line is None:
            line = self.endpoint_host_lines[endpoint.key] = b"host: " + endpoint.key.encode() + CRLF
        return line

    def watch(self, when: float, ex: Exchange) -> None:
        """Time out `ex`'s current try at `when` unless it cancels (changes `timer_token`) first."""
        fifo = self.deadlines
        while fifo and fifo[0][1].timer_token != fifo[0][2]:
            fifo.popleft()  # finished: requests end roughly in the order they started
        fifo.append((when, ex, ex.timer_token))
        if self._deadline_timer is None:
            self._deadline_timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._deadline_timer = None
        now = self.loop.time()
        fifo = self.deadlines
        while fifo:
            when, ex, token = fifo[0]
            if ex.timer_token != token:
                fifo.popleft()
            elif when <= now:
                fifo.popleft()
                ex.on_timeout()
            else:
                self._deadline_timer = self.loop.call_at(when, self._expire)
                return

    def on_endpoint_removed(self, endpoint: Endpoint) -> None:
        self.pool.close_endpoint(endpoint)

    def retire_pool(self) -> None:
        """New TLS material: a new pool for connections made with it. Each connection goes back to the
        pool it was opened for, so the old material's idle ones close now and busy ones after their
        response: the pool is keyed by endpoint and TLS identity."""
        old = self.pool
        self.pool = Pool(old.max_idle, old.idle_timeout)
        old.retire()

    def sweep(self) -> None:
        """Periodic: refresh the clock, expire idle pooled connections and stale client connections."""
        now = self.clock = self.loop.time()
        self.pool.sweep(now)
        cfg = self.config
        for client in list(self.clients):
            client.check_timeouts(now, cfg)

    def start_drain(self) -> None:
        """From now on every response says `Connection: close`; idle keep-alive clients are closed by
        `sweep()` once quiet for `DRAIN_IDLE_GRACE_SECS`: closing one the instant the app writes its next
        request into it would fail that request, answering it with `Connection: close` does not."""
        self.draining = True
        self.sweep()

    def close_all(self) -> None:
        for client in list(self.clients):
            client.abort()
        self.pool.close_all()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self.deadlines.clear()


class ClientConnection:
    """One connection from the app: parses requests, queues exchanges, owns the response order."""

    def __init__(self, proxy: HttpProxy) -> None:
        self.p = proxy
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.cur: Exchange | None = None  # the request whose body is being parsed
        self.url = b""
        self.hparts: list[bytes] = []
        self.special: list[tuple[bytes, bytes]] = []
        self.in_head = False
        self.head_bytes = 0  # of the head being parsed: its target and complete fields
        self.head_pending = 0  # bytes fed since the head began in an earlier read (0: it began in this one)
        self.head_started = 0.0
        self.quiet = 0  # bytes of a chunked body fed since its last data: trailer fields, chunk framing
        self.last_active = proxy.clock
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.eof = False  # the app half-closed (in a tunnel: one direction is over)
        self.error_status = 0  # set with `failure` by a callback that refuses the request
        self.failure = ""
        self.fatal: bytes | None = None  # answer to write once earlier responses are out, then close
        self.tunnel: UpstreamConnection | None = None  # after a 101: bytes are spliced to it
        self.tunnel_buffer: list[bytes] | None = None  # bytes sent after an upgrade request, before 101
        self.peer = b""
        self.host: bytes | None = None  # the request's one Host field

    # -- transport events ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.p.clients.add(self)
        self.p.stats.client_connections += 1
        if self.p.forwarded_mode:
            peer = transport.get_extra_info("peername")
            self.peer = forwarded_for(str(peer[0]), rfc7239=self.p.forwarded_mode == 2) if peer else b"unknown"

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.p.clients.discard(self)
        self.p.stats.client_connections -= 1
        while self.queue:
            self.queue.popleft().abandon()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.transport.write(data)
            self.last_active = self.p.clock
            return
        if self.tunnel_buffer is not None:
            self.tunnel_buffer.append(data)
            return
        if self.paused & PAUSE_DONE:
            return
        self.last_active = self.p.clock
        cur = self.cur
        if cur is None:
            if not self.head_started:
                self.head_started = self.p.clock  # between messages: the head timeout runs from the first byte
        elif cur.chunked:
            # llhttp holds an unfinished trailer field as it holds a head field: a chunked body that
            # yields no data for more than a head's worth of bytes is refused.
            if self.quiet > self.p.max_header_bytes:
                self.bad_request(431, "trailer_too_large")
                return
            self.quiet += len(data)
        rest: bytes | None = None
        if self.in_head:
            # A head spans reads: llhttp holds its unfinished field until it ends, so feed no more
            # than the head may still take; if it ends within that, the rest of the read follows.
            room = self.p.max_header_bytes - self.head_pending
            if len(data) > room:
                rest = data[room:]
                data = data[:room]
            self.head_pending += len(data)
        try:
            self.parser.feed_data(data)
            if rest is not None:
                if self.head_pending:  # still the same head
                    self.bad_request(431, "header_too_large")
                    return
                if self.paused & PAUSE_DONE:
                    return
                data, rest = rest, None
                self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            tail = data[exc.args[0] :] + rest if rest else data[exc.args[0] :]
            self.tunnel_buffer = [tail] if tail else []
            self.pause(PAUSE_TUNNEL)
        except HttpParserError:
            if self.error_status:
                self.bad_request(self.error_status, self.failure)
            else:
                self.bad_request(400, "bad_request")

    def eof_received(self) -> bool:
        self.eof = True
        tunnel = self.tunnel
        if tunnel is not None:
            # One direction of the tunnel is over: pass the half-close on. Once both are, close both
            # (connection_lost closes the other side), which frees the upstream connection's slot.
            if tunnel.eof or not tunnel.transport.can_write_eof():
                return False
            tunnel.transport.write_eof()
            return True
        # The app half-closed: finish what is queued, then close (HTTP/1.1 has no use for half-open).
        if self.queue:
            self.fatal = b""
            self.pause(PAUSE_DONE)
            return True
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if up is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if up is not None and not up.transport.is_closing():
            up.transport.resume_reading()

    # -- parser callbacks (llhttp) -------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        # The first callback of every request (llhttp needs a target), so it also starts the message:
        # one Python call less per request than a separate on_message_begin.
        if self.in_head:
            self.url += url  # the target arrived in pieces (bounded: data_received feeds at most a head)
            self.head_bytes += len(url)
            return
        self.in_head = True
        self.url = url
        self.head_bytes = len(url)
        self.hparts = []
        self.special = []
        self.host = None
        if not self.head_started:
            self.head_started = self.p.clock

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # a trailer field: dropped with the re-framing
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.p.max_header_bytes:
            self._refuse(431, "header_too_large")
        is_host = self.p.req_plain.get(name)
        if is_host is None:
            lname = name.lower()
            if lname in self.p.req_special:
                self.special.append((lname, value))
                return
            if lname[:6] == b"proxy-":
                return
            is_host = lname == b"host"
        if not is_host:
            self.hparts += (name, b": ", value, CRLF)
        elif self.host is None:
            self.host = value
        else:
            self._refuse(400, "duplicate_host")  # RFC 9112 §3.2: which one would route the request?

    def _refuse(self, status: int, reason: str) -> NoReturn:
        self.error_status = status
        self.failure = reason
        raise _Refused

    def on_headers_complete(self) -> None:
        p = self.p
        self.in_head = False
        self.head_bytes = 0
        self.head_pending = 0
        self.head_started = 0.0
        parser = self.parser
        method = parser.get_method()
        url = self.url
        host = self.host
        if url[0] != _SLASH or method == b"CONNECT":
            host, url = _origin_form(self, method, url)
        fields = _special_fields(self)
        parts = self.hparts
        tokens = fields.tokens
        if tokens and not _PLAIN_TOKENS.issuperset(tokens):
            parts = _drop_listed(parts, tokens)
        chunked = fields.chunked
        clen = fields.clen
        has_body = chunked or (clen is not None and clen.strip() != b"0")
        upgrading = fields.upgrade is not None and parser.should_upgrade()
        if upgrading and has_body:
            # llhttp hands every byte after an upgrade request's head to the new protocol, the upstream
            # would read a body first: the two would disagree about where the tunnel starts.
            self._refuse(400, "upgrade_with_body")
        rid = fields.rid
        if rid is None and p.id_header:
            rid = p.ids.next()
        keep_alive = parser.should_keep_alive()
        ex = _new_exchange(
            self,
            _upstream_head(self, method, url, host, parts, fields, rid, upgrading),
            method,
            rid=rid,
            hash_key=host if p.hash_host else fields.hash_key,
            has_body=has_body,
            chunked=chunked,
            keep_alive=keep_alive,
            # The version, per request: an HTTP/1.0 request keeps its connection only with a Connection
            # (or Proxy-Connection) field, both special, so a plain keep-alive request is HTTP/1.1 unasked.
            http10=bool(self.special or not keep_alive) and parser.get_http_version() != "1.1",
            expect=fields.expect and has_body,
            upgrading=upgrading,
            needs_host=host is None and p.host_line is None,
        )
        self.cur = ex
        queue = self.queue
        queue.append(ex)
        if len(queue) == 1:
            ex.start()
        elif len(queue) >= MAX_PIPELINE:
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        self.quiet = 0
        ex = self.cur
        if ex is not None and not ex.done:
            if ex.chunked:
                ex.request_body((b"%x\r\n" % len(body), body, CRLF), len(body))
            else:
                ex.request_body((body,), len(body))

    def on_message_complete(self) -> None:
        ex = self.cur
        self.cur = None
        self.quiet = 0
        if ex is not None and not ex.request_done and not ex.done:  # a request without body is done already
            ex.request_complete()

    # -- flow control and closing -----------------------------------------------------------------

    def pause(self, bit: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= bit

    def resume(self, bit: int) -> None:
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def bad_request(self, status: int, reason: str) -> None:
        """Answer `status` after the responses already owed, then close: the byte stream is lost."""
        self.p.stats.error(reason)
        self.p.access_log.bad_request(status, reason, self.url)
        self.pause(PAUSE_DONE)
        cur = self.cur
        if cur is not None and not cur.request_done and not cur.done:
            if cur.responded:
                self.abort()  # its response is half written: closing is the only signal left
                return
            cur.client_failed()  # its body can no longer be read
        self.fatal = local_response(status, reason, close=True)
        if not self.queue:
            self.finish_fatal()

    def finish_fatal(self) -> None:
        if self.fatal:
            self.transport.write(self.fatal)
        self.fatal = None
        self.close()

    def exchange_done(self, ex: Exchange, close: bool) -> None:
        """`ex` (the head of the queue) has written its whole response."""
        queue = self.queue
        if queue and queue[0] is ex:
            queue.popleft()
        if close or self.closed:
            self.close()
            return
        if queue:
            if len(queue) < MAX_PIPELINE:
                self.resume(PAUSE_PIPELINE)
            queue[0].start()
        elif self.fatal is not None:
            self.finish_fatal()
        elif self.p.draining and not self.in_head:
            self.close()

    def start_tunnel(self, upstream: UpstreamConnection) -> None:
        """The upstream answered 101: from now on bytes pass through untouched both ways."""
        self.tunnel = upstream
        pending = self.tunnel_buffer or []
        self.tunnel_buffer = None
        if pending:
            upstream.transport.writelines(pending)
        if self.eof and upstream.transport.can_write_eof():
            upstream.transport.write_eof()  # the app half-closed while the upgrade was answered
        self.resume(PAUSE_TUNNEL)

    def check_timeouts(self, now: float, cfg: ListenerConfig) -> None:
        idle = now - self.last_active
        if self.tunnel is not None or self.queue:
            if idle > cfg.stream_idle_timeout_secs:
                self.p.stats.error("stream_idle_timeout")
                self.abort()
        elif self.in_head or self.head_started:
            if self.head_started and now - self.head_started > cfg.request_header_timeout_secs:
                self.p.stats.error("request_header_timeout")
                self.pause(PAUSE_DONE)
                self.transport.write(local_response(408, "request_header_timeout", close=True))
                self.close()
        elif idle > cfg.client_idle_timeout_secs or (self.p.draining and idle >= DRAIN_IDLE_GRACE_SECS):
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()


class SpecialFields:
    """What one request's special fields said: its framing, Connection, Upgrade and Expect, the id and
    forwarding fields it brought, its hash key. A request without any shares `_NO_SPECIAL_FIELDS`."""

    def __init__(self) -> None:
        self.chunked = False
        self.clen: bytes | None = None
        self.expect = False
        self.tokens: list[bytes] = _NO_TOKENS
        self.upgrade: bytes | None = None
        self.rid: bytes | None = None
        self.hash_key: bytes | None = None
        self.prior_fwd: bytes | None = None


_NO_SPECIAL_FIELDS = SpecialFields()  # never written to


def _origin_form(client: ClientConnection, method: bytes, url: bytes) -> tuple[bytes | None, bytes]:
    """(host, target) of a request whose target is not origin-form: an absolute-form target names the
    host (RFC 9112 §3.2.2) and the upstream gets origin-form; `*` stays; CONNECT is refused."""
    if method == b"CONNECT":
        client._refuse(405, "connect_not_supported")  # a tunnel to anywhere: not on an HTTP listener
    if url == b"*":
        return client.host, url
    split = split_absolute_target(url)
    if split is None:
        client._refuse(400, "bad_request_target")
    return split


def _special_fields(client: ClientConnection) -> SpecialFields:
    """Read the request's special fields; the forwarding fields and a special hash header travel on
    as they came (into `client.hparts`)."""
    special = client.special
    if not special:  # a plain GET has none
        return _NO_SPECIAL_FIELDS
    p = client.p
    fields = SpecialFields()
    parts = client.hparts
    for lname, value in special:
        if lname == b"content-length":
            fields.clen = value
        elif lname == p.id_header:
            fields.rid = value
        elif lname == b"transfer-encoding":
            # Only chunked is decoded here; dropping another coding would corrupt the body (nginx: 501).
            if fields.chunked or value.strip().lower() != b"chunked":
                client._refuse(501, "unsupported_transfer_coding")
            fields.chunked = True
        elif lname == b"connection":
            fields.tokens = connection_tokens(value)
        elif lname == b"upgrade":
            fields.upgrade = value
        elif lname == b"expect":
            fields.expect = value.lower() == b"100-continue"
        elif lname == b"x-forwarded-for" or lname == b"forwarded":
            fields.prior_fwd = value
            parts += (lname, b": ", value, CRLF)
        if lname == p.hash_header:
            fields.hash_key = value
            if lname not in _REQ_SPECIAL:
                parts += (lname, b": ", value, CRLF)
    return fields


def _upstream_head(
    client: ClientConnection,
    method: bytes,
    url: bytes,
    host: bytes | None,
    parts: list[bytes],
    fields: SpecialFields,
    rid: bytes | None,
    upgrading: bool,
) -> bytes:
    """The request head the upstream gets: origin-form HTTP/1.1, Host, the forwarded fields, then what
    the proxy adds (request id, forwarding) and the framing it re-states."""
    p = client.p
    head = [method, b" ", url, b" HTTP/1.1\r\n"]
    if p.host_line is not None:
        head.append(p.host_line)
    elif host is not None:
        head += (b"host: ", host, CRLF)
    head += parts
    if p.id_header:
        head += (p.id_header, b": ", rid or b"", CRLF)
    if p.forwarded_mode == 2:
        head += (b'forwarded: for="', client.peer, b'"\r\n')
    elif p.forwarded_mode:
        if fields.prior_fwd is None:
            head += (b"x-forwarded-for: ", client.peer, CRLF)
        else:
            head.append(b"x-forwarded-for: " + client.peer + CRLF)  # appended as a second field line
    if upgrading:
        head += (b"connection: upgrade\r\nupgrade: ", fields.upgrade or b"", CRLF)
    elif fields.chunked:
        head.append(b"transfer-encoding: chunked\r\n")
    elif fields.clen is not None:
        head += (b"content-length: ", fields.clen, CRLF)
    head.append(CRLF)
    return b"".join(head)


def _new_exchange(
    client: ClientConnection,
    head: bytes,
    method: bytes,
    *,
    rid: bytes | None,
    hash_key: bytes | None,
    has_body: bool,
    chunked: bool,
    keep_alive: bool,
    http10: bool,
    expect: bool,
    upgrading: bool,
    needs_host: bool,
) -> Exchange:
    """The exchange of the request `client` just parsed. Compiled, this is a C call whose keywords are
    matched at build time; calling the extension type with keywords would build and parse a dict per
    request."""
    return Exchange(
        client, head, method, rid, hash_key, has_body, chunked, keep_alive, http10, expect, upgrading, needs_host
    )


def _drop_listed(parts: list[bytes], tokens: list[bytes]) -> list[bytes]:
    """Remove fields named in `Connection` (hop-by-hop by declaration); parts are name, ': ', value, CRLF."""
    drop = set(tokens)
    out: list[bytes] = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() not in drop:
            out += parts[i : i + 4]
    return out


class Exchange:
    """One request and its response, across every try."""

    def __init__(
        self,
        client: ClientConnection,
        head: bytes,
        method: bytes,
        rid: bytes | None,
        hash_key: bytes | None,
        has_body: bool,
        chunked: bool,
        keep_alive: bool,
        http10: bool,
        expect: bool,
        upgrading: bool,
        needs_host: bool,
    ) -> None:
        """Made by `_new_exchange`, which names each flag."""
        self.client = client
        self.p = client.p
        self.head = head
        self.method = method
        self.retryable_method = method in self.p.retry_methods
        self.has_body = has_body
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.http10 = http10
        self.expect = expect
        self.upgrading = upgrading
        self.rid = rid
        self.needs_host = needs_host
        self.hash_key = hash_key
        self.request_done = not has_body and not upgrading
        self.chunks: list[bytes] = []  # body not yet sent, or all of it while it may be replayed
        self.tried: list[Endpoint] = []
        self.t0 = perf_counter()
        self.body_bytes = 0
        self.body_sent = False  # some body bytes went to an upstream and are no longer held
        self.replayable = True
        self.started = False
        self.done = False
        self.responded = False
        self.close_client = False
        self.holds_request = False
        self.upstream: UpstreamConnection | None = None
        self.endpoint: Endpoint | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_token = 0  # the try number whose deadline sits in the proxy's FIFO; 0: none
        self.tries = 0
        self.try_t0 = 0.0
        self.deadline = 0.0

    # -- request side ----------------------------------------------------------------------------------

    def start(self) -> None:
        """The exchange reached the head of the queue: admit it and make the first try."""
        self.started = True
        p = self.p
        cluster = p.cluster
        if not cluster.breaker.try_acquire_request():
            self.fail(503, "overflow")
            return
        self.holds_request = True
        cluster.retry_budget.on_request()
        self.deadline = p.loop.time() + p.overall
        if self.expect and not self.request_done:
            self.client.transport.write(CONTINUE_100)
        self.attempt()

    def attempt(self) -> None:
        if self.done:
            return
        p = self.p
        now = p.loop.time()
        if now >= self.deadline:
            self.fail(504, "deadline_exceeded")
            return
        tried = self.tried
        ep = p.cluster.pick(self.hash_key, tried) if tried else p.cluster.pick(self.hash_key)
        if ep is None and tried:
            ep = p.cluster.pick(self.hash_key)  # every endpoint tried once: any may do again
        if ep is None:
            self.fail(503, "no_healthy_upstream")
            return
        conn = p.pool.take(ep)
        if conn is None:
            breaker = p.cluster.breaker
            if not breaker.try_acquire_pending():
                self.fail(503, "overflow")
                return
            if not breaker.try_acquire_connection():
                breaker.release_pending()
                self.fail(503, "overflow")
                return
        self.endpoint = ep
        self.tries += 1
        ep.start_request()
        self.try_t0 = perf_counter()
        when = now + p.per_try
        if when <= self.deadline:
            # Every first try has the same per-try timeout, so its deadline goes in the proxy's FIFO
            # (one loop timer for all of them); a retry near the overall deadline gets its own timer.
            self.timer_token = self.tries
            p.watch(when, self)
        else:
            self.timer = p.loop.call_at(self.deadline, self.on_timeout)
        if conn is not None:
            self.send(conn)  # type: ignore[arg-type]
        else:
            self.connecting = p.loop.create_task(self.connect(ep))

    async def connect(self, ep: Endpoint) -> None:
        """Open a connection for this try (holding a pending and a connection slot of the breaker)."""
        p = self.p
        breaker = p.cluster.breaker
        conn = UpstreamConnection(p, ep)
        try:
            await open_connection(p.loop, lambda: cast(asyncio.Protocol, conn), ep, p.tls, p.connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.connecting = None
            if self.done:
                return
            if exc.errno in LOCAL_ERRNOS:
                # Out of descriptors or memory: the process's failure, not the endpoint's.
                ep.end_request(Outcome.LOCAL_ERROR, perf_counter() - self.try_t0)
                self.endpoint = None
                self.fail(503, "local_resources_exhausted")
            else:
                # A failed TLS handshake is a connect failure too (nothing was sent), named as such.
                reason = exc.reason if isinstance(exc, UpstreamTlsError) else "connect_failed"
                self.try_failed(Outcome.CONNECT_FAILURE, reason, never_reached=True)
            return
        finally:
            breaker.release_pending()
            if conn.transport is None:
                breaker.release_connection()  # never opened; an open one releases in connection_lost
        self.connecting = None
        if self.done or self.endpoint is not ep:
            conn.pool.put(conn, p.clock)
            return
        self.send(conn)

    def send(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.ex = self
        head = self.head
        if self.needs_host:
            line_end = head.index(CRLF) + 2
            head = head[:line_end] + self.p.host_line_for(conn.endpoint) + head[line_end:]
        transport = conn.transport
        if self.chunks:
            transport.writelines([head, *self.chunks])
            if not self.replayable:
                self.chunks = []
                self.body_sent = True
                self.client.resume(PAUSE_BODY)
        else:
            transport.write(head)
        if self.client.write_paused:
            transport.pause_reading()

    def request_body(self, pieces: tuple[bytes, ...], size: int) -> None:
        up = self.upstream
        if up is not None:
            up.transport.writelines(pieces)
            if self.replayable:
                self.body_bytes += size
                if self.body_bytes <= self.p.max_retry_body:
                    self.chunks += pieces
                    return
                self.replayable = False
                self.chunks = []
            self.body_sent = True
            return
        self.chunks += pieces
        self.body_bytes += size
        if self.body_bytes > self.p.max_retry_body:
            self.replayable = False
            self.client.pause(PAUSE_BODY)  # nowhere to send it yet: stop reading until connected

    def request_complete(self) -> None:
        self.request_done = True
        if self.chunked:
            self.request_body((LAST_CHUNK,), 0)

    # -- response side -------------------------------------------------------------------------------

    def response_head(
        self,
        conn: UpstreamConnection,
        code: int,
        parts: list[bytes],
        clen: bytes | None,
        codings: bytes,
        upgrade: bytes | None,
    ) -> bool:
        """The upstream's final response head arrived; False when it is discarded for a retry.
        `codings`: transfer codings other than chunked, which stay on the body."""
        self._cancel_timer()
        if code >= 500 and "5xx" in self.p.retry_on and self._can_retry(False):
            # Decided here, and the budget spent: try_failed must not ask the budget a second time.
            self.try_failed(Outcome.HTTP_5XX, "upstream_5xx", never_reached=False, retry=True)
            return False
        self.responded = True
        close = not self.keep_alive or not self.request_done or self.p.draining or (self.upgrading and code != 101)
        if code == 101 and self.upgrading:
            parts += (b"connection: upgrade\r\nupgrade: ", upgrade or b"", CRLF, CRLF)
            conn.body_mode = BODY_NONE
            return True
        if self.method == b"HEAD" or code == 204 or code == 304:
            if clen is not None and code != 204:  # a 204 has no length to describe (RFC 9110 §8.6)
                parts += (b"content-length: ", clen, CRLF)
            conn.body_mode = BODY_NONE
        elif codings:  # HTTP/1.1 only (checked by the caller): the codings stay, chunked goes last
            parts += (b"transfer-encoding: ", codings, b", chunked\r\n")
            conn.body_mode = BODY_CHUNKED
        elif clen is not None:
            parts += (b"content-length: ", clen, CRLF)
            conn.body_mode = BODY_RAW
        elif self.http10:
            conn.body_mode = BODY_RAW  # close-delimited
            close = True
        else:
            parts.append(b"transfer-encoding: chunked\r\n")
            conn.body_mode = BODY_CHUNKED
        if close:
            parts.append(b"connection: close\r\n\r\n")
        elif self.http10:
            parts.append(b"connection: keep-alive\r\n\r\n")
        else:
            parts.append(CRLF)
        self.close_client = close
        return True

    def response_complete(self, conn: UpstreamConnection, status: int, reusable: bool) -> None:
        ep = conn.endpoint
        now = perf_counter()  # one clock read for both the endpoint's and the request's latency
        ep.end_request(_HTTP_5XX if status >= 500 else _OK, now - self.try_t0)
        conn.ex = None
        self.upstream = None
        if reusable and self.request_done:
            conn.release()
        else:
            conn.close()
        self.finish(status, ep.key, now=now)
        self.client.exchange_done(self, self.close_client or not self.request_done)

    def response_aborted(self, conn: UpstreamConnection, reason: str = "upstream_reset_mid_response") -> None:
        """The upstream went away (or broke the protocol) mid-response: the client can only be told
        by closing."""
        conn.endpoint.end_request(Outcome.RESET, perf_counter() - self.try_t0)
        self.upstream = None
        self.p.stats.error(reason)
        self.finish(502, conn.endpoint.key)
        self.client.abort()

    # -- failures and retries -----------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        self.timer_token = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _release_try(self) -> None:
        """Let go of what the current try holds: its timer, its connect, its upstream connection. The
        connection is closed, not pooled: the try ended mid-message."""
        self._cancel_timer()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.ex = None
            conn.close()
            if self.client.paused & PAUSE_UPSTREAM:
                self.client.resume(PAUSE_UPSTREAM)  # the buffer that was full belongs to a closed connection

    def on_timeout(self) -> None:
        self.timer = None
        self.timer_token = 0
        if self.done:
            return
        reason = "deadline_exceeded" if self.p.loop.time() >= self.deadline - 0.001 else "upstream_timeout"
        self.try_failed(Outcome.TIMEOUT, reason, never_reached=False)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        if self.responded:
            self.response_aborted(conn)
        else:
            self.try_failed(Outcome.RESET, "upstream_reset", never_reached=False)

    def _can_retry(self, never_reached: bool) -> bool:
        p = self.p
        if self.responded or self.done or self.upgrading or self.tries > p.config.retries:
            return False
        if self.body_sent and not self.replayable:
            return False
        if p.loop.time() >= self.deadline:
            return False
        if never_reached:
            # Connect failures put no load on the upstream, so they do not spend the retry budget.
            return p.retry_connect
        return self.retryable_method and bool(p.cluster.retry_budget.can_retry())

    def try_failed(self, outcome: Outcome, reason: str, *, never_reached: bool, retry: bool = False) -> None:
        """This try is over without a usable response: retry if safe, else answer with the reason."""
        p = self.p
        self._release_try()
        ep = self.endpoint
        if ep is not None:
            ep.end_request(outcome, perf_counter() - self.try_t0)
            self.tried.append(ep)
            self.endpoint = None
        kind = {
            Outcome.CONNECT_FAILURE: "connect-failure",
            Outcome.RESET: "reset",
            Outcome.HTTP_5XX: "5xx",
            Outcome.TIMEOUT: "timeout",
        }.get(outcome, "")
        if retry or (
            reason != "deadline_exceeded"
            and (
                (never_reached and self._can_retry(True))
                or (not never_reached and kind in p.retry_on and self._can_retry(False))
            )
        ):
            p.stats.retry(reason)
            if self.body_sent:
                return self.fail(502, reason)  # cannot happen when replayable; kept as a guard
            backoff = self._backoff()
            if backoff > 0:
                p.loop.call_at(min(p.loop.time() + backoff, self.deadline), self.attempt)
            else:
                self.attempt()
            return
        status = 504 if outcome is Outcome.TIMEOUT else 502
        if outcome is Outcome.HTTP_5XX:
            reason = "upstream_5xx"
        self.fail(status, reason)

    def _backoff(self) -> float:
        cfg = self.p.config
        if cfg.retry_backoff_base_secs <= 0:
            return 0.0
        return jittered_backoff(
            len(self.tried) - 1, cfg.retry_backoff_base_secs, cfg.retry_backoff_max_secs, floor=FULL_JITTER
        )

    def fail(self, status: int, reason: str) -> None:
        """Answer with a response made here, naming `reason` in `x-ambassador-reason`."""
        if self.done:
            return
        self._cancel_timer()
        if self.responded:
            self.finish(status, "")
            self.client.abort()
            return
        client = self.client
        close = not self.keep_alive or not self.request_done or self.p.draining
        self.p.stats.error(reason)
        if not client.closed:
            client.transport.write(
                local_response(status, reason, close=close, request_id=self.rid, id_header=self.p.id_header)
            )
        self.finish(status, "", reason)
        client.exchange_done(self, close)

    def client_failed(self) -> None:
        """The client's byte stream broke mid-request: stop this exchange without a response."""
        self.abandon()
        if self.client.queue and self.client.queue[0] is self:
            self.client.queue.popleft()

    def abandon(self) -> None:
        """The client is gone: release everything this exchange holds."""
        if self.done:
            return
        self._release_try()
        if self.endpoint is not None and self.started:
            self.endpoint.end_request(Outcome.LOCAL_ERROR, perf_counter() - self.try_t0)
            self.endpoint = None
        self.p.stats.error("client_closed")
        self.finish(499, "", "client_closed")

    def finish(self, status: int, endpoint: str, reason: str = "", now: float = 0.0) -> None:
        if self.done:
            return
        self.done = True
        p = self.p
        if self.holds_request:
            self.holds_request = False
            p.cluster.breaker.release_request()
        elapsed = (now or perf_counter()) - self.t0  # `now`: the caller's perf_counter(), if it read one
        p.stats.request(endpoint, status, elapsed)
        log = p.access_log
        if log.enabled and (log.all or reason):
            log.request(self, status, endpoint, reason, elapsed)


class UpstreamConnection:
    """One keep-alive connection to an endpoint: parses responses and streams them to the client.

    It goes back to the pool only when the response ended cleanly at a message boundary with
    nothing after it: any byte the upstream sends while no request is outstanding (a body after a
    HEAD or 204 response, part of another head) closes it and reaches no client. A response
    therefore completes after llhttp has parsed the whole read, never inside a parser callback."""

    def __init__(self, proxy: HttpProxy, endpoint: Endpoint) -> None:
        self.p = proxy
        self.endpoint = endpoint
        self.pool = proxy.pool  # the pool of the TLS material it is opened with
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.idle_since = 0.0
        self.in_pool = False
        self.closed = False
        self.eof = False  # the upstream half-closed a tunnel
        self.in_head = False  # a response head is being parsed
        self.head_bytes = 0  # of that head: its reason phrase and complete fields
        self.head_pending = 0  # bytes fed since the head began in an earlier read (0: it began in this one)
        self.quiet = 0  # bytes of a chunked body fed since its last data: trailer fields, chunk framing
        self.hparts: list[bytes] = []
        self.clen: bytes | None = None
        self.te: bytes | None = None
        self.chunked_in = False
        self.upgrade: bytes | None = None
        self.tokens: list[bytes] = _NO_TOKENS
        self.reason = b""
        self.reason_more: list[bytes] = []  # the rest of a reason phrase that spans reads
        self.status = 0
        self.informational = False
        self.discard = False
        self.head_only = False  # a response to HEAD: complete at its head, whatever llhttp expects
        self.finished = False  # the final response is complete; the exchange is told after the read
        self.reusable = False  # ... and the upstream keeps the connection open
        self.failure = ""  # why a callback stopped llhttp
        self.body_mode = BODY_NONE
        self.out: list[bytes] = []
        self.tunnel: ClientConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.p.stats.upstream_opened(self.endpoint.key)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.p.stats.upstream_closed(self.endpoint.key)
        self.p.cluster.breaker.release_connection()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
            return
        ex = self.ex
        if ex is None:
            if self.in_pool:
                self.pool.discard(self)
            return
        self.ex = None
        if ex.responded and self.body_mode and self.clen is None and not self.chunked_in and exc is None:
            # A close-delimited body ends here: that is its normal end.
            self._flush(ex)
            if self.body_mode == BODY_CHUNKED:
                ex.client.transport.write(LAST_CHUNK)
            ex.response_complete(self, self.status, reusable=False)
            return
        ex.upstream_lost(self)

    def eof_received(self) -> bool:
        self.eof = True
        client = self.tunnel
        if client is not None:
            if client.eof or not client.transport.can_write_eof():
                return False  # both directions are over: close, connection_lost closes the client
            client.transport.write_eof()
            return True
        return False  # close our side too; connection_lost does the bookkeeping

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            self.tunnel.last_active = self.p.clock
            return
        ex = self.ex
        if ex is None:
            # Bytes while no request is outstanding answer nothing: the stream is out of step.
            self.p.stats.error("upstream_bytes_while_idle")
            self.close()
            return
        rest: bytes | None = None
        if self.in_head:
            # As on the client side: a head spanning reads is fed no further than its bound.
            room = self.p.max_header_bytes - self.head_pending
            if len(data) > room:
                rest = data[room:]
                data = data[:room]
            self.head_pending += len(data)
        elif self.chunked_in:
            if self.quiet > self.p.max_header_bytes:  # trailer fields, bounded as on the client side
                self._protocol_error(ex, "upstream_trailer_too_large")
                return
            self.quiet += len(data)
        try:
            self.parser.feed_data(data)
            if rest is not None and self.ex is ex:
                if self.head_pending:  # still the same head
                    self._protocol_error(ex, "upstream_head_too_large")
                    return
                data, rest = rest, None
                self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            # Only after a 101 to a request that asked for this upgrade (on_headers_complete refuses others).
            tail = data[exc.args[0] :] + rest if rest else data[exc.args[0] :]
            self._flush(ex)
            self.ex = None
            self._become_tunnel(ex, tail)
            return
        except HttpParserError:
            if self.ex is ex:
                self._protocol_error(ex, self.failure or "upstream_protocol_error")
            return
        if self.ex is not ex:
            return  # the response was discarded for a retry
        if self.finished:
            self.finished = False
            if self.head_only:
                self.head_only = False
                self.parser = HttpResponseParser(self)  # llhttp still waits for the body HEAD announced
            self._flush(ex)
            self.ex = None
            ex.response_complete(self, self.status, self.reusable)
            return
        if self.out:
            self._flush(ex)
        ex.client.last_active = self.p.clock

    def _protocol_error(self, ex: Exchange, reason: str) -> None:
        """The upstream broke HTTP/1.1: the connection is closed, its response never pooled."""
        self.ex = None
        if self.finished:
            # Bytes after a complete response: that response stands, the connection does not.
            self.finished = False
            self.p.stats.error(reason)
            self._flush(ex)
            ex.response_complete(self, self.status, reusable=False)
            self.close()
            return
        self.out = []
        if ex.responded:
            ex.response_aborted(self, reason)
        else:
            ex.try_failed(Outcome.RESET, reason, never_reached=False)
        self.close()

    def _fail(self, reason: str) -> NoReturn:
        self.failure = reason
        raise _Refused

    def _flush(self, ex: Exchange) -> None:
        out = self.out
        if out:
            self.out = []
            if len(out) == 1:
                ex.client.transport.write(out[0])
            elif len(out) == 2 and len(out[1]) <= SMALL_BODY:
                # Head and a small body: copying them into one bytes costs less than uvloop's
                # writelines path; large bodies are passed on uncopied.
                ex.client.transport.write(out[0] + out[1])
            else:
                ex.client.transport.writelines(out)

    def _become_tunnel(self, ex: Exchange, rest: bytes) -> None:
        client = ex.client
        ex.endpoint = None
        self.endpoint.end_request(Outcome.OK, perf_counter() - ex.try_t0)
        ex.upstream = None
        ex.finish(101, self.endpoint.key)
        if client.queue and client.queue[0] is ex:
            client.queue.popleft()
        self.tunnel = client
        if rest:
            client.transport.write(rest)
        client.start_tunnel(self)

    # -- parser callbacks -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # One request is outstanding at a time, so a second message after its response answers
        # nobody (a HEAD or 204 body, a smuggled response): refuse it before it is parsed.
        if self.ex is None or self.finished:
            self._fail("upstream_bytes_after_response")
        self.in_head = True
        self.head_bytes = 0

    def on_status(self, status: bytes) -> None:
        self.head_bytes += len(status)
        if self.head_bytes > self.p.max_header_bytes:
            self._fail("upstream_head_too_large")
        if self.reason:
            self.reason_more.append(status)  # the phrase spans reads: joined once, at the head's end
        else:
            self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.p.max_header_bytes:
            self._fail("upstream_head_too_large")
        kind = _RESP_KIND.get(name)
        if kind is None:
            lname = name.lower()
            kind = _RESP_KIND.get(lname, 5 if lname[:6] == b"proxy-" else 0)
        if kind == 0:
            self.hparts += (name, b": ", value, CRLF)
        elif kind == 1:
            self.clen = value
        elif kind == 2:
            self.te = value if self.te is None else self.te + b"," + value
        elif kind == 3:
            self.tokens = connection_tokens(value)
        elif kind == 4:
            self.upgrade = value

    def on_headers_complete(self) -> None:
        # The head's fields are taken and reset here, the framing fields (read until the body ends)
        # in on_message_complete.
        parts, tokens, reason, upgrade = self.hparts, self.tokens, self.reason, self.upgrade
        self.hparts = []
        self.tokens = _NO_TOKENS
        self.reason = b""  # llhttp calls on_status only for a non-empty reason phrase
        self.upgrade = None
        self.in_head = False
        self.head_pending = 0
        if self.reason_more:
            reason = b"".join([reason, *self.reason_more])
            self.reason_more = []
        ex = self.ex
        if ex is None:
            return
        code = self.status = self.parser.get_status_code()
        codings = b""
        if self.te is not None:
            self.chunked_in, codings = transfer_codings(self.te)
        if code < 200 or code > 599:
            if code < 100 or code > 599:
                self._fail("upstream_invalid_status")  # llhttp takes any three digits
            if code == 101:
                if not ex.upgrading:
                    self._fail("upstream_unsolicited_upgrade")  # RFC 9110 §15.2.2, as HAProxy
            else:
                self._interim(ex, code, reason, parts, tokens)
                return
        if codings and ex.http10 and not (ex.method == b"HEAD" or code == 204 or code == 304):
            self._fail("upstream_transfer_coding")  # HTTP/1.0 has no transfer codings to pass it on
        if tokens and not _PLAIN_TOKENS.issuperset(tokens):
            parts = _drop_listed(parts, tokens)
        parts.insert(0, status_line(code, reason))
        if not ex.response_head(self, code, parts, self.clen, codings, upgrade):
            self.discard = True
            return
        self.out.append(b"".join(parts))
        if ex.method == b"HEAD":
            # Complete now (RFC 9112 §6.3); llhttp cannot be told, so whatever it parses next is
            # treated as bytes after the response. Its keep-alive verdict would count on a body that
            # never comes: only the upstream's version and `close` decide.
            self.head_only = True
            self.finished = True
            self.reusable = b"close" not in tokens and self.parser.get_http_version() == "1.1"

    def _interim(self, ex: Exchange, code: int, reason: bytes, parts: list[bytes], tokens: list[bytes]) -> None:
        """A 1xx before the final response: passed to an HTTP/1.1 client (103 Early Hints, 102) as it
        arrives; a 100 is not, the proxy answers `Expect` itself."""
        if self.clen is not None or self.te is not None:
            self._fail("upstream_protocol_error")  # a 1xx has no content (RFC 9110 §15.2)
        self.informational = True
        if code == 100 or ex.http10 or ex.client.closed:
            return
        if tokens and not _PLAIN_TOKENS.issuperset(tokens):
            parts = _drop_listed(parts, tokens)
        parts.insert(0, status_line(code, reason))
        parts.append(CRLF)
        ex.client.transport.write(b"".join(parts))

    def on_body(self, body: bytes) -> None:
        self.quiet = 0
        if self.discard or self.ex is None:
            return
        if self.finished:
            self._fail("upstream_bytes_after_response")  # the body of a HEAD response
        if self.body_mode == BODY_CHUNKED:
            self.out += (b"%x\r\n" % len(body), body, CRLF)
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        self.clen = None
        self.te = None
        self.chunked_in = False
        self.quiet = 0
        if self.informational:
            self.informational = False
            return
        ex = self.ex
        if ex is None or self.discard or self.head_only:
            return
        if self.status == 101:
            return  # HttpParserUpgrade follows: the tunnel takes over
        if self.body_mode == BODY_CHUNKED:
            self.out.append(LAST_CHUNK)
        self.finished = True
        self.reusable = self.parser.should_keep_alive()  # valid only inside this callback

    # -- flow control and the pool ------------------------------------------------------------------

    def pause_writing(self) -> None:
        client = self.tunnel or (self.ex.client if self.ex is not None else None)
        if client is not None:
            client.pause(PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        client = self.tunnel or (self.ex.client if self.ex is not None else None)
        if client is not None:
            client.resume(PAUSE_UPSTREAM)

    def usable(self) -> bool:
        return not self.closed and not self.discard and self.tunnel is None and not self.transport.is_closing()

    def release(self) -> None:
        """Back to the pool; reading resumes so a close by the server is noticed while idle."""
        self.discard = False
        self.transport.resume_reading()
        self.pool.put(self, self.p.clock)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()


__all__ = ["ClientConnection", "Exchange", "HttpProxy", "UpstreamConnection"]
