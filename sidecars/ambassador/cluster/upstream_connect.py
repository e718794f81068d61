"""The one way HTTP/2 connections to an endpoint are opened: the data plane's and the gRPC health check's.

`open_h2` connects a protocol to an endpoint, bounded by the connect timeout, and says which protocol
the connection speaks. Today that is always HTTP/2 with prior knowledge (h2c); the day a cluster has
TLS settings, this is where the handshake offers ALPN `h2` (and `http/1.1` for `protocol: auto`) and
the answer picks the protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sidecars.ambassador.cluster.endpoint import Endpoint

H2C = "h2c"


async def open_h2(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol], endpoint: Endpoint, timeout_secs: float
) -> tuple[asyncio.Transport, str]:
    """A connection to `endpoint` with `factory()`'s protocol on it, and the protocol it speaks.
    OSError (TimeoutError included) when it cannot be opened in time."""
    async with asyncio.timeout(timeout_secs):
        transport, _ = await loop.create_connection(factory, endpoint.host, endpoint.port)
    return transport, H2C


__all__ = ["H2C", "open_h2"]
