"""The admin HTTP server every sidecar gets: probes and the sidecar's own metrics.

`/startupz`, `/readyz`, `/livez` (each with `?verbose`, `?exclude=name` and `/<endpoint>/<check>`)
and `/metrics`. It starts before the plugin's set-up, so `/livez` answers while the sidecar starts
and `/readyz` answers 503 through the whole drain, and it stops last.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sidecars.core import health
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
        self._runner: web.AppRunner | None = None
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
        # No access log: probes arrive every few seconds and would drown the sidecar's own lines.
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _probe(self, request: web.Request) -> web.Response:
        endpoint = request.path.strip("/").split("/", 1)[0]
        only = request.match_info.get("check")
        results = self._health.evaluate(endpoint, request.query.getall("exclude", []), only)
        if only is not None and not results:
            return web.Response(status=404, text=f"no check named {only!r} on /{endpoint}\n")
        healthy, body = health.render(endpoint, results, "verbose" in request.query)
        return web.Response(status=200 if healthy else 503, text=body, headers={"Cache-Control": "no-store"})

    async def _metrics_page(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})
