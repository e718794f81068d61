"""The ambassador sidecar: listens on localhost and hides upstream clusters behind it.

Life cycle: `lifespan` builds the running state (`Running`: the stats collector, the client limit,
the listeners; no I/O) and releases it on the way out, in reverse order, also when building it fails
halfway; `run` starts each cluster, binds each listener, reports ready and then keeps the proxies'
clocks and idle timers ticking; `drain` (after readiness turned 503) stops accepting, lets in-flight
requests finish with `Connection: close`, and returns when every client connection is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web
from structlog.typing import FilteringBoundLogger

from sidecars.ambassador import engine
from sidecars.ambassador.proxy.client_limit import ClientLimit, default_max_client_connections, reserved_fds
from sidecars.ambassador.proxy.listener import Listener
from sidecars.ambassador.proxy.stats import StatsCollector, register
from sidecars.ambassador.settings import AmbassadorSettings
from sidecars.core import Check, Context, Figures, Sidecar
from sidecars.core.limits import open_file_limit
from sidecars.core.metrics import SidecarMetrics
from sidecars.core.plugin import Figure

TICK_SECS = 0.25
NO_LISTENER = "no listeners configured: set --listen-port and --upstreams, or listeners in --config"


class Running:
    """What a started ambassador holds: its listeners, the client limit across them, its collector."""

    def __init__(self, listeners: list[Listener], client_limit: ClientLimit, collector: StatsCollector) -> None:
        self.listeners = listeners
        self.client_limit = client_limit
        self.collector = collector
        self.served = (0, 0)  # requests answered and failed, as mirrored into sidecar_events_* so far

    def sweep(self) -> None:
        for listener in self.listeners:
            listener.sweep()

    def count_events(self, metrics: SidecarMetrics) -> None:
        """Mirror request totals into the shared `sidecar_events_*` series (kept off the hot path)."""
        done = sum(sum(li.stats.requests.values()) for li in self.listeners)
        failed = sum(sum(li.stats.errors.values()) for li in self.listeners)
        prev_done, prev_failed = self.served
        if done > prev_done:
            metrics.events_in.inc(done - prev_done)
            metrics.events_out.inc(done - prev_done)
        if failed > prev_failed:
            metrics.events_dropped.labels(reason="proxy_error").inc(failed - prev_failed)
        self.served = (done, failed)

    def listeners_status(self) -> str | None:
        unbound = [li.config.name for li in self.listeners if not li.bound]
        return f"not bound yet: {', '.join(unbound)}" if unbound else None

    def clusters_status(self) -> str | None:
        reasons = [r for li in self.listeners if (r := li.cluster.status())]
        return "; ".join(reasons) if reasons else None

    def clusters(self) -> list[dict[str, Any]]:
        """Each listener and the state of its cluster, every endpoint included (Cluster.snapshot())."""
        return [
            {
                "listener": li.config.name,
                "mode": li.config.mode,
                "addresses": li.addresses,
                "client_connections": li.active_connections(),
                "cluster": li.cluster.snapshot(),
            }
            for li in self.listeners
        ]

    def figures(self) -> Figures:
        endpoints: list[dict[str, Figure]] = []
        for li in self.listeners:
            snap = li.cluster.snapshot()
            for ep in snap["endpoints"]:
                endpoints.append(
                    {
                        "listener": li.config.name,
                        "endpoint": ep["endpoint"],
                        "state": ep["state"],
                        "active requests": ep["active_requests"],
                        "latency score (ms)": ep["latency_score_ms"],
                        "ejections": ep["ejections"],
                        "last check failure": ep["last_check_failure"],
                    }
                )
        healthy = sum(1 for ep in endpoints if ep["state"] == "healthy")
        values: dict[str, Figure] = {
            "listeners": len(self.listeners),
            "endpoints healthy": f"{healthy} of {len(endpoints)}",
            "client connections": sum(li.active_connections() for li in self.listeners),
            "requests": sum(sum(li.stats.requests.values()) for li in self.listeners),
            "retries": sum(sum(li.stats.retries.values()) for li in self.listeners),
            "proxy errors": sum(sum(li.stats.errors.values()) for li in self.listeners),
            "max client connections": self.client_limit.max_connections,
            "http engine": self.collector.http_engine,
        }
        return Figures(values=values, tables={"endpoints": endpoints})

    def upstream_tls_status(self) -> str | None:
        reasons = [r for li in self.listeners if li.tls is not None and (r := li.tls.status())]
        return " | ".join(reasons) if reasons else None


class Ambassador(Sidecar[AmbassadorSettings]):
    name = "ambassador"
    description = "Localhost proxy hiding upstream clusters: balancing, health checks, retries, timeouts"
    Settings = AmbassadorSettings

    def __init__(self, settings: AmbassadorSettings, context: Context) -> None:
        super().__init__(settings, context)
        self._running: Running | None = None  # set by `lifespan` only, for its duration

    @property
    def running(self) -> Running:
        """The running state; `run`, `drain` and the tests reach it while `lifespan` holds it."""
        if self._running is None:
            raise RuntimeError("the ambassador is not running: its state exists inside lifespan() only")
        return self._running

    @property
    def listeners(self) -> list[Listener]:
        return self.running.listeners

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        registry = self.context.metrics.registry
        async with contextlib.AsyncExitStack() as stack:
            collector = register(registry)
            stack.callback(registry.unregister, collector)
            configs = self.settings.all_listeners()
            chosen = engine.select(self.settings.http_engine)
            collector.http_engine = chosen.name
            if any(cfg.mode == "http" for cfg in configs):
                self.log.info("http request path", engine=chosen.name, why=chosen.reason)
            client_limit = _client_limit(self.settings, self.log)
            collector.max_client_connections = client_limit.max_connections
            listeners: list[Listener] = []
            stack.push_async_callback(_stop_all, listeners)
            for cfg in configs:
                listeners.append(Listener(cfg, registry, collector, self.log, client_limit, chosen.module.HttpProxy))
            self._running = Running(listeners, client_limit, collector)
            try:
                yield
            finally:
                self._running = None

    async def run(self, ready: Callable[[], None]) -> None:
        running = self.running
        if not running.listeners:
            self.log.warning("no listeners configured: nothing to proxy")
        await asyncio.gather(*(listener.start() for listener in running.listeners))
        # Everything allocated at start-up lives as long as the process: keep it out of the cyclic
        # collector's full passes, which would otherwise rescan it under load.
        gc.freeze()
        ready()
        while True:
            await asyncio.sleep(TICK_SECS)
            running.sweep()
            running.count_events(self.context.metrics)

    async def drain(self) -> None:
        running = self.running
        for listener in running.listeners:
            listener.stop_accepting()
        while any(listener.active_connections() for listener in running.listeners):
            await asyncio.sleep(0.05)
            running.sweep()
        self.log.info("drained: no client connection left")

    def admin_routes(self) -> Sequence[web.RouteDef]:
        async def clusters(_: web.Request) -> web.Response:
            """every listener's cluster and each endpoint's state (JSON)"""
            body = self._running.clusters() if self._running is not None else []
            return web.json_response({"clusters": body}, headers={"Cache-Control": "no-store"})

        return [web.get("/clusters", clusters)]

    def figures(self) -> Figures:
        # Asked for from the admin server's start, like the checks: nothing to show before lifespan.
        return self._running.figures() if self._running is not None else Figures()

    def checks(self) -> Sequence[Check]:
        return [
            Check("listeners", self._listeners_status),
            Check("clusters", self._clusters_status),
            Check("configured", self._configured, warn=True),
            Check("client_connections", self._client_connections_status, warn=True),
            # Verification turned off, a refused certificate update, a client certificate near its end.
            Check("upstream_tls", self._upstream_tls_status, warn=True),
        ]

    @classmethod
    def config_warnings(cls, settings: AmbassadorSettings) -> Sequence[str]:
        # Valid (defaults must be), but an ambassador with nothing to proxy is almost surely a mistake.
        return [] if settings.all_listeners() else [NO_LISTENER]

    # Health is asked for from the admin server's start, before `lifespan` has built anything: until
    # then there is nothing bound or discovered to report on.

    def _configured(self) -> str | None:
        if self._running is not None and self._running.listeners:
            return None
        return NO_LISTENER

    def _client_connections_status(self) -> str | None:
        return self._running.client_limit.status() if self._running is not None else None

    def _listeners_status(self) -> str | None:
        return self._running.listeners_status() if self._running is not None else None

    def _clusters_status(self) -> str | None:
        return self._running.clusters_status() if self._running is not None else None

    def _upstream_tls_status(self) -> str | None:
        return self._running.upstream_tls_status() if self._running is not None else None


def _client_limit(settings: AmbassadorSettings, log: FilteringBoundLogger) -> ClientLimit:
    fds = open_file_limit()
    derived = default_max_client_connections(fds)
    chosen = settings.max_client_connections or derived
    fields = {"max_client_connections": chosen, "open_file_limit": fds}
    if chosen > derived:
        log.warning(
            "max_client_connections leaves too few file descriptors: at the limit, upstream connects "
            "and the admin server fail",
            **fields,
            derived_max=derived,
            reserved=reserved_fds(fds),
        )
    else:
        log.info("client connection limit", **fields, source="set" if settings.max_client_connections else "derived")
    return ClientLimit(chosen, log)


async def _stop_all(listeners: list[Listener]) -> None:
    """Stop the listeners in reverse order; one failing to stop does not keep the others up."""
    for listener in reversed(listeners):
        with contextlib.suppress(Exception):
            await listener.stop()


__all__ = ["Ambassador", "Running"]
