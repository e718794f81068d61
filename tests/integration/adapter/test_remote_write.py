"""The remote_write output into a real Prometheus 2.42 (`--web.enable-remote-write-receiver`): every
scraped series and value read back through its query API, staleness included; the receiver stopped for
a while, with nothing lost within the queue bound and the drops counted beyond it."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecars.testing import free_port
from tests.support.prometheus import run_receiver

from .conftest import MetricsApp
from .test_adapter import adapter, wait_for

pytestmark = pytest.mark.timeout(180)


def page(n: int, with_temp: bool = True) -> str:
    """Page `n`: a counter, a gauge that may go away, a histogram; `seq` tells which page a sample is of."""
    obs = [n * 1.0, n * 2.0 + 1, n * 3.0 + 2]
    lines = [
        "# TYPE seq gauge",
        f"seq {n}",
        "# TYPE app_requests_total counter",
        f'app_requests_total{{code="200"}} {n * 7}',
        f'app_requests_total{{code="500"}} {n // 3}',
        "# TYPE app_latency_seconds histogram",
        f'app_latency_seconds_bucket{{le="0.1"}} {obs[0]}',
        f'app_latency_seconds_bucket{{le="1"}} {obs[1]}',
        f'app_latency_seconds_bucket{{le="+Inf"}} {obs[2]}',
        f"app_latency_seconds_sum {n * 0.25}",
        f"app_latency_seconds_count {obs[2]}",
        "# TYPE go_goroutines gauge",
        "go_goroutines 9",
    ]
    if with_temp:
        lines += ["# TYPE app_temp_celsius gauge", f"app_temp_celsius {20 + n % 5}"]
    return "\n".join(lines) + "\n"


# Families by name: the histogram's `_bucket`, `_sum` and `_count` lines go with `app_latency_seconds`.
KEEP = ["seq", "app_requests_total", "app_latency_seconds", "app_temp_.*"]


def expected(n: int, with_temp: bool = True) -> dict[tuple[tuple[str, str], ...], float]:
    """What the receiver gets of page `n`: the kept families (not go_goroutines), with the Pod's label."""
    out = {}
    for line in page(n, with_temp).splitlines():
        if line.startswith("#") or line.startswith("go_"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, rest = series.partition("{")
        labels = [("__name__", name), ("pod", "web-0")]
        for pair in filter(None, rest.rstrip("}").split(",")):
            k, v = pair.split("=")
            labels.append((k, v.strip('"')))
        out[tuple(sorted(labels))] = float(value)
    return out


async def raw_samples(session: aiohttp.ClientSession, url: str, selector: str) -> dict[Any, list[tuple[int, float]]]:
    async with session.get(f"{url}/api/v1/query", params={"query": f"{selector}[1h]"}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return {
        tuple(sorted(item["metric"].items())): [(round(float(t) * 1000), float(v)) for t, v in item["values"]]
        for item in body["data"]["result"]
    }


async def instant(session: aiohttp.ClientSession, url: str, expr: str, t_ms: int) -> list[Any]:
    params = {"query": expr, "time": f"{t_ms / 1000:.3f}"}
    async with session.get(f"{url}/api/v1/query", params=params) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_every_scraped_value_and_staleness_arrive(app: MetricsApp, tmp_path: Path) -> None:
    temp_until = 8
    app.page = lambda n: page(n, with_temp=n < temp_until)
    port = free_port()
    async with (
        run_receiver(tmp_path, port) as url,
        adapter(
            app, None, outputs=["health", "remote_write"], push_url=f"{url}/api/v1/write",
            push_labels=["pod=web-0"], push_keep=KEEP, scrape_interval_secs=0.2, scrape_timeout_secs=0.2,
        ) as sc,
        aiohttp.ClientSession() as session,
    ):  # fmt: skip
        await wait_for(lambda: app.requests >= temp_until + 6, 30)
        sent_at = app.requests
        await wait_for(lambda: (sc.sample("adapter_push_samples_total", {"output": "remote_write"}) or 0) > 0)
        await wait_for(lambda: sc.sample("adapter_push_queue_samples", {"output": "remote_write"}) == 0, 10)
        # One query for everything, so the pages and the series come from the same moment.
        everything = await raw_samples(session, url, '{pod="web-0"}')
        seq_points = everything[(("__name__", "seq"), ("pod", "web-0"))]
        page_at = {t: int(v) for t, v in seq_points}
        assert sorted(page_at.values()) == list(range(len(page_at))) and len(page_at) >= sent_at - 2
        want: dict[Any, list[tuple[int, float]]] = {}
        for t, n in sorted(page_at.items()):
            for key, value in expected(n, with_temp=n < temp_until).items():
                want.setdefault(key, []).append((t, value))
        assert set(everything) == set(want)  # go_goroutines, on every page, is not kept: never sent
        for key, points in want.items():
            got = everything[key]
            assert len(got) == len(points) and all(
                a[0] == b[0] and (a[1] == b[1] or (math.isnan(a[1]) and math.isnan(b[1])))
                for a, b in zip(got, points, strict=True)
            ), (key, got, points)
        # The gauge left the page at page `temp_until`: Prometheus got the staleness marker at that scrape,
        # so an instant query just after it finds nothing (without the marker, the five-minute lookback
        # would still give the last value).
        gone_at = next(t for t, n in page_at.items() if n == temp_until)
        last_seen = max(t for t, _ in want[next(k for k in want if dict(k)["__name__"] == "app_temp_celsius")])
        assert await instant(session, url, "app_temp_celsius", last_seen + 1)
        assert await instant(session, url, "app_temp_celsius", gone_at + 1) == []
        assert await instant(session, url, "seq", gone_at + 1)


async def test_a_receiver_outage_loses_nothing_within_the_queue_and_counts_drops_beyond(
    app: MetricsApp, tmp_path: Path
) -> None:
    app.page = lambda n: page(n, with_temp=False)
    series_per_page = len(expected(0, with_temp=False))
    port = free_port()
    settings = {
        "outputs": ["health", "remote_write"], "push_url": f"http://127.0.0.1:{port}/api/v1/write",
        "push_labels": ["pod=web-0"], "push_keep": KEEP, "scrape_interval_secs": 0.2, "scrape_timeout_secs": 0.2,
        "push_max_backoff_secs": 0.3, "push_queue_max_samples": series_per_page * 12,
    }  # fmt: skip
    metric = {"output": "remote_write"}
    async with adapter(app, None, **settings) as sc, aiohttp.ClientSession() as session:
        async with run_receiver(tmp_path, port):
            await wait_for(lambda: (sc.sample("adapter_push_samples_total", metric) or 0) >= series_per_page * 3, 30)
        # Away for about 8 scrapes: within the bound of 12 pages, all of them wait in the queue.
        start = app.requests
        await wait_for(lambda: app.requests >= start + 8, 30)
        assert (sc.sample("adapter_push_failures_total", {**metric, "reason": "connection"}) or 0) >= 1
        queued = sc.sample("adapter_push_queue_samples", metric) or 0
        assert queued >= series_per_page * 6
        async with run_receiver(tmp_path, port) as url:
            await wait_for(lambda: sc.sample("adapter_push_queue_samples", metric) == 0, 30)
            seq = await raw_samples(session, url, "seq")
            values = sorted(int(v) for _, v in next(iter(seq.values())))
            assert values == list(range(len(values))), "a page was lost within the queue bound"
            assert (sc.sample("adapter_push_dropped_samples_total", {**metric, "reason": "queue_full"}) or 0) == 0
        # Away for about 30 scrapes: past the bound, the oldest are dropped and counted, the newest kept.
        start = app.requests
        await wait_for(lambda: app.requests >= start + 30, 60)
        dropped = sc.sample("adapter_push_dropped_samples_total", {**metric, "reason": "queue_full"}) or 0
        assert dropped >= series_per_page * 10
        async with run_receiver(tmp_path, port) as url:
            await wait_for(lambda: sc.sample("adapter_push_queue_samples", metric) == 0, 30)
            everything = await raw_samples(session, url, '{pod="web-0"}')
            stored = sum(len(points) for points in everything.values())
            sent = sc.sample("adapter_push_samples_total", metric) or 0
            dropped = sc.sample("adapter_push_dropped_samples_total", {**metric, "reason": "queue_full"}) or 0
            scraped = sc.sample("adapter_scrapes_total") or 0
            # Every sample is either in Prometheus or counted as dropped (the last scrapes may be in flight).
            assert stored == sent
            assert scraped * series_per_page - (stored + dropped) <= 3 * series_per_page
            values = sorted(int(v) for _, v in next(iter((await raw_samples(session, url, "seq")).values())))
            gaps = [b - a for a, b in itertools.pairwise(values) if b - a > 1]
            assert len(gaps) == 1, "one run of pages dropped, the oldest of the outage"
