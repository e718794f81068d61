"""Every buffer of the redis listener is bounded, and each bound is shown here against real shards."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from sidecars.ambassador.proxy.sharded_proxy import PAUSE_LINK, PAUSE_OUTPUT, PAUSE_PENDING
from tests.integration.ambassador_sharding.conftest import client, direct, ring_of, server_of, sharded
from tests.integration.ambassador_sharding.test_shard_failures import eventually
from tests.support.shard_peers import RedisServer

ERRORS = {"listener": "cache", "cluster": "cache"}


def _get(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


async def test_commands_in_flight_per_client_are_capped_by_not_reading(redis3: list[RedisServer]) -> None:
    hung = redis3[0]
    ring, by_name = ring_of(redis3)
    key = next(k for k in (f"{i}:p".encode() for i in range(1000)) if server_of(ring, by_name, k) is hung)
    options = {"sharding": {"max_pending_per_client": 50, "timeout_secs": 60}}
    async with sharded(redis3, **options) as (sc, port):
        await direct(hung).set(key, b"x")
        hung.freeze()
        proxy = sc.plugin.listeners[0].proxy
        shard = proxy.shards.shards[hung.address]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_get(key) * 500)

            async def capped() -> bool:
                return shard.pending() == 50 and any(c.paused & PAUSE_PENDING for c in proxy.clients)

            await eventually(capped)
            assert sc.sample("ambassador_shard_pending_commands", {"listener": "cache", "shard": hung.address}) == 50
        finally:
            hung.thaw()
        replies = await asyncio.wait_for(reader.readexactly(len(b"$1\r\nx\r\n") * 500), 20)
        assert replies == b"$1\r\nx\r\n" * 500  # nothing refused, nothing lost, in order
        writer.close()


async def test_a_value_over_max_value_bytes_is_refused_with_the_limit(redis3: list[RedisServer]) -> None:
    async with sharded(redis3, sharding={"max_value_bytes": 65536}) as (sc, port):
        c = client(port)
        assert await c.set("fits", b"v" * 65536)
        with pytest.raises((ResponseError, RedisConnectionError)):
            await c.set("too-big", b"v" * 100_000)
        await c.aclose()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n")  # refused before the value is buffered
        line = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert line == b"-ERR Protocol error: value of 100000 bytes exceeds max_value_bytes (65536)\r\n"
        assert sc.sample("ambassador_errors_total", {**ERRORS, "reason": "bad_request"}) == 2
        c = client(port)
        assert await c.get("fits") == b"v" * 65536  # the listener goes on
        await c.aclose()


async def test_a_command_over_max_command_bytes_is_refused(redis3: list[RedisServer]) -> None:
    async with sharded(redis3, sharding={"max_value_bytes": 1024, "max_command_bytes": 4096}) as (_, port):
        args = b"".join(b"$4\r\nk%03d\r\n$900\r\n%s\r\n" % (i, b"v" * 900) for i in range(8))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"*17\r\n$4\r\nMSET\r\n" + args)
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert data == b"-ERR Protocol error: command exceeds max_command_bytes (4096)\r\n"


async def test_a_reply_over_max_reply_bytes_fails_that_command_and_the_shard_link_recovers(
    redis3: list[RedisServer],
) -> None:
    ring, by_name = ring_of(redis3)
    on_shard = [k for k in (f"{i}:r".encode() for i in range(1000)) if server_of(ring, by_name, k) is redis3[1]]
    big, small = on_shard[:2]
    await direct(redis3[1]).set(big, os.urandom(200_000))  # written around the proxy
    await direct(redis3[1]).set(small, b"ok")
    async with sharded(redis3, sharding={"max_reply_bytes": 65536}) as (sc, port):
        c = client(port)
        with pytest.raises(ResponseError, match=rf"shard {redis3[1].address} reply exceeds max_reply_bytes \(65536\)"):
            await c.get(big)
        assert await c.get(small) == b"ok"
        labels = {"listener": "cache", "shard": redis3[1].address, "endpoint": redis3[1].address}
        assert sc.sample("ambassador_shard_errors_total", {**labels, "reason": "reply_too_large"}) == 1
        await c.aclose()


async def test_a_client_that_does_not_read_is_paused_then_disconnected_past_its_buffer_cap(
    redis3: list[RedisServer],
) -> None:
    value = os.urandom(200_000)
    async with sharded(redis3, sharding={"max_client_buffer_bytes": 1 << 20}) as (sc, port):
        c = client(port)
        await c.set("big", value)
        await c.aclose()
        proxy = sc.plugin.listeners[0].proxy
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.set_write_buffer_limits(high=1 << 24)
        writer.write(_get(b"big") * 400)  # 80 MB of replies; this client reads none of them

        async def disconnected() -> bool:
            return sc.sample("ambassador_errors_total", {**ERRORS, "reason": "client_buffer_full"}) == 1

        await eventually(disconnected)
        assert not proxy.clients
        writer.close()
        c = client(port)
        assert await c.get("big") == value
        await c.aclose()


async def test_a_slow_reader_is_backpressured_and_then_gets_every_reply(redis3: list[RedisServer]) -> None:
    value = os.urandom(100_000)
    count = 400  # 40 MB of replies, below the default 64 MiB cap
    async with sharded(redis3) as (sc, port):
        c = client(port)
        await c.set("v", value)
        await c.aclose()
        proxy = sc.plugin.listeners[0].proxy
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(_get(b"v") * count)

        async def paused() -> bool:
            return any(cl.paused & PAUSE_OUTPUT for cl in proxy.clients)

        await eventually(paused)
        # It stopped taking commands from this client. (How many it took before depends on how the
        # kernel split the stream into reads: one read may carry every command.)
        assert not any(cl.transport.is_reading() for cl in proxy.clients if cl.paused & PAUSE_OUTPUT)
        expected = b"$100000\r\n" + value + b"\r\n"
        for _ in range(count):
            assert await asyncio.wait_for(reader.readexactly(len(expected)), 20) == expected
        writer.close()


async def test_a_shard_that_stops_reading_pauses_the_clients_writing_to_it(redis3: list[RedisServer]) -> None:
    hung = redis3[2]
    ring, by_name = ring_of(redis3, hash_tag="{}")
    tag = next(f"{i}" for i in range(1000) if server_of(ring, by_name, str(i).encode()) is hung)
    value = b"w" * 60_000
    options = {"sharding": {"hash_tag": "{}", "timeout_secs": 60, "max_pending_per_client": 100_000}}
    async with sharded(redis3, **options) as (sc, port):
        proxy = sc.plugin.listeners[0].proxy
        hung.freeze()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count = 600  # 36 MB of SETs for a shard that reads nothing
        writer.transport.set_write_buffer_limits(high=1 << 26)
        cmd = b"*3\r\n$3\r\nSET\r\n$%d\r\n{%s}:k\r\n$60000\r\n%s\r\n" % (len(tag) + 4, tag.encode(), value)
        writer.write(cmd * count)
        try:

            async def paused() -> bool:
                return any(cl.paused & PAUSE_LINK for cl in proxy.clients)

            await eventually(paused)
            shard = proxy.shards.shards[hung.address]
            assert shard.pending() < count
        finally:
            hung.thaw()
        started = time.monotonic()
        assert await asyncio.wait_for(reader.readexactly(5 * count), 60) == b"+OK\r\n" * count
        assert time.monotonic() - started < 60
        writer.close()
