"""TCP mode: opaque bytes both ways with flow control, half-close, failover on connect, idle timeouts."""

from __future__ import annotations

import asyncio
import hashlib
import os

from sidecars.ambassador.plugin import TICK_SECS
from sidecars.ambassador.settings import HTTP_IDLE_TIMEOUT_SECS
from tests.integration.ambassador.conftest import Proxy
from tests.integration.ambassador.peers import tcp_server

LABELS = {"listener": "web", "cluster": "web"}


async def _digest_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads to EOF (the client's half-close), answers with the size and SHA-256, then streams 4 MiB back."""
    digest = hashlib.sha256()
    size = 0
    while chunk := await reader.read(1 << 16):
        digest.update(chunk)
        size += len(chunk)
    writer.write(b"%d %s\n" % (size, digest.hexdigest().encode()))
    block = b"z" * 65536
    for _ in range(64):
        writer.write(block)
        await writer.drain()
    writer.close()


async def test_bytes_pass_both_ways_with_half_close(proxy: Proxy) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    async with tcp_server(_digest_server) as up, proxy([f"127.0.0.1:{up}"], mode="tcp") as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()  # the upstream only answers once it sees the end of the input
        line = await asyncio.wait_for(reader.readline(), 10)
        rest = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert line == b"%d %s\n" % (len(payload), hashlib.sha256(payload).hexdigest().encode())
        assert rest == b"z" * (64 * 65536)
        labels = {"listener": "web", "cluster": "web"}
        assert sc.sample("ambassador_tcp_bytes_total", {**labels, "direction": "upstream"}) == len(payload)


async def test_connect_failure_moves_to_another_endpoint(proxy: Proxy) -> None:
    async with tcp_server(_digest_server) as dead:
        pass
    async with (
        tcp_server(_digest_server) as up,
        proxy(
            [f"127.0.0.1:{dead}", f"127.0.0.1:{up}"],
            mode="tcp",
            cluster={"balancer": "round_robin", "outlier": {"consecutive_connect_failures": 0}},
        ) as (_, port),
    ):
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"abc")
            writer.write_eof()
            line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            assert line.startswith(b"3 ")


async def test_idle_session_is_closed(proxy: Proxy) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with tcp_server(silent) as up, proxy([f"127.0.0.1:{up}"], mode="tcp", idle_timeout_secs=0.5) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy, not by us
        writer.close()


async def test_an_idle_session_outlives_the_http_idle_timeout(proxy: Proxy) -> None:
    """A database or Redis client keeps pooled connections idle for minutes: the tcp default is hours."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)

    async with tcp_server(echo) as up, proxy([f"127.0.0.1:{up}"], mode="tcp") as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\r\n")
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"PING\r\n"
        # Quiet past the http default; the idle sweep runs every TICK_SECS meanwhile.
        await asyncio.sleep(HTTP_IDLE_TIMEOUT_SECS + 4 * TICK_SECS)
        writer.write(b"PING\r\n")
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"PING\r\n"
        writer.close()
        assert not sc.sample("ambassador_errors_total", {**LABELS, "reason": "idle_timeout"})
