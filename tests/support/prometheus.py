"""The real Prometheus server as an oracle: a target serving numbered pages, the server scraping it
every second from a temp dir, and its instant-query API, for the tests that compare our evaluation
with Prometheus' own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecars.testing import free_port

PROMETHEUS = "/usr/bin/prometheus"


class Target:
    """Serves `page(0)`, `page(1)`, ... one per scrape, then 500 (Prometheus marks everything stale)."""

    def __init__(self, page: Callable[[int], str], pages: int) -> None:
        self.page = page
        self.pages = pages
        self.served = 0

    async def metrics(self, request: web.Request) -> web.Response:
        if self.served >= self.pages:
            return web.Response(status=500, text="gone\n")
        text = self.page(self.served)
        self.served += 1
        return web.Response(text=text, content_type="text/plain", charset="utf-8")


@contextlib.asynccontextmanager
async def serve_pages(page: Callable[[int], str], pages: int) -> AsyncIterator[tuple[Target, int]]:
    target = Target(page, pages)
    app = web.Application()
    app.router.add_get("/metrics", target.metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield target, port
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def run_prometheus(workdir: Path, target_port: int) -> AsyncIterator[str]:
    """Prometheus scraping 127.0.0.1:`target_port` every second; yields its base URL."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: app\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    async with _prometheus(config, workdir / "data", free_port(), workdir / "prometheus.log", "wb") as url:
        yield url


@contextlib.asynccontextmanager
async def run_receiver(workdir: Path, port: int) -> AsyncIterator[str]:
    """Prometheus scraping nothing, taking remote write on 127.0.0.1:`port`; yields its base URL.

    Started again on the same `workdir` and port, it keeps what it had received (its WAL).
    """
    config = workdir / "receiver.yml"
    config.write_text("global:\n  evaluation_interval: 1m\n")
    async with _prometheus(
        config, workdir / "receiver-data", port, workdir / "receiver.log", "ab", "--web.enable-remote-write-receiver"
    ) as url:
        yield url


@contextlib.asynccontextmanager
async def _prometheus(
    config: Path, data: Path, port: int, log_path: Path, log_mode: str, *flags: str
) -> AsyncIterator[str]:
    """Prometheus on 127.0.0.1:`port` with `config`, ready before it is yielded, stopped after."""
    assert Path(PROMETHEUS).exists(), "the prometheus package is not installed"
    log = log_path.open(log_mode)
    proc = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/ready") as resp:
                        if resp.status == 200:
                            break
                assert proc.returncode is None, log_path.read_text()
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("Prometheus did not become ready:\n" + log_path.read_text())
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def query(
    session: aiohttp.ClientSession, url: str, expr: str, t_ms: int, drop: frozenset[str] = frozenset()
) -> dict[Any, float] | str:
    """Prometheus' answer at `t_ms` as {sorted labels without `drop`: value}, or "error: ..."."""
    params = {"query": expr, "time": f"{t_ms / 1000:.3f}"}
    async with session.get(f"{url}/api/v1/query", params=params) as resp:
        body = await resp.json()
    if body["status"] != "success":
        return f"error: {body.get('error')}"
    data = body["data"]
    if data["resultType"] == "scalar":
        return {(): float(data["result"][1])}
    return {
        tuple(sorted((k, v) for k, v in item["metric"].items() if k not in drop)): float(item["value"][1])
        for item in data["result"]
    }


async def query_ordered(
    session: aiohttp.ClientSession, url: str, expr: str, t_ms: int
) -> list[tuple[Any, float]] | str:
    """Prometheus' answer at `t_ms` as [(sorted labels, value)] in the order it gave them, or "error: ..."."""
    params = {"query": expr, "time": f"{t_ms / 1000:.3f}"}
    async with session.get(f"{url}/api/v1/query", params=params) as resp:
        body = await resp.json()
    if body["status"] != "success":
        return f"error: {body.get('error')}"
    return [(tuple(sorted(item["metric"].items())), float(item["value"][1])) for item in body["data"]["result"]]


def close(a: float, b: float) -> bool:
    """Equal to 1e-9 relative; NaN equals NaN, an infinity only itself."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


# Why an evaluation failed, by a phrase both Prometheus' and our messages use. Two errors agree only
# when they fall in the same class; an error of no known class agrees with nothing, so a new kind of
# failing case must name its class here before it can pass.
ERROR_CLASSES = (
    ("regexp", "error parsing regexp"),
    ("label_replace regexp", "invalid regular expression in label_replace()"),
    ("duplicate match group", "found duplicate series for the match group"),
    ("many-to-many", "many-to-many matching not allowed"),
    ("duplicate labelset", "vector cannot contain metrics with the same labelset"),
    ("smoothing factor", "invalid smoothing factor"),
    ("trend factor", "invalid trend factor"),
    ("label_join source", "invalid source label name in label_join()"),
)


def error_class(message: str) -> str | None:
    for name, phrase in ERROR_CLASSES:
        if phrase in message:
            return name
    return None


def errors_disagree(theirs: str, ours: str) -> str | None:
    """None when both messages name a failure of the same known class, else what differs."""
    a, b = error_class(theirs), error_class(ours)
    if a is not None and a == b:
        return None
    return f"errors of different kinds ({a} / {b})\nPrometheus: {theirs!r}\nours:       {ours!r}"
