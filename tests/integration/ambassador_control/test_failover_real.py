"""The cluster as the data plane uses it, against real servers: a killed server is tried at most once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from sidecars.ambassador.cluster.cluster import Cluster
from sidecars.ambassador.cluster.endpoint import Endpoint, Outcome
from tests.integration.ambassador_control.support import MakeCluster, MakeUpstreams, eventually


async def get(ep: Endpoint) -> Outcome:
    """One real HTTP/1.1 GET on a fresh connection, classified as the data plane would."""
    try:
        reader, writer = await asyncio.open_connection(ep.host, ep.port)
    except OSError:
        return Outcome.CONNECT_FAILURE
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
    except OSError:
        return Outcome.RESET
    finally:
        writer.close()
    if not status_line:
        return Outcome.RESET
    return Outcome.HTTP_5XX if status_line.split()[1].startswith(b"5") else Outcome.OK


async def request(cluster: Cluster, tries: int = 3) -> tuple[bool, list[Endpoint]]:
    """Pick, send, and on failure retry elsewhere: what the proxy does for an idempotent GET."""
    tried: list[Endpoint] = []
    for _ in range(tries):
        ep = cluster.pick(None, tried)
        if ep is None:
            return False, tried
        ep.start_request()
        t0 = time.perf_counter()
        outcome = await get(ep)
        ep.end_request(outcome, time.perf_counter() - t0)
        tried.append(ep)
        if outcome is Outcome.OK:
            return True, tried
    return False, tried


async def test_killing_one_of_three_servers_fails_no_request(upstreams: MakeUpstreams, clusters: MakeCluster) -> None:
    servers = await upstreams(3)
    # Round robin: the dead endpoint's turn comes at once (p2c might not draw it in 200 requests).
    cluster = clusters(endpoints=[s.address for s in servers], balancer="round_robin", health_check={"kind": "none"})
    await cluster.start()
    for _ in range(30):
        assert (await request(cluster))[0]
    victim = servers[1]
    await victim.stop()
    dead = next(ep for ep in cluster.endpoints if ep.port == victim.port)
    attempts: Counter[Endpoint] = Counter()
    for _ in range(200):
        ok, tried = await request(cluster)
        assert ok
        attempts.update(tried)
    assert attempts[dead] == 1  # known dead after one refused connect: never tried again
    assert not dead.healthy
    assert dead.outcomes[Outcome.CONNECT_FAILURE.value] == 1


async def test_concurrent_load_through_a_server_kill_fails_no_request(
    upstreams: MakeUpstreams, clusters: MakeCluster
) -> None:
    servers = await upstreams(3)
    cluster = clusters(
        endpoints=[s.address for s in servers],
        health_check={"kind": "http", "interval_secs": 0.2, "timeout_secs": 0.2, "unhealthy_threshold": 1},
    )
    await cluster.start()
    results: list[bool] = []

    async def client() -> None:
        for _ in range(60):
            results.append((await request(cluster))[0])

    load = [asyncio.create_task(client()) for _ in range(8)]
    await asyncio.sleep(0.05)
    await servers[0].stop()
    await asyncio.gather(*load)
    assert len(results) == 480 and all(results)


async def test_p2c_ewma_sends_less_to_a_slow_real_server(clusters: MakeCluster) -> None:
    async def serve(delay: float) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        return await asyncio.start_server(handle, "127.0.0.1", 0)

    fast, slow = await serve(0.0), await serve(0.05)
    try:
        ports = [s.sockets[0].getsockname()[1] for s in (fast, slow)]
        cluster = clusters(endpoints=[f"127.0.0.1:{p}" for p in ports], health_check={"kind": "none"})
        await cluster.start()
        picked: Counter[int] = Counter()

        async def client() -> None:
            for _ in range(25):
                _, tried = await request(cluster)
                picked[tried[0].port] += 1

        await asyncio.gather(*(client() for _ in range(4)))
        assert picked[ports[1]] < picked[ports[0]] / 2
    finally:
        fast.close()
        slow.close()


async def test_a_restarted_server_returns_on_its_first_passing_check(
    upstreams: MakeUpstreams, clusters: MakeCluster
) -> None:
    servers = await upstreams(2)
    cluster = clusters(
        endpoints=[s.address for s in servers],
        health_check={"kind": "tcp", "interval_secs": 0.25, "timeout_secs": 0.25, "unhealthy_threshold": 100},
        outlier={"base_ejection_secs": 600},
    )
    await cluster.start()
    victim = servers[0]
    ep = next(e for e in cluster.endpoints if e.port == victim.port)
    await victim.stop()
    ep.start_request()
    outcome = await get(ep)  # a real refused connect
    ep.end_request(outcome, 0.001)
    assert outcome is Outcome.CONNECT_FAILURE
    assert not ep.healthy and ep.ejected_by_refusal
    await victim.start()  # same port: the pod came back long before the 600 s ejection ends
    await eventually(lambda: ep.healthy, "back on the first passing check")
    assert ep.latency_ewma_s == 0.0  # the failure's latency penalty is forgotten: it is measured afresh
    assert ep in {cluster.pick() for _ in range(50)}


async def test_a_5xx_ejection_is_not_ended_by_a_passing_tcp_check(
    upstreams: MakeUpstreams, clusters: MakeCluster
) -> None:
    servers = await upstreams(2)
    cluster = clusters(
        endpoints=[s.address for s in servers],
        health_check={"kind": "tcp", "interval_secs": 0.05, "timeout_secs": 0.05},
        outlier={"consecutive_errors": 1, "base_ejection_secs": 600},
    )
    await cluster.start()
    ep = cluster.endpoints[0]
    ep.start_request()
    ep.end_request(Outcome.HTTP_5XX, 0.001)
    assert not ep.healthy
    passes = ep.hc_passes
    await eventually(lambda: ep.hc_passes >= passes + 3, "several passing tcp checks")
    assert not ep.healthy
