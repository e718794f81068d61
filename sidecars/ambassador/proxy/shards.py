"""The shards of a redis or memcached listener: the cluster's endpoints, named and weighted, in a ring.

The cluster (discovery, active checks, outlier ejection) says which endpoints exist and how they
are; this module decides which of them are in the ring, and rebuilds the ring when that changes:

- on_shard_failure "keep": every discovered endpoint is in the ring, healthy or not. A failed
  shard's keys get errors naming it; nothing moves, so nothing is read stale later.
- "eject": a shard leaves the ring when the cluster stops counting it healthy (active checks failed
  `unhealthy_threshold` times, or the outlier detector ejected it after failed commands). It comes
  back only once `healthy_threshold` active checks in a row passed after it left, not when a timer
  runs out as in twemproxy, so a flapping host does not move keys back and forth.

Every change of the ring (a shard leaving, returning, discovered, removed) is one log line saying
why, with the share of the hash space that moved, and counts in `ambassador_reshards_total`.
Discovery changes are reshards in both modes.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sidecars.ambassador.cluster.sharding import Ring, Server, default_name, moved_share
from sidecars.ambassador.proxy.stats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from sidecars.ambassador.cluster.cluster import Cluster
    from sidecars.ambassador.cluster.endpoint import Endpoint
    from sidecars.ambassador.cluster.sharding_config import ShardingConfig
    from sidecars.ambassador.proxy.sharded_proxy import ShardLink

# Reasons a shard's command failed, the `reason` label of ambassador_shard_errors_total.
SHARD_ERRORS = ("unavailable", "timeout", "connection_lost", "reply_too_large", "protocol", "auth")


class Shard:
    """One endpoint as a shard: its name and weight, its connections, its counters."""

    def __init__(self, endpoint: Endpoint, name: str, weight: int, connections: int) -> None:
        self.endpoint = endpoint
        self.name = name
        self.weight = weight
        self.links: list[ShardLink | None] = [None] * connections  # one connection each, made on first use
        self.in_ring = False
        self.left_at_passes = 0  # the endpoint's passed checks when it left the ring
        self.requests = 0
        self.errors = dict.fromkeys(SHARD_ERRORS, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.ejections = 0

    def observe(self, latency_s: float) -> None:
        self.requests += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
        self.latency_sum += latency_s

    def unavailable_reason(self, now: float) -> str | None:
        """Why commands to this shard fail fast now (keep mode), or None to try it."""
        ep = self.endpoint
        if ep.hc_state == "down":
            return f"unavailable (health check: {ep.hc_reason})"
        if ep.refused_until > now:
            return "unavailable (refusing connections)"
        if ep.ejected_until > now:
            return "unavailable (ejected after failed commands)"
        return None

    def pending(self) -> int:
        return sum(len(link.fifo) for link in self.links if link is not None)


class ShardSet:
    """The shards of one listener and the ring over those in it. `route(key)` is the hot path."""

    def __init__(self, listener: str, config: ShardingConfig, cluster: Cluster, log: FilteringBoundLogger) -> None:
        self.listener = listener
        self.config = config
        self.cluster = cluster
        self.log = log
        self.eject = config.on_shard_failure == "eject"
        hc = cluster.config.health_check
        self.checked = hc.kind != "none"
        self.healthy_threshold = hc.healthy_threshold
        self.entries = {entry.address: entry for entry in config.entries()}
        self.shards: dict[str, Shard] = {}  # by endpoint key
        self.reshards: dict[str, int] = {}  # by reason: ejected, returned, discovery
        self.ring = Ring([], config.distribution, config.hash, config.hash_tag, pool_size=0)
        self._by_index: list[Shard | None] = [None]
        self._ring_index: Callable[[bytes], int] = self.ring.index
        self._removed_callbacks: list[Callable[[Shard], None]] = []
        self.refresh(first=True)
        cluster.on_change(self.refresh)

    def on_removed(self, callback: Callable[[Shard], None]) -> None:
        self._removed_callbacks.append(callback)

    def route(self, key: bytes) -> Shard | None:
        """The shard holding `key`, or None when the ring is empty."""
        # index -1 (no shard) lands on the trailing None
        return self._by_index[self._ring_index(key)]

    def by_name(self) -> dict[str, Shard]:
        return {s.name: s for s in self.shards.values()}

    # -- membership ---------------------------------------------------------------------------------

    def refresh(self, first: bool = False) -> None:
        """Bring shards and ring in line with the cluster; called on every cluster change and by the
        listener's tick (returns from ejection are decided by time and check counts)."""
        now = time.monotonic()
        seen = set()
        changes: list[tuple[str, str]] = []  # (reason label, "<shard> <what happened>")
        for ep in self.cluster.endpoints:
            if ep.draining:
                continue
            seen.add(ep.key)
            shard = self.shards.get(ep.key)
            if shard is None:
                entry = self.entries.get(ep.key)
                name = entry.name if entry and entry.name else default_name(ep.host, ep.port)
                weight = entry.weight if entry else 1
                shard = self.shards[ep.key] = Shard(ep, name, weight, self.config.connections_per_shard)
            wanted = self._wanted(shard, now)
            if wanted == shard.in_ring:
                continue
            shard.in_ring = wanted
            if not wanted:
                shard.left_at_passes = ep.hc_passes
                shard.ejections += 1
                changes.append(("ejected", f"{shard.name} left: {self._why_out(ep, now)}"))
            elif shard.ejections:
                changes.append(("returned", f"{shard.name} returned: {self.healthy_threshold} checks in a row passed"))
            else:
                changes.append(("discovery", f"{shard.name} joined"))
        for key in [k for k in self.shards if k not in seen]:
            shard = self.shards.pop(key)
            if shard.in_ring:
                changes.append(("discovery", f"{shard.name} removed"))
            for callback in self._removed_callbacks:
                callback(shard)
        if changes or first:
            self._rebuild(changes, first)

    def _wanted(self, shard: Shard, now: float) -> bool:
        if not self.eject:
            return True
        ep = shard.endpoint
        up = ep.hc_state == "up" and ep.ejected_until <= now and ep.refused_until <= now
        if shard.in_ring or not up:
            return up
        if not shard.ejections or not self.checked:
            # Never left: in once up. No active checks: back when the ejection ran out, as twemproxy's
            # server_retry_timeout brings a server back.
            return True
        passes = ep.hc_passes - shard.left_at_passes
        return ep.hc_streak >= self.healthy_threshold and passes >= self.healthy_threshold

    @staticmethod
    def _why_out(ep: Endpoint, now: float) -> str:
        if ep.hc_state == "down":
            return f"health check failed: {ep.hc_reason}"
        if ep.ejected_until > now or ep.refused_until > now:
            return "failed commands (outlier ejection)"
        return "not checked yet"

    def _rebuild(self, changes: list[tuple[str, str]], first: bool) -> None:
        members = [s for s in self.shards.values() if s.in_ring]
        old = self.ring
        cfg = self.config
        ring = Ring(
            [Server(s.name, s.weight) for s in members],
            cfg.distribution,
            cfg.hash,
            cfg.hash_tag,
            pool_size=len(self.shards),
        )
        by_name = {s.name: s for s in members}
        self.ring = ring
        self._by_index = [by_name[server.name] for server in ring.servers] + [None]
        self._ring_index = ring.index
        in_ring = [s.name for s in ring.servers]
        out = sorted(s.name for s in self.shards.values() if not s.in_ring)
        if first:
            self.log.info("shard ring built", listener=self.listener, shards=in_ring, out_of_ring=out)
            return
        moved = round(100.0 * moved_share(old, ring), 1)
        for why in {why for why, _ in changes}:  # one reshard per rebuild, however many shards moved
            self.reshards[why] = self.reshards.get(why, 0) + 1
        # One line per ring change, naming every shard that moved in or out and why.
        self.log.warning(
            "reshard",
            listener=self.listener,
            changes=[text for _, text in changes],
            shards=in_ring,
            out_of_ring=out,
            keys_moved_percent=moved,
        )
