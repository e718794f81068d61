"""Per-shard Prometheus series of the redis and memcached listeners, read from plain counters on scrape.

Labels: listener (from config), shard (its name, as in the ring and in error replies), endpoint (its
address, bounded by discovery), and fixed vocabularies for reasons. A removed shard's series end
with it. One collector per registry serves every sharded listener of the process.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sidecars.ambassador.proxy.stats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from sidecars.ambassador.proxy.shards import ShardSet

RESHARD_REASONS = ("ejected", "returned", "discovery")


class ShardCollector(Collector):
    def __init__(self) -> None:
        self.sets: weakref.WeakSet[ShardSet] = weakref.WeakSet()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        ls, lse = ["listener", "shard"], ["listener", "shard", "endpoint"]
        requests = CounterMetricFamily(
            "ambassador_shard_requests", "Commands (or parts of split ones) the shard answered.", labels=lse
        )
        errors = CounterMetricFamily(
            "ambassador_shard_errors",
            "Commands for the shard that failed in the proxy, by reason.",
            labels=[*lse, "reason"],
        )
        latency = HistogramMetricFamily(
            "ambassador_shard_request_duration_seconds",
            "Time from a command being read from the app to the shard's reply.",
            labels=ls,
        )
        in_ring = GaugeMetricFamily("ambassador_shard_in_ring", "1 while the shard is in the ring.", labels=lse)
        pending = GaugeMetricFamily(
            "ambassador_shard_pending_commands", "Commands sent to the shard and not answered yet.", labels=ls
        )
        ejections = CounterMetricFamily(
            "ambassador_shard_ejections", "Times the shard left the ring (on_shard_failure: eject).", labels=ls
        )
        reshards = CounterMetricFamily(
            "ambassador_reshards", "Rebuilds of the shard ring, by what changed it.", labels=["listener", "reason"]
        )
        for shard_set in list(self.sets):
            listener = shard_set.listener
            for shard in list(shard_set.shards.values()):
                labels = [listener, shard.name, shard.endpoint.key]
                requests.add_metric(labels, shard.requests)
                for reason, n in shard.errors.items():
                    errors.add_metric([*labels, reason], n)
                in_ring.add_metric(labels, 1.0 if shard.in_ring else 0.0)
                pending.add_metric([listener, shard.name], shard.pending())
                ejections.add_metric([listener, shard.name], shard.ejections)
                cumulative, acc = [], 0
                for bound, n in zip((*LATENCY_BUCKETS, float("inf")), shard.buckets, strict=True):
                    acc += n
                    cumulative.append(("+Inf" if bound == float("inf") else repr(bound), acc))
                latency.add_metric([listener, shard.name], cumulative, shard.latency_sum)
            for reason in RESHARD_REASONS:
                reshards.add_metric([listener, reason], shard_set.reshards.get(reason, 0))
        yield from (requests, errors, latency, in_ring, pending, ejections, reshards)


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ShardCollector] = weakref.WeakKeyDictionary()


def attach(registry: CollectorRegistry, shard_set: ShardSet) -> None:
    collector = _collectors.get(registry)
    if collector is None:
        collector = _collectors[registry] = ShardCollector()
        registry.register(collector)
    collector.sets.add(shard_set)
