"""Opening a connection to an endpoint, plain or TLS: the one place every upstream connection starts.

The HTTP/1.1 path, the TCP path and the active health checks all call `open_connection`, so TLS
(verification, SNI, client certificates, session resumption, pinning, the failure reasons) means
the same on each of them, and a protocol that needs ALPN reads the server's choice from its result.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.ambassador.cluster.upstream_tls import Alpn, UpstreamTls, UpstreamTlsError
from sidecars.core.tls import AlpnRefused, offering

__all__ = ["SHUTDOWN_TIMEOUT_SECS", "UpstreamTlsError", "open_connection"]

# asyncio waits 30 s by default for the peer's close_notify; a closed connection's descriptor and
# circuit-breaker slot are held that long.
SHUTDOWN_TIMEOUT_SECS = 5.0
# The alert a server sends when it speaks none of the protocols offered (RFC 7301), as OpenSSL names it
# in `reason` or, where the ssl module leaves that unset (OpenSSL 3), in the message.
_NO_PROTOCOL_ALERT = "TLSV1_ALERT_NO_APPLICATION_PROTOCOL"
_NO_PROTOCOL_TEXT = "alert no application protocol"


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    endpoint: Endpoint,
    tls: UpstreamTls | None,
    timeout_secs: float,
    alpn: Alpn | None = None,
) -> tuple[asyncio.Transport, str | None]:
    """Connect to `endpoint`, over TLS when `tls` is given, all within `timeout_secs` (the handshake too),
    offering `alpn` (unset: the TLS's default profile).

    Returns the transport (its protocol's `connection_made` has run) and the protocol the server
    chose through ALPN (None: plain, or no ALPN agreed). The protocol sees nothing of a failed
    handshake. Raises TimeoutError, OSError for the TCP connect, and UpstreamTlsError (an OSError)
    with `reason` `tls_verify`, `tls_alpn` (a required protocol not selected, or the server's
    no_application_protocol alert) or `tls_handshake` once TCP was up: in every case nothing was sent.
    """
    if tls is None:
        async with asyncio.timeout(timeout_secs):
            transport, _ = await loop.create_connection(protocol_factory, endpoint.host, endpoint.port)
        return transport, None
    context = tls.context(alpn)
    key = endpoint.key
    with offering(tls.session_for(key, context, alpn)) as attempt:
        try:
            async with asyncio.timeout(timeout_secs):
                transport, _ = await loop.create_connection(
                    protocol_factory,
                    endpoint.host,
                    endpoint.port,
                    ssl=context,
                    server_hostname=tls.settings.server_hostname(endpoint.host),
                    ssl_handshake_timeout=timeout_secs,
                    # A peer that never answers our close_notify holds the socket no longer than this.
                    ssl_shutdown_timeout=SHUTDOWN_TIMEOUT_SECS,
                )
        except AlpnRefused as exc:
            raise tls.failed(key, "tls_alpn", str(exc)) from None
        except ssl.SSLCertVerificationError as exc:
            raise tls.failed(key, "tls_verify", str(exc.verify_message or exc)) from None
        except ssl.SSLError as exc:
            if exc.reason == _NO_PROTOCOL_ALERT or _NO_PROTOCOL_TEXT in str(exc).lower():
                offered = ", ".join(sorted(context.required_alpn) or (alpn or tls.profiles[0]).offer)
                detail = f"the server speaks none of the protocols offered through ALPN ({offered})"
                raise tls.failed(key, "tls_alpn", detail) from None
            raise tls.failed(key, "tls_handshake", str(exc.reason or exc)) from None
        except (OSError, TimeoutError) as exc:
            if attempt.ssl_object is None:
                raise  # the TCP connect itself failed
            detail = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise tls.failed(key, "tls_handshake", detail) from None
    obj = transport.get_extra_info("ssl_object")
    tls.handshake_done(key, obj, alpn)
    return transport, obj.selected_alpn_protocol()
