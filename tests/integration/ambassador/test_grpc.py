"""gRPC through the ambassador over h2c: real grpcio servers (own processes) and a real grpcio client."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import h2.events
import pytest

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import RunningSidecar, run_sidecar
from tests.integration.ambassador.conftest import listener
from tests.integration.ambassador.grpc_service import EchoClient, GrpcServer, grpc_server
from tests.integration.ambassador.h2_client import RawH2
from tests.integration.ambassador.h2_upstream import h2_upstream

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def servers(*names: str) -> AsyncIterator[list[GrpcServer]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(grpc_server(name)) for name in names]


@contextlib.asynccontextmanager
async def ambassador(upstreams: list[Any], **options: Any) -> AsyncIterator[tuple[RunningSidecar, int]]:
    cluster = {"protocol": "http2", **options.pop("cluster", {})}
    config = listener([s.address for s in upstreams], cluster=cluster, **options)
    async with run_sidecar(Ambassador, listeners=[config]) as sc:
        yield sc, sc.plugin.listeners[0].port


async def test_every_kind_of_method_passes_through() -> None:
    async with servers("s1") as ups, ambassador(ups) as (_, port):
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            assert await asyncio.to_thread(client.unary, b"hello", timeout=10) == b"s1:hello"
            got = await asyncio.to_thread(lambda: list(client.server_stream(b"5", timeout=10)))
            assert got == [b"s1:%d" % i for i in range(5)]
            parts = [b"a", b"b", b"c"]
            assert await asyncio.to_thread(client.client_stream, iter(parts), timeout=10) == b"s1:abc"
            echoed = await asyncio.to_thread(lambda: list(client.bidi(iter([b"x", b"y"]), timeout=10)))
            assert echoed == [b"s1:x", b"s1:y"]
        finally:
            client.close()


async def test_calls_over_one_client_connection_are_balanced_across_three_servers() -> None:
    async with servers("s1", "s2", "s3") as ups, ambassador(ups, cluster={"balancer": "round_robin"}) as (_, port):
        client = EchoClient(f"127.0.0.1:{port}")
        try:

            def calls() -> Counter[bytes]:
                return Counter(client.unary(b"n", timeout=10).split(b":")[0] for _ in range(300))

            counts = await asyncio.to_thread(calls)
        finally:
            client.close()
    assert set(counts) == {b"s1", b"s2", b"s3"}
    for name in (b"s1", b"s2", b"s3"):
        assert 80 <= counts[name] <= 120, counts  # 100 each, within ±20%


async def test_concurrent_calls_share_few_upstream_connections() -> None:
    async with (
        servers("s1") as ups,
        ambassador(ups, cluster={"http2": {"max_connections_per_endpoint": 2, "max_streams_per_connection": 4}}) as (
            sc,
            port,
        ),
    ):
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            futures = [client.slow.future(b"0.3", timeout=20) for _ in range(12)]
            results = await asyncio.to_thread(lambda: [f.result() for f in futures])
        finally:
            client.close()
        pool = sc.plugin.listeners[0].http2.pool  # type: ignore[union-attr]
        conns = [up for ups_ in pool.by_endpoint.values() for up in ups_]
    assert results == [b"s1:slept"] * 12
    # 8 streams at once at most (2 connections x 4), the rest waited their turn on another try or were
    # refused to the app: never a third connection.
    assert len(conns) <= 2


async def test_a_large_response_flows_through_windows_smaller_than_it() -> None:
    size = 3 * 1024 * 1024
    async with servers("s1") as ups, ambassador(ups) as (_, port):
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            got = await asyncio.to_thread(client.big, b"%d" % size, timeout=30)
        finally:
            client.close()
    assert len(got) == size  # 3 MiB through a 256 KiB stream window and a 1 MiB connection window


def grpc_call(port: int, path: bytes, extra: list[tuple[bytes, bytes]] = (), timeout: float = 10) -> list[Any]:  # type: ignore[assignment]
    """One gRPC call from a raw HTTP/2 client (grpcio would enforce deadlines itself); its events."""
    raw = RawH2(port)
    try:
        headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers"), *extra]
        stream_id = raw.request(path, headers, end_stream=False)
        raw.conn.send_data(stream_id, b"\x00\x00\x00\x00\x01x", end_stream=True)
        raw.flush()
        return raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded), timeout=timeout)
    finally:
        raw.close()


def heads(events: list[Any]) -> list[dict[bytes, bytes]]:
    kinds = (h2.events.ResponseReceived, h2.events.TrailersReceived)
    return [dict(e.headers) for e in events if isinstance(e, kinds)]


async def test_grpc_timeout_is_the_deadline_answered_deadline_exceeded_by_the_proxy() -> None:
    async with h2_upstream("silent", mode="silent") as up, ambassador([up]) as (_, port):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        events = await asyncio.to_thread(grpc_call, port, b"/test.Echo/Slow", [(b"grpc-timeout", b"300m")])
        elapsed = loop.time() - t0
    got = heads(events)
    assert got and got[0][b"grpc-status"] == b"4", got
    assert got[0][b"x-ambassador-reason"] == b"deadline_exceeded"
    assert got[0][b":status"] == b"200"
    assert elapsed < 5  # answered at the call's deadline, long before the listener's overall timeout (15 s)


async def test_refused_streams_and_goaway_move_calls_to_another_server() -> None:
    async with (
        h2_upstream("refuser", mode="refuse") as refuser,
        h2_upstream("leaver", mode="goaway") as leaver,
        h2_upstream("good") as good,
        ambassador([refuser, leaver, good], cluster={"balancer": "round_robin"}, retries=3) as (sc, port),
    ):
        got = [heads(await asyncio.to_thread(grpc_call, port, b"/test.Echo/Unary")) for _ in range(9)]
        retries = dict(sc.plugin.listeners[0].stats.retries)
    assert all(h and h[0].get(b"x-served-by") == b"good" for h in got), got
    assert retries.get("upstream_refused_stream", 0) >= 1, retries
    assert retries.get("upstream_goaway", 0) >= 1, retries
    assert refuser.streams >= 1 and leaver.streams >= 1


async def test_a_try_that_times_out_is_retried_on_another_server() -> None:
    # The first try of each call goes out from the read that brought it (no task): its timer is the
    # per-try timeout, and the retry that follows runs as the stream's task.
    async with (
        h2_upstream("silent", mode="silent") as silent,
        h2_upstream("good") as good,
        ambassador(
            [silent, good],
            cluster={"balancer": "round_robin"},
            retries=2,
            per_try_timeout_secs=0.3,
            retry_on_grpc_status=["deadline-exceeded"],
        ) as (sc, port),
    ):
        got = [heads(await asyncio.to_thread(grpc_call, port, b"/test.Echo/Unary")) for _ in range(4)]
        retries = dict(sc.plugin.listeners[0].stats.retries)
    assert all(h and h[0].get(b"x-served-by") == b"good" for h in got), got
    assert retries.get("upstream_timeout", 0) >= 1, retries
    assert silent.streams >= 1


async def test_no_upstream_is_answered_unavailable_as_grpc() -> None:
    async with ambassador([], cluster={"endpoints": ["127.0.0.1:9"]}) as (_, port):
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            with pytest.raises(grpc.RpcError) as caught:
                await asyncio.to_thread(client.unary, b"x", timeout=10)
        finally:
            client.close()
    err = caught.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "connect failed" in err.details()  # type: ignore[attr-defined]
    trailers = dict(err.trailing_metadata())  # type: ignore[attr-defined]
    assert trailers["x-ambassador-reason"] == "connect_failed"


async def until(predicate: Any, within_secs: float = 15.0) -> None:
    """Poll `predicate()` until it holds (bounded): for states the proxy reaches on its own timers."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within_secs
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_grpc_health_checks_take_a_not_serving_server_out_of_rotation() -> None:
    checks = {
        "kind": "grpc",
        "interval_secs": 0.3,
        "timeout_secs": 0.3,
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    }
    async with (
        servers("s1", "s2") as ups,
        ambassador(ups, cluster={"health_check": checks, "balancer": "round_robin", "panic_threshold_percent": 0}) as (
            sc,
            port,
        ),
    ):
        cluster = sc.plugin.listeners[0].cluster
        assert len(cluster.candidates) == 2  # both answered SERVING to the first checks
        direct = EchoClient(ups[1].address)
        try:
            await asyncio.to_thread(direct.set_serving, b"0", timeout=5)
        finally:
            direct.close()
        await until(lambda: [ep.key for ep in cluster.candidates] == [ups[0].address])
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            got = await asyncio.to_thread(lambda: {client.unary(b"x", timeout=10) for _ in range(20)})
        finally:
            client.close()
    assert got == {b"s1:x"}


