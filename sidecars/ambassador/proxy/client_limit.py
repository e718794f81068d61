"""The cap on client connections across all listeners, so the process never reaches its open-file limit.

At the limit `accept()` fails for every socket of the process: app requests, upstream connects and
the admin server's `/livez` all fail together and nothing is logged. Each client connection may need
an upstream connection as well (always in tcp mode, per request in http mode), so the default cap is
half of what the open-file limit leaves after a reserve for the admin server, health checks, discovery
and the process itself; HAProxy derives its default `maxconn` from `ulimit -n` the same way.

Beyond the cap a new connection is accepted and closed at once, as Envoy and nginx do: an http client
first gets `503` with `x-ambassador-reason: client_connection_limit`, a tcp client just sees the close.
(HAProxy stops accepting instead and lets connections wait in the kernel's backlog; asyncio has no
public way to pause a listening socket, and an app that leaks connections would then hang rather than
fail.) Each refusal is counted by listener; the first one is logged, then at most one line every
`LOG_INTERVAL_SECS` with the number refused in between.

The check runs when a connection is made, not when it is accepted: the event loop accepts a whole
burst before any `connection_made`, so only then is the count of open connections exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sidecars.core.limits import open_file_limit

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from sidecars.ambassador.proxy.stats import ListenerStats

# Descriptors kept out of the client cap: the admin server and its probes, health checks, DNS,
# the endpoints-file watcher, listening sockets, the event loop and the interpreter's own.
MIN_RESERVED_FDS = 64
LOG_INTERVAL_SECS = 10.0
REFUSED = "max_client_connections"


def reserved_fds(limit: int) -> int:
    """Descriptors left for everything but client connections and their upstream connections."""
    return max(MIN_RESERVED_FDS, limit // 16)


def default_max_client_connections(limit: int | None = None) -> int:
    """Client connections the open-file limit allows: two descriptors each, after the reserve."""
    limit = open_file_limit() if limit is None else limit
    return max(1, (limit - reserved_fds(limit)) // 2)


class ClientLimit:
    """Client connections open across the listeners (each listener's own gauge), against the cap."""

    def __init__(self, max_connections: int, log: FilteringBoundLogger) -> None:
        self.max_connections = max_connections
        self.listeners: list[ListenerStats] = []
        self._log = log
        self._next_log = 0.0
        self._unlogged = 0

    def open(self) -> int:
        return sum(stats.client_connections for stats in self.listeners)

    def status(self) -> str | None:
        """A warn check: say so while new connections are being refused."""
        if self.open() < self.max_connections:
            return None
        return f"at max_client_connections ({self.max_connections}): new client connections are refused"

    def gate(
        self, factory: Callable[[], asyncio.BaseProtocol], stats: ListenerStats, refusal: bytes = b""
    ) -> Callable[[], asyncio.BaseProtocol]:
        """The protocol factory to serve with: `factory`'s protocols while under the cap; beyond it,
        `refusal` is written and the connection closed."""
        if stats not in self.listeners:
            self.listeners.append(stats)

        def admit() -> asyncio.BaseProtocol:
            return _Gate(self, factory, stats, refusal)

        return admit

    def refuse(self, stats: ListenerStats) -> None:
        stats.refused(REFUSED)
        now = time.monotonic()
        if now < self._next_log:
            self._unlogged += 1
            return
        self._next_log = now + LOG_INTERVAL_SECS
        self._log.warning(
            "client connection refused: max_client_connections reached",
            listener=stats.listener,
            max_client_connections=self.max_connections,
            refused_since_last_line=self._unlogged + 1,
        )
        self._unlogged = 0


class _Gate(asyncio.Protocol):
    """A new connection's first protocol: admits it (hands the transport to the real protocol) or refuses it."""

    __slots__ = ("factory", "limit", "refusal", "stats")

    def __init__(
        self, limit: ClientLimit, factory: Callable[[], asyncio.BaseProtocol], stats: ListenerStats, refusal: bytes
    ) -> None:
        self.limit = limit
        self.factory = factory
        self.stats = stats
        self.refusal = refusal

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limit = self.limit
        if limit.open() >= limit.max_connections:
            limit.refuse(self.stats)
            if self.refusal:
                transport.write(self.refusal)  # type: ignore[attr-defined]
            transport.close()
            return
        protocol = self.factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
