"""The redis listener in a real process (SIGTERM drains pipelined commands, then closes), its per-shard
metrics, and the conformance contract with a redis listener configured."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any, ClassVar

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import ConformanceSuite, free_port, start_process
from tests.integration.ambassador_sharding.conftest import client, ring_of, server_of, sharded
from tests.support.shard_peers import RedisServer


class TestShardedAmbassadorConformance(ConformanceSuite):
    plugin = Ambassador
    settings: ClassVar[dict[str, Any]] = {
        "listeners": [
            {
                "name": "cache",
                "port": 0,
                "mode": "redis",
                "cluster": {"endpoints": ["127.0.0.1:9"], "health_check": {"kind": "none"}},
            }
        ],
        "shutdown_timeout_secs": 5.0,
    }
    command: ClassVar[list[str] | None] = [sys.executable, "-m", "sidecars.ambassador"]


def _get(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


async def test_sigterm_answers_pipelined_commands_in_flight_then_closes(redis3: list[RedisServer]) -> None:
    port = free_port()
    hung = redis3[0]
    ring, by_name = ring_of(redis3)
    key = next(k for k in (f"{i}:d".encode() for i in range(1000)) if server_of(ring, by_name, k) is hung)
    settings = {
        "listeners": [
            {"name": "cache", "port": port, "mode": "redis", "cluster": {"endpoints": [s.address for s in redis3]}}
        ],
        "shutdown_timeout_secs": 20.0,
    }
    async with start_process("ambassador", settings, command=[sys.executable, "-m", "sidecars.ambassador"]) as proc:
        await proc.wait_http("/readyz", 200)
        c = client(port)
        assert await c.set(key, "drained")
        await c.aclose()
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\r\n")
        assert await reader.readline() == b"+PONG\r\n"
        hung.freeze()
        try:
            writer.write(_get(key) * 300)  # in flight on the hung shard when the signal comes
            await asyncio.sleep(0.2)
            proc.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # an idle connection closes at once
            idle_writer.close()
            await proc.wait_http("/readyz", 503)
        finally:
            hung.thaw()
        expected = b"$7\r\ndrained\r\n" * 300
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 10) == expected
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then closed
        writer.close()
        assert await proc.wait_exit(20) == 0


async def test_per_shard_metrics(redis3: list[RedisServer]) -> None:
    async with sharded(redis3) as (sc, port):
        c = client(port)
        for i in range(60):
            await c.set(f"{i}:m", i)
        await c.aclose()
        sc.plugin.listeners[0].sweep()
        total = 0.0
        for server in redis3:
            labels = {"listener": "cache", "shard": server.address, "endpoint": server.address}
            requests = sc.sample("ambassador_shard_requests_total", labels)
            assert requests and requests > 0
            total += requests
            assert sc.sample("ambassador_shard_in_ring", labels) == 1.0
            assert sc.sample("ambassador_shard_errors_total", {**labels, "reason": "timeout"}) == 0
            count = sc.sample(
                "ambassador_shard_request_duration_seconds_count", {"listener": "cache", "shard": server.address}
            )
            assert count == requests
            # The listener's own series count them as answered by that endpoint.
            assert sc.sample(
                "ambassador_requests_total",
                {"listener": "cache", "cluster": "cache", "endpoint": server.address, "code_class": "2xx"},
            ) == requests  # fmt: skip
        assert total == 60
        assert sc.sample("ambassador_reshards_total", {"listener": "cache", "reason": "ejected"}) == 0
        assert sc.events("shard ring built")[0]["shards"] == sorted(s.address for s in redis3)
