"""An HTTP NDJSON receiver on 127.0.0.1 for the tailer's tests: it keeps every line it acknowledged.

It can be switched to fail (answer a status, e.g. 503 or 400) or to go away entirely (connections
refused), the way a real log store has outages.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class NdjsonReceiver:
    """Collects `{"message", "labels", ...}` documents; `messages` in arrival order."""

    docs: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    batch_lines: list[int] = field(default_factory=list)  # records per acknowledged request
    fail_status: int | None = None  # answer this instead of 200 while set
    retry_after: str | None = None
    jitter_secs: float = 0.0  # answer each request after a random delay up to this (reorders acks)
    fail_every: int = 0  # answer every n-th request 503 (some batches acknowledged, others not)
    url: str = ""
    port: int = 0
    _runner: web.AppRunner | None = None
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, port: int = 0) -> None:
        await self.up(port)

    async def up(self, port: int | None = None) -> None:
        """(Re)start listening, on the same port as before."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port if port is not None else self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{self.port}/ingest"

    async def down(self) -> None:
        """Go away entirely: open keep-alive connections are closed, new ones refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def stop(self) -> None:
        await self.down()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        if self.jitter_secs:
            await asyncio.sleep(random.uniform(0, self.jitter_secs))
        if self.fail_every and self.requests % self.fail_every == 0:
            return web.Response(status=503, text="failing this one on purpose")
        if self.fail_status is not None:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=self.fail_status, text="failing on purpose", headers=headers)
        lines = [line for line in body.splitlines() if line]
        self.docs.extend(orjson.loads(line) for line in lines)
        self.batch_lines.append(len(lines))
        self.got.set()
        return web.Response(status=200, text="ok")

    @property
    def messages(self) -> list[str]:
        return [d.get("message", "") for d in self.docs]

    async def wait_for(self, count: int, timeout_secs: float = 30.0) -> None:
        """Until `count` documents arrived (fails the test with what came if they do not)."""

        async def _wait() -> None:
            while len(self.docs) < count:
                self.got.clear()
                await self.got.wait()

        try:
            await asyncio.wait_for(_wait(), timeout_secs)
        except TimeoutError:
            raise AssertionError(f"received {len(self.docs)} of {count} records") from None
