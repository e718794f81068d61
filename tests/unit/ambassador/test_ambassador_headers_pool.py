from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidecars.ambassador.proxy import headers
from sidecars.ambassador.proxy.headers import (
    RequestIds,
    connection_tokens,
    forwarded_for,
    is_hop_by_hop,
    local_response,
    split_absolute_target,
    status_line,
    transfer_codings,
)
from sidecars.ambassador.proxy.pool import Pool


def test_hop_by_hop_fields() -> None:
    for name in (b"connection", b"keep-alive", b"te", b"transfer-encoding", b"upgrade", b"proxy-authorization"):
        assert is_hop_by_hop(name)
    for name in (b"host", b"content-type", b"x-request-id", b"authorization"):
        assert not is_hop_by_hop(name)
    assert connection_tokens(b"Keep-Alive, X-Foo ,close") == [b"keep-alive", b"x-foo", b"close"]
    assert connection_tokens(b"close") == [b"close"]


def test_local_response_names_the_reason_and_frames_itself() -> None:
    raw = local_response(503, "no_healthy_upstream", close=False, request_id=b"r-1")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"x-ambassador-reason: no_healthy_upstream" in head
    assert b"x-request-id: r-1" in head and b"connection: keep-alive" in head
    assert b"content-length: %d" % len(body) in head
    assert b"connection: close" in local_response(502, "connect_failed", close=True)
    assert status_line(200, b"OK") == b"HTTP/1.1 200 OK\r\n"


def test_status_line_cache_keeps_only_short_lines() -> None:
    headers._STATUS_LINES.clear()
    for i in range(2000):
        assert status_line(200, b"r%d" % i + b"x" * 100) == b"HTTP/1.1 200 r%d%s\r\n" % (i, b"x" * 100)
    assert not headers._STATUS_LINES  # long reasons are answered, never kept
    for i in range(2000):
        status_line(200, b"r%d" % i)
    assert len(headers._STATUS_LINES) == headers.STATUS_LINE_CACHE_SIZE


def test_absolute_form_targets_split_into_authority_and_origin_form() -> None:
    assert split_absolute_target(b"http://admin.internal/secret?x=1") == (b"admin.internal", b"/secret?x=1")
    assert split_absolute_target(b"HTTPS://a.b:8443") == (b"a.b:8443", b"/")
    assert split_absolute_target(b"http://a.b?q=/x") == (b"a.b", b"/?q=/x")
    for bad in (b"http:///path", b"http://user:pw@a.b/", b"ftp://a.b/", b"a.b:443", b"*"):
        assert split_absolute_target(bad) is None, bad


def test_forwarded_for_brackets_ipv6_only_in_forwarded() -> None:
    assert forwarded_for("::1", rfc7239=True) == b"[::1]"  # RFC 7239 §6: for="[::1]"
    assert forwarded_for("::1", rfc7239=False) == b"::1"  # X-Forwarded-For writes it bare
    assert forwarded_for("127.0.0.1", rfc7239=True) == b"127.0.0.1"


def test_transfer_codings_keep_everything_but_a_final_chunked() -> None:
    assert transfer_codings(b"chunked") == (True, b"")
    assert transfer_codings(b"gzip, chunked") == (True, b"gzip")
    assert transfer_codings(b"gzip") == (False, b"gzip")
    assert transfer_codings(b"chunked, gzip") == (False, b"chunked, gzip")  # close-delimited (RFC 9112 §6.3)


def test_request_ids_are_unique() -> None:
    ids = RequestIds()
    assert len({ids.next() for _ in range(1000)}) == 1000


@dataclass(eq=False)
class _Endpoint:
    key: str
    draining: bool = False


@dataclass(eq=False)
class _Conn:
    endpoint: _Endpoint
    idle_since: float = 0.0
    in_pool: bool = False
    alive: bool = True
    closed: list[bool] = field(default_factory=list)

    def usable(self) -> bool:
        return self.alive

    def close(self) -> None:
        self.alive = False
        self.closed.append(True)


def test_pool_is_lifo_bounded_and_expires_idle_connections() -> None:
    ep = _Endpoint("a:1")
    pool: Any = Pool(max_idle_per_endpoint=2, idle_timeout_secs=10.0)  # fed stand-ins, typed loosely
    c1, c2, c3 = _Conn(ep), _Conn(ep), _Conn(ep)
    pool.put(c1, now=0.0)
    pool.put(c2, now=5.0)
    pool.put(c3, now=6.0)  # over the bound: closed
    assert c3.closed and pool.idle_count() == 2
    pool.sweep(now=12.0)  # c1 idle 12 s: expired; c2 idle 7 s: kept
    assert c1.closed and not c2.closed
    assert pool.take(ep) is c2
    assert pool.take(ep) is None


def test_pool_skips_dead_connections_and_draining_endpoints() -> None:
    ep = _Endpoint("a:1")
    pool: Any = Pool(max_idle_per_endpoint=8, idle_timeout_secs=10.0)
    old, dead = _Conn(ep), _Conn(ep)
    pool.put(old, now=0.0)
    pool.put(dead, now=1.0)
    dead.alive = False  # the server closed it while idle
    assert pool.take(ep) is old
    ep.draining = True
    pool.put(old, now=2.0)
    assert old.closed and pool.idle_count() == 0
