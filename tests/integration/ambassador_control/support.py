"""Real upstreams on 127.0.0.1 for the control plane's tests (aiohttp servers, nginx) and helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sidecars.ambassador.cluster.cluster import Cluster

MakeCluster = Callable[..., Cluster]
MakeUpstreams = Callable[[int], Awaitable[list["Upstream"]]]


async def eventually(condition: Callable[[], bool], what: str, timeout_secs: float = 10.0) -> None:
    """Wait for a state to be reached (a bound on waiting, not a claim about speed)."""
    deadline = time.monotonic() + timeout_secs
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_secs}s: {what}")
        await asyncio.sleep(0.02)


class Upstream:
    """An aiohttp server whose /healthz status can be changed, and that can stop and come back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.health_status = 200
        self.hits = 0
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._root)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(status=self.health_status, text="health")

    async def _root(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text=f"hello from {self.port}")


def events(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [e for e in cluster.capture.events if e["event"] == name]  # type: ignore[attr-defined]


# The server block of the nginx the control plane's tests start and stop (tests.support.nginx).
NGINX_SERVER = """
        location = /healthz {{ return 200 "ok\\n"; }}
        location = /broken {{ return 503 "down\\n"; }}
        location / {{ return 200 "nginx\\n"; }}
"""
