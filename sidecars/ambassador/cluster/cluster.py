"""One upstream cluster: the endpoint set, its health, and the choice of endpoint for each try.

The data plane codes against this module only:

    cluster = Cluster("users", config, registry, log)   # no I/O
    await cluster.start()                 # discovery loaded, first health check round done
    ep = cluster.pick(hash_key, exclude)  # None -> answer 503
    ep.start_request(); ...; ep.end_request(Outcome.OK, latency_s)
    cluster.retry_budget.on_request() / .can_retry()
    cluster.breaker.try_acquire_pending() / .release_pending()
    cluster.on_removed(callback)          # discovery removed an endpoint: close its idle connections
    cluster.on_change(callback)           # after any state change (discovery, health, ejection)
    await cluster.stop()

State changes (discovery, health, ejection) are rare; each rebuilds the candidate list the balancer
picks from, so `pick` itself stays O(1). Ejection expiry is checked lazily by `pick` against one
precomputed deadline, and by the health timers.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from sidecars.ambassador.cluster import health
from sidecars.ambassador.cluster import metrics as cluster_metrics
from sidecars.ambassador.cluster.balancer import BALANCERS, Balancer, make_balancer
from sidecars.ambassador.cluster.budget import CircuitBreaker, RetryBudget
from sidecars.ambassador.cluster.config import (
    CircuitBreakerConfig,
    ClusterConfig,
    HealthCheckConfig,
    OutlierConfig,
    RetryBudgetConfig,
    parse_address,
)
from sidecars.ambassador.cluster.discovery import (
    Address,
    DnsSource,
    FileSource,
    Resolver,
    Source,
    StaticSource,
    source_class,
    system_resolver,
)
from sidecars.ambassador.cluster.endpoint import Endpoint, Outcome, endpoint_key
from sidecars.ambassador.cluster.outlier import OutlierDetector
from sidecars.ambassador.cluster.upstream_tls import UpstreamTls
from sidecars.core.backoff import EQUAL_JITTER, jittered_backoff

# One active check of one endpoint: None when it passes, else the reason (`health.probe`'s contract).
Probe = Callable[[HealthCheckConfig, Endpoint], Awaitable[str | None]]

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "Cluster",
    "ClusterConfig",
    "Endpoint",
    "HealthCheckConfig",
    "Outcome",
    "OutlierConfig",
    "RetryBudget",
    "RetryBudgetConfig",
    "parse_address",
]


def _first_keys(endpoints: Sequence[Endpoint], limit: int = 20) -> list[str]:
    """Keys for a log line, bounded: a rollout of hundreds of pods is one readable line."""
    keys = [ep.key for ep in endpoints[:limit]]
    if len(endpoints) > limit:
        keys.append(f"... {len(endpoints) - limit} more")
    return keys


class Cluster:
    """See the module docstring. `endpoints` lists every known endpoint, draining ones included."""

    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        registry: CollectorRegistry,
        log: FilteringBoundLogger,
        *,
        resolver: Resolver | None = None,
        probe: Probe = health.probe,
        tls: UpstreamTls | None = None,
    ) -> None:
        self.name = name
        self.tls = tls  # the endpoints speak TLS; its probe (the caller's) connects with it too
        self._probe = probe
        self.config = config
        self.log = log.bind(cluster=name)
        self.retry_budget = RetryBudget(config.retry_budget)
        self.breaker = CircuitBreaker(config.circuit_breaker)
        self.ready = False
        self.panic = False
        self.outlier = OutlierDetector(config.outlier)
        self.discovery_updates: dict[str, int] = {}
        self.discovery_errors: dict[str, int] = {}
        self._balancer: Balancer = make_balancer(config.balancer)
        self._by_key: dict[str, Endpoint] = {}
        self._endpoints: list[Endpoint] = []  # discovery order, draining included
        self._live: list[Endpoint] = []  # not draining
        self._candidates: Sequence[Endpoint] = ()
        # The only candidate, when the balancer is a built-in one (they all pick it): `pick` skips the
        # balancer call then. A package balancer is always asked: it may decline.
        self._sole: Endpoint | None = None
        self._builtin_balancer = type(self._balancer) in BALANCERS.values()
        self._source_sets: dict[str, frozenset[Address]] = {}
        self._last_error: dict[str, str] = {}
        self._next_expiry = math.inf
        self._removed_callbacks: list[Callable[[Endpoint], None]] = []
        self._change_callbacks: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._hc_tasks: dict[Endpoint, asyncio.Task[None]] = {}
        self._sources: list[Source] = []
        if config.endpoints:
            self._sources.append(StaticSource(config.endpoints))
        if config.dns:
            self._sources.append(
                DnsSource(config.dns, config.dns_refresh_secs, resolver or system_resolver(config.dns_family))
            )
        if config.endpoints_file:
            self._sources.append(FileSource(config.endpoints_file, config.endpoints_file_poll_secs, self.log))
        if config.discovery_plugin:
            try:
                plugin_source = source_class(config.discovery_plugin)(**config.discovery_options)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"cluster {name}: discovery_plugin {config.discovery_plugin}: {exc}") from exc
            plugin_source.name = config.discovery_plugin
            self._sources.append(plugin_source)
        self._first_update = {s.name: asyncio.Event() for s in self._sources}
        self._registry = registry
        cluster_metrics.attach(registry, self)

    # -- the request path -----------------------------------------------------------------------

    def pick(self, hash_key: bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint for the next try, or None when none can serve (answer 503).

        Never returns an endpoint in `exclude` or one that just refused a connection while another
        candidate exists.
        """
        now = time.monotonic()
        if now >= self._next_expiry:
            self._expire_ejections(now)
        if self._sole is not None and not exclude:
            return self._sole  # nothing to choose (one upstream is a common setup)
        ep = self._balancer.pick(hash_key, exclude, now)
        if ep is not None and ep.refused_until > now and len(self._candidates) > 1:
            other = self._balancer.pick(hash_key, (*exclude, ep), now)
            if other is not None and other.refused_until <= now:
                return other
            for other in self._candidates:
                if other.refused_until <= now and other not in exclude:
                    return other
        return ep

    def on_removed(self, callback: Callable[[Endpoint], None]) -> None:
        """Call `callback(endpoint)` when discovery removes an endpoint (it drains from then on)."""
        self._removed_callbacks.append(callback)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every change of endpoint states (discovery, health, ejection)."""
        self._change_callbacks.append(callback)

    @property
    def endpoints(self) -> Sequence[Endpoint]:
        return self._endpoints

    @property
    def candidates(self) -> Sequence[Endpoint]:
        """The endpoints `pick` chooses from now: the healthy ones, or all live ones in panic."""
        return self._candidates

    def status(self) -> str | None:
        """None once ready; else why not. Unhealthy upstreams do not make the sidecar unready:
        that would take the whole Pod out of its Services because of a dependency."""
        if self.ready:
            return None
        waiting = [name for name, ev in self._first_update.items() if not ev.is_set()]
        if waiting:
            reasons = [self._last_error.get(n, "no answer yet") for n in waiting]
            return f"cluster {self.name}: waiting for discovery ({'; '.join(reasons)})"
        return f"cluster {self.name}: first health check round not done"

    def snapshot(self) -> dict[str, Any]:
        """The cluster's state as JSON-able data, for an admin page (Envoy's /clusters, readable)."""
        now = time.monotonic()
        budget, breaker = self.retry_budget, self.breaker
        return {
            "name": self.name,
            "ready": self.ready,
            "panic": self.panic,
            "balancer": self.config.balancer,
            "candidates": len(self._candidates),
            "discovery": {
                source: {
                    "updates": self.discovery_updates.get(source, 0),
                    "errors": self.discovery_errors.get(source, 0),
                    "last_error": self._last_error.get(source),
                }
                for source in self._first_update
            },
            "retry_budget": {
                "requests_in_window": budget.requests_in_window,
                "retries_in_window": budget.retries_in_window,
                "denied": budget.denied,
            },
            "circuit_breaker": {
                "connections": breaker.connections,
                "pending": breaker.pending,
                "requests": breaker.requests,
                "overflows": dict(breaker.overflows),
            },
            "endpoints": [
                {
                    "endpoint": ep.key,
                    "state": cluster_metrics.endpoint_state(
                        ep.healthy, ep.hc_state, ep.ejected_until > now, ep.draining
                    ),
                    "active_requests": ep.active,
                    "latency_score_ms": round(ep.latency_ewma_s * 1000, 3),
                    "weight": round(ep.weight(now), 3),
                    "ejected_for_secs": round(max(0.0, ep.ejected_until - now), 1),
                    "ejections": ep.ejections_total,
                    "last_check_failure": ep.hc_reason,
                    "consecutive_errors": ep.consecutive_errors,
                    "outcomes": {o.name.lower(): ep.outcomes[o.value] for o in Outcome},
                }
                for ep in self._endpoints
            ],
        }

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the TLS material, run discovery until every source produced a set, do one health check
        round, start timers. Bad TLS material raises here: start-up stops with the file named."""
        if self.tls is not None:
            if self.tls.material is None:
                self.tls.load()
            self._tasks.append(asyncio.create_task(self.tls.run(), name=f"{self.name}:tls"))
        for source in self._sources:
            self._tasks.append(asyncio.create_task(self._run_source(source), name=f"{self.name}:{source.name}"))
        await asyncio.gather(*(ev.wait() for ev in self._first_update.values()))
        if self.config.health_check.kind != "none":
            live = list(self._live)
            results = await asyncio.gather(*(self._probe(self.config.health_check, ep) for ep in live))
            for ep, reason in zip(live, results, strict=True):
                self._on_check(ep, reason)
            for ep in self._live:
                # An endpoint discovered while the first round ran is checked at once.
                self._start_checks(ep, first_delay=0.0 if ep.hc_state == "pending" else self._interval())
        self.ready = True
        self.log.info(
            "cluster ready",
            endpoints=len(self._live),
            healthy=sum(1 for ep in self._live if ep.healthy),
            panic=self.panic,
        )

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._hc_tasks.values()]
        self._tasks.clear()
        self._hc_tasks.clear()
        # Cancel until done: a task may absorb one cancellation (e.g. inside a library's timeout).
        while tasks:
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            tasks = list(pending)
        self.ready = False
        cluster_metrics.detach(self._registry, self)

    # -- discovery -----------------------------------------------------------------------------------

    async def _run_source(self, source: Source) -> None:
        attempt = 0
        while True:
            try:
                await source.run(self._apply, self._discovery_error)
                return  # a one-shot source (static) is done
            except Exception as exc:  # a bug in a source: keep the last good set, log, try again later
                delay = jittered_backoff(attempt, 1.0, 30.0, floor=EQUAL_JITTER)
                self.log.exception("discovery source crashed; restarting it", source=source.name, in_secs=delay)
                self._discovery_error(source.name, f"crashed: {exc!r}")
            await asyncio.sleep(delay)
            attempt += 1

    def _discovery_error(self, source: str, reason: str) -> None:
        self.discovery_errors[source] = self.discovery_errors.get(source, 0) + 1
        if self._last_error.get(source) != reason:
            self._last_error[source] = reason
            kept = len(self._live) if source in self._source_sets else 0
            self.log.warning("discovery update refused", source=source, reason=reason, kept_endpoints=kept)

    def _apply(self, source: str, addresses: frozenset[Address]) -> None:
        """A complete, valid set from one source; the cluster's set is the union of all sources."""
        self._last_error.pop(source, None)
        self._first_update[source].set()
        if self._source_sets.get(source) == addresses:
            return
        self._source_sets[source] = addresses
        self.discovery_updates[source] = self.discovery_updates.get(source, 0) + 1
        wanted = sorted(set().union(*self._source_sets.values()))
        wanted_keys = set()
        added, removed = [], []
        now = time.monotonic()
        cfg = self.config
        checked = cfg.health_check.kind != "none"
        for host, port in wanted:
            key = endpoint_key(host, port)
            wanted_keys.add(key)
            existing = self._by_key.get(key)
            if existing is not None:
                if existing.draining:  # came back before it finished draining: keep its state
                    existing.draining = False
                    added.append(existing)
                continue
            ep = Endpoint(
                host,
                port,
                self,
                ewma_decay_secs=cfg.ewma_decay_secs,
                error_limit=cfg.outlier.consecutive_errors,
                connect_failure_limit=cfg.outlier.consecutive_connect_failures,
                refuse_secs=cfg.outlier.base_ejection_secs,
            )
            if checked:
                ep.hc_state = "pending"
            if self.ready:
                ep.begin_slow_start(now, cfg.slow_start_secs, cfg.slow_start_min_weight_percent / 100.0)
            self._by_key[ep.key] = ep
            self._endpoints.append(ep)
            added.append(ep)
        for ep in list(self._endpoints):
            if ep.key not in wanted_keys and not ep.draining:
                ep.draining = True
                removed.append(ep)
        self._endpoints.sort(key=lambda e: (e.host, e.port))
        self._rebuild(now)
        for ep in removed:
            self._stop_checks(ep)
            for callback in self._removed_callbacks:
                try:
                    callback(ep)
                except Exception:
                    self.log.exception("on_removed callback failed", endpoint=ep.key)
            if ep.active <= 0:
                self._drop(ep)
        if self.ready and checked:
            for ep in added:
                self._start_checks(ep, first_delay=0.0)
        self.log.info(
            "endpoints updated",
            source=source,
            added=_first_keys(added),
            removed=_first_keys(removed),
            endpoints=len(self._live),
        )

    def _on_idle_draining(self, endpoint: Endpoint) -> None:
        self._drop(endpoint)

    def _drop(self, endpoint: Endpoint) -> None:
        if self._by_key.get(endpoint.key) is endpoint and endpoint.draining:
            del self._by_key[endpoint.key]
            self._endpoints.remove(endpoint)
            if self.tls is not None:
                self.tls.forget(endpoint.key)
            self.log.info("endpoint drained and dropped", endpoint=endpoint.key)

    # -- health and ejection ---------------------------------------------------------------------

    def _rebuild(self, now: float) -> None:
        """Recompute `healthy` flags, the candidate list and panic mode after any state change."""
        live = [ep for ep in self._endpoints if not ep.draining]
        healthy = []
        for ep in live:
            ep.healthy = ep.hc_state == "up" and ep.ejected_until <= now
            if ep.healthy:
                healthy.append(ep)
        threshold = self.config.panic_threshold_percent / 100.0
        panic = bool(live) and len(healthy) < threshold * len(live)
        if panic != self.panic and self.ready:
            # Before the first check round every endpoint is unknown: that is start-up, not panic
            # (the "cluster ready" line reports the state reached).
            log = self.log.warning if panic else self.log.info
            log(
                "panic mode " + ("entered: balancing over all endpoints" if panic else "left"),
                healthy=len(healthy),
                endpoints=len(live),
            )
        self.panic = panic
        self._live = live
        self._candidates = live if panic else healthy
        self._balancer.update(self._candidates)
        sole = len(self._candidates) == 1 and self._builtin_balancer
        self._sole = self._candidates[0] if sole else None
        self._next_expiry = self.outlier.next_expiry(live)
        for callback in self._change_callbacks:
            try:
                callback()
            except Exception:
                self.log.exception("on_change callback failed")

    def _on_errors(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """An endpoint's failure streak reached a threshold: eject it if the cap allows."""
        if endpoint.draining:
            return
        now = time.monotonic()
        secs = self.outlier.try_eject(endpoint, self._live, now, refused=outcome is Outcome.CONNECT_FAILURE)
        if secs is None:
            if endpoint.ejected_until <= now:
                self.log.debug("ejection refused by max_ejection_percent", endpoint=endpoint.key)
            return
        self.log.warning(
            "endpoint ejected",
            endpoint=endpoint.key,
            reason=outcome.name.lower(),
            ejection_secs=secs,
            ejections_in_a_row=endpoint.ejections,
        )
        self._rebuild(now)

    def _expire_ejections(self, now: float) -> None:
        for ep in self.outlier.expire(self._live, now):
            self.log.info("endpoint back from ejection", endpoint=ep.key)
        self._rebuild(now)

    def _interval(self) -> float:
        hc = self.config.health_check
        return hc.interval_secs * (1.0 + random.random() * hc.interval_jitter_percent / 100.0)

    def _start_checks(self, endpoint: Endpoint, first_delay: float) -> None:
        if endpoint not in self._hc_tasks:
            self._hc_tasks[endpoint] = asyncio.create_task(
                self._check_loop(endpoint, first_delay), name=f"{self.name}:check:{endpoint.key}"
            )

    def _stop_checks(self, endpoint: Endpoint) -> None:
        task = self._hc_tasks.pop(endpoint, None)
        if task is not None:
            task.cancel()

    async def _check_loop(self, endpoint: Endpoint, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)
            try:
                reason = await self._probe(self.config.health_check, endpoint)
            except Exception as exc:  # a probe bug counts as a failed check, never kills the loop
                reason = f"check error: {exc!r}"
            if endpoint.draining:
                return
            self._on_check(endpoint, reason)
            delay = self._interval()

    def _on_check(self, endpoint: Endpoint, reason: str | None) -> None:
        """Count one active check result against the thresholds; flip the endpoint's state."""
        hc = self.config.health_check
        now = time.monotonic()
        if now >= self._next_expiry:
            self._expire_ejections(now)
        before = endpoint.hc_state
        if reason is None:
            endpoint.hc_passes += 1
            endpoint.hc_streak = endpoint.hc_streak + 1 if endpoint.hc_streak > 0 else 1
            endpoint.refused_until = 0.0
            if endpoint.ejected_by_refusal and endpoint.ejected_until > now:
                # Ejected for refusing connections, and now it accepts them (a restarted pod): back at
                # once, as Envoy does on a passing active check. 5xx ejections run their full time.
                endpoint.ejected_until = 0.0
                endpoint.returned_at = now
                endpoint.forget_latency()
                self.log.info("endpoint back from ejection", endpoint=endpoint.key, reason="active check passed")
                self._rebuild(now)
            if before == "pending" or (before == "down" and endpoint.hc_streak >= hc.healthy_threshold):
                endpoint.hc_state = "up"
                if before == "down":
                    endpoint.forget_latency()
                    endpoint.begin_slow_start(
                        now, self.config.slow_start_secs, self.config.slow_start_min_weight_percent / 100.0
                    )
        else:
            endpoint.hc_failures += 1
            endpoint.hc_streak = endpoint.hc_streak - 1 if endpoint.hc_streak < 0 else -1
            endpoint.hc_reason = reason
            if before == "pending" or (before == "up" and -endpoint.hc_streak >= hc.unhealthy_threshold):
                endpoint.hc_state = "down"
        if endpoint.hc_state != before:
            if endpoint.hc_state == "up":
                self.log.info("endpoint healthy", endpoint=endpoint.key, was=before)
            else:
                self.log.warning("endpoint unhealthy", endpoint=endpoint.key, was=before, reason=reason)
            self._rebuild(now)
