"""What the demo's small servers share: env defaults and waiting for SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal


def env_default(name: str, default: str) -> str:
    return os.environ.get(name, default)


async def run_until_signal() -> None:
    """Return once SIGTERM or SIGINT arrives, so callers shut down in order and exit 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
