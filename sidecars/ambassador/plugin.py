"""The ambassador sidecar plugin (not implemented yet)."""

from __future__ import annotations

from collections.abc import Callable

from sidecars.core import Sidecar, SidecarSettings


class AmbassadorSettings(SidecarSettings):
    env_prefix = "AMBASSADOR_"


class Ambassador(Sidecar[AmbassadorSettings]):
    name = "ambassador"
    description = "not implemented yet"
    Settings = AmbassadorSettings

    async def run(self, ready: Callable[[], None]) -> None:
        raise NotImplementedError("the ambassador sidecar is not implemented yet")
