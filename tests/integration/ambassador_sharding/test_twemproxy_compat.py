"""Compatibility with twemproxy: nutcracker and the ambassador on the same three servers.

Keys written through nutcracker must all be found through the ambassador, which is only the case if
both put every key on the same server. The check is byte-exact: the reply stream to 100 000
pipelined GETs must be exactly the values written, in order (a key the ambassador looked up on
another server would answer nil there). Keys include binary ones with bytes >= 0x80, which
twemproxy hashes as signed chars.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from sidecars.testing import free_port
from tests.integration.ambassador_sharding.conftest import sharded
from tests.support.shard_peers import Memcached, Peer, RedisServer, memcached_servers, nutcracker


def _keys(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    keys = {f"user:{i}:profile".encode() for i in range(count // 2)}
    keys |= {f"{{tag{i % 97}}}:{i}".encode() for i in range(count // 4)}
    while len(keys) < count:
        keys.add(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
    return sorted(keys)


def _set(key: bytes, value: bytes) -> bytes:
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)


def _get(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


async def _pipeline(port: int, requests: bytes, memcached: bool = False) -> bytes:
    """Every reply to `requests`, pipelined on one connection; a last PING (version) marks the end,
    so a wrong reply shows at once instead of as bytes that never come."""
    sentinel, answer = (b"version\r\n", b"VERSION ") if memcached else (b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=64 << 20)

    async def send() -> None:
        data = requests + sentinel
        for i in range(0, len(data), 1 << 16):
            writer.write(data[i : i + (1 << 16)])
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        got = await asyncio.wait_for(reader.readuntil(answer), 120)
        await sender
        return got[: -len(answer)]
    finally:
        sender.cancel()
        writer.close()


def _entries(servers: Sequence[Peer], weights: Sequence[int] = (), names: Sequence[str] = ()) -> list[str]:
    return [
        f"{s.address}:{weights[i] if weights else 1}" + (f" {names[i]}" if names else "") for i, s in enumerate(servers)
    ]


async def _written_by_nutcracker_read_by_us(
    servers: Sequence[RedisServer], keys: list[bytes], entries: list[str], **pool: Any
) -> None:
    values = [b"v-" + key[::-1] for key in keys]
    sharding = {k: v for k, v in pool.items() if k in ("distribution", "hash")}
    if "hash_tag" in pool:
        sharding["hash_tag"] = pool["hash_tag"].strip('"')
    async with nutcracker(entries, **pool) as nc:
        assert await _pipeline(nc.port, b"".join(map(_set, keys, values))) == b"+OK\r\n" * len(keys)
    counts = []
    for server in servers:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"DBSIZE\r\n")
        counts.append(int((await reader.readline())[1:]))
        writer.close()
    assert sum(counts) == len(keys) and min(counts) > len(keys) / 10, counts  # spread over all three
    async with sharded(servers, sharding={**sharding, "servers": entries}, cluster={"endpoints": []}) as (_, port):
        expected = b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in values)
        assert await _pipeline(port, b"".join(map(_get, keys))) == expected


@pytest.mark.parametrize(
    ("distribution", "hash_name"), [("ketama", "fnv1a_64"), ("ketama", "md5"), ("modula", "fnv1a_64")]
)
async def test_100k_keys_written_through_nutcracker_are_read_through_the_ambassador(
    redis3: list[RedisServer], distribution: str, hash_name: str
) -> None:
    await _written_by_nutcracker_read_by_us(
        redis3, _keys(100_000, 1), _entries(redis3), hash=hash_name, distribution=distribution
    )


async def test_names_weights_and_hash_tags_place_keys_as_nutcracker_does(redis3: list[RedisServer]) -> None:
    entries = _entries(redis3, weights=[1, 2, 3], names=["users-b", "users-a", "users-c"])
    await _written_by_nutcracker_read_by_us(
        redis3, _keys(20_000, 2), entries, hash="murmur", distribution="ketama", hash_tag='"{}"'
    )
    for server in redis3:  # a fresh start for the modula round
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"FLUSHALL\r\n")
        assert await reader.readline() == b"+OK\r\n"
        writer.close()
    await _written_by_nutcracker_read_by_us(
        redis3, _keys(20_000, 3), entries, hash="crc32a", distribution="modula", hash_tag='"{}"'
    )


@pytest.mark.parametrize(
    "hash_name", ["one_at_a_time", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur",
                  "jenkins"],
)  # fmt: skip
async def test_every_other_hash_places_keys_as_nutcracker_does(redis3: list[RedisServer], hash_name: str) -> None:
    # crc32 is libmemcached's 15-bit one: on ketama's 32-bit ring every key lands on one server (in
    # twemproxy too), which would check nothing; modula spreads it.
    distribution = "modula" if hash_name == "crc32" else "ketama"
    await _written_by_nutcracker_read_by_us(
        redis3, _keys(5_000, 4), _entries(redis3), hash=hash_name, distribution=distribution
    )


async def _memcached_round(servers: Sequence[Memcached], keys: list[bytes], **pool: Any) -> None:
    keys = [k for k in keys if all(32 < b < 127 for b in k) and len(k) <= 250]  # memcached's key rules
    values = [b"mc-" + key[::-1] for key in keys]
    entries = _entries(servers)
    async with nutcracker(entries, redis=False, **pool) as nc:
        sets = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in zip(keys, values, strict=True))
        assert await _pipeline(nc.port, sets, memcached=True) == b"STORED\r\n" * len(keys)
    async with sharded(servers, "memcached", sharding={"servers": entries}, cluster={"endpoints": []}) as (_, port):
        batches, expected = [], []
        for i in range(0, len(keys), 100):  # gets of 100 keys: fanned out over the three shards
            batch = keys[i : i + 100]
            batches.append(b"get " + b" ".join(batch) + b"\r\n")
            pairs = zip(batch, values[i:], strict=False)
            expected.extend(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in pairs)
            expected.append(b"END\r\n")
        assert await _pipeline(port, b"".join(batches), memcached=True) == b"".join(expected)


async def test_100k_memcached_keys_written_through_nutcracker_are_read_through_the_ambassador(
    memcached3: list[Memcached],
) -> None:
    await _memcached_round(memcached3, _keys(100_000, 5), hash="fnv1a_64", distribution="ketama")


async def test_memcached_servers_on_port_11211_are_named_by_host_as_libmemcached_does() -> None:
    base = random.randrange(2, 200)  # three loopback addresses, all on 11211
    hosts = [f"127.0.{base}.{i}" for i in (1, 2, 3)]
    for host in hosts:
        free_port(host)  # fails loudly if the address cannot be bound
    async with memcached_servers(3, hosts=hosts, port=11211) as servers:
        await _memcached_round(servers, _keys(10_000, 6), hash="fnv1a_64", distribution="ketama")
