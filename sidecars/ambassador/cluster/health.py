"""Active health checks: one probe of one endpoint (TCP connect, HTTP GET, gRPC Health/Check, redis
PING, memcached version), bounded by a timeout.

The probe opens a fresh connection each time (`Connection: close`), so it tests what a new request
would meet; it never shares the data plane's pooled connections. The cluster owns the schedule and
the thresholds (see `Cluster._on_check`).
"""

from __future__ import annotations

import asyncio
import contextlib

from sidecars.ambassador.cluster import grpc_health
from sidecars.ambassador.cluster.config import HealthCheckConfig
from sidecars.ambassador.cluster.connect import UpstreamTlsError, open_connection
from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.ambassador.cluster.upstream_tls import HTTP1, UpstreamTls

# The status line of a check answer must fit in this; headers and body are never read.
MAX_STATUS_LINE_BYTES = 4096


async def probe(
    config: HealthCheckConfig, endpoint: Endpoint, password: bytes | None = None, *, tls: UpstreamTls | None = None
) -> str | None:
    """None if the endpoint passes, else a short reason ("connect: refused", "status 503", "timeout",
    "tls_verify: ..."). `password`: redis checks authenticate with it first (it never appears in a
    reason); `tls`: the cluster's, so a check meets what a request would (and a TCP check is a handshake)."""
    try:
        async with asyncio.timeout(config.timeout_secs):
            return await _probe(config, endpoint, password, tls)
    except TimeoutError:
        return f"timeout after {config.timeout_secs}s"


async def _probe(
    config: HealthCheckConfig, endpoint: Endpoint, password: bytes | None, tls: UpstreamTls | None
) -> str | None:
    if config.kind == "grpc":
        return await grpc_health.probe(config, endpoint, tls)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_STATUS_LINE_BYTES, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    try:
        # An HTTP check is an HTTP/1.1 request, whatever the cluster's protocol: it offers http/1.1.
        alpn = HTTP1 if config.kind == "http" and tls is not None and HTTP1 in tls.profiles else None
        transport, _ = await open_connection(loop, lambda: protocol, endpoint, tls, config.timeout_secs, alpn)
    except UpstreamTlsError as exc:
        return str(exc)[:200]
    except OSError as exc:
        return f"connect: {exc.strerror or exc}"
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    try:
        if config.kind == "tcp":
            return None
        if config.kind == "redis":
            return await _redis_ping(reader, writer, password)
        if config.kind == "memcached":
            writer.write(b"version\r\n")
            line = await _line(reader)
            return None if line.startswith(b"VERSION ") else f"version answered {line[:60]!r}"
        host = config.host_header or endpoint.key
        writer.write(
            f"GET {config.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sidecars-ambassador-health\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError:
            return "connection closed before a status line"
        except asyncio.LimitOverrunError:
            return "status line too long"
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return f"not an HTTP answer: {line[:60]!r}"
        status = int(parts[1])
        if status not in config.expected_statuses:
            return f"status {status}"
        return None
    except OSError as exc:
        return f"io: {exc.strerror or exc}"
    except asyncio.IncompleteReadError:
        return "connection closed before an answer"
    except asyncio.LimitOverrunError:
        return "answer line too long"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _line(reader: asyncio.StreamReader) -> bytes:
    return (await reader.readuntil(b"\r\n"))[:-2]


async def _redis_ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: bytes | None) -> str | None:
    # PING answers -LOADING while a restarted server reads its data set: not up yet, as intended.
    if password is not None:
        writer.write(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password))
    writer.write(b"*1\r\n$4\r\nPING\r\n")
    if password is not None:
        line = await _line(reader)
        if line != b"+OK":
            return f"AUTH answered {line[:60]!r}"
    line = await _line(reader)
    return None if line == b"+PONG" else f"PING answered {line[:60]!r}"
