"""The ambassador sidecar: listens on localhost and hides upstream clusters behind it.

Life cycle: `lifespan` builds the listeners (no I/O) and stops them on the way out; `run` starts each
cluster, binds each listener, reports ready and then keeps the proxies' clocks and idle timers
ticking; `drain` (after readiness turned 503) stops accepting, lets in-flight requests finish with
`Connection: close`, and returns when every client connection is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Sequence

from sidecars.ambassador import engine
from sidecars.ambassador.proxy.client_limit import ClientLimit, default_max_client_connections, reserved_fds
from sidecars.ambassador.proxy.listener import Listener
from sidecars.ambassador.proxy.stats import StatsCollector, register
from sidecars.ambassador.settings import AmbassadorSettings
from sidecars.core import Check, Sidecar
from sidecars.core.limits import open_file_limit

TICK_SECS = 0.25


class Ambassador(Sidecar[AmbassadorSettings]):
    name = "ambassador"
    description = "Localhost proxy hiding upstream clusters: balancing, health checks, retries, timeouts"
    Settings = AmbassadorSettings

    listeners: list[Listener]
    client_limit: ClientLimit
    _collector: StatsCollector | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        registry = self.context.metrics.registry
        self._collector = register(registry)
        configs = self.settings.all_listeners()
        chosen = engine.select(self.settings.http_engine)
        self._collector.http_engine = chosen.name
        if any(cfg.mode == "http" for cfg in configs):
            self.log.info("http request path", engine=chosen.name, why=chosen.reason)
        self.client_limit = self._client_limit()
        self._collector.max_client_connections = self.client_limit.max_connections
        self.listeners = [
            Listener(cfg, registry, self._collector, self.log, self.client_limit, chosen.module.HttpProxy)
            for cfg in configs
        ]
        self._served = (0, 0)
        try:
            yield
        finally:
            for listener in reversed(self.listeners):
                with contextlib.suppress(Exception):
                    await listener.stop()
            registry.unregister(self._collector)

    def _client_limit(self) -> ClientLimit:
        fds = open_file_limit()
        derived = default_max_client_connections(fds)
        chosen = self.settings.max_client_connections or derived
        fields = {"max_client_connections": chosen, "open_file_limit": fds}
        if chosen > derived:
            self.log.warning(
                "max_client_connections leaves too few file descriptors: at the limit, upstream connects "
                "and the admin server fail",
                **fields,
                derived_max=derived,
                reserved=reserved_fds(fds),
            )
        else:
            self.log.info(
                "client connection limit", **fields, source="set" if self.settings.max_client_connections else "derived"
            )
        return ClientLimit(chosen, self.log)

    async def run(self, ready: Callable[[], None]) -> None:
        if not self.listeners:
            self.log.warning("no listeners configured: nothing to proxy")
        await asyncio.gather(*(listener.start() for listener in self.listeners))
        # Everything allocated at start-up lives as long as the process: keep it out of the cyclic
        # collector's full passes, which would otherwise rescan it under load.
        gc.freeze()
        ready()
        while True:
            await asyncio.sleep(TICK_SECS)
            for listener in self.listeners:
                listener.sweep()
            self._count_events()

    def _count_events(self) -> None:
        """Mirror request totals into the shared `sidecar_events_*` series (kept off the hot path)."""
        done = sum(sum(li.stats.requests.values()) for li in self.listeners)
        failed = sum(sum(li.stats.errors.values()) for li in self.listeners)
        prev_done, prev_failed = self._served
        metrics = self.context.metrics
        if done > prev_done:
            metrics.events_in.inc(done - prev_done)
            metrics.events_out.inc(done - prev_done)
        if failed > prev_failed:
            metrics.events_dropped.labels(reason="proxy_error").inc(failed - prev_failed)
        self._served = (done, failed)

    async def drain(self) -> None:
        for listener in self.listeners:
            listener.stop_accepting()
        while any(listener.active_connections() for listener in self.listeners):
            await asyncio.sleep(0.05)
            for listener in self.listeners:
                listener.sweep()
        self.log.info("drained: no client connection left")

    def checks(self) -> Sequence[Check]:
        return [
            Check("listeners", self._listeners_status),
            Check("clusters", self._clusters_status),
            Check("configured", self._configured, warn=True),
            Check("client_connections", self._client_connections_status, warn=True),
        ]

    def _configured(self) -> str | None:
        # Valid (defaults must be), but an ambassador with nothing to proxy is almost surely a mistake.
        if getattr(self, "listeners", None):
            return None
        return "no listeners configured: set --listen-port and --upstreams, or listeners in --config"

    def _client_connections_status(self) -> str | None:
        limit = getattr(self, "client_limit", None)
        return limit.status() if limit is not None else None

    def _listeners_status(self) -> str | None:
        unbound = [li.config.name for li in getattr(self, "listeners", []) if not li.bound]
        return f"not bound yet: {', '.join(unbound)}" if unbound else None

    def _clusters_status(self) -> str | None:
        reasons = [r for li in getattr(self, "listeners", []) if (r := li.cluster.status())]
        return "; ".join(reasons) if reasons else None
