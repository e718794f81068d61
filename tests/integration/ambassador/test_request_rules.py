"""What the ambassador makes of the app's requests: the head bound counts head bytes only, the Host
field and the request target as RFC 9112 §3.2 has them, per-request versions, refused codings and
methods. Where nginx shows the compatibility point, the same bytes go to nginx directly too."""

from __future__ import annotations

import asyncio
import contextlib

from tests.integration.ambassador.conftest import Proxy, raw_request, read_response
from tests.integration.ambassador.peers import nginx, read_head, tcp_server

LABELS = {"listener": "web", "cluster": "web"}


async def _post_with_head_in_two_reads(port: int, size: int) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Le")
    await writer.drain()
    await asyncio.sleep(0.05)  # shapes the bytes into two reads; nothing is asserted about time
    writer.write(b"ngth: %d\r\n\r\n" % size + b"b" * size)
    status, _, body = await asyncio.wait_for(read_response(reader), 10)
    writer.close()
    return status, body


async def test_a_post_whose_head_spans_two_reads_is_not_too_large(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (_, port):
        direct = await _post_with_head_in_two_reads(n1.port, 200_000)
        proxied = await _post_with_head_in_two_reads(port, 200_000)
    assert direct == proxied == (200, b"got 200000\n")


async def _pipelined(port: int, count: int) -> list[tuple[int, bytes]]:
    requests = []
    for i in range(count):
        request = b"GET /p/%04d HTTP/1.1\r\nHost: a\r\nX-Pad: " % i
        requests.append(request + b"p" * (73 - 4 - len(request)) + b"\r\n\r\n")
    assert {len(r) for r in requests} == {73}
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(requests))  # one write: reads full of requests, heads cut anywhere
    responses = []
    for _ in range(count):
        status, _, body = await asyncio.wait_for(read_response(reader), 10)
        responses.append((status, body))
    writer.close()
    return responses


async def test_5000_pipelined_requests_are_all_served_in_order(proxy: Proxy) -> None:
    expected = [(200, b"n1 /p/%04d\n" % i) for i in range(5000)]
    async with nginx("n1") as n1, proxy([n1.address]) as (_, port):
        assert await _pipelined(n1.port, 5000) == expected
        assert await _pipelined(port, 5000) == expected


async def test_a_head_trickling_in_many_reads_is_still_bounded(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address], max_header_bytes=4096) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
        answer = asyncio.ensure_future(read_response(reader))
        sent = 0
        while not answer.done() and sent < 1_000_000:  # one field that never ends, 1 KiB a read
            writer.write(b"v" * 1024)
            await writer.drain()
            sent += 1024
            await asyncio.sleep(0.005)
        status, headers, _ = await asyncio.wait_for(answer, 5)
        writer.close()
    assert (status, headers["x-ambassador-reason"]) == (431, "header_too_large")
    assert sent < 64 * 1024  # refused near the bound, not after the whole field


async def test_host_is_sent_once_with_hash_header_host(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address], hash_header="host", cluster={"balancer": "hash"}) as (_, port):
        ((status, _, body),) = await raw_request(port, b"GET /echo-headers HTTP/1.1\r\nHost: app\r\n\r\n")
    assert status == 200
    assert body.lower().count(b"\nhost:") == 1 and b"host: app\r\n" in body.lower()


