"""Failures the ambassador must hide or name: dead and hung upstreams, the keep-alive race, 5xx,
slow clients, overload. Upstreams are real nginx processes or asyncio servers that misbehave."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from tests.integration.ambassador.conftest import Proxy, raw_request, read_response
from tests.integration.ambassador.peers import nginx, read_head, tcp_server

LABELS = {"listener": "web", "cluster": "web"}


def _total(registry: CollectorRegistry, family: str) -> float:
    return sum(s.value for m in registry.collect() if m.name == family for s in m.samples if s.name.endswith("_total"))


async def _load(url: str, clients: int, secs: float, statuses: Counter[object]) -> None:
    """`clients` keep-alive clients sending GETs back to back for `secs`; results counted."""
    deadline = time.monotonic() + secs

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


async def test_killing_one_of_three_upstreams_under_load_fails_no_get(proxy: Proxy) -> None:
    async with (
        nginx("n1") as n1,
        nginx("n2") as n2,
        nginx("n3") as n3,
        # round robin: n2 is surely picked again after the kill (p2c might avoid it by chance)
        proxy([n1.address, n2.address, n3.address], cluster={"balancer": "round_robin"}) as (sc, port),
    ):
        statuses: Counter[object] = Counter()
        load = asyncio.create_task(_load(f"http://127.0.0.1:{port}/hello", 12, 2.5, statuses))
        await asyncio.sleep(0.8)
        n2.kill()
        await load
        retried = _total(sc.metrics, "ambassador_retries")
        served_by_n2 = sc.sample("ambassador_requests_total", {**LABELS, "endpoint": n2.address, "code_class": "2xx"})
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 300
    assert retried >= 1, "the kill caused no failed try: the test did not exercise anything"
    assert served_by_n2 and served_by_n2 > 0  # n2 took its share before it died


async def test_hung_upstream_answers_504_within_the_deadline(proxy: Proxy) -> None:
    seen = 0

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        await read_head(reader)
        seen += 1
        await asyncio.sleep(60)

    async with (
        tcp_server(hang) as up,
        proxy(
            [f"127.0.0.1:{up}"], per_try_timeout_secs=0.3, overall_timeout_secs=1.0, retry_backoff_base_secs=0.01
        ) as (_sc, port),
    ):
        started = time.monotonic()
        ((status, headers, _),) = await raw_request(port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        elapsed = time.monotonic() - started
        assert status == 504
        assert headers["x-ambassador-reason"] in ("upstream_timeout", "deadline_exceeded")
        assert seen == 3  # the GET was tried 1 + retries times within the deadline
        assert 0.9 <= elapsed < 3.0  # the overall deadline bounds it, not the upstream
        seen = 0
        ((status, headers, _),) = await raw_request(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        assert (status, headers["x-ambassador-reason"], seen) == (504, "upstream_timeout", 1)  # never retried


async def test_keepalive_race_idle_close_is_detected_before_reuse(proxy: Proxy) -> None:
    """The server closes idle keep-alive connections after 50 ms; a POST sent later must not land on one."""
    heads: list[bytes] = []

    async def short_keepalive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await asyncio.wait_for(read_head(reader), 0.05)
            except TimeoutError:
                return  # idle too long: close
            body = await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
            heads.append(head + body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with tcp_server(short_keepalive) as up, proxy([f"127.0.0.1:{up}"]) as (_, port):
        for i in range(5):
            ((status, _, body),) = await raw_request(
                port, b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n%d" % i
            )
            assert (status, body) == (200, b"ok")
            await asyncio.sleep(0.15)
    assert len(heads) == 5  # each POST reached the upstream exactly once


async def test_keepalive_race_close_after_request_retries_get_but_not_post(proxy: Proxy) -> None:
    """The server drops a reused connection right after reading the next request (its close crossed it):
    a GET is safe to send again, a POST is not and gets 502 upstream_reset."""
    got: list[bytes] = []

    async def drops_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            head = await read_head(reader)
            got.append(head.split(b"\r\n")[0])
            if not first:
                return  # read it, answer nothing, close
            first = False
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with tcp_server(drops_second) as up, proxy([f"127.0.0.1:{up}"], retry_backoff_base_secs=0) as (sc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):  # second GET: reused connection dropped, retried on a new one
            writer.write(b"GET /g HTTP/1.1\r\nHost: a\r\n\r\n")
            status, _, body = await asyncio.wait_for(read_response(reader), 5)
            assert (status, body) == (200, b"ok")
        writer.write(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
        assert (status, headers["x-ambassador-reason"]) == (502, "upstream_reset")
        retries = sc.sample(
            "ambassador_retries_total", {"listener": "web", "cluster": "web", "reason": "upstream_reset"}
        )
    assert got.count(b"POST /p HTTP/1.1") == 1
    assert got.count(b"GET /g HTTP/1.1") == 3
    assert retries == 1


async def test_connect_failure_is_retried_even_for_post(proxy: Proxy) -> None:
    async with nginx("n1") as n1, tcp_server(lambda r, w: asyncio.sleep(0)) as dead_port:
        pass  # the port is closed again: connecting to it is refused
    async with (
        nginx("n1") as n1,
        proxy(
            [f"127.0.0.1:{dead_port}", n1.address],
            retry_backoff_base_secs=0,
            cluster={
                "outlier": {"consecutive_connect_failures": 0, "consecutive_errors": 0},
                "balancer": "round_robin",
            },
        ) as (sc, port),
    ):
        for _ in range(6):
            ((status, _, body),) = await raw_request(
                port, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            )
            assert (status, body) == (200, b"got 3\n")
        retries = sc.sample(
            "ambassador_retries_total", {"listener": "web", "cluster": "web", "reason": "connect_failed"}
        )
    assert retries and retries >= 1


async def test_5xx_is_retried_for_get_and_passed_through_for_post(proxy: Proxy) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            if b"content-length: " in head.lower():
                await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown")

    async with (
        nginx("n1") as n1,
        tcp_server(broken) as bad,
        proxy(
            [f"127.0.0.1:{bad}", n1.address],
            retry_backoff_base_secs=0,
            cluster={"outlier": {"consecutive_errors": 0}, "balancer": "round_robin"},
        ) as (_, port),
    ):
        gets = [await raw_request(port, b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n") for _ in range(6)]
        posts = [
            await raw_request(port, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx") for _ in range(6)
        ]
    assert [g[0][0] for g in gets] == [200] * 6
    post_statuses = Counter(p[0][0] for p in posts)
    assert post_statuses[503] >= 1 and post_statuses[200] >= 1  # 503s reach the app as the upstream sent them
    assert all(p[0][2] == b"down" for p in posts if p[0][0] == 503)


async def test_slow_loris_clients_do_not_starve_others(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address], request_header_timeout_secs=1.5) as (_, port):
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]

        async def dribble() -> None:
            for i in range(12):  # 0.6 s of dribbling, stopped before the header timeout answers
                for _, writer in slow:
                    if not writer.is_closing():
                        writer.write(b"GET / HTTP/1.1\r\nX-Slow: " if i == 0 else b"a")
                await asyncio.sleep(0.05)

        dribbling = asyncio.create_task(dribble())
        statuses: Counter[object] = Counter()
        await _load(f"http://127.0.0.1:{port}/hello", 4, 1.0, statuses)
        await dribbling
        answers = []
        for reader, writer in slow:
            data = await asyncio.wait_for(reader.read(), 5)  # closed by the proxy after its 408
            answers.append(data.split(b"\r\n")[0])
            writer.close()
    assert set(statuses) == {200} and statuses[200] > 50
    assert set(answers) == {b"HTTP/1.1 408 Request Timeout"}


async def test_overflow_answers_503_fast(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address], cluster={"circuit_breaker": {"max_requests": 1}}) as (_, port):
        slow = asyncio.create_task(raw_request(port, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"))
        await asyncio.sleep(0.05)
        ((status, headers, _),) = await raw_request(port, b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (status, headers["x-ambassador-reason"]) == (503, "overflow")
        ((status, _, body),) = await slow
        assert (status, body) == (200, b"slow from n1\n")


async def test_no_healthy_upstream_answers_503(proxy: Proxy) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(60)

    async with (
        tcp_server(hang) as up,
        proxy(
            [f"127.0.0.1:{up}"],
            cluster={
                "health_check": {"kind": "http", "timeout_secs": 0.2, "interval_secs": 0.5},
                "panic_threshold_percent": 0,
            },
        ) as (_, port),
    ):
        ((status, headers, _),) = await raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (status, headers["x-ambassador-reason"]) == (503, "no_healthy_upstream")


async def test_endpoint_removed_by_discovery_drains_without_errors(proxy: Proxy, tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.txt"
    async with nginx("n1") as n1, nginx("n2") as n2:
        endpoints.write_text(f"{n1.address}\n{n2.address}\n")
        async with proxy(
            [],
            cluster={"endpoints_file": str(endpoints), "endpoints_file_poll_secs": 0.2, "balancer": "round_robin"},
        ) as (sc, port):
            statuses: Counter[object] = Counter()
            load = asyncio.create_task(_load(f"http://127.0.0.1:{port}/hello", 6, 2.0, statuses))
            await asyncio.sleep(0.6)
            staged = tmp_path / "endpoints.new"
            staged.write_text(f"{n1.address}\n")
            staged.replace(endpoints)  # atomic, as a ConfigMap update is
            await load

            def n2_count() -> float:
                labels = {**LABELS, "endpoint": n2.address, "code_class": "2xx"}
                return sc.sample("ambassador_requests_total", labels) or 0.0

            served_by_n2 = n2_count()
            statuses_after: Counter[object] = Counter()
            await _load(f"http://127.0.0.1:{port}/hello", 4, 0.5, statuses_after)
            assert n2_count() == served_by_n2  # no new request went to the removed endpoint
            pooled_to_n2 = sc.sample("ambassador_upstream_connections", {**LABELS, "endpoint": n2.address})
    assert set(statuses) == {200} and set(statuses_after) == {200}, (statuses, statuses_after)
    assert served_by_n2 > 0
    assert not pooled_to_n2  # its idle keep-alive connections were closed
