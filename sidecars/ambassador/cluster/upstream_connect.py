"""The one way HTTP/2 connections to an endpoint are opened: the data plane's and the gRPC health check's.

`open_h2` connects a protocol to an endpoint, bounded by the connect timeout, and says which protocol
the connection speaks: HTTP/2 with prior knowledge (h2c) to a plain cluster; HTTP/2 over TLS to a
cluster with TLS settings, whose handshake offers ALPN `h2` and fails (`tls_alpn`, nothing sent) when
the server does not select it. There is no fallback: an HTTP/2 connection never becomes HTTP/1.1 or
plaintext behind the caller's back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sidecars.ambassador.cluster.connect import open_connection
from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.ambassador.cluster.upstream_tls import H2 as H2_ALPN
from sidecars.ambassador.cluster.upstream_tls import UpstreamTls

H2C = "h2c"
H2 = "h2"


async def open_h2(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    endpoint: Endpoint,
    timeout_secs: float,
    tls: UpstreamTls | None = None,
) -> tuple[asyncio.Transport, str]:
    """A connection to `endpoint` with `factory()`'s protocol on it, and the protocol it speaks (h2c or h2).
    OSError (TimeoutError included) when it cannot be opened in time; UpstreamTlsError (an OSError) with
    the reason when its TLS handshake fails or the server does not select h2."""
    if tls is None:
        async with asyncio.timeout(timeout_secs):
            transport, _ = await loop.create_connection(factory, endpoint.host, endpoint.port)
        return transport, H2C
    transport, _chosen = await open_connection(loop, factory, endpoint, tls, timeout_secs, H2_ALPN)
    return transport, H2


__all__ = ["H2", "H2C", "open_h2"]
