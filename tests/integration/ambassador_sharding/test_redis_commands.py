"""The redis listener against three real redis-servers: every kind of command, checked on the shards."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from tests.integration.ambassador_sharding.conftest import (
    client,
    direct,
    raw_exchange,
    ring_of,
    server_of,
    sharded,
)
from tests.support.shard_peers import RedisServer, redis_servers


async def test_single_key_commands_go_to_the_keys_shard_only(redis3: list[RedisServer]) -> None:
    ring, by_name = ring_of(redis3)
    async with sharded(redis3) as (_, port):
        c = client(port)
        keys = [f"user:{i}".encode() for i in range(30)]
        for i, key in enumerate(keys):
            assert await c.set(key, i)
            assert await c.incrby(key, 10) == i + 10
            await c.hset(b"h" + key, mapping={"a": 1, "b": 2})
            await c.rpush(b"l" + key, "x", "y")
            await c.zadd(b"z" + key, {"m": 1.5})
        for i, key in enumerate(keys):
            assert await c.get(key) == str(i + 10).encode()
            assert await c.hgetall(b"h" + key) == {b"a": b"1", b"b": b"2"}
            assert await c.lrange(b"l" + key, 0, -1) == [b"x", b"y"]
            assert await c.zscore(b"z" + key, "m") == 1.5
            assert await c.expire(key, 100)
            assert 0 < await c.ttl(key) <= 100
            for prefix in (b"", b"h", b"l", b"z"):
                owner = server_of(ring, by_name, prefix + key)
                for server in redis3:
                    found = await direct(server).exists(prefix + key)
                    assert found == (1 if server is owner else 0), (prefix + key, server.address)
        await c.aclose()


async def test_a_pipelined_mix_answers_as_one_redis_would_in_order(redis3: list[RedisServer]) -> None:
    """The same pipeline through the proxy and to one plain redis-server must give the same replies."""
    commands: list[tuple[str, ...]] = []
    for i in range(400):
        k = f"k{i % 97}"
        commands += [("SET", k, str(i)), ("INCR", f"n{i % 13}"), ("GET", k), ("APPEND", k, "x")]
        if i % 10 == 0:
            commands += [("MGET", *(f"k{j}" for j in range(i % 50, i % 50 + 12))), ("PING",), ("ECHO", f"e{i}")]
            commands += [("DEL", f"k{(i + 1) % 97}", f"k{(i + 2) % 97}", "nope"), ("EXISTS", k, k, "nope")]
            commands += [("MSET", f"m{i}", "1", f"m{i + 1}", "2", f"m{i + 2}", "3"), ("GET", f"m{i + 1}")]
            commands += [("LPUSH", f"l{i % 7}", str(i)), ("LLEN", f"l{i % 7}"), ("STRLEN", k)]
    async with redis_servers(1) as (single,), sharded(redis3) as (_, port):

        async def run(r: aredis.Redis) -> list[object]:
            pipe = r.pipeline(transaction=False)
            for cmd in commands:
                pipe.execute_command(*cmd)
            results: list[object] = await pipe.execute(raise_on_error=False)
            await r.aclose()
            return results

        assert await run(client(port)) == await run(direct(single))


# One or two of every family of single-key commands, each run on fresh keys against the proxy and
# against one plain redis-server: the replies must be the same.
FAMILIES: list[tuple[str, ...]] = [
    ("SET", "s", "v", "EX", "100"), ("SETNX", "s", "w"), ("GETSET", "s", "v2"), ("GETEX", "s", "PERSIST"),
    ("GETDEL", "s"), ("SET", "s", "hello"), ("APPEND", "s", " world"), ("GETRANGE", "s", "0", "4"),
    ("SETRANGE", "s", "6", "WORLD"), ("STRLEN", "s"), ("SETEX", "e", "50", "v"), ("PSETEX", "p", "50000", "v"),
    ("INCR", "n"), ("INCRBY", "n", "5"), ("DECR", "n"), ("DECRBY", "n", "2"), ("INCRBYFLOAT", "f", "1.5"),
    ("SETBIT", "b", "7", "1"), ("GETBIT", "b", "7"), ("BITCOUNT", "b"), ("BITPOS", "b", "1"),
    ("TYPE", "s"), ("PERSIST", "e"), ("PEXPIRE", "s", "100000"), ("EXPIREAT", "s", "4000000000"),
    ("HSET", "h", "a", "1", "b", "2"), ("HSETNX", "h", "a", "9"), ("HGET", "h", "a"), ("HMGET", "h", "a", "z"),
    ("HINCRBY", "h", "a", "3"), ("HDEL", "h", "b"), ("HEXISTS", "h", "b"), ("HLEN", "h"), ("HKEYS", "h"),
    ("HVALS", "h"), ("HGETALL", "h"), ("HSTRLEN", "h", "a"),
    ("RPUSH", "l", "a", "b", "c"), ("LPUSH", "l", "z"), ("LRANGE", "l", "0", "-1"), ("LINDEX", "l", "1"),
    ("LINSERT", "l", "BEFORE", "b", "x"), ("LREM", "l", "1", "x"), ("LSET", "l", "0", "y"), ("LPOS", "l", "c"),
    ("LTRIM", "l", "0", "2"), ("LPOP", "l"), ("RPOP", "l"), ("LLEN", "l"),
    ("SADD", "st", "a", "b", "c"), ("SREM", "st", "c"), ("SISMEMBER", "st", "a"), ("SMISMEMBER", "st", "a", "c"),
    ("SCARD", "st"), ("SMEMBERS", "st"),
    ("ZADD", "z", "1", "a", "2", "b", "3", "c"), ("ZINCRBY", "z", "5", "a"), ("ZSCORE", "z", "a"),
    ("ZRANK", "z", "b"), ("ZREVRANK", "z", "b"), ("ZRANGE", "z", "0", "-1", "WITHSCORES"),
    ("ZRANGEBYSCORE", "z", "2", "10"), ("ZCOUNT", "z", "0", "4"), ("ZREM", "z", "c"), ("ZCARD", "z"),
    ("ZPOPMIN", "z"), ("ZMSCORE", "z", "a", "nope"),
    ("PFADD", "hll", "a", "b", "c"), ("GEOADD", "g", "13.36", "38.11", "palermo"), ("GEOPOS", "g", "palermo"),
    ("XADD", "x", "1-1", "f", "v"), ("XLEN", "x"), ("XRANGE", "x", "-", "+"), ("XDEL", "x", "1-1"),
    ("OBJECT", "ENCODING", "s"), ("GET", "nope"), ("HGET", "s", "a"),
]  # fmt: skip


async def test_every_family_of_single_key_commands_answers_as_one_redis_does(redis3: list[RedisServer]) -> None:
    async with redis_servers(1) as (single,), sharded(redis3) as (_, port):

        async def run(r: aredis.Redis) -> list[object]:
            pipe = r.pipeline(transaction=False)
            for cmd in FAMILIES:
                pipe.execute_command(*cmd)
            results: list[object] = await pipe.execute(raise_on_error=False)
            await r.aclose()
            return [str(x) if isinstance(x, Exception) else x for x in results]

        through_proxy = await run(client(port))
        refused = [FAMILIES[i] for i, r in enumerate(through_proxy) if "not supported by this proxy" in str(r)]
        assert refused == [("OBJECT", "ENCODING", "s")]  # OBJECT reads server internals: refused on purpose
        expected = await run(direct(single))
        assert [r for i, r in enumerate(through_proxy) if FAMILIES[i][0] != "OBJECT"] == [
            r for i, r in enumerate(expected) if FAMILIES[i][0] != "OBJECT"
        ]


async def test_multi_key_commands_are_split_and_merged(redis3: list[RedisServer]) -> None:
    ring, by_name = ring_of(redis3)
    async with sharded(redis3) as (_, port):
        c = client(port)
        # fnv1a barely moves the high bits for keys that differ at the end: vary them at the front.
        pairs = {f"{i}:mk".encode(): f"v{i}".encode() for i in range(40)}
        assert len({server_of(ring, by_name, k).port for k in pairs}) == 3  # really spread over the shards
        assert await c.mset(pairs)
        for key, value in pairs.items():
            assert await direct(server_of(ring, by_name, key)).get(key) == value
        asked = [b"5:mk", b"missing", b"1:mk", b"5:mk", *list(pairs)[10:20]]
        assert await c.mget(asked) == [pairs.get(k) for k in asked]
        assert await c.exists(b"1:mk", b"1:mk", b"2:mk", b"missing") == 3
        assert await c.touch(*list(pairs)[:10]) == 10
        assert await c.delete(*list(pairs)[:20], b"missing") == 20
        assert await c.unlink(*list(pairs)[20:], b"missing") == 20
        assert await c.mget(list(pairs)) == [None] * 40
        await c.aclose()


async def test_keys_that_must_share_a_shard_work_with_a_hash_tag_and_are_refused_without(
    redis3: list[RedisServer],
) -> None:
    ring, by_name = ring_of(redis3, hash_tag="{}")
    apart = next((a, b) for a in (f"a{i}" for i in range(50)) for b in ("b", "c", "d", "e") if
                 server_of(ring, by_name, a.encode()) is not server_of(ring, by_name, b.encode()))  # fmt: skip
    async with sharded(redis3, sharding={"hash_tag": "{}"}) as (_, port):
        c = client(port)
        await c.set("{user1}:name", "ann")
        assert await c.rename("{user1}:name", "{user1}:alias")
        assert await c.get("{user1}:alias") == b"ann"
        await c.sadd("{s}:a", 1, 2, 3)
        await c.sadd("{s}:b", 2, 3, 4)
        assert await c.sinter("{s}:a", "{s}:b") == {b"2", b"3"}
        assert await c.eval("return redis.call('GET', KEYS[1])", 1, "{user1}:alias") == b"ann"
        await c.set(apart[0], "x")
        with pytest.raises(ResponseError, match=r"on different shards.*hash tag"):
            await c.rename(*apart)
        with pytest.raises(ResponseError, match="on different shards"):
            await c.eval("return 1", 2, *apart)
        with pytest.raises(ResponseError, match="no keys cannot be routed"):
            await c.eval("return 1", 0)
        assert await c.get(apart[0]) == b"x"  # the refused RENAME did nothing
        await c.aclose()


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (b"MULTI", b"transactions need a connection of their own"),
        (b"BLPOP q 0", b"blocking commands would stall a shard connection"),
        (b"SUBSCRIBE news", b"pub/sub is not sharded"),
        (b"KEYS *", b"it needs every shard"),
        (b"SCAN 0", b"it needs every shard"),
        (b"FLUSHALL", b"it needs every shard"),
        (b"CONFIG GET maxmemory", b"server administration"),
        (b"XREAD BLOCK 0 STREAMS s 0", b"blocking commands would stall"),
    ],
)
async def test_commands_that_cannot_be_sharded_get_an_error_saying_why(
    redis3: list[RedisServer], command: bytes, reason: bytes
) -> None:
    async with sharded(redis3) as (sc, port):
        name = command.split()[0]
        expected_start = b"-ERR " + name + b" "
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(command + b"\r\nPING\r\n")
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(expected_start) and reason in line, line
        assert await asyncio.wait_for(reader.readline(), 5) == b"+PONG\r\n"  # the connection goes on
        writer.close()
        assert sc.sample("ambassador_errors_total", {"listener": "cache", "cluster": "cache",
                                                     "reason": "unsupported_command"}) == 1  # fmt: skip


async def test_unknown_commands_and_wrong_arity_are_errors_not_hangs(redis3: list[RedisServer]) -> None:
    async with sharded(redis3) as (_, port):
        reply = await raw_exchange(
            port,
            b"FOO bar\r\nGET\r\nMSET a\r\n*1\r\n$4\r\nPING\r\n",
            b"-ERR unsupported command 'FOO' (not sharded)\r\n"
            b"-ERR wrong number of arguments for 'get' command\r\n"
            b"-ERR wrong number of arguments for 'mset' command\r\n+PONG\r\n",
        )
        assert reply.endswith(b"+PONG\r\n")


async def test_local_commands(redis3: list[RedisServer]) -> None:
    async with sharded(redis3) as (_, port):
        sent = (
            b"PING\r\nPING hi\r\nECHO there\r\nSELECT 0\r\nSELECT 3\r\nCLIENT SETNAME app\r\nCLIENT GETNAME\r\n"
            b"HELLO 3\r\nQUIT\r\n"
        )
        expected = (
            b"+PONG\r\n$2\r\nhi\r\n$5\r\nthere\r\n+OK\r\n"
            b"-ERR only database 0 is served here (set sharding.database)\r\n+OK\r\n$3\r\napp\r\n"
            b"-NOPROTO this proxy speaks RESP2 only; use protocol 2\r\n+OK\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(sent)
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
        assert await asyncio.wait_for(reader.read(), 5) == b""  # QUIT closed it
        writer.close()


async def test_a_client_asking_for_resp3_falls_back_to_resp2(redis3: list[RedisServer]) -> None:
    async with sharded(redis3) as (_, port):
        c = aredis.Redis(host="127.0.0.1", port=port)  # redis-py's default: HELLO 3 first
        assert await c.set("k", "v")
        assert await c.get("k") == b"v"
        await c.aclose()


async def test_binary_keys_and_values_and_a_1_mib_value(redis3: list[RedisServer]) -> None:
    ring, by_name = ring_of(redis3)
    keys = [b"\x00\r\n\xff", bytes(range(256)), b"\xe2\x82\xac{x}", b" spaced key ", b"\x80" * 40]
    big = os.urandom(1 << 20)
    async with sharded(redis3) as (_, port):
        c = client(port)
        for key in keys:
            assert await c.set(key, key + b"\r\n\x00value")
        assert await c.set(b"big", big)
        assert await c.mget(keys) == [k + b"\r\n\x00value" for k in keys]
        assert await c.get(b"big") == big
        for key in [*keys, b"big"]:
            assert await direct(server_of(ring, by_name, key)).exists(key) == 1
        await c.aclose()


async def test_inline_commands_as_telnet_sends_them(redis3: list[RedisServer]) -> None:
    async with sharded(redis3) as (_, port):
        sent = b"SET greeting hello\r\nGET greeting\nPING\r\n"
        assert await raw_exchange(port, sent, b"+OK\r\n$5\r\nhello\r\n+PONG\r\n")


async def test_broken_resp_is_answered_with_the_reason_then_closed(redis3: list[RedisServer]) -> None:
    async with sharded(redis3) as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$x\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert data == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
        assert sc.sample("ambassador_errors_total", {"listener": "cache", "cluster": "cache",
                                                     "reason": "bad_request"}) == 1  # fmt: skip
        assert len(sc.events("bad client input")) == 1
        c = client(port)  # the listener is fine
        assert await c.ping()
        await c.aclose()


async def test_the_app_must_authenticate_when_a_client_password_is_set(
    redis3: list[RedisServer], tmp_path: object
) -> None:
    secret = tmp_path / "password"  # type: ignore[operator]
    secret.write_text("s3cret-app\n")
    async with sharded(redis3, sharding={"client_password_file": str(secret)}) as (sc, port):
        reply = await raw_exchange(
            port,
            b"GET k\r\nAUTH wrong\r\nAUTH s3cret-app\r\nSET k v\r\nGET k\r\n",
            b"-NOAUTH Authentication required.\r\n"
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n+OK\r\n$1\r\nv\r\n",
        )
        assert reply.endswith(b"$1\r\nv\r\n")
        c = client(port, password="s3cret-app")
        assert await c.get("k") == b"v"
        await c.aclose()
        assert "s3cret-app" not in repr(sc.logs)


async def test_shards_that_need_a_password_get_it_from_a_file(tmp_path: object) -> None:
    secret = tmp_path / "redis-password"  # type: ignore[operator]
    secret.write_text("shard-pass\n")
    async with redis_servers(3, password="shard-pass") as servers:
        ring, by_name = ring_of(servers)
        async with sharded(servers, sharding={"server_password_file": str(secret)}) as (sc, port):
            assert sc.plugin.listeners[0].cluster.ready
            assert all(ep.hc_state == "up" for ep in sc.plugin.listeners[0].cluster.endpoints)  # PING after AUTH
            c = client(port)
            for i in range(20):
                assert await c.set(f"p{i}", i)
            for i in range(20):
                key = f"p{i}".encode()
                assert await direct(server_of(ring, by_name, key), password="shard-pass").get(key) == str(i).encode()
            await c.aclose()
            assert "shard-pass" not in repr(sc.logs)


async def test_a_wrong_shard_password_fails_its_commands_with_the_reason(tmp_path: object) -> None:
    secret = tmp_path / "redis-password"  # type: ignore[operator]
    secret.write_text("not-it")
    async with redis_servers(3, password="shard-pass") as servers:
        settings = {"sharding": {"server_password_file": str(secret)}, "cluster": {"health_check": {"kind": "tcp"}}}
        async with sharded(servers, **settings) as (sc, port):
            c = client(port)
            with pytest.raises(ResponseError, match=r"shard 127\.0\.0\.1:\d+ AUTH failed: -WRONGPASS"):
                await c.get("k")
            await c.aclose()
            assert "not-it" not in repr(sc.logs)


async def test_the_configured_database_is_selected_on_every_shard(redis3: list[RedisServer]) -> None:
    ring, by_name = ring_of(redis3)
    async with sharded(redis3, sharding={"database": 2}) as (_, port):
        c = client(port)
        assert await c.set("in-db-2", "yes")
        assert await c.execute_command("SELECT", "2")
        await c.aclose()
    owner = server_of(ring, by_name, b"in-db-2")
    assert await direct(owner, db=2).get("in-db-2") == b"yes"
    assert await direct(owner, db=0).get("in-db-2") is None
