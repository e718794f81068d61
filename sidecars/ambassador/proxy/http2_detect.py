"""HTTP/1.1 and HTTP/2 on one port, told apart by the first bytes: HTTP/2 with prior knowledge opens
with its connection preface (RFC 9113 §3.4), which no HTTP/1.1 request line can begin with past
its first bytes (`PRI * HTTP/2.0` is reserved for that use).

`Detect` is a connection's first protocol: once the bytes read differ from the preface, or the
whole preface has arrived, it hands the transport to the HTTP/1.1 or the HTTP/2 protocol and feeds
it what it read; from then on the event loop calls that protocol directly, so detection costs one
callback per connection, none per request. Until then the connection counts as a client
connection, and one that has not told within the request header timeout is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from sidecars.ambassador.cluster.http2_frames import PREFACE

if TYPE_CHECKING:
    from sidecars.ambassador.proxy.stats import ListenerStats

Factory = Callable[[], asyncio.BaseProtocol]


class Detect(asyncio.Protocol):
    __slots__ = ("head", "http1", "http2", "stats", "timeout", "timer", "transport")

    def __init__(self, http1: Factory, http2: Factory, stats: ListenerStats, timeout_secs: float) -> None:
        self.http1 = http1
        self.http2 = http2
        self.stats = stats
        self.timeout = timeout_secs
        self.head = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.client_connections += 1
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._silent)

    def _silent(self) -> None:
        self.timer = None
        self.stats.error("request_header_timeout")
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        head = self.head + data
        size = min(len(head), len(PREFACE))
        if head[:size] != PREFACE[:size]:
            self._hand_off(self.http1, head)
        elif size == len(PREFACE):
            self._hand_off(self.http2, head)
        else:
            self.head = head  # a prefix of the preface: under 24 bytes held

    def eof_received(self) -> bool | None:
        if self.head and self.transport is not None:
            protocol = self._hand_off(self.http1, self.head)
            return protocol.eof_received()  # type: ignore[attr-defined,no-any-return]
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    def _release(self) -> None:
        if self.transport is not None:
            self.transport = None
            self.stats.client_connections -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _hand_off(self, factory: Factory, head: bytes) -> asyncio.BaseProtocol:
        transport = self.transport
        assert transport is not None
        self._release()
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self.head = b""
        protocol.data_received(head)  # type: ignore[attr-defined]
        return protocol


def detecting(http1: Factory, http2: Factory, stats: ListenerStats, timeout_secs: float) -> Factory:
    """The protocol factory of a port that speaks both."""

    def make() -> asyncio.BaseProtocol:
        return Detect(http1, http2, stats, timeout_secs)

    return make


__all__ = ["Detect", "detecting"]
