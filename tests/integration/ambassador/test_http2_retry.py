"""Retries on the HTTP/2 path: a retried 5xx leaves nothing of itself in the next try's answer (body,
trailers, flow-control credit), and a 5xx that is not retried reaches the app as the upstream sent it.
Each client (h2c, HTTP/1.1) and each upstream protocol (h2c, HTTP/1.1) the stream splices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import h2.events
import pytest

from tests.integration.ambassador.conftest import proxy, raw_request  # noqa: F401  (fixture)
from tests.integration.ambassador.h2_client import RawH2
from tests.integration.ambassador.h2_upstream import h2_upstream

pytestmark = pytest.mark.timeout(60)

RETRY = {"retries": 2, "retry_backoff_base_secs": 0, "retry_on": ["5xx"]}
NO_EJECTION = {"outlier": {"consecutive_errors": 0, "consecutive_connect_failures": 0}}


def h2c_get(port: int) -> tuple[dict[bytes, bytes], bytes, list[tuple[bytes, bytes]] | None, list[str]]:
    """One GET over h2c: the response head, body, trailers, and the kinds of events seen."""
    raw = RawH2(port)
    try:
        raw.conn.send_headers(
            1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/x")], end_stream=True
        )
        raw.flush()
        events = raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded | h2.events.StreamReset))
    finally:
        raw.close()
    head = next((dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)), {})
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    trailers = next((list(e.headers) for e in events if isinstance(e, h2.events.TrailersReceived)), None)
    return head, body, trailers, [type(e).__name__ for e in events]


async def test_a_retried_5xx_leaves_no_body_or_trailers_in_the_h2c_answer(proxy: Any) -> None:  # noqa: F811
    async with (
        h2_upstream("up", "5xx-once") as up,
        proxy([up.address], **RETRY, cluster={"protocol": "http2", **NO_EJECTION}) as (_, port),
    ):
        head, body, trailers, kinds = await asyncio.to_thread(h2c_get, port)
    assert head.get(b":status") == b"200", kinds
    assert b"x-try" not in head
    assert body == b"real\n"
    assert trailers is None, trailers  # the 503's trailers stay with the 503
    assert "StreamEnded" in kinds and "StreamReset" not in kinds
    assert up.streams == 2


async def test_a_retried_5xx_leaves_nothing_in_the_http1_answer_from_an_h2c_upstream(proxy: Any) -> None:  # noqa: F811
    async with (
        h2_upstream("up", "5xx-once") as up,
        proxy([up.address], **RETRY, cluster={"protocol": "http2", **NO_EJECTION}) as (_, port),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            body = await asyncio.wait_for(reader.readuntil(b"0\r\n"), 10)
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"5\r\nreal\n\r\n0\r\n"  # one chunk: the 200's, nothing of the 503 before it
    assert rest == b"\r\n"  # and no trailers
    assert up.streams == 2


@contextlib.asynccontextmanager
async def http1_5xx_once() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP/1.1 upstream: the first request answered 503 with a chunked body and trailers, the
    others 200 `real\\n` with a length. Yields its address and the request heads it read."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
                if len(heads) == 1:
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nTrailer: x-sorry\r\n\r\n"
                        b"f\r\nSORRY-503-BODY\n\r\n0\r\nx-sorry: yes\r\n\r\n"
                    )
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nreal\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", heads
    finally:
        server.close()


async def test_a_retried_5xx_from_an_http1_upstream_leaves_nothing_in_the_h2c_answer(proxy: Any) -> None:  # noqa: F811
    async with http1_5xx_once() as (address, heads), proxy([address], **RETRY, cluster=NO_EJECTION) as (_, port):
        head, body, trailers, kinds = await asyncio.to_thread(h2c_get, port)
    assert head.get(b":status") == b"200", kinds
    assert head.get(b"content-length") == b"5"
    assert body == b"real\n"
    assert trailers is None, trailers
    assert "StreamEnded" in kinds and "StreamReset" not in kinds
    assert len(heads) == 2


async def test_a_5xx_not_retried_reaches_the_h2c_client_as_the_upstream_sent_it(proxy: Any) -> None:  # noqa: F811
    async with (
        h2_upstream("up", "always-500") as up,
        proxy([up.address], **RETRY, cluster={"protocol": "http2", **NO_EJECTION}) as (_, port),
    ):
        head, body, trailers, kinds = await asyncio.to_thread(h2c_get, port)
    assert head.get(b":status") == b"500", (head, body)
    assert head[b"retry-after"] == b"7" and head[b"content-type"] == b"application/json"
    assert b"x-ambassador-reason" not in head
    assert body == b'{"error":"db down"}'
    assert trailers is None and "StreamEnded" in kinds
    assert up.streams == 3  # the first try and two retries, the last one's answer passed on


async def test_a_5xx_not_retried_reaches_the_http1_client_as_the_h2c_upstream_sent_it(proxy: Any) -> None:  # noqa: F811
    async with (
        h2_upstream("up", "always-500") as up,
        proxy([up.address], **RETRY, cluster={"protocol": "http2", **NO_EJECTION}) as (_, port),
    ):
        ((status, headers, body),) = await raw_request(port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == 500, (headers, body)
    assert headers["retry-after"] == "7" and headers["content-type"] == "application/json"
    assert "x-ambassador-reason" not in headers
    assert body == b'{"error":"db down"}'
    assert up.streams == 3