async def test_one_server_killed_under_load_fails_no_unary_call() -> None:
    async with servers("s1", "s2", "s3") as ups, ambassador(ups, cluster={"balancer": "round_robin"}) as (sc, port):
        client = EchoClient(f"127.0.0.1:{port}")
        stop = asyncio.Event()
        failures: list[str] = []
        served: Counter[bytes] = Counter()

        def load() -> None:
            # 8 calls in flight at a time over the one client connection, until told to stop.
            while not stop.is_set():
                batch = [client.slow.future(b"0.02", timeout=10) for _ in range(8)]
                for future in batch:
                    try:
                        served[future.result().split(b":")[0]] += 1
                    except grpc.RpcError as exc:
                        failures.append(f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]

        try:
            worker = asyncio.create_task(asyncio.to_thread(load))
            await until(lambda: sum(served.values()) >= 100)
            ups[1].kill()
            killed_at = sum(served.values())
            await until(lambda: sum(served.values()) >= killed_at + 200)
            stop.set()
            await worker
        finally:
            stop.set()
            client.close()
        retries = sc.plugin.listeners[0].stats.retries
    assert failures == []
    assert served[b"s1"] and served[b"s3"]
    assert sum(retries.values()) >= 1, retries  # the kill was seen: calls in flight on s2 were retried


async def test_drain_sends_goaway_and_finishes_the_open_call() -> None:
    async with servers("s1") as ups, ambassador(ups) as (sc, port):
        h2proxy = sc.plugin.listeners[0].http2
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            call = client.slow.future(b"0.5", timeout=10)
            await until(lambda: any(c.streams for c in h2proxy.clients))
            (conn,) = h2proxy.clients
            drain = asyncio.create_task(sc.plugin.drain())  # what SIGTERM runs: ends once no client is left
            await until(lambda: conn.going_away)
            assert conn.streams  # GOAWAY sent while the call is still open
            result = await asyncio.to_thread(call.result)
            await asyncio.wait_for(drain, 10)
        finally:
            client.close()
    assert result == b"s1:slept"
    assert conn.transport is None  # closed by the proxy once its last stream ended
