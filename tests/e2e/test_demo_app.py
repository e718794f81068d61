"""The demo app on its own: log lines, metrics that go bad on request, calls to its upstream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sidecars.demo.app import DemoApp
from sidecars.demo.upstream import make_app
from sidecars.testing import free_port


def sample(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} not exposed")


async def test_demo_app_logs_exposes_metrics_goes_bad_and_calls_upstream(tmp_path: Path) -> None:
    from aiohttp import web

    up_port, app_port = free_port(), free_port()
    up = web.AppRunner(make_app("a"))
    await up.setup()
    await web.TCPSite(up, "127.0.0.1", up_port).start()
    demo = DemoApp(tmp_path, f"http://127.0.0.1:{up_port}/x", tick_secs=0.05)
    serving = asyncio.create_task(demo.serve("127.0.0.1", app_port))
    base = f"http://127.0.0.1:{app_port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            async with http.get(f"{base}/") as r:
                body = await r.json()
            assert r.status == 200
            assert json.loads(body["upstream"]) == {"upstream": "a", "path": "/x"}

            async with http.post(f"{base}/toggle?bad=1") as r:
                assert (await r.json()) == {"bad": True}
            async with http.get(f"{base}/") as r:  # answered, but counted as an error while bad
                assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert sample(text, "demo_queue_depth") == 500
            assert sample(text, "demo_errors_total") >= 1
            assert sample(text, "demo_request_duration_seconds_count") == 2
            async with http.post(f"{base}/toggle?bad=0") as r:
                assert (await r.json()) == {"bad": False}
            async with http.get(f"{base}/metrics") as r:
                assert sample(await r.text(), "demo_queue_depth") == 0
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await up.cleanup()
    lines = [json.loads(line) for line in (tmp_path / "app.log").read_text().splitlines()]
    assert [doc["seq"] for doc in lines] == list(range(1, len(lines) + 1))
    assert {"tick", "request", "toggle"} <= {doc["event"] for doc in lines}
