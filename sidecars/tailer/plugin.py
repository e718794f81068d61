"""The tailer sidecar plugin (not implemented yet)."""

from __future__ import annotations

from collections.abc import Callable

from sidecars.core import Sidecar, SidecarSettings


class TailerSettings(SidecarSettings):
    env_prefix = "TAILER_"


class Tailer(Sidecar[TailerSettings]):
    name = "tailer"
    description = "not implemented yet"
    Settings = TailerSettings

    async def run(self, ready: Callable[[], None]) -> None:
        raise NotImplementedError("the tailer sidecar is not implemented yet")
