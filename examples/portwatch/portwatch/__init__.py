"""A third-party sidecar in one screen: is the app's TCP port accepting connections?"""

import asyncio
from collections.abc import Callable, Sequence

from prometheus_client import Gauge
from pydantic import Field

from sidecars.core import Check, Sidecar, SidecarSettings


class PortWatchSettings(SidecarSettings):
    env_prefix = "PORTWATCH_"
    admin_port: int = Field(9810, description="Port of the admin server.")
    target_host: str = Field("127.0.0.1", description="Host of the app (the Pod's localhost).")
    target_port: int = Field(8080, ge=1, le=65535, description="TCP port the app should accept on.")
    interval_secs: float = Field(5.0, gt=0, description="Time between two connection attempts.")
    timeout_secs: float = Field(1.0, gt=0, description="Connect timeout of one attempt.")


class PortWatch(Sidecar[PortWatchSettings]):
    name = "portwatch"
    description = "exports whether the app's TCP port accepts connections"
    Settings = PortWatchSettings

    def __init__(self, settings: PortWatchSettings, context) -> None:
        super().__init__(settings, context)
        registry = context.metrics.registry
        self.up = Gauge("portwatch_target_up", "1 if the last connect succeeded.", registry=registry)
        self.last_error: str | None = "no attempt yet"

    async def run(self, ready: Callable[[], None]) -> None:
        while True:
            s = self.settings
            try:
                conn = asyncio.open_connection(s.target_host, s.target_port)
                _, writer = await asyncio.wait_for(conn, s.timeout_secs)
                writer.close()
                self.up.set(1)
                self.last_error = None
            except (OSError, TimeoutError) as exc:
                self.up.set(0)
                self.last_error = f"{s.target_host}:{s.target_port}: {exc or 'timeout'}"
            self.context.metrics.events_in.inc()
            ready()  # ready after the first attempt, whatever its result: the app's state is not ours
            await asyncio.sleep(s.interval_secs)

    def checks(self) -> Sequence[Check]:
        # Informational only: a sidecar's readiness must not follow the app.
        return [Check("attempted", lambda: None if self.last_error != "no attempt yet" else "no attempt yet")]