async def test_absolute_form_target_names_the_host_and_goes_out_in_origin_form(proxy: Proxy) -> None:
    request = b"GET http://admin.internal/echo-headers?x=1 HTTP/1.1\r\nHost: app\r\n\r\n"
    async with nginx("n1") as n1:
        async with proxy([n1.address]) as (_, port):
            ((status, _, body),) = await raw_request(port, request)
            assert status == 200
            line, _, fields = body.partition(b"\r\n")
            assert line == b"GET /echo-headers?x=1 HTTP/1.1"
            assert fields.lower().count(b"host:") == 1 and b"host: admin.internal\r\n" in fields.lower()
            ((status, headers, _),) = await raw_request(port, b"GET http://user:pw@admin/ HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (status, headers["x-ambassador-reason"]) == (400, "bad_request_target")
        async with proxy([n1.address], host_rewrite="users.svc") as (_, port):
            ((status, _, body),) = await raw_request(port, request)
        assert status == 200
        assert body.startswith(b"GET /echo-headers?x=1 HTTP/1.1\r\n")
        assert body.lower().count(b"host:") == 1 and b"host: users.svc\r\n" in body.lower()


async def test_duplicate_host_is_400_as_nginx_does(proxy: Proxy) -> None:
    request = b"GET /echo-headers HTTP/1.1\r\nHost: app\r\nHost: admin.internal\r\n\r\n"
    async with nginx("n1") as n1, proxy([n1.address]) as (sc, port):
        ((direct, _, _),) = await raw_request(n1.port, request)
        ((status, headers, _),) = await raw_request(port, request)
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "duplicate_host"})
    assert direct == status == 400
    assert (headers["x-ambassador-reason"], headers["connection"], errors) == ("duplicate_host", "close", 1)


async def test_connection_header_cannot_drop_host(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (_, port):
        ((status, _, body),) = await raw_request(
            port, b"GET /echo-headers HTTP/1.1\r\nHost: app\r\nConnection: host, x-hop\r\nX-Hop: 1\r\n\r\n"
        )
    assert status == 200
    assert b"host: app\r\n" in body.lower() and b"x-hop" not in body.lower()


async def test_forwarded_names_the_client(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address], forwarded="forwarded") as (_, port):
        ((status, _, body),) = await raw_request(port, b"GET /echo-headers HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == 200 and b'forwarded: for="127.0.0.1"\r\n' in body.lower()


async def test_connect_is_405_and_never_hangs(proxy: Proxy) -> None:
    received: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        for target in (b"db.internal:5432", b"/x"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"CONNECT %s HTTP/1.1\r\nHost: db.internal:5432\r\n\r\nhello" % target)
            status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
            assert (status, headers["x-ambassador-reason"]) == (405, "connect_not_supported")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
    assert received == []


async def test_blank_lines_forever_hit_the_head_timeout(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address], request_header_timeout_secs=0.5) as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(read_response(reader))
        for _ in range(1000):  # at most 10 s of CRLF, never a request line
            if answer.done():
                break
            writer.write(b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
        status, headers, _ = await asyncio.wait_for(answer, 5)
        writer.close()
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "request_header_timeout"})
    assert (status, headers["connection"], errors) == (408, "close", 1)


async def test_http10_request_after_an_http11_one_gets_an_http10_response(proxy: Proxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"hello")
        writer.write(b"GET /b HTTP/1.0\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)  # until the proxy closes
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower()
    assert body == b"hello"


async def test_transfer_coding_other_than_chunked_is_501_as_nginx_does(proxy: Proxy) -> None:
    body = b"5\r\nhello\r\n0\r\n\r\n"
    request = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + body
    split = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    async with nginx("n1") as n1, proxy([n1.address]) as (sc, port):
        ((direct, _, _),) = await raw_request(n1.port, request)
        answers = [(await raw_request(port, r))[0] for r in (request, split)]
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "unsupported_transfer_coding"})
    assert direct == 501
    assert [(s, h["x-ambassador-reason"], h["connection"]) for s, h, _ in answers] == [
        (501, "unsupported_transfer_coding", "close")
    ] * 2
    assert errors == 2


async def test_endless_request_trailer_fields_are_bounded_like_a_head(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address], max_header_bytes=4096) as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: ")
        sent = 0
        try:
            while sent < 4_000_000:  # one trailer field that never ends, 1 KiB a read
                writer.write(b"t" * 1024)
                await writer.drain()
                sent += 1024
                await asyncio.sleep(0.002)
        except ConnectionError:
            pass  # closed by the proxy
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "trailer_too_large"})
    assert sent < 256 * 1024 and errors == 1
