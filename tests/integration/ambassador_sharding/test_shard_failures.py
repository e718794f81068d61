"""A shard dies, hangs or returns under load: errors name the shard, only its keys are affected, and
(in eject mode) the ring changes once each way, logged, only after active checks pass."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import ResponseError

from tests.integration.ambassador_sharding.conftest import FAST_CHECKS, client, direct, ring_of, server_of, sharded
from tests.support.shard_peers import RedisServer


async def eventually(check: Callable[[], Awaitable[Any]], timeout_secs: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_secs
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_secs}s: {check.__name__}")
        await asyncio.sleep(0.05)


def _keys_by_server(redis3: list[RedisServer]) -> dict[int, list[str]]:
    ring, by_name = ring_of(redis3, hash_tag="{}")
    by_port: dict[int, list[str]] = {s.port: [] for s in redis3}
    for i in range(90):
        key = f"{i}:probe"
        by_port[server_of(ring, by_name, key.encode()).port].append(key)
    return by_port


def _tag_on(redis3: list[RedisServer], server: RedisServer) -> str:
    ring, by_name = ring_of(redis3, hash_tag="{}")
    return next(f"{{t{i}}}" for i in range(1000) if server_of(ring, by_name, f"t{i}".encode()) is server)


def _benchmark(port: int, tag: str) -> subprocess.Popen[bytes]:
    """redis-benchmark SETs on one shard's keys, forever; it exits at the first error reply it gets."""
    load = ["-c", "8", "-n", "100000000", "-r", "10000", "-q", "-l"]
    return subprocess.Popen(
        ["redis-benchmark", "-p", str(port), *load, "SET", f"{tag}:__rand_int__", "v"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _results(c: aredis.Redis, keys: list[str]) -> list[Any]:
    pipe = c.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return await pipe.execute(raise_on_error=False)


async def test_keep_a_dead_shards_keys_fail_with_its_name_and_nothing_else_moves(redis3: list[RedisServer]) -> None:
    victim, survivor = redis3[1], redis3[0]
    keys = _keys_by_server(redis3)
    others = [k for port, ks in keys.items() if port != victim.port for k in ks]
    settings = {"sharding": {"hash_tag": "{}"}, "cluster": {"health_check": FAST_CHECKS}}
    async with sharded(redis3, **settings) as (sc, port):
        c = client(port)
        for key in others + keys[victim.port]:
            await c.set(key, key)
        bench = _benchmark(port, _tag_on(redis3, survivor))
        try:
            victim.kill()

            async def victim_keys_fail_with_reason() -> bool:
                for key, value in zip(others, await _results(c, others), strict=True):
                    assert value == key.encode(), (key, value)  # the other shards' keys never fail
                failed = await _results(c, keys[victim.port])
                return all(isinstance(r, ResponseError) and f"shard {victim.address} " in str(r) for r in failed)

            await eventually(victim_keys_fail_with_reason)
            reply = (await _results(c, keys[victim.port][:1]))[0]
            assert "unavailable" in str(reply), reply
            await victim.start()  # back on its port, empty

            async def victim_answers_again() -> bool:
                return all(r is None for r in await _results(c, keys[victim.port]))

            await eventually(victim_answers_again)
            assert bench.poll() is None, bench.stderr.read() if bench.stderr else ""  # never saw an error
        finally:
            bench.terminate()
            bench.wait()
        assert sc.events("reshard") == []  # keep mode: the ring never changed
        errors = {"listener": "cache", "shard": victim.address, "endpoint": victim.address}
        assert (sc.sample("ambassador_shard_errors_total", {**errors, "reason": "unavailable"}) or 0) > 0
        await c.aclose()


async def test_eject_keys_move_while_a_shard_is_down_and_move_back_after_checks_pass(
    redis3: list[RedisServer],
) -> None:
    victim, survivor = redis3[2], redis3[0]
    keys = _keys_by_server(redis3)[victim.port]
    assert keys
    settings = {
        "sharding": {"hash_tag": "{}", "on_shard_failure": "eject"},
        "cluster": {"health_check": FAST_CHECKS},
    }
    async with sharded(redis3, **settings) as (sc, port):
        c = client(port)
        bench = _benchmark(port, _tag_on(redis3, survivor))
        shards = sc.plugin.listeners[0].proxy.shards
        try:
            victim.kill()

            async def moved_away() -> bool:
                return len(shards.ring.servers) == 2 and all(r is None for r in await _results(c, keys))

            await eventually(moved_away)
            for key in keys:  # written while the victim is out: on the survivors now
                assert await c.set(key, "while-out")
            assert await direct(redis3[0]).exists(*keys) + await direct(redis3[1]).exists(*keys) == len(keys)
            left = sc.events("reshard")
            assert len(left) == 1 and f"{victim.address} left" in left[0]["changes"][0]
            assert 20 < left[0]["keys_moved_percent"] < 50
            await victim.start()

            async def moved_back() -> bool:
                return len(shards.ring.servers) == 3

            await eventually(moved_back)
            back = sc.events("reshard")[1]
            assert f"{victim.address} returned: 2 checks in a row passed" in back["changes"][0]
            ep = shards.shards[victim.address].endpoint
            assert ep.hc_passes - shards.shards[victim.address].left_at_passes >= 2
            assert await c.set(keys[0], "back")
            assert await direct(victim).get(keys[0]) == b"back"  # routed to the victim again
            assert bench.poll() is None, bench.stderr.read() if bench.stderr else ""
        finally:
            bench.terminate()
            bench.wait()
        assert len(sc.events("reshard")) == 2
        reshards = {"listener": "cache"}
        assert sc.sample("ambassador_reshards_total", {**reshards, "reason": "ejected"}) == 1
        assert sc.sample("ambassador_reshards_total", {**reshards, "reason": "returned"}) == 1
        assert sc.sample("ambassador_shard_ejections_total", {"listener": "cache", "shard": victim.address}) == 1
        await c.aclose()


async def test_eject_a_dead_shard_does_not_flap_back_when_its_ejection_time_runs_out(
    redis3: list[RedisServer],
) -> None:
    """twemproxy puts an ejected server back after server_retry_timeout, dead or not, and ejects it
    again: keys flap. Here the outlier ejection lasts 0.2 s, but the shard stays out while checks fail."""
    victim = redis3[1]
    settings = {
        "sharding": {"on_shard_failure": "eject"},
        "cluster": {"health_check": FAST_CHECKS, "outlier": {"base_ejection_secs": 0.2, "max_ejection_secs": 0.2}},
    }
    async with sharded(redis3, **settings) as (sc, port):
        c = client(port)
        shards = sc.plugin.listeners[0].proxy.shards
        victim.kill()
        ring, by_name = ring_of(redis3)
        key = next(f"{i}:x" for i in range(1000) if server_of(ring, by_name, f"{i}:x".encode()) is victim)

        async def ejected() -> bool:
            await _results(c, [key])  # traffic for the dead shard: what makes twemproxy eject
            return len(shards.ring.servers) == 2

        await eventually(ejected)
        # Ten ejection periods with traffic to its keys: a timer-based return would show up here.
        # (Waiting is the only way to show that something does not happen.)
        for _ in range(20):
            await _results(c, [key])
            await asyncio.sleep(0.1)
        assert len(shards.ring.servers) == 2
        assert len(sc.events("reshard")) == 1
        await c.aclose()


async def test_a_hung_shard_times_out_with_its_name_and_the_others_go_on(redis3: list[RedisServer]) -> None:
    victim = redis3[0]
    keys = _keys_by_server(redis3)
    async with sharded(redis3, sharding={"hash_tag": "{}", "timeout_secs": 0.3}) as (sc, port):
        c = client(port)
        for key in keys[victim.port] + keys[redis3[1].port]:
            await c.set(key, "v")
        victim.freeze()
        try:
            started = time.monotonic()
            hung = await _results(c, keys[victim.port][:5])
            assert all(isinstance(r, ResponseError) for r in hung)
            assert f"shard {victim.address} timed out after 0.3s" in str(hung[0])
            assert time.monotonic() - started < 5
            assert await _results(c, keys[redis3[1].port]) == [b"v"] * len(keys[redis3[1].port])
        finally:
            victim.thaw()
        labels = {"listener": "cache", "shard": victim.address, "endpoint": victim.address, "reason": "timeout"}
        assert sc.sample("ambassador_shard_errors_total", labels) >= 5
        assert len(sc.events("shard commands failed")) >= 1
        await c.aclose()


async def test_shards_follow_discovery_and_each_change_is_one_reshard_line(
    redis3: list[RedisServer], tmp_path: Any
) -> None:
    listing = tmp_path / "shards.txt"
    listing.write_text("\n".join(s.address for s in redis3[:2]) + "\n")
    cluster = {"endpoints": [], "endpoints_file": str(listing), "endpoints_file_poll_secs": 0.2}
    sharding = {"servers": [f"{s.address}:1 cache-{i}" for i, s in enumerate(redis3)]}
    async with sharded(redis3, cluster={**cluster, "health_check": FAST_CHECKS}, sharding=sharding) as (sc, port):
        shards = sc.plugin.listeners[0].proxy.shards
        assert [s.name for s in shards.ring.servers] == ["cache-0", "cache-1"]
        c = client(port)
        assert await c.set("before", "x")
        listing.write_text("\n".join(s.address for s in redis3) + "\n")

        async def three() -> bool:
            return [s.name for s in shards.ring.servers] == ["cache-0", "cache-1", "cache-2"]

        await eventually(three)
        joined = sc.events("reshard")
        assert len(joined) == 1 and joined[0]["changes"] == ["cache-2 joined"]
        assert 15 < joined[0]["keys_moved_percent"] < 50  # about a third of the keys now belong to cache-2
        listing.write_text(redis3[0].address + "\n")

        async def one() -> bool:
            return [s.name for s in shards.ring.servers] == ["cache-0"]

        await eventually(one)
        removed = sc.events("reshard")[1]
        assert sorted(removed["changes"]) == ["cache-1 removed", "cache-2 removed"]
        assert sc.sample("ambassador_reshards_total", {"listener": "cache", "reason": "discovery"}) == 2
        for i in range(20):  # every key is served by the one shard left
            assert await c.set(f"{i}:after", i)
        assert await direct(redis3[0]).exists(*(f"{i}:after" for i in range(20))) == 20
        await c.aclose()
