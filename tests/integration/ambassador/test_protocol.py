"""HTTP/1.1 through the ambassador against real nginx and small servers: framing, pipelining, bodies
larger than every buffer, upgrades, malformed input and hop-by-hop headers."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tests.integration.ambassador.conftest import Proxy, raw_request, read_response
from tests.integration.ambassador.peers import nginx, read_head, tcp_server


async def test_get_keepalive_and_pipelining_keep_order(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (_, port):
        requests = b"".join(
            b"GET /item/%d HTTP/1.1\r\nHost: app\r\n\r\n" % i for i in range(50)
        )  # one write: the proxy parses all 50 from a few reads
        responses = await raw_request(port, requests, count=50)
    assert [r[0] for r in responses] == [200] * 50
    assert [r[2] for r in responses] == [b"n1 /item/%d\n" % i for i in range(50)]


async def test_request_id_added_when_missing_and_kept_when_present(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (_, port):
        (_, _, added), (_, _, kept) = await raw_request(
            port,
            b"GET /echo-headers HTTP/1.1\r\nHost: app\r\n\r\n"
            b"GET /echo-headers HTTP/1.1\r\nHost: app\r\nX-Request-Id: abc-123\r\n\r\n",
            count=2,
        )
    assert b"x-request-id: " in added.lower()
    assert b"abc-123" in kept and kept.lower().count(b"x-request-id") == 1


async def test_hop_by_hop_headers_are_not_forwarded(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (_, port):
        ((status, _, body),) = await raw_request(
            port,
            b"GET /echo-headers HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, X-Secret-Hop\r\n"
            b"X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\n"
            b"Proxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\n",
        )
    assert status == 200
    lowered = body.lower()
    for name in (b"x-secret-hop", b"keep-alive:", b"te:", b"proxy-authorization", b"proxy-connection"):
        assert name not in lowered, name
    assert b"x-end-to-end: kept" in lowered


async def test_response_hop_by_hop_headers_are_stripped(proxy: Proxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: secret\r\nKeep-Alive: timeout=9\r\n"
                b"Proxy-Authenticate: Basic\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok"
            )

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        ((status, headers, body),) = await raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (status, body) == (200, b"ok")
    assert headers["x-public"] == "yes"
    assert not {"x-internal", "keep-alive", "proxy-authenticate"} & headers.keys()


async def test_chunked_upload_larger_than_buffers_streams_through(proxy: Proxy) -> None:
    size = 8 * 1024 * 1024  # well above max_retry_body_bytes and the transports' high-water marks
    seen = hashlib.sha256()
    got = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal got
        async for chunk in request.content.iter_chunked(65536):
            seen.update(chunk)
            got += len(chunk)
        return web.Response(text=str(got))

    app = web.Application(client_max_size=0)
    app.router.add_post("/upload", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        block = os.urandom(256 * 1024)
        for _ in range(size // len(block)):
            sent.update(block)
            yield block

    try:
        async with (
            proxy([f"127.0.0.1:{up}"]) as (_, port),
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/upload", data=body()) as resp,
        ):
            assert resp.status == 200
            assert await resp.text() == str(size)
    finally:
        await runner.cleanup()
    assert sent.hexdigest() == seen.hexdigest()


async def test_large_download_content_length_and_chunked(proxy: Proxy) -> None:
    payload = os.urandom(16 * 1024 * 1024)
    async with (
        nginx("n1", files={"big.bin": payload}) as n1,
        proxy([n1.address]) as (_, port),
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/files/big.bin") as resp,
    ):
        assert resp.status == 200
        digest = hashlib.sha256()
        async for chunk in resp.content.iter_chunked(1 << 16):
            digest.update(chunk)
            await asyncio.sleep(0)  # a slower reader: the proxy must pause, not buffer it all
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()

    # A chunked and a close-delimited response come out chunked to an HTTP/1.1 client.
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            if b"/close" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 300000)
                await writer.drain()
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(100):
                writer.write(b"1000\r\n" + b"y" * 4096 + b"\r\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        ((s1, h1, b1),) = await raw_request(port, b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        ((s2, h2, b2),) = await raw_request(port, b"GET /close HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (s1, h1["transfer-encoding"], b1) == (200, "chunked", b"y" * 409600)
    assert (s2, h2["transfer-encoding"], b2) == (200, "chunked", b"x" * 300000)


async def test_head_and_no_body_statuses_keep_the_connection_usable(proxy: Proxy) -> None:
    async with nginx("n1", files={"f.txt": b"12345"}) as n1, proxy([n1.address]) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /files/f.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /files/f.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = await asyncio.wait_for(read_response(reader, head_only=True), 5)
        assert (status, headers["content-length"]) == (200, "5")
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        assert (status, body) == (200, b"12345")
        writer.close()


async def test_expect_100_continue(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
    assert status == 200 and body == b"got 5\n"


async def test_malformed_requests_get_400_and_do_not_disturb_others(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (sc, port):
        good_reader, good_writer = await asyncio.open_connection("127.0.0.1", port)
        good_writer.write(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(good_reader))[0] == 200
        bad_inputs = [
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost a\r\n\r\n",  # header without colon
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
            b"GET /\x00 HTTP/1.1\r\n\r\n",
        ]
        for data in bad_inputs:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
            assert status == 400, data
            assert headers["connection"] == "close"
            assert await reader.read() == b""  # closed after the answer
            writer.close()
        ((status, headers, _),) = await raw_request(
            port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
        )
        assert (status, headers["x-ambassador-reason"]) == (431, "header_too_large")
        # The connection opened before is untouched and keeps working.
        good_writer.write(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, body = await read_response(good_reader)
        assert (status, body) == (200, b"n1 /two\n")
        good_writer.close()
        labels = {"listener": "web", "cluster": "web"}
        assert sc.sample("ambassador_errors_total", {**labels, "reason": "bad_request"}) == 5
        assert sc.sample("ambassador_errors_total", {**labels, "reason": "header_too_large"}) == 1


async def test_pipelined_request_after_garbage_answers_earlier_ones_first(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (_, port):
        responses = await raw_request(port, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP\r\n\r\n", count=2)
    assert [r[0] for r in responses] == [200, 400]


async def test_websocket_echo_through_the_proxy(proxy: Proxy) -> None:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            proxy([f"127.0.0.1:{up}"]) as (_, port),
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            for i in range(20):
                await ws.send_str(f"m{i}")
                assert (await ws.receive_str(timeout=5)) == f"echo:m{i}"
            big = "x" * 300000
            await ws.send_str(big)
            assert (await ws.receive_str(timeout=5)) == "echo:" + big
    finally:
        await runner.cleanup()


async def test_http10_client_gets_close_delimited_body(proxy: Proxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)  # until the proxy closes
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and b"connection: close" in head.lower()
    assert body == b"hello"


async def test_response_without_reason_phrase_and_split_heads(proxy: Proxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            for piece in (b"HTTP/1.1 2", b"04\r\nX-A: 1\r\n", b"\r\n"):  # no reason phrase, head in pieces
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET /a HTTP/1.1\r\nHo")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"st: a\r\n\r\n")  # the request head in pieces too
            status, headers, body = await asyncio.wait_for(read_response(reader), 5)
            assert (status, headers["x-a"], body) == (204, "1", b"")
        writer.close()


async def test_a_client_that_stops_reading_does_not_make_the_proxy_buffer_the_body(proxy: Proxy) -> None:
    payload = os.urandom(32 * 1024 * 1024)
    async with nginx("n1", files={"big.bin": payload}) as n1, proxy([n1.address]) as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /files/big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(1.0)  # we read nothing: kernel buffers fill, then the proxy must pause nginx
        (client,) = sc.plugin.listeners[0].proxy.clients
        buffered = client.transport.get_write_buffer_size()
        assert buffered < 1024 * 1024, buffered  # bounded by the high-water mark, not by the 32 MiB body
        _, _, body = await asyncio.wait_for(read_response(reader), 30)  # and it resumes when we read
        writer.close()
    assert len(body) == len(payload) and body == payload
