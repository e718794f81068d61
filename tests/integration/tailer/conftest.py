"""Fixtures for the tailer's integration tests: a real NDJSON receiver and an in-process tailer with
short timers, each test in its own temp directory of log files and checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sidecars.tailer.plugin import Tailer
from sidecars.testing import RunningSidecar, run_sidecar
from tests.integration.tailer.ndjson_receiver import NdjsonReceiver

# Timers short enough for tests; every one is a real option users set too.
FAST: dict[str, Any] = {
    "poll_interval_secs": 0.1,
    "rescan_interval_secs": 0.5,
    "batch_wait_secs": 0.05,
    "checkpoint_interval_secs": 0.1,
    "partial_line_flush_secs": 0.5,
    "rotate_wait_secs": 0.3,
    "retry_initial_secs": 0.05,
    "retry_max_secs": 0.2,
    "shutdown_timeout_secs": 10.0,
}


@pytest.fixture
async def receiver() -> AsyncIterator[NdjsonReceiver]:
    r = NdjsonReceiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


TailerFactory = Callable[..., contextlib.AbstractAsyncContextManager[RunningSidecar]]


@pytest.fixture
def tailer(tmp_path: Path, logs: Path, receiver: NdjsonReceiver) -> TailerFactory:
    """`async with tailer(**overrides) as sc:` a tailer on `logs/*.log` sending to the receiver."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[RunningSidecar]:
        settings: dict[str, Any] = {
            "include": [f"{logs}/*.log"],
            "checkpoint_dir": str(tmp_path / "checkpoints"),
            "sink": "http",
            "sink_config": {"url": receiver.url},
            **FAST,
            **overrides,
        }
        async with run_sidecar(Tailer, **settings) as sc:
            yield sc

    return start


def write_lines(path: Path, lines: list[str], mode: str = "a") -> None:
    with open(path, mode) as f:
        f.write("".join(line + "\n" for line in lines))


def numbered(prefix: str, start: int, count: int) -> list[str]:
    return [f"{prefix} {i:07d}" for i in range(start, start + count)]


def logrotate(config: str, tmp: Path) -> None:
    """Run the real logrotate once, forced, with its own state file."""
    conf = tmp / "logrotate.conf"
    conf.write_text(config)
    os.chmod(conf, 0o644)
    subprocess.run(["logrotate", "-f", "-s", str(tmp / "logrotate.state"), str(conf)], check=True, capture_output=True)


def deleted_fds(under: Path) -> list[str]:
    """This process's descriptors on deleted files below `under`."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.endswith(" (deleted)") and target.startswith(str(under)):
                out.append(target)
    return out


async def wait_sample(
    sc: RunningSidecar, name: str, labels: dict[str, str] | None, at_least: float, timeout_secs: float = 20
) -> None:
    """Until a series of the tailer reaches `at_least`."""

    async def _wait() -> None:
        while (sc.sample(name, labels) or 0) < at_least:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(_wait(), timeout_secs)


def assert_exactly(receiver: NdjsonReceiver, expected: list[str]) -> None:
    """Every expected line arrived, exactly once, and nothing else."""
    got = Counter(receiver.messages)
    missing = [m for m in expected if m not in got]
    assert not missing, f"{len(missing)} lines lost, first: {missing[:3]}"
    dups = {m: n for m, n in got.items() if n > 1}
    assert not dups, f"duplicates: {list(dups.items())[:3]}"
    assert len(got) == len(expected)
