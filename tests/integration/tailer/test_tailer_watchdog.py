"""The shutdown watchdog ends a real tailer process whose shutdown cannot finish: a worker thread that
never returns (asyncio waits for its executor's threads on the way out) or an event loop blocked in
the drain. The exit code says the watchdog did it, within the budget plus its second."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sidecars.core.runtime import EXIT_WATCHDOG
from sidecars.testing import start_process
from tests.integration.tailer.conftest import FAST, write_lines
from tests.integration.tailer.ndjson_receiver import NdjsonReceiver

# The tailer's own entry point with its drain replaced by a stand-in for a runaway: the way the
# unbounded `**` walk once spun in a worker thread, or any blocking call made on the loop.
LAUNCHER = r"""
import asyncio, sys, time
from sidecars.tailer import pipeline

async def drain_in_a_spinning_thread(self, budget_secs):
    def spin():
        while True:
            pass
    await asyncio.to_thread(spin)

async def drain_blocking_the_loop(self, budget_secs):
    time.sleep(3600)

pipeline.Pipeline.drain = {"thread": drain_in_a_spinning_thread, "loop": drain_blocking_the_loop}[sys.argv[1]]
from sidecars.core.cli import run_main
from sidecars.tailer.plugin import Tailer
raise SystemExit(run_main(Tailer, sys.argv[2:]))
"""


@pytest.mark.parametrize("runaway", ["thread", "loop"])
async def test_watchdog_ends_a_shutdown_that_cannot_finish(
    receiver: NdjsonReceiver, tmp_path: Path, runaway: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "app.log", ["one"])
    budget = 2.0
    settings: dict[str, Any] = {
        **FAST,
        "include": [f"{logs}/*.log"],
        "checkpoint_dir": str(tmp_path / "cp"),
        "sink": "http",
        "sink_config": {"url": receiver.url},
        "shutdown_timeout_secs": budget,
    }
    async with start_process("tailer", settings, command=[sys.executable, "-c", LAUNCHER, runaway]) as p:
        await p.wait_http("/readyz")
        await receiver.wait_for(1)
        p.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await p.wait_exit(budget + 15)
        took = time.monotonic() - started
        output = p.read_output()
    assert code == EXIT_WATCHDOG, output
    assert "the watchdog ends the process" in output
    assert took >= budget  # the drain had its whole budget first
