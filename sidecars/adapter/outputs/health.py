"""The `health` output: the health endpoints of `sidecars.adapter.health`."""

from __future__ import annotations

from aiohttp import web

from sidecars.adapter.health import HealthEndpoints
from sidecars.adapter.outputs.base import Output


class HealthOutput(Output):
    name = "health"

    def routes(self) -> list[web.RouteDef]:
        return HealthEndpoints(self.state, self.settings.failure_status).routes()
