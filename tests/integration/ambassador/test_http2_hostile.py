"""Hostile peers on both sides of the ambassador's HTTP/2 framing, through a running listener: a
client making the proxy reset streams for it, or sending a header block on a stream it never
opened, or two content-lengths to an HTTP/1.1 upstream; an upstream with a bad :status, a 4 GiB
header table, or a PING flood it never reads the answers to. Upstreams here are raw asyncio sockets
writing hand-made frames."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.events
import hpack
import pytest
from h2.errors import ErrorCodes

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import run_sidecar
from tests.integration.ambassador.conftest import listener
from tests.integration.ambassador.h2_client import RawH2, frame
from tests.integration.ambassador.h2_upstream import h2_upstream

pytestmark = pytest.mark.timeout(90)

DATA, HEADERS, SETTINGS, PING, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x6, 0x8
END_STREAM, END_HEADERS = 0x1, 0x4
BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", b"/")]


def status_of(events: list[Any], stream_id: int) -> dict[bytes, bytes] | None:
    for event in events:
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
            return dict(event.headers)
    return None


# -- raw upstreams -------------------------------------------------------------------------------


class RawUpstream(asyncio.Protocol):
    """Reads the ambassador's frames with a default HPACK decoder (a 4096-byte table) and answers
    each request head with `answer(n)`, the bytes of the n-th answer (n from 0)."""

    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.decoder = hpack.Decoder()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        transport.write(self.server.opening)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        if buf.startswith(b"PRI * HTTP/2.0"):
            buf = buf[24:]
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags, stream_id = buf[3], buf[4], int.from_bytes(buf[5:9], "big")
            payload, buf = buf[9 : 9 + length], buf[9 + length :]
            if kind == HEADERS and flags & END_HEADERS:
                try:
                    self.server.requests.append(list(self.decoder.decode(payload, raw=True)))
                except hpack.HPACKError as exc:
                    self.server.decode_errors.append(repr(exc))
                    continue
                assert self.transport is not None
                self.transport.write(self.server.answer(len(self.server.requests) - 1, stream_id))
        self.buffer = buf


class RawServer:
    def __init__(self, opening: bytes, answer: Callable[[int, int], bytes]) -> None:
        self.opening = opening
        self.answer = answer
        self.connections = 0
        self.requests: list[list[tuple[bytes, bytes]]] = []
        self.decode_errors: list[str] = []
        self.port = 0


@contextlib.asynccontextmanager
async def raw_upstream(opening: bytes, answer: Callable[[int, int], bytes]) -> AsyncIterator[RawServer]:
    server = RawServer(opening, answer)
    listening = await asyncio.get_running_loop().create_server(lambda: RawUpstream(server), "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()


def head(stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = True) -> bytes:
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream_id, hpack.Encoder().encode(headers))


def get(port: int, count: int) -> list[Any]:
    """`count` GETs one after another on one client connection; the events of each."""
    raw = RawH2(port)
    try:
        results = []
        for _ in range(count):
            stream_id = raw.request(b"/", end_stream=True)
            raw.read_until(
                lambda e, s=stream_id: (
                    isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == s
                )
            )
            results.append(status_of(raw.events, stream_id))
        return results
    finally:
        raw.close()


async def test_an_upstreams_4gib_header_table_is_not_what_the_ambassador_encodes_into() -> None:
    huge = frame(SETTINGS, 0, 0, (1).to_bytes(2, "big") + (2**32 - 1).to_bytes(4, "big"))
    async with raw_upstream(huge, lambda n, s: head(s, [(b":status", b"200")])) as up:
        config = listener([f"127.0.0.1:{up.port}"], cluster={"protocol": "http2"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            statuses = await asyncio.to_thread(get, sc.plugin.listeners[0].port, 3)
    assert [s and s[b":status"] for s in statuses] == [b"200"] * 3
    assert up.decode_errors == []  # no table size update past the 4096 bytes the upstream holds
    assert len(up.requests) == 3


@pytest.mark.parametrize(
    "bad",
    [
        b"\x08\x03abc",  # ":status: abc", a literal field without indexing (RFC 7541 §6.2.2)
        hpack.Encoder().encode([(b":status", b"200"), (b"content-length", b"9" * 5000)]),  # int() refuses it
    ],
    ids=["status-abc", "content-length-5000-digits"],
)
async def test_a_bad_head_from_an_upstream_fails_its_stream_and_the_connection_serves_on(bad: bytes) -> None:
    def answer(n: int, stream_id: int) -> bytes:
        if n == 0:
            return frame(HEADERS, END_HEADERS | END_STREAM, stream_id, bad)
        return head(stream_id, [(b":status", b"200")])

    async with raw_upstream(frame(SETTINGS, 0, 0, b""), answer) as up:
        config = listener([f"127.0.0.1:{up.port}"], cluster={"protocol": "http2"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            statuses = await asyncio.to_thread(get, sc.plugin.listeners[0].port, 2)
            errors = dict(sc.plugin.listeners[0].stats.errors)
    first, second = statuses
    assert first is not None and first[b"x-ambassador-reason"] == b"upstream_protocol_error"
    assert second is not None and second[b":status"] == b"200"
    assert up.connections == 1  # the stream was reset, not the connection
    assert "upstream_protocol_error" in errors and "upstream_reset" not in errors


async def test_an_upstream_that_floods_pings_and_never_reads_loses_its_connection() -> None:
    # Every PING asks for a 17-byte ACK; an upstream that does not read them would have the
    # ambassador buffer them without end.
    lost = asyncio.Event()
    sent = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        chunk = frame(SETTINGS, 0, 0, b"") + frame(PING, 0, 0, b"12345678") * 4000
        try:
            while sent < 2_000_000:  # 34 MB of ACKs owed, far more than any socket buffer
                writer.write(chunk)
                await writer.drain()
                sent += 4000
        except (ConnectionError, OSError):
            pass
        lost.set()
        writer.close()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the ACKs back up soon
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(flood, sock=sock, limit=4096)
    port = sock.getsockname()[1]
    try:
        config = listener([f"127.0.0.1:{port}"], cluster={"protocol": "http2"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            statuses = await asyncio.to_thread(get, sc.plugin.listeners[0].port, 1)
            await asyncio.wait_for(lost.wait(), 60)
            errors = dict(sc.plugin.listeners[0].stats.errors)
    finally:
        server.close()
    assert sent < 2_000_000, "the ambassador kept reading PINGs it could not answer"
    assert statuses[0] is not None and statuses[0][b":status"] == b"503"
    assert "upstream_protocol_error" in errors


# -- hostile clients -------------------------------------------------------------------------------


async def test_a_header_block_on_a_lower_stream_never_opened_ends_the_connection() -> None:
    async with h2_upstream("up", mode="ok") as up:
        config = listener([up.address], cluster={"protocol": "http2"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:

            def attack() -> list[Any]:
                raw = RawH2(sc.plugin.listeners[0].port)
                try:
                    raw.conn.send_headers(5, BASE, end_stream=True)
                    raw.flush()
                    raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 5)
                    # 3 was closed, unopened, when 5 opened (a fresh encoder: h2 would not send it)
                    raw.send_raw(head(3, BASE))
                    raw.read_until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
                    return raw.events
                finally:
                    raw.close()

            events = await asyncio.to_thread(attack)
    assert status_of(events, 5) is not None
    ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [(e.error_code, e.last_stream_id) for e in ended] == [(ErrorCodes.PROTOCOL_ERROR, 5)]
    assert up.streams == 1


async def test_streams_the_ambassador_resets_for_a_clients_errors_are_a_rapid_reset() -> None:
    # No RST_STREAM of the client's own: a WINDOW_UPDATE of 0 on each stream it opens makes the
    # ambassador reset it, after the request went upstream (the "MadeYouReset" variant).
    async with h2_upstream("up", mode="silent") as up:
        config = listener([up.address], cluster={"protocol": "http2"}, http2={"max_resets_per_sec": 5})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:

            def attack() -> list[Any]:
                raw = RawH2(sc.plugin.listeners[0].port)
                try:
                    for n in range(200):
                        stream_id = 2 * n + 1
                        raw.conn.send_headers(stream_id, BASE, end_stream=False)
                        raw.flush()
                        raw.send_raw(frame(WINDOW_UPDATE, 0, stream_id, bytes(4)))
                        raw.read_until(
                            lambda e, s=stream_id: (
                                isinstance(e, h2.events.ConnectionTerminated)
                                or (isinstance(e, h2.events.StreamReset) and e.stream_id == s)
                            )
                        )
                        if raw.closed or any(isinstance(e, h2.events.ConnectionTerminated) for e in raw.events):
                            break
                    return raw.events
                finally:
                    raw.close()

            events = await asyncio.to_thread(attack)
            violations = dict(sc.plugin.listeners[0].stats.h2_violations)
    ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in ended] == [ErrorCodes.ENHANCE_YOUR_CALM]
    assert violations == {"h2_rapid_reset": 1}
    assert up.streams < 200


@contextlib.asynccontextmanager
async def http1_upstream() -> AsyncIterator[tuple[int, bytearray]]:
    """An HTTP/1.1 upstream recording every byte it gets, answering each request head with 200."""
    received = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.extend(data)
            for _ in range(data.count(b"\r\n\r\n")):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()


async def test_two_content_lengths_cannot_smuggle_a_request_to_an_http1_upstream() -> None:
    # The framing counted DATA against the first content-length; the HTTP/1.1 request took the last:
    # the rest of the body reached the upstream as a request of its own.
    smuggled = b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
    body = b"hello" + smuggled
    post = [(b":method", b"POST"), *BASE[1:]]
    async with (
        http1_upstream() as (port, received),
        run_sidecar(Ambassador, listeners=[listener([f"127.0.0.1:{port}"])]) as sc,
    ):

        def attack() -> list[Any]:
            raw = RawH2(sc.plugin.listeners[0].port)
            try:
                lengths = [(b"content-length", b"%d" % len(body)), (b"content-length", b"5")]
                raw.conn.send_headers(1, [*post, *lengths])
                raw.conn.send_data(1, body, end_stream=True)
                raw.flush()
                raw.read_until(
                    lambda e: isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == 1
                )
                raw.conn.send_headers(3, BASE, end_stream=True)  # after it, on the same upstream connection
                raw.flush()
                raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 3)
                return raw.events
            finally:
                raw.close()

        events = await asyncio.to_thread(attack)
    resets = [(e.stream_id, e.error_code) for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets == [(1, ErrorCodes.PROTOCOL_ERROR)]
    assert status_of(events, 3) is not None
    assert b"/smuggled" not in received
    assert received.count(b"HTTP/1.1\r\n") == 1  # only the GET of stream 3


async def test_a_content_length_of_5000_digits_resets_its_stream_and_the_connection_serves_on() -> None:
    async with h2_upstream("up", mode="ok") as up:
        config = listener([up.address], cluster={"protocol": "http2"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:

            def calls() -> list[Any]:
                raw = RawH2(sc.plugin.listeners[0].port)
                try:
                    raw.request(b"/", [(b"content-length", b"9" * 5000)], end_stream=False)
                    good = raw.request(b"/", end_stream=True)
                    return raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == good)
                finally:
                    raw.close()

            events = await asyncio.to_thread(calls)
    assert [(e.stream_id, e.error_code) for e in events if isinstance(e, h2.events.StreamReset)] == [
        (1, ErrorCodes.PROTOCOL_ERROR)
    ]
    assert status_of(events, 3) is not None and up.streams == 1


@pytest.mark.parametrize(
    ("pseudo", "value"),
    [(b":path", b"/a HTTP/1.1"), (b":path", b"http://other.example/"), (b":method", b"GET /admin")],
)
async def test_a_request_target_an_http1_request_line_would_misread_is_refused(pseudo: bytes, value: bytes) -> None:
    # h2 lets these through; as a request line they are another target, or another host (an origin
    # takes an absolute-form target's host over Host: RFC 9112 §3.2.2).
    headers = [(name, value if name == pseudo else v) for name, v in BASE]
    async with (
        http1_upstream() as (port, received),
        run_sidecar(Ambassador, listeners=[listener([f"127.0.0.1:{port}"])]) as sc,
    ):

        def attack() -> list[Any]:
            raw = RawH2(sc.plugin.listeners[0].port)
            try:
                raw.conn.send_headers(1, headers, end_stream=True)
                raw.conn.send_headers(3, BASE, end_stream=True)
                raw.flush()
                raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 3)
                return raw.events
            finally:
                raw.close()

        events = await asyncio.to_thread(attack)
    resets = [(e.stream_id, e.error_code) for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets == [(1, ErrorCodes.PROTOCOL_ERROR)]
    assert bytes(received).startswith(b"GET / HTTP/1.1\r\n") and received.count(b" HTTP/1.1\r\n") == 1


@pytest.mark.parametrize(
    "fields",
    [
        [(b"host", b"app.example")],  # Host instead of :authority (RFC 9113 §8.3.1 allows it)
        [(b":authority", b"app.example"), (b"host", b"app.example")],
    ],
    ids=["host-only", "authority-and-host"],
)
async def test_an_http1_upstream_gets_one_host_field(fields: list[tuple[bytes, bytes]]) -> None:
    # Two Host fields are a 400 at a conforming origin (RFC 9112 §3.2), and whichever one a lax one
    # takes decides the virtual host.
    pseudo = [f for f in fields if f[0].startswith(b":")]
    headers = [(b":method", b"GET"), (b":scheme", b"http"), *pseudo, (b":path", b"/")]
    headers += [f for f in fields if not f[0].startswith(b":")]
    async with (
        http1_upstream() as (port, received),
        run_sidecar(Ambassador, listeners=[listener([f"127.0.0.1:{port}"])]) as sc,
    ):

        def call() -> list[Any]:
            raw = RawH2(sc.plugin.listeners[0].port)
            try:
                raw.conn.send_headers(1, headers, end_stream=True)
                raw.flush()
                return raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 1)
            finally:
                raw.close()

        events = await asyncio.to_thread(call)
    assert status_of(events, 1) is not None
    head_lines = bytes(received).split(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert [line for line in head_lines if line.startswith(b"host:")] == [b"host: app.example"]
