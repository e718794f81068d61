"""Sidecars that misbehave on purpose, to test the runtime's supervision and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

from pydantic import Field, SecretStr

from sidecars.core import Check, Sidecar, SidecarSettings, secret
from sidecars.core.cli import run_main


class ProbeSettings(SidecarSettings):
    env_prefix = "PROBE_"
    admin_port: int = Field(9890, description="Admin port.")
    crash_every_secs: float = Field(0.0, ge=0, description="run() raises this long after each start; 0: never.")
    drain_secs: float = Field(0.0, ge=0, description="How long drain() takes.")
    fail_setup: bool = Field(False, description="Fail set-up after acquiring a socket and a file.")
    fail_release: bool = Field(False, description="Raise while releasing (after the marker file is gone).")
    marker_dir: str = Field("", description="Where set-up leaves a file while it holds its resources.")
    ready_after_secs: float = Field(0.0, ge=0, description="Delay before ready().")
    return_after_secs: float = Field(0.0, ge=0, description="run() returns this long after ready(); 0: never.")


def _fail_release() -> None:
    raise OSError("release failed on purpose")


class Probe(Sidecar[ProbeSettings]):
    name = "probe"
    description = "a sidecar for testing the runtime"
    Settings = ProbeSettings

    def __init__(self, settings: ProbeSettings, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, context)
        self.runs = 0
        self.drained = False
        self.listener: socket.socket | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            self.listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
            marker_dir = Path(self.settings.marker_dir or tempfile.gettempdir())
            marker = marker_dir / f"probe-{self.listener.getsockname()[1]}.held"
            marker.write_text("held")
            stack.callback(marker.unlink)
            if self.settings.fail_release:
                stack.callback(_fail_release)
            if self.settings.fail_setup:
                raise RuntimeError("set-up failed halfway on purpose")
            yield

    @classmethod
    def commands(cls) -> Mapping[str, Callable[[list[str]], int]]:
        def echo(args: list[str]) -> int:
            print("echo:", " ".join(args))
            return 7

        return {"echo": echo}

    async def run(self, ready: Callable[[], None]) -> None:
        self.runs += 1
        await asyncio.sleep(self.settings.ready_after_secs)
        ready()
        if self.settings.crash_every_secs:
            await asyncio.sleep(self.settings.crash_every_secs)
            raise RuntimeError(f"crash number {self.runs}")
        if self.settings.return_after_secs:
            await asyncio.sleep(self.settings.return_after_secs)
            return
        await asyncio.Event().wait()

    async def drain(self) -> None:
        await asyncio.sleep(self.settings.drain_secs)
        self.drained = True

    def checks(self) -> Sequence[Check]:
        return [
            Check("runs", lambda: None if self.runs else "not started"),
            Check("heart", lambda: None, readiness=False, liveness=True),
        ]


class StrictSettings(SidecarSettings):
    env_prefix = "STRICT_"
    target_url: str = Field(description="Required: nothing sensible to default to.")
    api_token: SecretStr | None = secret(description="A secret that must never be printed.")
    retries: int = Field(3, ge=0, description="A number.")


class Strict(Probe):
    """A sidecar with a required option and a secret, for the CLI's error reporting."""

    name = "strict"
    Settings = StrictSettings  # type: ignore[assignment]


if __name__ == "__main__":
    if sys.argv[1:2] == ["strict"]:
        sys.exit(run_main(Strict, sys.argv[2:], prog="strict"))
    sys.exit(run_main(Probe, prog="probe"))
