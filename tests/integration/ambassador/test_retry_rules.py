"""The retry rules, each pinned by what a real upstream process saw: how many tries reached it.

A retry that should not happen shows up as one more request in the upstream's own count; a retry
that should happen and does not, as one less. Each rule is checked both ways (on and off).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import h2.events
import pytest

from tests.integration.ambassador.conftest import Proxy, raw_request
from tests.integration.ambassador.h2_client import RawH2
from tests.integration.ambassador.peers import nginx
from tests.integration.ambassador.upstream_process import Upstream, upstream_process

LABELS = {"listener": "web", "cluster": "web"}
RETRIES = 2  # so a retried request reaches the upstream 1 + RETRIES times
ALL_KINDS = ["connect-failure", "reset", "5xx", "timeout"]
# Outlier ejection off: these tests count tries against one endpoint that fails on purpose.
NO_EJECTION = {"outlier": {"consecutive_errors": 0, "consecutive_connect_failures": 0}}
TIMEOUTS = {"per_try_timeout_secs": 0.3, "overall_timeout_secs": 5.0}
# A reserve of one retry per window, and no share of traffic.
ONE_RETRY_A_WINDOW = {"ratio_percent": 0, "min_retries_per_sec": 0.1, "window_secs": 10}


def _request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: a\r\n".encode()
    if body or method in ("PUT", "POST", "PATCH"):
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def _options(**extra: Any) -> dict[str, Any]:
    return {"retries": RETRIES, "retry_backoff_base_secs": 0, "cluster": NO_EJECTION, **TIMEOUTS, **extra}


# -- retry_on: each kind, with and without it -------------------------------------------------------

FAILING_PATH = {"reset": "/reset", "5xx": "/status/503", "timeout": "/hang"}
FINAL = {"reset": (502, "upstream_reset"), "5xx": (503, None), "timeout": (504, "upstream_timeout")}


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed"])
@pytest.mark.parametrize("kind", ["reset", "5xx", "timeout"])
async def test_retry_on_decides_whether_a_get_is_tried_again(proxy: Proxy, kind: str, listed: bool) -> None:
    retry_on = ALL_KINDS if listed else [k for k in ALL_KINDS if k != kind]
    path = FAILING_PATH[kind]
    async with upstream_process() as up, proxy([up.address], **_options(retry_on=retry_on)) as (sc, port):
        ((status, headers, _),) = await raw_request(port, _request("GET", path))
        tries = await up.count(f"GET {path}")
        retried = sc.sample("ambassador_retries_total", {**LABELS, "reason": f"upstream_{kind}"})
    assert (status, headers.get("x-ambassador-reason")) == FINAL[kind]
    assert tries == (1 + RETRIES if listed else 1)
    assert (retried or 0) == (RETRIES if listed else 0)


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed"])
async def test_retry_on_connect_failure_decides_whether_a_refused_connect_moves_on(proxy: Proxy, listed: bool) -> None:
    async with nginx("n1") as dead:
        pass  # stopped again: its port refuses connections
    retry_on = ALL_KINDS if listed else [k for k in ALL_KINDS if k != "connect-failure"]
    cluster = {**NO_EJECTION, "balancer": "round_robin"}
    async with (
        upstream_process() as up,
        proxy([dead.address, up.address], **_options(retry_on=retry_on, cluster=cluster)) as (sc, port),
    ):
        answers = [(await raw_request(port, _request("POST", "/ok", b"x")))[0] for _ in range(4)]
        served = await up.count("POST /ok")
        retried = sc.sample("ambassador_retries_total", {**LABELS, "reason": "connect_failed"})
    # Round robin: the dead endpoint's turn comes within two requests; once it refused, it is avoided
    # while the other can serve, so exactly one request meets it.
    statuses = Counter((status, headers.get("x-ambassador-reason")) for status, headers, _ in answers)
    assert statuses == (Counter({(200, None): 4}) if listed else Counter({(200, None): 3, (502, "connect_failed"): 1}))
    assert served == (4 if listed else 3)
    assert (retried or 0) == (1 if listed else 0)


# -- which methods are retried -----------------------------------------------------------------------


SAFE = ["GET", "HEAD", "OPTIONS", "TRACE"]
WITH_PUT_DELETE = [*SAFE, "PUT", "DELETE"]


@pytest.mark.parametrize("path", ["/reset", "/status/503"])
@pytest.mark.parametrize(
    ("retry_methods", "method", "retried"),
    [
        # The default: the safe methods only. Envoy and Linkerd retry nothing unless told; a PUT or a
        # DELETE that got a 5xx may have been applied, so it is passed on as answered.
        (None, "GET", True),
        (None, "OPTIONS", True),
        (None, "PUT", False),
        (None, "DELETE", False),
        (None, "POST", False),
        (None, "PATCH", False),
        # Opted in, for an upstream whose PUT and DELETE are idempotent; POST and PATCH never.
        (WITH_PUT_DELETE, "PUT", True),
        (WITH_PUT_DELETE, "DELETE", True),
        (WITH_PUT_DELETE, "POST", False),
        (WITH_PUT_DELETE, "PATCH", False),
    ],
    ids=lambda v: "default" if v is None else "put-delete" if v == WITH_PUT_DELETE else str(v),
)
async def test_which_methods_are_retried_after_they_reached_the_upstream(
    proxy: Proxy, retry_methods: list[str] | None, method: str, retried: bool, path: str
) -> None:
    body = b"b" * 1000 if method in ("PUT", "POST", "PATCH") else b""
    options = _options() if retry_methods is None else _options(retry_methods=retry_methods)
    async with upstream_process() as up, proxy([up.address], **options) as (sc, port):
        ((status, _, _),) = await raw_request(port, _request(method, path, body))
        bodies = (await up.hits()).get(f"{method} {path}", [])
        reason = "upstream_reset" if path == "/reset" else "upstream_5xx"
        retries = sc.sample("ambassador_retries_total", {**LABELS, "reason": reason})
    assert status == (502 if path == "/reset" else 503)
    # What the upstream saw: 1 + RETRIES tries, each with the whole body (a kept copy sent again), or one.
    assert bodies == [len(body)] * (1 + RETRIES if retried else 1)
    assert (retries or 0) == (RETRIES if retried else 0)


def _h2c_request(port: int, method: bytes, path: bytes) -> int:
    """One HTTP/2 (prior knowledge) request on a connection of its own; the status it got."""
    raw = RawH2(port)
    try:
        headers = [(b":method", method), (b":scheme", b"http"), (b":authority", b"a"), (b":path", path)]
        raw.conn.send_headers(1, headers, end_stream=True)
        raw.flush()
        events = raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded))
    finally:
        raw.close()
    return int(next(dict(e.headers)[b":status"] for e in events if isinstance(e, h2.events.ResponseReceived)))


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("DELETE", False), ("PUT", False)])
async def test_h2c_streams_follow_the_same_default_methods(proxy: Proxy, method: str, retried: bool) -> None:
    async with upstream_process() as up, proxy([up.address], **_options()) as (_, port):
        status = await asyncio.to_thread(_h2c_request, port, method.encode(), b"/status/503")
        tries = await up.count(f"{method} /status/503")
    assert status == 503
    assert tries == (1 + RETRIES if retried else 1)


async def test_a_put_whose_body_was_streamed_is_not_retried(proxy: Proxy) -> None:
    body = b"b" * 65536  # above max_retry_body_bytes: streamed, no copy kept to send again
    options = _options(max_retry_body_bytes=1024, retry_methods=WITH_PUT_DELETE)  # PUT retried, were it kept
    async with upstream_process() as up, proxy([up.address], **options) as (sc, port):
        ((status, headers, _),) = await raw_request(port, _request("PUT", "/reset", body))
        bodies = (await up.hits()).get("PUT /reset", [])
        retried = sc.sample("ambassador_retries_total", {**LABELS, "reason": "upstream_reset"})
    assert (status, headers["x-ambassador-reason"]) == (502, "upstream_reset")
    assert bodies == [len(body)]
    assert not retried


# -- the retry budget ----------------------------------------------------------------------------------


async def test_an_exhausted_retry_budget_stops_retries(proxy: Proxy) -> None:
    # A reserve of exactly one retry per window and no share of traffic: the first failing GET is
    # retried once (its second try fails too and finds the budget spent), the next ones not at all.
    async with (
        upstream_process() as up,
        proxy([up.address], **_options(cluster={**NO_EJECTION, "retry_budget": ONE_RETRY_A_WINDOW})) as (sc, port),
    ):
        started = time.monotonic()
        answers = [(await raw_request(port, _request("GET", "/reset")))[0] for _ in range(5)]
        tries = await up.count("GET /reset")
        denied = sc.sample("ambassador_retry_budget_denied_total", {"cluster": "web"})
        retried = sc.sample("ambassador_retries_total", {**LABELS, "reason": "upstream_reset"})
        assert time.monotonic() - started < 10, "the window turned over: the budget refilled"
    assert [(status, headers["x-ambassador-reason"]) for status, headers, _ in answers] == [(502, "upstream_reset")] * 5
    assert tries == 2 + 4  # 1 + 1 retry, then one try each
    assert retried == 1
    assert denied == 5  # the first GET's second retry and the first retry of each later GET


async def test_a_5xx_retry_spends_the_budget_once_and_a_refused_one_passes_the_upstreams_answer(
    proxy: Proxy,
) -> None:
    async with (
        upstream_process() as up,
        proxy([up.address], **_options(cluster={**NO_EJECTION, "retry_budget": ONE_RETRY_A_WINDOW})) as (sc, port),
    ):
        answers = [(await raw_request(port, _request("GET", "/status/503")))[0] for _ in range(2)]
        tries = await up.count("GET /status/503")
        denied = sc.sample("ambassador_retry_budget_denied_total", {"cluster": "web"})
    # The upstream's own 503 (its body, no reason of ours), once the budget refuses more retries.
    assert [(status, body) for status, _, body in answers] == [(503, b"status 503\n")] * 2
    assert tries == 2 + 1
    assert denied == 2


async def test_the_budget_grows_with_traffic(proxy: Proxy) -> None:
    # No reserve, 50 % of requests: after 10 good requests, 5 retries are allowed.
    budget = {"ratio_percent": 50, "min_retries_per_sec": 0, "window_secs": 10}
    async with (
        upstream_process() as up,
        proxy([up.address], **_options(cluster={**NO_EJECTION, "retry_budget": budget})) as (_, port),
    ):
        ((status, _, _),) = await raw_request(port, _request("GET", "/reset"))
        first = await up.count("GET /reset")
        for _ in range(10):
            await raw_request(port, _request("GET", "/ok"))
        for _ in range(3):
            await raw_request(port, _request("GET", "/reset"))
        tries = await up.count("GET /reset")
    assert (status, first) == (502, 1)  # 50 % of one request is no whole retry yet
    # 14 requests allow 7 retries: the three later GETs take RETRIES each (6), leaving one unused.
    assert tries == 1 + 3 * (1 + RETRIES)


# -- an upstream crash under the default balancer --------------------------------------------------------


async def _load(url: str, clients: int, stop: asyncio.Event, outcomes: Counter[object]) -> None:
    """`clients` keep-alive clients, each sending its next GET as soon as the last one is answered."""

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with session.get(url) as resp:
                    body = await resp.read()
                    outcomes[resp.status if body == b"slept\n" or resp.status != 200 else "bad body"] += 1
            except aiohttp.ClientError as exc:
                outcomes[type(exc).__name__] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition` (a bound on waiting, not on speed)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.005)


async def _served_by(sc: Any, up: Upstream) -> float:
    return sc.sample("ambassador_requests_total", {**LABELS, "endpoint": up.address, "code_class": "2xx"}) or 0.0


async def test_an_upstream_killed_with_requests_in_flight_fails_no_get_under_the_default_balancer(
    proxy: Proxy,
) -> None:
    async with (
        upstream_process() as u1,
        upstream_process() as u2,
        upstream_process() as u3,
        # Everything at its default (p2c_ewma, retries, budget, outlier ejection, tcp health checks).
        proxy([u1.address, u2.address, u3.address], cluster={"health_check": {"kind": "tcp"}}) as (sc, port),
    ):
        cluster = sc.plugin.listeners[0].cluster
        assert cluster.config.balancer == "p2c_ewma"
        (victim,) = [ep for ep in cluster.endpoints if ep.key == u2.address]
        outcomes: Counter[object] = Counter()
        stop = asyncio.Event()
        # 24 clients, 50 ms a response: about eight requests in flight on each upstream at any time.
        load = asyncio.create_task(_load(f"http://127.0.0.1:{port}/sleep/50", 24, stop, outcomes))
        try:
            # The kill comes once the victim has served and has requests in flight; the load goes on
            # until 300 more requests were answered, long past its ejection.
            await _until(lambda: victim.active >= 3 and sum(outcomes.values()) >= 100, "requests in flight on u2")
            before = await _served_by(sc, u2)
            u2.kill()
            at_kill = sum(outcomes.values())
            await _until(lambda: sum(outcomes.values()) >= at_kill + 300 or load.done(), "300 answers after the kill")
        finally:
            stop.set()
            await load
        in_flight_retried = sc.sample("ambassador_retries_total", {**LABELS, "reason": "upstream_reset"})
    assert set(outcomes) == {200}, outcomes
    assert before > 0  # the victim had its share before it died
    assert in_flight_retried and in_flight_retried >= 1, "no request was in flight at the kill"
