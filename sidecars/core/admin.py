"""The admin HTTP server every sidecar gets: probes, metrics, and pages for a person.

`/startupz`, `/readyz`, `/livez` (each with `?verbose`, `?exclude=name`, `/<endpoint>/<check>` and
the health+json variant, rendered by `sidecars.core.health`) and `/metrics`. It starts before the
plugin's set-up, so `/livez` answers while the sidecar starts and `/readyz` answers 503 through the
whole drain, and it stops last.

For whoever reaches it with `kubectl port-forward`: `/` is the status page (`sidecars.core.status`:
the sidecar, its state, each check, its figures, the index of every page; JSON with
`Accept: application/json`), `/config` the effective configuration exactly as `--print-config` shows
it (the same code: secrets redacted). A plugin's own pages (`Sidecar.admin_routes()`) are listed on
the index with the first line of their handler's docstring.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence

import orjson
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sidecars.core import config, health, status
from sidecars.core.http import HttpServer, start_server
from sidecars.core.logs import POD_FIELDS
from sidecars.core.metrics import SidecarMetrics
from sidecars.core.plugin import Figures
from sidecars.core.settings import SidecarSettings

ENDPOINTS = status.ENDPOINTS

_CORE_PAGES = (
    status.Page("/", "this status page (JSON with Accept: application/json)"),
    status.Page("/startupz", "start-up probe (?verbose lists each check)"),
    status.Page("/readyz", "readiness probe (?verbose lists each check)"),
    status.Page("/livez", "liveness probe (?verbose lists each check)"),
    status.Page("/metrics", "Prometheus metrics"),
    status.Page("/config", "the effective configuration, secrets redacted, as --print-config shows it"),
)


class AdminServer:
    def __init__(
        self,
        host: str | Sequence[str],
        port: int,
        checks: health.Health,
        metrics: SidecarMetrics,
        extra_routes: Sequence[web.RouteDef] = (),
        *,
        name: str = "",
        description: str = "",
        settings: SidecarSettings | None = None,
        config_sources: Mapping[str, str] | None = None,
        figures: Callable[[], Figures] = Figures,
    ) -> None:
        self._hosts = [host] if isinstance(host, str) else list(host)
        self._port = port
        self._health = checks
        self._metrics = metrics
        self._extra_routes = extra_routes
        self._name = name or metrics.sidecar
        self._description = description
        self._settings = settings
        self._sources = dict(config_sources or {})
        self._figures = figures
        self._server: HttpServer | None = None
        self.port: int | None = None
        self.addresses: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def _app(self) -> web.Application:
        app = web.Application()
        for endpoint in ENDPOINTS:
            app.router.add_get(f"/{endpoint}", self._probe)
            app.router.add_get(f"/{endpoint}/{{check}}", self._probe)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/", self._status_page)
        app.router.add_get("/config", self._config_page)
        app.router.add_routes(self._extra_routes)
        return app

    async def start(self) -> None:
        self._server = await start_server(self._app(), self._hosts, self._port)
        self.port = self._server.port
        self.addresses = self._server.addresses
        self.skipped = self._server.skipped

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    def pages(self) -> list[status.Page]:
        """Every page of this server, as the index lists them."""
        own = [
            status.Page(route.path, _first_line(route.handler.__doc__))
            for route in self._extra_routes
            if isinstance(route, web.RouteDef) and route.method == "GET"
        ]
        return [*_CORE_PAGES, *own]

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

    async def _status_page(self, request: web.Request) -> web.Response:
        doc = status.build(
            name=self._name,
            description=self._description,
            health=self._health,
            metrics=self._metrics,
            figures=self._figures(),
            pages=self.pages(),
            pod={key: os.environ[var] for var, key in POD_FIELDS.items() if os.environ.get(var)},
            now=time.time(),
        )
        if _wants_json(request):
            return web.Response(body=orjson.dumps(doc), content_type="application/json", headers=status.HEADERS)
        return web.Response(text=status.render_html(doc), content_type="text/html", headers=status.HEADERS)

    async def _config_page(self, request: web.Request) -> web.Response:
        if self._settings is None:
            return web.Response(status=404, text="no configuration known to this admin server\n")
        if _wants_json(request):
            body = {"config": config.redacted(self._settings), "sources": self._sources}
            return web.Response(body=orjson.dumps(body), content_type="application/json", headers=status.HEADERS)
        text = config.render(config.Loaded(self._settings, dict(self._sources)))
        return web.Response(text=text, content_type="text/plain", headers=status.HEADERS)


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""
