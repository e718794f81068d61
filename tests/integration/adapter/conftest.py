"""A real app on 127.0.0.1 serving a /metrics page the test changes at will."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from sidecars.adapter.exposition import TEXT_CONTENT_TYPE
from sidecars.core.http import HttpServer, start_server


@dataclass
class MetricsApp:
    """`page` is served at /metrics; `status`, `content_type` and `delay_secs` shape the answer.

    A callable `page` is given the number of the request (0, 1, ...). `raw_body` is sent as it is,
    with `headers` (a pre-compressed body and its Content-Encoding, say), instead of `page`.
    """

    page: str | Callable[[int], str] = ""
    status: int = 200
    content_type: str = TEXT_CONTENT_TYPE
    delay_secs: float = 0.0
    raw_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    accept: list[str] = field(default_factory=list)
    accept_encoding: list[str] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)
    port: int = 0
    server: HttpServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        number = self.requests
        self.requests += 1
        self.accept.append(request.headers.get("Accept", ""))
        self.accept_encoding.append(request.headers.get("Accept-Encoding", ""))
        self.authorization.append(request.headers.get("Authorization"))
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        if self.raw_body is not None:
            response = web.Response(body=self.raw_body, status=self.status, headers=self.headers)
            response.headers["Content-Type"] = self.content_type
            return response
        page = self.page(number) if callable(self.page) else self.page
        response = web.Response(body=page.encode(), status=self.status)
        response.headers["Content-Type"] = self.content_type
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self.server = await start_server(app, "127.0.0.1", port)
        self.port = self.server.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


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
