"""Receivers that answer 200 with an endless body or a gzip bomb: a real tailer process keeps its memory
bounded (peak RSS measured before and after) and delivery proceeds, in every HTTP sink.

Where the status alone acknowledges (http, loki) the hostile 200 is an acknowledgement and the body
is never read; where the answer must be parsed (elasticsearch, otlp) it is not the protocol's answer,
so the batch is sent again, and delivered once the receiver answers properly.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from sidecars.testing import http_get, start_process
from tests.integration.tailer.conftest import FAST, numbered, write_lines

MiB = 1024 * 1024
HOSTILE_BYTES = 1024 * MiB  # what one hostile answer holds (endless for the tailer, bounded for the test)
HOSTILE_ANSWERS = 3  # then the receiver answers as its protocol says
LINES = 600
BATCH = 200
# Above the tailer's idle peak: batches, buffers and one bounded answer, far below one hostile answer.
RSS_GROWTH_BOUND = 64 * MiB


@functools.lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    """HOSTILE_BYTES of zeros, gzipped: about 1 MiB on the wire."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join(z.compress(zeros) for _ in range(HOSTILE_BYTES // MiB)) + z.flush()


def lines_of(sink: str, body: bytes) -> list[str]:
    if sink == "http":
        return [orjson.loads(x)["message"] for x in body.splitlines() if x]
    if sink == "elasticsearch":
        return [orjson.loads(x)["message"] for x in body.splitlines()[1::2]]
    doc = orjson.loads(body)
    if sink == "loki":
        return [v[1] for s in doc["streams"] for v in s["values"]]
    return [r["body"]["stringValue"] for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]


def proper_answer(sink: str, lines: list[str]) -> web.Response:
    if sink == "elasticsearch":
        items = [{"create": {"status": 201}}] * len(lines)
        return web.json_response({"errors": False, "items": items})
    if sink == "otlp":
        return web.json_response({})
    return web.Response(status=204 if sink == "loki" else 200)


class HostileReceiver:
    """Takes every request's lines, then answers the first HOSTILE_ANSWERS with a 200 that never ends."""

    def __init__(self, sink: str, style: str) -> None:
        self.sink = sink
        self.style = style
        self.requests = 0
        self.hostile_sent = 0
        self.acked: list[str] = []  # lines of requests answered properly
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        lines = lines_of(self.sink, await request.read())
        self.requests += 1
        if self.requests > HOSTILE_ANSWERS:
            self.acked += lines
            return proper_answer(self.sink, lines)
        self.hostile_sent += 1
        headers = {"Content-Type": "application/json"}
        if self.style == "gzip_bomb":
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=gzip_bomb(), headers=headers)
        response = web.StreamResponse(headers=headers)  # chunked, no end in sight
        await response.prepare(request)
        chunk = b"x" * MiB
        try:
            for _ in range(HOSTILE_BYTES // MiB):
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the tailer hung up: what it should do
        return response


def sink_config(sink: str, url: str) -> dict[str, Any]:
    return {
        "http": {"url": url + "/ingest"},
        "loki": {"url": url + "/loki/api/v1/push"},
        "elasticsearch": {"url": url},
        "otlp": {"url": url + "/v1/logs"},
    }[sink]


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) * 1024


async def until(condition: Callable[[], bool], timeout_secs: float, what: str) -> None:
    async def _wait() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(_wait(), timeout_secs)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_secs} s: {what}") from None


@pytest.mark.parametrize("style", ["endless", "gzip_bomb"])
@pytest.mark.parametrize("sink", ["http", "loki", "elasticsearch", "otlp"])
async def test_hostile_answers_cost_no_memory_and_delivery_proceeds(tmp_path: Path, sink: str, style: str) -> None:
    if style == "gzip_bomb":
        await asyncio.to_thread(gzip_bomb)  # made before the tailer starts, outside its timing
    rx = HostileReceiver(sink, style)
    await rx.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    settings: dict[str, Any] = {
        **FAST,
        "include": [f"{logs}/*.log"],
        "checkpoint_dir": str(tmp_path / "cp"),
        "sink": sink,
        "sink_config": {**sink_config(sink, rx.url), "timeout_secs": 30.0},
        "batch_max_lines": BATCH,
        "send_concurrency": 1,
    }
    lines = numbered("h", 0, LINES)
    try:
        async with start_process("tailer", settings, command=[sys.executable, "-m", "sidecars.tailer"]) as p:
            await p.wait_http("/readyz")
            pid = p.proc.pid
            before = peak_rss(pid)
            write_lines(logs / "app.log", lines)
            if sink in ("http", "loki"):
                # The status is the acknowledgement: everything goes through at the first try.
                await until(lambda: rx.requests >= LINES // BATCH, 60, "every batch sent")
            else:
                await until(lambda: set(lines) <= set(rx.acked), 60, "every line acknowledged properly")
            after = peak_rss(pid)
            _, metrics = await http_get(p.admin_url + "/metrics")
            p.proc.send_signal(signal.SIGTERM)
            assert await p.wait_exit(20) == 0
    finally:
        await rx.stop()
    growth = after - before
    print(f"{sink} {style}: peak RSS {before / MiB:.0f} MiB at start, {after / MiB:.0f} MiB after "
          f"{rx.hostile_sent} hostile answers of {HOSTILE_BYTES // MiB} MiB")  # fmt: skip
    assert rx.hostile_sent == HOSTILE_ANSWERS
    assert growth < RSS_GROWTH_BOUND, f"peak RSS grew by {growth / MiB:.0f} MiB"
    retries = next(float(x.split()[1]) for x in metrics.splitlines() if x.startswith("tailer_retries_total"))
    if sink in ("http", "loki"):
        assert retries == 0  # a 200 acknowledged, whatever followed it
    else:
        assert retries >= HOSTILE_ANSWERS  # not the protocol's answer: sent again, never taken as an ack
