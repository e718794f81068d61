"""The ambassador's Prometheus series, counted in plain ints on the hot path and exported on scrape.

`prometheus_client` children take a lock and a label lookup per `inc()`; at tens of thousands of
requests a second that is a measurable share of the budget. Each listener therefore keeps its own
counters in dicts and arrays, and one collector turns them into metric families when /metrics is read.
Labels are bounded: listener and cluster names come from config, endpoints from discovery, status
classes (1xx-5xx and other) and reasons from fixed vocabularies.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# grpc_status label values: the status names gRPC's documentation uses, a bounded set.
_GRPC_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# A status outside 100-599 (never sent by the proxy itself) is counted as "other": six classes at most.
_OTHER = len(STATUS_CLASSES)
CODE_CLASSES = (*STATUS_CLASSES, "other")


class ListenerStats:
    """Counters of one listener and its cluster; every method is O(1) and allocation-free when warm."""

    def __init__(self, listener: str, cluster: str) -> None:
        self.listener = listener
        self.cluster = cluster
        # (endpoint key, status class index) -> count; endpoint "" for answers the proxy made itself.
        self.requests: dict[tuple[str, int], int] = {}
        # Per status class (index as in CODE_CLASSES): the latency histogram's buckets and sum.
        self.buckets = [[0] * (len(LATENCY_BUCKETS) + 1) for _ in CODE_CLASSES]
        self.latency_sum = [0.0] * len(CODE_CLASSES)
        self.retries: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.client_connections = 0
        self.connections_refused: dict[str, int] = {}  # reason -> client connections closed at once
        self.upstream_connections: dict[str, int] = {}
        self.bytes_in = 0  # TCP mode: client -> upstream
        self.bytes_out = 0  # TCP mode: upstream -> client
        self.tcp_sessions = 0
        self.http2_streams = 0  # requests that came as HTTP/2 streams (the rest of `requests`: HTTP/1.1)
        self.grpc_calls: dict[str, int] = {}  # grpc_status name -> calls
        self.h2_violations: dict[str, int] = {}  # reason -> HTTP/2 clients cut off or streams reset
        # Bytes the HTTP/2 streams hold (request, response), summed on scrape: nothing on the hot path.
        self.h2_buffered: Callable[[], tuple[int, int]] | None = None

    def request(self, endpoint: str, status: int, latency_s: float) -> None:
        cls = status // 100 - 1
        if not 0 <= cls < _OTHER:
            cls = _OTHER
        key = (endpoint, cls)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.buckets[cls][bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
        self.latency_sum[cls] += latency_s

    def retry(self, reason: str) -> None:
        self.retries[reason] = self.retries.get(reason, 0) + 1

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def refused(self, reason: str) -> None:
        self.connections_refused[reason] = self.connections_refused.get(reason, 0) + 1

    def http2_stream(self) -> None:
        self.http2_streams += 1

    def grpc_call(self, status: int | None) -> None:
        name = "none" if status is None else _GRPC_NAMES.get(status, "other")
        self.grpc_calls[name] = self.grpc_calls.get(name, 0) + 1

    def h2_violation(self, reason: str) -> None:
        self.h2_violations[reason] = self.h2_violations.get(reason, 0) + 1

    def upstream_opened(self, endpoint: str) -> None:
        self.upstream_connections[endpoint] = self.upstream_connections.get(endpoint, 0) + 1

    def upstream_closed(self, endpoint: str) -> None:
        left = self.upstream_connections.get(endpoint, 0) - 1
        if left > 0:
            self.upstream_connections[endpoint] = left
        else:
            self.upstream_connections.pop(endpoint, None)


class StatsCollector(Collector):
    """Exports every registered listener's counters as `ambassador_*` families."""

    def __init__(self) -> None:
        self.listeners: list[ListenerStats] = []
        self.http_engine = ""  # "compiled" or "python", once the plugin has chosen
        self.max_client_connections = 0  # the process-wide cap, once the plugin has set it

    def add(self, stats: ListenerStats) -> None:
        self.listeners.append(stats)

    def remove(self, stats: ListenerStats) -> None:
        if stats in self.listeners:
            self.listeners.remove(stats)

    def collect(self) -> Iterator[Metric]:
        lc = ["listener", "cluster"]
        requests = CounterMetricFamily(
            "ambassador_requests",
            "Requests answered, by endpoint (empty: answered by the proxy) and status class.",
            labels=[*lc, "endpoint", "code_class"],
        )
        latency = HistogramMetricFamily(
            "ambassador_request_duration_seconds",
            "Time from a request's head being read to its response being written, all tries included, "
            "by status class (a fast 503 must not make the 2xx look fast).",
            labels=[*lc, "code_class"],
        )
        retries = CounterMetricFamily(
            "ambassador_retries", "Retries by the reason of the failed try.", labels=[*lc, "reason"]
        )
        errors = CounterMetricFamily(
            "ambassador_errors", "Failures answered or seen by the proxy, by reason.", labels=[*lc, "reason"]
        )
        clients = GaugeMetricFamily("ambassador_client_connections", "Open client connections.", labels=lc)
        refused = CounterMetricFamily(
            "ambassador_client_connections_refused",
            "Client connections closed as soon as they were accepted, by reason.",
            labels=[*lc, "reason"],
        )
        upstreams = GaugeMetricFamily(
            "ambassador_upstream_connections", "Open upstream connections (busy and pooled).", labels=[*lc, "endpoint"]
        )
        tcp_bytes = CounterMetricFamily(
            "ambassador_tcp_bytes", "Bytes spliced in TCP mode, by direction.", labels=[*lc, "direction"]
        )
        tcp_sessions = CounterMetricFamily("ambassador_tcp_sessions", "TCP sessions accepted.", labels=lc)
        by_protocol = CounterMetricFamily(
            "ambassador_requests_by_protocol",
            "Requests answered, by the protocol the app spoke (http1: HTTP/1.1, http2: HTTP/2 streams).",
            labels=[*lc, "protocol"],
        )
        grpc_calls = CounterMetricFamily(
            "ambassador_grpc_calls",
            "gRPC calls ended, by grpc_status (the upstream's or the proxy's own; none: no status).",
            labels=[*lc, "grpc_status"],
        )
        h2_violations = CounterMetricFamily(
            "ambassador_http2_violations",
            "HTTP/2 clients cut off (GOAWAY) or streams reset for crossing a limit, by reason.",
            labels=[*lc, "reason"],
        )
        buffered = GaugeMetricFamily(
            "ambassador_http2_buffered_bytes",
            "Body bytes the HTTP/2 streams hold in the proxy, by direction (request: for the upstream, "
            "response: for the app); each stream holds one stream window at most.",
            labels=[*lc, "direction"],
        )
        for s in list(self.listeners):
            base = [s.listener, s.cluster]
            if s.h2_buffered is not None:
                held_request, held_response = s.h2_buffered()
                buffered.add_metric([*base, "request"], held_request)
                buffered.add_metric([*base, "response"], held_response)
            for (endpoint, cls), n in list(s.requests.items()):
                requests.add_metric([*base, endpoint, CODE_CLASSES[cls]], n)
            for cls, buckets in enumerate(s.buckets):
                if not any(buckets):
                    continue  # a class never answered: no series (at most six per listener otherwise)
                cumulative, acc = [], 0
                for bound, n in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                    acc += n
                    cumulative.append(("+Inf" if bound == float("inf") else repr(bound), acc))
                latency.add_metric([*base, CODE_CLASSES[cls]], cumulative, s.latency_sum[cls])
            for reason, n in list(s.retries.items()):
                retries.add_metric([*base, reason], n)
            for reason, n in list(s.errors.items()):
                errors.add_metric([*base, reason], n)
            clients.add_metric(base, s.client_connections)
            for reason, n in list(s.connections_refused.items()):
                refused.add_metric([*base, reason], n)
            for endpoint, n in list(s.upstream_connections.items()):
                upstreams.add_metric([*base, endpoint], n)
            tcp_bytes.add_metric([*base, "upstream"], s.bytes_in)
            tcp_bytes.add_metric([*base, "client"], s.bytes_out)
            tcp_sessions.add_metric(base, s.tcp_sessions)
            answered = sum(s.requests.values())
            by_protocol.add_metric([*base, "http1"], max(0, answered - s.http2_streams))
            by_protocol.add_metric([*base, "http2"], s.http2_streams)
            for name, n in list(s.grpc_calls.items()):
                grpc_calls.add_metric([*base, name], n)
            for reason, n in list(s.h2_violations.items()):
                h2_violations.add_metric([*base, reason], n)
        yield from (requests, latency, retries, errors, clients, refused, upstreams, tcp_bytes, tcp_sessions)
        yield from (by_protocol, grpc_calls, h2_violations, buffered)
        if self.max_client_connections:
            yield GaugeMetricFamily(
                "ambassador_max_client_connections",
                "Client connections allowed open at once across all listeners (max_client_connections).",
                value=self.max_client_connections,
            )
        if self.http_engine:
            yield InfoMetricFamily(
                "ambassador_http_engine", "Build of the HTTP request path in use.", value={"engine": self.http_engine}
            )


def register(registry: CollectorRegistry) -> StatsCollector:
    collector = StatsCollector()
    registry.register(collector)
    return collector
