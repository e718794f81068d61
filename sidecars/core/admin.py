"""The admin HTTP server every sidecar gets: probes and the sidecar's own metrics.

`/startupz`, `/readyz`, `/livez` (each with `?verbose`, `?exclude=name`, `/<endpoint>/<check>` and
the health+json variant, rendered by `sidecars.core.health`) and `/metrics`. It starts before the
plugin's set-up, so `/livez` answers while the sidecar starts and `/readyz` answers 503 through the
whole drain, and it stops last.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sidecars.core import health
from sidecars.core.http import HttpServer, start_server
from sidecars.core.metrics import SidecarMetrics

ENDPOINTS = ("startupz", "readyz", "livez")


class AdminServer:
    def __init__(
        self,
        host: str,
        port: int,
        checks: health.Health,
        metrics: SidecarMetrics,
        extra_routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self._host, self._port = host, port
        self._health = checks
        self._metrics = metrics
        self._extra_routes = extra_routes
        self._server: HttpServer | None = None
        self.port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        for endpoint in ENDPOINTS:
            app.router.add_get(f"/{endpoint}", self._probe)
            app.router.add_get(f"/{endpoint}/{{check}}", self._probe)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_routes(self._extra_routes)
        return app

    async def start(self) -> None:
        self._server = await start_server(self._app(), self._host, self._port)
        self.port = self._server.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def _probe(self, request: web.Request) -> web.Response:
        endpoint = request.path.strip("/").split("/", 1)[0]
        only = request.match_info.get("check")
        exclude = request.query.getall("exclude", [])
        results = self._health.evaluate(endpoint, exclude, only)
        if only is not None and not results:
            return web.Response(status=404, text=f"no check named {only!r} on /{endpoint}\n")
        known = {check.name for check in self._health.checks(endpoint)}
        excluded = [name for name in exclude if name in known] if only is None else []
        return health.respond(request, endpoint, results, excluded=excluded)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})
