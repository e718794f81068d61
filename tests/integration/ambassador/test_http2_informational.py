"""1xx responses (103 Early Hints) from an HTTP/2 upstream reach an h2c client ahead of the final one."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.events
import pytest

from sidecars.ambassador.plugin import Ambassador
from sidecars.ambassador.proxy.http2_server import MAX_INFORMATIONAL
from sidecars.testing import run_sidecar
from tests.integration.ambassador.conftest import listener
from tests.integration.ambassador.h2_client import RawH2
from tests.integration.ambassador.h2_upstream import h2_upstream

pytestmark = pytest.mark.timeout(60)


async def test_early_hints_are_passed_on_before_the_response_and_bounded() -> None:
    async with h2_upstream("up", mode="hints") as up:
        config = listener([up.address], cluster={"protocol": "http2"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            port = sc.plugin.listeners[0].port

            def call() -> list[Any]:
                raw = RawH2(port)
                try:
                    raw.request(b"/page", end_stream=True)
                    return raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded))
                finally:
                    raw.close()

            events = await asyncio.to_thread(call)
    kinds = (h2.events.InformationalResponseReceived, h2.events.ResponseReceived)
    heads = [(type(e), dict(e.headers)) for e in events if isinstance(e, kinds)]
    hints = [h for kind, h in heads if kind is h2.events.InformationalResponseReceived]
    assert len(hints) == MAX_INFORMATIONAL  # twelve sent, the rest dropped
    assert all(h[b":status"] == b"103" and h[b"link"] == b"</app.css>; rel=preload" for h in hints)
    assert heads[-1][0] is h2.events.ResponseReceived and heads[-1][1][b":status"] == b"200"
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
