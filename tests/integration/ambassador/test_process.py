"""The ambassador as a real process (`python -m sidecars.ambassador`): the conformance contract, and
SIGTERM under load finishing every request already in flight."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from typing import Any, ClassVar

import aiohttp

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import ConformanceSuite, free_port, start_process
from tests.integration.ambassador.peers import nginx


class TestAmbassadorConformance(ConformanceSuite):
    plugin = Ambassador
    # A static endpoint with active checks off: the contract does not depend on an upstream.
    settings: ClassVar[dict[str, Any]] = {
        "listeners": [
            {"name": "web", "port": 0, "cluster": {"endpoints": ["127.0.0.1:9"], "health_check": {"kind": "none"}}}
        ],
        "shutdown_timeout_secs": 5.0,
    }
    command: ClassVar[list[str] | None] = [sys.executable, "-m", "sidecars.ambassador"]


async def test_sigterm_under_load_drops_no_request_in_flight() -> None:
    port = free_port()
    async with nginx("n1") as n1:
        settings = {
            "listeners": [
                {"name": "web", "port": port, "cluster": {"endpoints": [n1.address], "health_check": {"kind": "none"}}}
            ],
            "shutdown_timeout_secs": 10.0,
        }
        async with start_process("ambassador", settings, command=[sys.executable, "-m", "sidecars.ambassador"]) as proc:
            await proc.wait_http("/readyz", 200)
            outcomes: Counter[str] = Counter()
            stop = asyncio.Event()

            async def client() -> None:
                async with aiohttp.ClientSession() as session:
                    while not stop.is_set():
                        try:
                            # /slow takes 0.2 s upstream: many requests are in flight at the signal
                            async with session.get(f"http://127.0.0.1:{port}/slow") as resp:
                                body = await resp.read()
                                ok = resp.status == 200 and body == b"slow from n1\n"
                                outcomes["ok" if ok else f"bad {resp.status}"] += 1
                        except aiohttp.ClientConnectorError:
                            outcomes["refused"] += 1  # a new connection after the listener closed: expected
                            await asyncio.sleep(0.05)
                        except aiohttp.ClientError as exc:
                            outcomes[f"dropped {type(exc).__name__}"] += 1

            clients = [asyncio.create_task(client()) for _ in range(20)]
            await asyncio.sleep(1.0)
            proc.proc.send_signal(signal.SIGTERM)
            code = await proc.wait_exit(15.0)
            stop.set()
            await asyncio.gather(*clients)
    assert code == 0, proc.read_output()
    assert outcomes["ok"] >= 20, outcomes  # requests were in flight all along
    assert outcomes["refused"] >= 1, outcomes  # the listener did close
    assert set(outcomes) <= {"ok", "refused"}, outcomes
