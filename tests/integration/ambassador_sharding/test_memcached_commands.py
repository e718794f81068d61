"""The memcached listener against three real memcacheds: the text protocol, checked on the shards."""

from __future__ import annotations

import asyncio
import os

from pymemcache.client.base import Client

from tests.integration.ambassador_sharding.conftest import raw_exchange, ring_of, server_of, sharded
from tests.support.shard_peers import Memcached


async def _get_direct(server: Memcached, key: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"get " + key + b"\r\n")
    head = await reader.readline()
    value = b""
    if head.startswith(b"VALUE"):
        value = await reader.readexactly(int(head.split()[3]) + 2)
        await reader.readline()
    writer.close()
    return value[:-2]


async def test_storage_and_keyed_commands_reach_the_keys_shard(memcached3: list[Memcached]) -> None:
    ring, by_name = ring_of(memcached3)
    async with sharded(memcached3, "memcached") as (_, port):
        sent = (
            b"set a 5 0 3\r\none\r\nadd a 0 0 1\r\nx\r\nadd b 0 0 3\r\ntwo\r\nreplace b 7 0 5\r\nTWO!!\r\n"
            b"append a 0 0 2\r\n++\r\nprepend a 0 0 2\r\n--\r\nget a b\r\n"
            b"set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 20\r\nincr nope 1\r\ntouch a 100\r\ntouch nope 1\r\n"
            b"delete b\r\ndelete b\r\nget b\r\n"
        )
        expected = (
            b"STORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\nSTORED\r\n"
            b"VALUE a 5 7\r\n--one++\r\nVALUE b 7 5\r\nTWO!!\r\nEND\r\n"
            b"STORED\r\n15\r\n0\r\nNOT_FOUND\r\nTOUCHED\r\nNOT_FOUND\r\nDELETED\r\nNOT_FOUND\r\nEND\r\n"
        )
        assert await raw_exchange(port, sent, expected) == expected
    assert await _get_direct(server_of(ring, by_name, b"a"), b"a") == b"--one++"
    for server in memcached3:
        if server is not server_of(ring, by_name, b"a"):
            assert await _get_direct(server, b"a") == b""


async def test_cas_through_the_proxy(memcached3: list[Memcached]) -> None:
    async with sharded(memcached3, "memcached") as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"set c 0 0 1\r\n1\r\ngets c\r\n")
        assert await reader.readline() == b"STORED\r\n"
        head = await reader.readline()
        unique = head.split()[4]
        assert await reader.readline() == b"1\r\n"
        assert await reader.readline() == b"END\r\n"
        writer.write(b"cas c 0 0 1 " + unique + b"\r\n2\r\ncas c 0 0 1 " + unique + b"\r\n3\r\nget c\r\n")
        expected = b"STORED\r\nEXISTS\r\nVALUE c 0 1\r\n2\r\nEND\r\n"
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
        writer.close()


async def test_get_with_many_keys_is_fanned_out_and_merged_in_key_order(memcached3: list[Memcached]) -> None:
    ring, by_name = ring_of(memcached3)
    keys = [f"{i}:item".encode() for i in range(60)]
    assert len({server_of(ring, by_name, k).port for k in keys}) == 3
    async with sharded(memcached3, "memcached") as (_, port):
        stores = b"".join(b"set %s %d 0 %d\r\n%s\r\n" % (k, i, len(k) + 1, k + b"!") for i, k in enumerate(keys))
        await raw_exchange(port, stores, b"STORED\r\n" * len(keys))
        asked = [keys[5], b"missing", keys[1], keys[5], *keys[30:40], b"missing2"]
        expected = b"".join(
            b"VALUE %s %d %d\r\n%s\r\n" % (k, keys.index(k), len(k) + 1, k + b"!") for k in asked if k in keys
        )
        assert await raw_exchange(port, b"get " + b" ".join(asked) + b"\r\n", expected + b"END\r\n")
        # gat: get-and-touch, fanned out the same way with its exptime in front of the keys
        gat = b"gat 100 " + b" ".join(asked[:4]) + b"\r\n"
        first = b"".join(
            b"VALUE %s %d %d\r\n%s\r\n" % (k, keys.index(k), len(k) + 1, k + b"!") for k in asked[:4] if k in keys
        )
        assert await raw_exchange(port, gat, first + b"END\r\n") == first + b"END\r\n"
        # gets: the cas unique of each value, still in key order
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"gets " + b" ".join(keys[:3]) + b"\r\n")
        for key in keys[:3]:
            head = (await asyncio.wait_for(reader.readline(), 5)).split()
            assert head[:2] == [b"VALUE", key] and head[4].isdigit()
            assert await reader.readline() == key + b"!\r\n"
        assert await reader.readline() == b"END\r\n"
        writer.close()


