"""The push machinery against a receiver on 127.0.0.1 the test scripts: Retry-After honoured, a refused
batch dropped and counted, the token from a file sent and never shown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import cramjam
import pytest
from aiohttp import web

from sidecars.adapter.outputs.push import MAX_RETRY_AFTER_SECS, retry_after_secs
from sidecars.testing import free_port

from .conftest import MetricsApp
from .test_adapter import adapter, wait_for

TOKEN = "push-T0ken-s3cret"


class Receiver:
    def __init__(self, answers: list[tuple[int, dict[str, str]]]) -> None:
        self.answers = answers  # consumed in order; then 204
        self.seen: list[tuple[float, dict[str, str], bytes]] = []

    async def write(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((time.monotonic(), dict(request.headers), bytes(cramjam.snappy.decompress_raw(body))))
        status, headers = self.answers.pop(0) if self.answers else (204, {})
        return web.Response(status=status, headers=headers, text="" if status < 300 else "no thanks")


async def serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/api/v1/write", receiver.write)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/api/v1/write"


def test_retry_after_in_seconds_or_as_a_date_and_bounded() -> None:
    assert retry_after_secs("3") == 3.0
    assert retry_after_secs("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0) == 6.0
    assert retry_after_secs("99999") == MAX_RETRY_AFTER_SECS
    assert retry_after_secs("soon") is None and retry_after_secs(None) is None


async def test_retry_after_is_honoured_and_a_refused_batch_is_dropped(app: MetricsApp, tmp_path: Path) -> None:
    app.page = "# TYPE up_things gauge\nup_things 1\n"
    receiver = Receiver([(429, {"Retry-After": "1"}), (503, {}), (400, {})])
    runner, url = await serve(receiver)
    try:
        async with adapter(
            app, None, outputs=["health", "remote_write"], push_url=url, push_bearer_token=TOKEN,
            scrape_interval_secs=0.5, scrape_timeout_secs=0.5, push_max_backoff_secs=0.2, push_batch_max_samples=1,
        ) as sc:  # fmt: skip
            metric = {"output": "remote_write"}
            await wait_for(lambda: (sc.sample("adapter_push_samples_total", metric) or 0) >= 2, 20)
            first, second, third = receiver.seen[:3]
            assert second[0] - first[0] >= 0.95, "Retry-After: 1 was not waited for"
            assert first[2] == second[2] == third[2], "a failed batch is sent again, the same"
            headers = first[1]
            assert headers["Authorization"] == f"Bearer {TOKEN}"
            assert headers["Content-Encoding"] == "snappy" and headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
            assert b"up_things" in first[2]
            assert sc.sample("adapter_push_dropped_samples_total", {**metric, "reason": "rejected"}) == 1
            assert sc.sample("adapter_push_failures_total", {**metric, "reason": "http_4xx"}) == 1
            assert sc.sample("adapter_push_failures_total", {**metric, "reason": "http_5xx"}) == 1
            assert sc.sample("adapter_push_failures_total", {**metric, "reason": "rejected"}) == 1
            logged = str(sc.events("push failed"))
            assert "no thanks" in logged and TOKEN not in logged
            assert TOKEN not in str(sc.logs)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"outputs": ["remote_write"]}, "the remote_write output needs push_url"),
        ({"push_url": "http://u:p@127.0.0.1/w"}, "must not hold credentials"),
        ({"push_labels": ["no-equals"]}, "expected name=value"),
        ({"push_keep": ["("]}, "error parsing regexp: missing )"),
    ],
)
def test_push_settings_are_checked(settings: dict[str, object], problem: str) -> None:
    from sidecars.adapter.settings import AdapterSettings
    from sidecars.core.config import ConfigError, load

    flags = {k: v if isinstance(v, list) else [v] for k, v in settings.items()}
    with pytest.raises(ConfigError) as caught:
        load(AdapterSettings, flags=flags, environ={})  # type: ignore[arg-type]
    assert problem in caught.value.render()


def test_the_token_comes_from_a_file_and_is_never_printed(tmp_path: Path) -> None:
    from sidecars.adapter.settings import AdapterSettings
    from sidecars.core.config import load, render

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    loaded = load(
        AdapterSettings,
        environ={"ADAPTER_PUSH_URL": "http://127.0.0.1:9/w", "ADAPTER_PUSH_BEARER_TOKEN_FILE": str(token_file)},
    )
    settings = loaded.settings
    assert isinstance(settings, AdapterSettings)
    assert settings.push_authorization() == f"Bearer {TOKEN}"
    assert TOKEN not in render(loaded) and "push_bearer_token: '**********'" in render(loaded)


async def endless(request: web.Request, status: int) -> web.StreamResponse:
    """An answer whose body never ends: read whole, it would hold the sender until its timeout."""
    await request.read()
    response = web.StreamResponse(status=status, headers={"Content-Type": "application/x-protobuf"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        while True:
            await response.write(b"x" * 65536)
            await asyncio.sleep(0.01)
    return response


async def test_a_receiver_answering_without_end_is_read_only_so_far(app: MetricsApp) -> None:
    app.page = "# TYPE up_things gauge\nup_things 1\n"
    receiver = web.Application()

    async def refuse(request: web.Request) -> web.StreamResponse:
        return await endless(request, 503)

    async def accept(request: web.Request) -> web.StreamResponse:
        return await endless(request, 200)

    receiver.router.add_post("/api/v1/write", refuse)
    receiver.router.add_post("/v1/metrics", accept)
    runner = web.AppRunner(receiver, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with adapter(
            app, None, outputs=["health", "remote_write", "otlp"], push_url=f"http://127.0.0.1:{port}/api/v1/write",
            otlp_url=f"http://127.0.0.1:{port}/v1/metrics", scrape_interval_secs=0.2, scrape_timeout_secs=0.2,
            push_max_backoff_secs=0.1, push_timeout_secs=30.0,
        ) as sc:  # fmt: skip
            rw, otlp = {"output": "remote_write"}, {"output": "otlp"}
            await wait_for(lambda: (sc.sample("adapter_push_samples_total", otlp) or 0) >= 2, 20)
            await wait_for(lambda: (sc.sample("adapter_push_failures_total", {**rw, "reason": "http_5xx"}) or 0) >= 3)
            assert (sc.sample("adapter_push_failures_total", {**otlp, "reason": "timeout"}) or 0) == 0
            assert (sc.sample("adapter_push_failures_total", {**rw, "reason": "timeout"}) or 0) == 0
            (failed,) = sc.events("push failed")
            assert failed["output"] == "remote_write" and failed["reason"] == "http_5xx"
            assert failed["detail"].endswith("x" * 100) and len(failed["detail"]) <= 300
    finally:
        await runner.cleanup()


async def test_a_request_the_receiver_never_answers_times_out_and_is_sent_again(app: MetricsApp) -> None:
    app.page = "# TYPE up_things gauge\nup_things 1\n"
    bodies: list[bytes] = []
    release = asyncio.Event()

    async def write(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        if len(bodies) == 1:
            await release.wait()  # the first request hangs
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/api/v1/write", write)
    runner = web.AppRunner(receiver, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with adapter(
            app, None, outputs=["health", "remote_write"], push_url=f"http://127.0.0.1:{port}/api/v1/write",
            scrape_interval_secs=0.5, scrape_timeout_secs=0.5, push_max_backoff_secs=0.1, push_timeout_secs=1.0,
            push_batch_max_samples=1,
        ) as sc:  # fmt: skip
            metric = {"output": "remote_write"}
            await wait_for(lambda: (sc.sample("adapter_push_samples_total", metric) or 0) >= 1, 20)
            assert sc.sample("adapter_push_failures_total", {**metric, "reason": "timeout"}) == 1
            assert bodies[0] == bodies[1], "the timed-out batch is the one sent again"
    finally:
        release.set()
        await runner.cleanup()
