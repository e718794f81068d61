"""The adapter sidecar plugin (not implemented yet)."""

from __future__ import annotations

from collections.abc import Callable

from sidecars.core import Sidecar, SidecarSettings


class AdapterSettings(SidecarSettings):
    env_prefix = "ADAPTER_"


class Adapter(Sidecar[AdapterSettings]):
    name = "adapter"
    description = "not implemented yet"
    Settings = AdapterSettings

    async def run(self, ready: Callable[[], None]) -> None:
        raise NotImplementedError("the adapter sidecar is not implemented yet")
