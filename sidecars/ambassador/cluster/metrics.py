"""The control plane's Prometheus series, read from the clusters' own counters when /metrics is read.

Nothing here runs on the request path: endpoints count in plain ints and this collector turns them
into families on scrape. One collector per registry serves every cluster of the process, so family
names appear once in the exposition. Labels: cluster (from config), endpoint (bounded by the
discovered set; a dropped endpoint's series end with it), and fixed vocabularies.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sidecars.ambassador.cluster.endpoint import FAILURE_PENALTY_SECS, Outcome

if TYPE_CHECKING:
    from sidecars.ambassador.cluster.cluster import Cluster

ENDPOINT_STATES = ("healthy", "unhealthy", "pending", "ejected", "draining")
OUTCOMES = tuple(o.name.lower() for o in Outcome)


def endpoint_state(ep_healthy: bool, hc_state: str, ejected: bool, draining: bool) -> str:
    if draining:
        return "draining"
    if ejected:
        return "ejected"
    if hc_state == "pending":
        return "pending"
    return "healthy" if ep_healthy else "unhealthy"


class ClusterCollector(Collector):
    def __init__(self) -> None:
        self.clusters: list[Cluster] = []

    def describe(self) -> list[Metric]:
        # Families depend on the clusters attached later; nothing to describe up front.
        return []

    def collect(self) -> Iterator[Metric]:
        c, ce = ["cluster"], ["cluster", "endpoint"]
        state = GaugeMetricFamily(
            "ambassador_endpoint_state", "1 for the state each endpoint is in.", labels=[*ce, "state"]
        )
        active = GaugeMetricFamily(
            "ambassador_endpoint_active_requests", "Requests in flight to the endpoint.", labels=ce
        )
        # A score, not a latency: a failed try weighs at least FAILURE_PENALTY_SECS and the value decays
        # while the endpoint is idle. Latency itself is ambassador_request_duration_seconds.
        score = GaugeMetricFamily(
            "ambassador_endpoint_latency_score_seconds",
            f"p2c_ewma's cost of the endpoint: a peak-EWMA of the time to the response head in which a failed "
            f"try counts as at least {FAILURE_PENALTY_SECS:g} s, decaying while idle. A score for comparing "
            "endpoints; for latency use ambassador_request_duration_seconds.",
            labels=ce,
        )
        weight = GaugeMetricFamily(
            "ambassador_endpoint_weight", "Balancing weight (below 1 during slow start).", labels=ce
        )
        outcomes = CounterMetricFamily(
            "ambassador_endpoint_outcomes", "Tries ended, by outcome.", labels=[*ce, "outcome"]
        )
        ejections = CounterMetricFamily(
            "ambassador_endpoint_ejections", "Outlier ejections of the endpoint.", labels=ce
        )
        checks = CounterMetricFamily("ambassador_health_checks", "Active health check results.", labels=[*ce, "result"])
        endpoints = GaugeMetricFamily("ambassador_cluster_endpoints", "Endpoints by state.", labels=[*c, "state"])
        panic = GaugeMetricFamily(
            "ambassador_cluster_panic", "1 while too few endpoints are healthy and all are balanced over.", labels=c
        )
        ready = GaugeMetricFamily("ambassador_cluster_ready", "1 once discovery and first checks are done.", labels=c)
        capped = CounterMetricFamily(
            "ambassador_ejections_capped", "Ejections refused by max_ejection_percent.", labels=c
        )
        updates = CounterMetricFamily(
            "ambassador_discovery_updates", "Endpoint sets applied, by source.", labels=[*c, "source"]
        )
        errors = CounterMetricFamily(
            "ambassador_discovery_errors",
            "Discovery updates refused (last good set kept), by source.",
            labels=[*c, "source"],
        )
        denied = CounterMetricFamily("ambassador_retry_budget_denied", "Retries refused by the retry budget.", labels=c)
        overflows = CounterMetricFamily(
            "ambassador_circuit_breaker_overflows",
            "Acquisitions refused by a circuit breaker limit.",
            labels=[*c, "limit"],
        )
        in_use = GaugeMetricFamily(
            "ambassador_circuit_breaker_in_use",
            "Current value of each circuit breaker counter.",
            labels=[*c, "limit"],
        )
        expiry = GaugeMetricFamily(
            "ambassador_tls_cert_expiry_seconds",
            "Seconds until the client certificate the cluster presents expires (negative: expired).",
            labels=c,
        )
        tls_failures = CounterMetricFamily(
            "ambassador_upstream_tls_failures",
            "TLS handshakes to the endpoint that failed, by reason (tls_verify, tls_alpn, tls_handshake).",
            labels=[*ce, "reason"],
        )
        handshakes = CounterMetricFamily(
            "ambassador_upstream_tls_handshakes",
            "TLS handshakes completed, full or resumed (a session of the pool's earlier connection).",
            labels=[*c, "kind"],
        )
        reloads = CounterMetricFamily(
            "ambassador_upstream_tls_reloads", "Accepted updates of the cluster's TLS files.", labels=c
        )
        now = time.monotonic()
        for cl in list(self.clusters):
            tls = cl.tls
            if tls is not None:
                left = tls.expiry_secs()
                if left is not None:
                    expiry.add_metric([cl.name], left)
                for (endpoint, reason), n in list(tls.failures.items()):
                    tls_failures.add_metric([cl.name, endpoint, reason], n)
                for kind, n in tls.handshakes.items():
                    handshakes.add_metric([cl.name, kind], n)
                reloads.add_metric([cl.name], tls.rotations)
            name = cl.name
            counts = dict.fromkeys(ENDPOINT_STATES, 0)
            for ep in list(cl.endpoints):
                labels = [name, ep.key]
                st = endpoint_state(ep.healthy, ep.hc_state, ep.ejected_until > now, ep.draining)
                counts[st] += 1
                for s in ENDPOINT_STATES:
                    state.add_metric([*labels, s], 1.0 if s == st else 0.0)
                active.add_metric(labels, ep.active)
                score.add_metric(labels, ep.latency_ewma_s)
                weight.add_metric(labels, ep.weight(now))
                for o, n in zip(OUTCOMES, ep.outcomes, strict=True):
                    outcomes.add_metric([*labels, o], n)
                ejections.add_metric(labels, ep.ejections_total)
                checks.add_metric([*labels, "pass"], ep.hc_passes)
                checks.add_metric([*labels, "fail"], ep.hc_failures)
            for s, n in counts.items():
                endpoints.add_metric([name, s], n)
            panic.add_metric([name], 1.0 if cl.panic else 0.0)
            ready.add_metric([name], 1.0 if cl.ready else 0.0)
            capped.add_metric([name], cl.outlier.capped)
            for source, n in list(cl.discovery_updates.items()):
                updates.add_metric([name, source], n)
            for source, n in list(cl.discovery_errors.items()):
                errors.add_metric([name, source], n)
            denied.add_metric([name], cl.retry_budget.denied)
            br = cl.breaker
            for limit, n in list(br.overflows.items()):
                overflows.add_metric([name, limit], n)
            in_use.add_metric([name, "connections"], br.connections)
            in_use.add_metric([name, "pending"], br.pending)
            in_use.add_metric([name, "requests"], br.requests)
        yield from (
            state,
            active,
            score,
            weight,
            outcomes,
            ejections,
            checks,
            endpoints,
            panic,
            ready,
            capped,
            updates,
            errors,
            denied,
            overflows,
            in_use,
            expiry,
            tls_failures,
            handshakes,
            reloads,
        )


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ClusterCollector] = weakref.WeakKeyDictionary()


def attach(registry: CollectorRegistry, cluster: Cluster) -> None:
    collector = _collectors.get(registry)
    if collector is None:
        collector = _collectors[registry] = ClusterCollector()
        registry.register(collector)
    collector.clusters.append(cluster)


def detach(registry: CollectorRegistry, cluster: Cluster) -> None:
    collector = _collectors.get(registry)
    if collector is not None and cluster in collector.clusters:
        collector.clusters.remove(cluster)