async def test_noreply_is_honoured_without_shifting_replies(memcached3: list[Memcached]) -> None:
    async with sharded(memcached3, "memcached") as (_, port):
        sent = (
            b"set q 0 0 1 noreply\r\n1\r\nincr q 5 noreply\r\nincr nope 1 noreply\r\n"
            b"add q 0 0 1 noreply\r\nx\r\ndelete nope noreply\r\ntouch q 10 noreply\r\nget q\r\n"
        )
        assert await raw_exchange(port, sent, b"VALUE q 0 1\r\n6\r\nEND\r\n")


async def test_binary_values_a_1_mib_value_and_a_real_client(memcached3: list[Memcached]) -> None:
    big = os.urandom(1 << 20)
    async with sharded(memcached3, "memcached") as (_, port):

        def use() -> None:
            mc = Client(("127.0.0.1", port), timeout=10)
            assert mc.set("binary", b"\x00\r\nEND\r\n\xff")
            assert mc.set("big", big)
            assert mc.get("binary") == b"\x00\r\nEND\r\n\xff"
            assert mc.get("big") == big
            many = {f"{i}:pm": str(i).encode() for i in range(50)}
            assert mc.set_many(many) == []
            assert mc.get_many(list(many)) == many
            assert mc.delete_many(list(many))
            mc.close()

        await asyncio.to_thread(use)


async def test_unsupported_and_unknown_commands(memcached3: list[Memcached]) -> None:
    async with sharded(memcached3, "memcached") as (_, port):
        sent = b"stats\r\nflush_all\r\nms k 2 T0\r\nhi\r\nbogus\r\nversion\r\nverbosity 1\r\n"
        expected = (
            b"SERVER_ERROR stats is not supported by this proxy: it addresses one server; ask each server directly\r\n"
            b"SERVER_ERROR flush_all is not supported by this proxy: it needs every shard; run it on each server "
            b"directly\r\n"
            b"SERVER_ERROR ms is not supported by this proxy: meta commands are not supported\r\n"
            b"ERROR\r\n"
        )
        reply = await raw_exchange(port, sent, expected + b"VERSION ")
        assert reply == expected + b"VERSION "


async def test_a_value_over_the_limit_is_refused_and_skipped(memcached3: list[Memcached]) -> None:
    async with sharded(memcached3, "memcached", sharding={"max_value_bytes": 4096}) as (sc, port):
        big = b"z" * 100_000  # arrives in several reads: skipped as it comes, never buffered
        sent = b"set big 0 0 100000\r\n" + big + b"\r\nset small 0 0 2\r\nok\r\nget small big\r\n"
        expected = b"SERVER_ERROR object too large for cache\r\nSTORED\r\nVALUE small 0 2\r\nok\r\nEND\r\n"
        assert await raw_exchange(port, sent, expected) == expected
        labels = {"listener": "cache", "cluster": "cache", "reason": "value_too_large"}
        assert sc.sample("ambassador_errors_total", labels) == 1


async def test_bad_lines_and_the_binary_protocol(memcached3: list[Memcached]) -> None:
    async with sharded(memcached3, "memcached") as (sc, port):
        long_key = b"k" * 251
        sent = b"get " + long_key + b"\r\nset x 0 0 notanumber\r\nincr\r\n\r\nget x\r\n"
        expected = b"CLIENT_ERROR bad command line format\r\n" * 2 + b"ERROR\r\nERROR\r\nEND\r\n"
        assert await raw_exchange(port, sent, expected) == expected
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x80\x00\x00\x00" + bytes(20))  # a binary protocol request
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert sc.events("bad client input")
