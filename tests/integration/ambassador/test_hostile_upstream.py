"""Upstreams that break HTTP/1.1 on purpose: unsolicited upgrades, bytes after a complete response,
endless heads, bad status codes. Whatever they send, no byte of one response may reach another
client, and a connection that saw it must never be reused."""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
from collections.abc import Callable

from sidecars.testing import http_get
from tests.integration.ambassador.conftest import Proxy, raw_request, read_response
from tests.integration.ambassador.peers import read_head, tcp_server

LABELS = {"listener": "web", "cluster": "web"}


async def _until(condition: Callable[[], bool], secs: float = 5.0) -> None:
    """Wait for `condition`, failing after `secs` (a state change, not a timing claim)."""
    for _ in range(int(secs / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_unsolicited_101_is_a_502_and_the_connection_never_carries_another_request(proxy: Proxy) -> None:
    after_101: list[bytes] = []  # what the upstream received on a connection after its 101

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            if b"/switch" in head:  # a plain GET, answered as if it had asked to upgrade
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: evil\r\n\r\n")
                after_101.append(await reader.read(65536))
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"], retries=0) as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /switch HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
        assert (status, headers["x-ambassador-reason"]) == (502, "upstream_unsolicited_upgrade")
        # Another client's request, credentials included, goes to a connection of its own.
        ((status2, _, body2),) = await raw_request(
            port, b"GET /private HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n\r\n"
        )
        assert (status2, body2) == (200, b"ok")
        # The first client got a complete answer, not a tunnel: its connection goes on as HTTP.
        writer.write(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await asyncio.wait_for(read_response(reader), 5))[::2] == (200, b"ok")
        writer.close()
        await _until(lambda: bool(after_101))
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "upstream_unsolicited_upgrade"})
    assert after_101 == [b""]  # the proxy closed it: no request, no Authorization, no client bytes
    assert errors == 1


def _upgrade_upstream(upstream_closes_first: Callable[[bytes], bool]) -> Callable[..., object]:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if b"upgrade: test" not in head.lower():
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await reader.read()
            return
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
        while data := await reader.read(65536):
            if data == b"reset":  # an error: linger 0 makes the close a reset, not an EOF
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            writer.write(b"echo:" + data)
            if upstream_closes_first(data):
                break
        writer.close()  # a normal end, both ways: as a WebSocket closing handshake ends

    return upstream


async def test_upgraded_sessions_release_every_slot_once_both_sides_closed(proxy: Proxy) -> None:
    max_connections = 3
    upstream = _upgrade_upstream(lambda data: data == b"bye")
    async with (
        tcp_server(upstream) as up,  # type: ignore[arg-type]
        proxy([f"127.0.0.1:{up}"], cluster={"circuit_breaker": {"max_connections": max_connections}}) as (sc, port),
    ):
        listener = sc.plugin.listeners[0]
        breaker = listener.cluster.breaker
        for i in range(3 * max_connections):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
            status, _, _ = await asyncio.wait_for(read_response(reader), 5)
            assert status == 101, (i, status)
            writer.write(b"hi")
            assert await asyncio.wait_for(reader.readexactly(7), 5) == b"echo:hi"
            if i % 3 == 1:  # the upstream ends first, then the app
                writer.write(b"bye")
                assert await asyncio.wait_for(reader.read(), 5) == b"echo:bye"
                writer.write_eof()
            elif i % 3 == 2:  # the upstream fails: the app's side is closed for it
                writer.write(b"reset")
                assert await asyncio.wait_for(reader.read(), 5) == b""
            else:  # the app half-closes first, the upstream follows
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), 5) == b""
            await _until(lambda: not listener.proxy.clients and breaker.connections == 0)
            writer.close()
        ((status, _, body),) = await raw_request(port, b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (status, body) == (200, b"ok")
    assert breaker.requests == 0 and breaker.pending == 0


async def test_head_response_body_never_reaches_the_client(proxy: Proxy) -> None:
    connections = 0

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            head = await read_head(reader)
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nleak-body")  # a body HEAD must not have
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, _ = await asyncio.wait_for(read_response(reader, head_only=True), 5)
            assert (status, headers["content-length"]) == (200, "9")
            status, _, body = await asyncio.wait_for(read_response(reader), 5)
            assert (status, body) == (200, b"real")
        writer.write(b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "upstream_bytes_after_response"})
    assert (status, body, rest) == (200, b"real", b"")  # no stray "leak-body" anywhere in the stream
    assert errors == 2  # each HEAD's connection was closed, not pooled
    assert connections == 3


async def test_bytes_after_a_204_never_turn_into_the_next_clients_response(proxy: Proxy) -> None:
    posts: list[int] = []  # connection number of every POST the app executed

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = id(writer)
        while True:
            head = await read_head(reader)
            if head.startswith(b"POST"):
                await reader.readexactly(5)
                posts.append(conn)
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated")
            else:  # a 204 may have no content: these 7 bytes follow a complete response
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\ngarbage")

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (sc, port):
        ((status, headers, body),) = await raw_request(port, b"DELETE /a HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (status, body) == (204, b"")
        assert "content-length" not in headers  # a 204 describes no length
        ((status, _, body),) = await raw_request(port, b"POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\nhello")
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "upstream_bytes_after_response"})
    assert (status, body) == (201, b"created")
    assert len(posts) == 1  # executed once, and its client got the answer
    assert errors == 1


