"""Active health checks against real servers: HTTP status, TCP connect, timeouts, thresholds, readiness."""

from __future__ import annotations

import asyncio

from tests.integration.ambassador_control.support import MakeCluster, MakeUpstreams, events, eventually
from tests.support.nginx import Nginx

# Short intervals so state changes show quickly; timeouts generous enough for a loaded CI machine.
FAST = {"interval_secs": 0.25, "interval_jitter_percent": 0, "timeout_secs": 0.25}


async def test_http_check_takes_an_endpoint_out_and_back_by_thresholds(
    upstreams: MakeUpstreams, clusters: MakeCluster
) -> None:
    a, b = await upstreams(2)
    cluster = clusters(
        endpoints=[a.address, b.address],
        balancer="round_robin",
        health_check={"kind": "http", "healthy_threshold": 2, "unhealthy_threshold": 2, **FAST},
    )
    assert cluster.status() is not None and not cluster.ready
    await cluster.start()
    assert cluster.ready and cluster.status() is None
    ep_a = next(ep for ep in cluster.endpoints if ep.port == a.port)
    assert ep_a.healthy

    a.health_status = 503
    await eventually(lambda: not ep_a.healthy, "endpoint marked unhealthy")
    assert ep_a.hc_failures >= 2
    assert {cluster.pick() for _ in range(20)} == {next(ep for ep in cluster.endpoints if ep.port == b.port)}
    down = events(cluster, "endpoint unhealthy")
    assert down[-1]["endpoint"] == a.address and down[-1]["reason"] == "status 503"
    registry = cluster._registry
    labels = {"cluster": "it", "endpoint": a.address}
    assert registry.get_sample_value("ambassador_endpoint_state", {**labels, "state": "unhealthy"}) == 1
    assert registry.get_sample_value("ambassador_health_checks_total", {**labels, "result": "fail"}) >= 2

    a.health_status = 200
    await eventually(lambda: ep_a.healthy, "endpoint healthy again")
    assert ep_a in {cluster.pick() for _ in range(20)}


async def test_expected_statuses_decide_what_passes(upstreams: MakeUpstreams, clusters: MakeCluster) -> None:
    (a,) = await upstreams(1)
    a.health_status = 204
    strict = clusters(endpoints=[a.address], health_check={"kind": "http", **FAST})
    lenient = clusters(endpoints=[a.address], health_check={"kind": "http", "expected_statuses": [200, 204], **FAST})
    await strict.start()
    await lenient.start()
    assert not strict.endpoints[0].healthy
    assert lenient.endpoints[0].healthy


async def test_nginx_killed_and_restarted_goes_down_and_up(
    nginx: Nginx, upstreams: MakeUpstreams, clusters: MakeCluster
) -> None:
    await nginx.start()
    (other,) = await upstreams(1)
    cluster = clusters(
        endpoints=[nginx.address, other.address],
        health_check={"kind": "http", "healthy_threshold": 1, "unhealthy_threshold": 1, **FAST},
    )
    await cluster.start()
    ep = next(ep for ep in cluster.endpoints if ep.port == nginx.port)
    assert ep.healthy
    nginx.stop()
    await eventually(lambda: not ep.healthy, "nginx marked down")
    assert "connect" in (ep.hc_reason or "")
    await nginx.start()
    await eventually(lambda: ep.healthy, "nginx marked up again")


async def test_an_endpoint_failing_its_first_check_gets_no_traffic_from_the_start(
    nginx: Nginx, clusters: MakeCluster
) -> None:
    await nginx.start()
    healthy = clusters(endpoints=[nginx.address], health_check={"kind": "http", "path": "/healthz", **FAST})
    broken = clusters(
        endpoints=[nginx.address, "127.0.0.1:1"],
        health_check={"kind": "http", "path": "/broken", **FAST},
        panic_threshold_percent=0,
    )
    await healthy.start()
    await broken.start()
    assert healthy.pick() is healthy.endpoints[0]
    assert broken.pick() is None  # both fail their first check: nothing to send to
    assert {ep.hc_reason for ep in broken.endpoints} >= {"status 503"}


async def test_tcp_check_follows_the_listening_socket(clusters: MakeCluster) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cluster = clusters(
        endpoints=[f"127.0.0.1:{port}"],
        health_check={"kind": "tcp", "unhealthy_threshold": 1, **FAST},
        panic_threshold_percent=0,
    )
    await cluster.start()
    ep = cluster.endpoints[0]
    assert ep.healthy
    server.close()
    await server.wait_closed()
    await eventually(lambda: not ep.healthy, "tcp check fails once nothing listens")
    assert cluster.pick() is None


async def test_a_hung_endpoint_fails_its_check_by_timeout(clusters: MakeCluster) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cluster = clusters(endpoints=[f"127.0.0.1:{port}"], health_check={"kind": "http", **FAST})
        await cluster.start()
        assert not cluster.endpoints[0].healthy
        assert (cluster.endpoints[0].hc_reason or "").startswith("timeout")
    finally:
        server.close()


async def test_a_non_http_answer_fails_the_check(clusters: MakeCluster) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cluster = clusters(endpoints=[f"127.0.0.1:{port}"], health_check={"kind": "http", **FAST})
        await cluster.start()
        assert "not an HTTP answer" in (cluster.endpoints[0].hc_reason or "")
    finally:
        server.close()
