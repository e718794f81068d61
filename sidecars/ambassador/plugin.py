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
from sidecars.ambassador.listener import Listener
from sidecars.ambassador.settings import AmbassadorSettings
from sidecars.ambassador.stats import StatsCollector, register
from sidecars.core import Check, Sidecar

TICK_SECS = 0.25


class Ambassador(Sidecar[AmbassadorSettings]):
    name = "ambassador"
    description = "Localhost proxy hiding upstream clusters: balancing, health checks, retries, timeouts"
    Settings = AmbassadorSettings

    listeners: list[Listener]
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
        self.listeners = [
            Listener(cfg, registry, self._collector, self.log, chosen.module.HttpProxy) for cfg in configs
        ]
        self._served = (0, 0)
        try:
            yield
        finally:
            for listener in reversed(self.listeners):
                with contextlib.suppress(Exception):
                    await listener.stop()
            registry.unregister(self._collector)

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
        ]

    def _configured(self) -> str | None:
        # Valid (defaults must be), but an ambassador with nothing to proxy is almost surely a mistake.
        if getattr(self, "listeners", None):
            return None
        return "no listeners configured: set --listen-port and --upstreams, or listeners in --config"

    def _listeners_status(self) -> str | None:
        unbound = [li.config.name for li in getattr(self, "listeners", []) if not li.bound]
        return f"not bound yet: {', '.join(unbound)}" if unbound else None

    def _clusters_status(self) -> str | None:
        reasons = [r for li in getattr(self, "listeners", []) if (r := li.cluster.status())]
        return "; ".join(reasons) if reasons else None