async def test_part_of_another_head_after_a_response_never_reaches_the_next_client(proxy: Proxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        # A complete response, then the beginning of someone else's: a cookie the next client must not get.
        complete, smuggled = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nfor-you",
            b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=alice\r\n",
        )
        writer.write(complete + smuggled)
        await read_head(reader)  # a request on the same connection: complete the smuggled head
        writer.write(b"Content-Length: 2\r\n\r\nhi")

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (sc, port):
        ((status_a, _, body_a),) = await raw_request(port, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        ((status_b, headers_b, body_b),) = await raw_request(port, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "upstream_bytes_after_response"})
    assert (status_a, body_a) == (200, b"for-you")
    assert (status_b, body_b) == (200, b"for-you")
    assert "set-cookie" not in headers_b
    assert errors == 2


async def test_partial_status_line_after_a_response_closes_the_connection(proxy: Proxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        partial = b"HTTP/1.1 2"  # no parser callback reveals this much of a status line
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + partial)
        await read_head(reader)
        writer.write(b"00 OK\r\nSet-Cookie: sid=alice\r\nContent-Length: 6\r\n\r\nstolen")

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        responses = [(await raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))[0] for _ in range(3)]
    assert [(s, b) for s, _, b in responses] == [(200, b"ok")] * 3
    assert not any("set-cookie" in h for _, h, _ in responses)


async def test_response_head_is_bounded_and_answered_502(proxy: Proxy) -> None:
    written = 0
    total = 64 * 1024 * 1024

    async def endless_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        head = await read_head(reader)
        if b"/reason" in head:
            writer.write(b"HTTP/1.1 200 ")  # a reason phrase that never ends
            line = b"x" * 65536
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n")
            line = b"".join(b"X-Fill-%d: %s\r\n" % (i, b"v" * 1000) for i in range(64))
        while written < total:
            writer.write(line)
            written += len(line)
            await writer.drain()

    async with (
        tcp_server(endless_head) as up,
        proxy([f"127.0.0.1:{up}"], retries=0, max_header_bytes=16384) as (sc, port),
    ):
        for path in (b"/fields", b"/reason"):
            written = 0
            ((status, headers, _),) = await raw_request(port, b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path)
            assert (status, headers["x-ambassador-reason"]) == (502, "upstream_head_too_large"), path
            await _until(lambda: not sc.plugin.listeners[0].proxy.pool.idle_count())
            assert written < total // 2, (path, written)  # the proxy stopped reading at the bound
        ((status, _, _),) = await raw_request(port, b"GET /fields HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 502
        livez, _ = await http_get(f"{sc.admin_url}/livez")
    assert livez == 200


async def test_status_outside_100_599_is_a_502(proxy: Proxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        code = b"099" if b"/low" in head else b"600"
        writer.write(b"HTTP/1.1 " + code + b" Odd\r\nContent-Length: 0\r\n\r\n")
        await reader.read()

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"], retries=0) as (_, port):
        for path in (b"/low", b"/high"):
            ((status, headers, _),) = await raw_request(port, b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path)
            assert (status, headers["x-ambassador-reason"]) == (502, "upstream_invalid_status"), path


async def test_interim_responses_reach_http11_clients_only(proxy: Proxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
            )

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        responses = [await asyncio.wait_for(read_response(reader), 5) for _ in range(4)]
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /old HTTP/1.0\r\n\r\n")
        old = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    # The proxy answers Expect itself, so the upstream's 100 is not passed on; 103 is, hop-by-hop stripped.
    assert [(s, b) for s, _, b in responses] == [(103, b""), (200, b"final"), (103, b""), (200, b"final")]
    assert responses[0][1]["link"] == "</a.css>; rel=preload"
    assert "x-hop" not in responses[0][1]
    assert old.startswith(b"HTTP/1.1 200 OK\r\n") and old.endswith(b"final")  # HTTP/1.0 knows no 1xx


async def test_response_with_transfer_coding_other_than_chunked_is_close_delimited_and_complete(
    proxy: Proxy,
) -> None:
    payload = b"".join(b"line %d of a body sent with a gzip transfer coding\n" % i for i in range(20000))
    coded = gzip.compress(payload)

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")  # length: until close
        for i in range(0, len(coded), 4096):
            writer.write(coded[i : i + 4096])
            await writer.drain()
        writer.close()

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"transfer-encoding: gzip, chunked\r\n" in head.lower()  # the coding stays, chunked frames it
        body = bytearray()
        while size := int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
        writer.close()
    assert gzip.decompress(bytes(body)) == payload


async def test_upgrade_request_with_a_body_is_refused_before_anything_reaches_the_upstream(proxy: Proxy) -> None:
    received: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))

    async with tcp_server(upstream) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\nping"
        )
        status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
        assert (status, headers["x-ambassador-reason"]) == (400, "upgrade_with_body")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    assert received == []  # no head without its body, no stray last-chunk


async def test_endless_trailer_fields_are_bounded_like_a_head(proxy: Proxy) -> None:
    written = 0
    total = 64 * 1024 * 1024

    async def endless_trailer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: ")
        while written < total:  # one trailer field that never ends
            writer.write(b"t" * 65536)
            written += 65536
            await writer.drain()

    async with tcp_server(endless_trailer) as up, proxy([f"127.0.0.1:{up}"], max_header_bytes=16384) as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        rest = await asyncio.wait_for(reader.read(), 5)  # aborted: a response cut short can only be closed
        writer.close()
        errors = sc.sample("ambassador_errors_total", {**LABELS, "reason": "upstream_trailer_too_large"})
    assert head.startswith(b"HTTP/1.1 200 OK") and rest == b"5\r\nhello\r\n"  # never the last chunk
    assert written < total // 2
    assert errors == 1
