"""HTTP/1.1 apps in front of HTTP/2 endpoints (`protocol: http2`): requests become streams, headers
translated as RFC 9113 §8 requires, responses framed back for HTTP/1.1."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.events
import pytest

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import run_sidecar
from tests.integration.ambassador.conftest import listener, raw_request
from tests.integration.ambassador.h2_client import RawH2
from tests.integration.ambassador.h2_upstream import h2_upstream
from tests.integration.ambassador.peers import nginx
from tests.integration.ambassador.test_h2load import h2c_nginx

pytestmark = pytest.mark.timeout(60)


async def test_http1_requests_reach_an_h2c_upstream_with_headers_translated() -> None:
    async with h2_upstream("up", mode="body") as up:
        config = listener([up.address], cluster={"protocol": "http2"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            port = sc.plugin.listeners[0].port
            request = (
                b"POST /submit?x=1 HTTP/1.1\r\nHost: api.local\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n"
                b"Keep-Alive: timeout=5\r\nTE: trailers, gzip\r\nX-Custom: Yes\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n"
                b"GET /second HTTP/1.1\r\nHost: api.local\r\n\r\n"
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            first_response = await asyncio.wait_for(reader.readuntil(b"0\r\nx-checksum: abc\r\n\r\n"), 10)
            second_response = await asyncio.wait_for(reader.readuntil(b"0\r\nx-checksum: abc\r\n\r\n"), 10)
            writer.close()
    head, _, body = first_response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head  # the upstream sent no content-length
    assert body == b"d\r\nhello from up\r\n0\r\nx-checksum: abc\r\n\r\n"  # its trailers in the last chunk
    assert second_response.startswith(b"HTTP/1.1 200 OK\r\n")  # the same keep-alive connection, a second stream
    first = dict(up.requests[0])
    assert first[b":method"] == b"POST" and first[b":path"] == b"/submit?x=1"
    assert first[b":authority"] == b"api.local" and first[b":scheme"] == b"http"
    assert first[b"x-custom"] == b"Yes"  # lower-case name, value as sent
    assert first[b"te"] == b"trailers"
    for name in (b"host", b"connection", b"keep-alive", b"transfer-encoding", b"x-hop"):
        assert name not in first, name
    assert dict(up.requests[1])[b":path"] == b"/second"


async def test_http1_and_h2c_clients_on_one_port_both_reach_h2c_nginx() -> None:
    async with h2c_nginx("n1") as n1:
        config = listener([n1.address], cluster={"protocol": "http2"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            port = sc.plugin.listeners[0].port
            ((status, headers, body),) = await raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            proc = await asyncio.create_subprocess_exec(
                "h2load", "-n", "10", "-c", "1", f"http://127.0.0.1:{port}/", stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert (status, body) == (200, b"n1\n") and headers["x-served-by"] == "n1"
    assert b"10 succeeded, 0 failed" in out


async def test_h2c_clients_reach_http1_upstreams() -> None:
    async with nginx("n1") as n1:
        config = listener([n1.address])  # protocol: http1, the default
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            port = sc.plugin.listeners[0].port
            proc = await asyncio.create_subprocess_exec(
                "h2load",
                "-n",
                "200",
                "-c",
                "2",
                "-m",
                "10",
                f"http://127.0.0.1:{port}/hello",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)

            def one() -> list[Any]:
                raw = RawH2(port)
                try:
                    raw.conn.send_headers(
                        1,
                        [
                            (b":method", b"GET"),
                            (b":scheme", b"http"),
                            (b":authority", b"app.local"),
                            (b":path", b"/echo-headers"),
                            (b"x-custom", b"v"),
                        ],
                        end_stream=True,
                    )
                    raw.flush()
                    return raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded))
                finally:
                    raw.close()

            events = await asyncio.to_thread(one)
    assert b"200 succeeded, 0 failed" in out, out
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    head = next(dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived))
    assert head[b":status"] == b"200"
    assert b"connection" not in head and b"keep-alive" not in head  # forbidden in HTTP/2
    assert b"GET /echo-headers HTTP/1.1" in body
    assert b"host: app.local" in body and b"x-custom: v" in body  # :authority became Host
