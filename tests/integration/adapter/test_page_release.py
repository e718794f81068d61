"""A scraped page is released once every push output is done with it, whatever the receivers do.

The adapter keeps a replaced page while an output still reads it; each test scrapes a real target into
real receivers (remote write and the strict OTLP receiver) and watches every page through a weak
reference: a page still alive well after it was replaced is a page held for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from sidecars.adapter.scraper import Scrape
from sidecars.testing import RunningSidecar, free_port

from .conftest import MetricsApp
from .otlp_receiver import StrictOtlpReceiver
from .test_adapter import adapter, wait_for

SERIES = 3_000
RW = {"output": "remote_write"}
OTLP = {"output": "otlp"}


def page(n: int) -> str:
    body = "".join(f'work_items_total{{shard="{i}"}} {n + i}\n' for i in range(SERIES))
    return f"# TYPE work_items_total counter\n{body}# TYPE seq gauge\nseq {n}\n"


class Pages:
    """Every page the adapter kept as its last good one, by weak reference."""

    def __init__(self, sc: RunningSidecar) -> None:
        self.sc = sc
        self.refs: list[weakref.ref[Scrape]] = []
        self.most_retained = 0

    def alive_but_latest(self, latest: int) -> int:
        """Pages alive among all but the `latest` ones seen."""
        return sum(ref() is not None for ref in self.refs[:-latest])

    async def watch(self) -> None:
        while True:
            current = self.sc.plugin.state.last_good
            if current is not None and not any(ref() is current for ref in self.refs[-3:]):
                self.refs.append(weakref.ref(current))
            del current
            self.most_retained = max(self.most_retained, int(self.sc.sample("adapter_retained_pages") or 0))
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def watched(sc: RunningSidecar) -> AsyncIterator[Pages]:
    pages = Pages(sc)
    task = asyncio.create_task(pages.watch())
    try:
        yield pages
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RemoteWrite:
    """A remote-write endpoint that accepts, fails with `status`, or holds every request until `go` is set."""

    def __init__(self, status: int = 204, hold: bool = False) -> None:
        self.status = status
        self.go = asyncio.Event()
        if not hold:
            self.go.set()
        self.requests = 0
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def write(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        await self.go.wait()
        return web.Response(status=self.status)

    async def __aenter__(self) -> RemoteWrite:
        app = web.Application()
        app.router.add_post("/api/v1/write", self.write)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/api/v1/write"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.go.set()
        assert self.runner is not None
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[StrictOtlpReceiver]:
    served = StrictOtlpReceiver()
    await served.start()
    try:
        yield served
    finally:
        await served.stop()


def push(rw_url: str, otlp_url: str, **more: object) -> dict[str, object]:
    return {
        "outputs": ["health", "remote_write", "otlp"],
        "push_url": rw_url,
        "otlp_url": otlp_url,
        "scrape_interval_secs": 0.15,
        "scrape_timeout_secs": 0.15,
        "push_max_backoff_secs": 0.2,
        "push_batch_max_samples": 5_000,
        **more,
    }


async def scrapes(sc: RunningSidecar, count: int, timeout_secs: float = 30.0) -> None:
    start = sc.sample("adapter_scrapes_total") or 0
    await wait_for(lambda: (sc.sample("adapter_scrapes_total") or 0) >= start + count, timeout_secs)


async def test_each_page_is_released_once_both_outputs_have_sent_it(app: MetricsApp) -> None:
    app.page = page
    async with (
        RemoteWrite() as rw,
        otlp_receiver() as otlp,
        adapter(app, None, **push(rw.url, otlp.url)) as sc,
        watched(sc) as pages,
    ):
        await scrapes(sc, 20)
        for labels in (RW, OTLP):
            await wait_for(lambda m=labels: (sc.sample("adapter_push_samples_total", m) or 0) > SERIES * 5)
        # Only the page in use and the one or two the outputs may still be converting are alive.
        await scrapes(sc, 2)
        assert len(pages.refs) >= 15
        assert pages.alive_but_latest(3) == 0
        assert pages.most_retained <= 2
        assert not otlp.rejections


async def test_a_stopped_receiver_holds_no_page_beyond_the_queue_bound(app: MetricsApp) -> None:
    app.page = page
    bound = SERIES * 2
    async with RemoteWrite(hold=True) as rw, otlp_receiver() as otlp:
        settings = push(rw.url, otlp.url, push_queue_max_samples=bound, push_timeout_secs=60.0)
        async with adapter(app, None, **settings) as sc, watched(sc) as pages:
            await wait_for(lambda: rw.requests >= 1)
            # The receiver holds its first request for good: the remote-write sender is stuck in it.
            await scrapes(sc, 25)
            assert rw.requests == 1
            assert pages.alive_but_latest(3) == 0, "pages wait for a sender that does not come back"
            assert pages.most_retained <= 2
            assert (sc.sample("adapter_push_queue_samples", RW) or 0) <= bound
            assert (sc.sample("adapter_push_dropped_samples_total", {**RW, "reason": "queue_full"}) or 0) > SERIES * 10
            # The other output went on meanwhile.
            assert (sc.sample("adapter_push_samples_total", OTLP) or 0) > SERIES * 10
            rw.go.set()
            await wait_for(lambda: (sc.sample("adapter_push_samples_total", RW) or 0) > 0, 30)


async def test_failing_receivers_do_not_keep_pages(app: MetricsApp) -> None:
    app.page = page
    nobody = f"http://127.0.0.1:{free_port()}/v1/metrics"  # connections refused
    async with RemoteWrite(status=503) as rw, adapter(app, None, **push(rw.url, nobody)) as sc, watched(sc) as pages:
        await scrapes(sc, 20)
        assert rw.requests >= 3
        assert (sc.sample("adapter_push_failures_total", {**RW, "reason": "http_5xx"}) or 0) >= 3
        assert (sc.sample("adapter_push_failures_total", {**OTLP, "reason": "connection"}) or 0) >= 3
        await scrapes(sc, 2)
        assert len(pages.refs) >= 15
        assert pages.alive_but_latest(3) == 0
        assert pages.most_retained <= 2


async def test_every_point_is_counted_once_sent_or_dropped_though_the_queue_overflows_in_flight(
    app: MetricsApp,
) -> None:
    app.page = page
    per_page = SERIES + 1
    async with RemoteWrite(hold=True) as rw:
        settings = {
            "outputs": ["health", "remote_write"], "push_url": rw.url, "scrape_interval_secs": 0.15,
            "scrape_timeout_secs": 0.15, "push_batch_max_samples": per_page,
            "push_queue_max_samples": per_page * 3 // 2, "push_timeout_secs": 60.0,
        }  # fmt: skip
        async with adapter(app, None, **settings) as sc:
            await wait_for(lambda: rw.requests >= 1)
            await scrapes(sc, 4)  # the batch being sent is pushed out of the queue meanwhile
            rw.go.set()
            await wait_for(lambda: (sc.sample("adapter_push_samples_total", RW) or 0) >= per_page, 30)
            app.status = 500  # from now on nothing new: one page of stale markers, then no point at all
            failed = {"reason": "http_status"}
            start = sc.sample("adapter_scrape_failures_total", failed) or 0
            await wait_for(lambda: (sc.sample("adapter_scrape_failures_total", failed) or 0) >= start + 3, 30)
            await wait_for(lambda: sc.sample("adapter_push_queue_samples", RW) == 0, 30)
            good = (sc.sample("adapter_scrapes_total") or 0) - (sc.sample("adapter_scrape_failures_total", failed) or 0)
            entered = per_page * good + per_page
            sent = sc.sample("adapter_push_samples_total", RW) or 0
            dropped = sc.sample("adapter_push_dropped_samples_total", {**RW, "reason": "queue_full"}) or 0
            assert dropped > 0
            assert sent + dropped == entered, f"sent {sent} + dropped {dropped} of {entered}"
