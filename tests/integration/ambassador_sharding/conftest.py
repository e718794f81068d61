"""Fixtures of the sharding tests: three real redis-servers or memcacheds, the ambassador in front of them.

`sharded(servers, mode, **listener_options)` runs the ambassador in this process with one listener
whose shards are `servers`; listener options nest as in the config file (`sharding={...}`,
`cluster={...}`). Clients are the real ones apps use (redis-py), or raw sockets where the exact bytes
matter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aredis

from sidecars.ambassador.cluster.sharding import Ring, Server, default_name
from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import RunningSidecar, run_sidecar
from tests.support.shard_peers import Memcached, Peer, RedisServer, memcached_servers, redis_servers

# Fast active checks so a shard's return is seen in a fraction of a second, not 5 s.
FAST_CHECKS = {"interval_secs": 0.2, "timeout_secs": 0.2, "healthy_threshold": 2, "unhealthy_threshold": 2}


@pytest.fixture
async def redis3() -> AsyncIterator[list[RedisServer]]:
    async with redis_servers(3) as servers:
        yield servers


@pytest.fixture
async def memcached3() -> AsyncIterator[list[Memcached]]:
    async with memcached_servers(3) as servers:
        yield servers


def listener(servers: Sequence[Peer], mode: str = "redis", **options: Any) -> dict[str, Any]:
    cluster = {"endpoints": [s.address for s in servers], **options.pop("cluster", {})}
    return {"name": options.pop("name", "cache"), "port": 0, "mode": mode, "cluster": cluster, **options}


@contextlib.asynccontextmanager
async def sharded(
    servers: Sequence[Peer], mode: str = "redis", **options: Any
) -> AsyncIterator[tuple[RunningSidecar, int]]:
    settings = options.pop("settings", {})
    async with run_sidecar(Ambassador, listeners=[listener(servers, mode, **options)], **settings) as sc:
        yield sc, sc.plugin.listeners[0].port


def client(port: int, **kwargs: Any) -> aredis.Redis:
    """redis-py, RESP2 as the proxy speaks it (one test lets it discover that through HELLO)."""
    return aredis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=10, **kwargs)


def direct(server: Peer, **kwargs: Any) -> aredis.Redis:
    return aredis.Redis(host=server.host, port=server.port, protocol=2, socket_timeout=10, **kwargs)


def ring_of(servers: Sequence[Peer], **sharding: Any) -> tuple[Ring, dict[str, Peer]]:
    """The ring the listener builds for `servers` with default names, and the servers by name."""
    by_name = {default_name(s.host, s.port): s for s in servers}
    ring = Ring(
        [Server(name, 1) for name in by_name],
        sharding.get("distribution", "ketama"),
        sharding.get("hash", "fnv1a_64"),
        sharding.get("hash_tag", ""),
    )
    return ring, by_name


def server_of(ring: Ring, by_name: dict[str, Peer], key: bytes) -> Peer:
    return by_name[ring.servers[ring.index(key)].name]


async def raw_exchange(port: int, data: bytes, expected: bytes, timeout_secs: float = 10.0) -> bytes:
    """Send `data` on a fresh connection, read exactly len(expected) bytes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readexactly(len(expected)), timeout_secs)
    finally:
        writer.close()
