"""A real app on 127.0.0.1 serving a /metrics page the test changes at will."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from sidecars.adapter.exposition import TEXT_CONTENT_TYPE


@dataclass
class MetricsApp:
    """`page` is served at /metrics; `status`, `content_type` and `delay_secs` shape the answer."""

    page: str = ""
    status: int = 200
    content_type: str = TEXT_CONTENT_TYPE
    delay_secs: float = 0.0
    requests: int = 0
    accept: list[str] = field(default_factory=list)
    accept_encoding: list[str] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.accept.append(request.headers.get("Accept", ""))
        self.accept_encoding.append(request.headers.get("Accept-Encoding", ""))
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        response = web.Response(body=self.page.encode(), status=self.status)
        response.headers["Content-Type"] = self.content_type
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def app() -> AsyncIterator[MetricsApp]:
    served = MetricsApp()
    await served.start()
    try:
        yield served
    finally:
        await served.stop()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    return tmp_path / "rules.yaml"
