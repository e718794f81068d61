"""The `otlp` output: the scraped series pushed as OTLP/HTTP metrics (protobuf) to an OpenTelemetry receiver.

A POST of an `ExportMetricsServiceRequest` per batch to `otlp_url` (an OpenTelemetry Collector's
`otlphttp` receiver, `http://collector:4318/v1/metrics`, or any OTLP backend). The series become
OpenTelemetry metrics the way the Collector's Prometheus receiver makes them:

- a counter: a cumulative, monotonic Sum; its start time is when the adapter first saw the series,
  and moves past the previous point when the value goes down (a restart of the app);
- a gauge (and an untyped series): a Gauge;
- a histogram: one cumulative Histogram point per label set, from its `_bucket`, `_sum` and `_count`
  series (explicit bounds, per-bucket counts that add up to the count); a summary: a Summary point;
- a series that disappears: a point flagged "no recorded value", OTLP's staleness.

`push_labels` become the resource's attributes. The queue, batches (never cutting a histogram in
two), retries (429, 502, 503, 504 as OTLP/HTTP says, honouring `Retry-After`) and drops are those of
`push.py`; a histogram whose series contradict each other is dropped and counted (`malformed`).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK,
    Metric,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from sidecars.adapter.outputs.push import Labels, Point, PushError, PushOutput, retry_after_secs
from sidecars.adapter.promql.history import is_stale
from sidecars.core.redact import redact_url

USER_AGENT = "sidecars-adapter"
RETRYABLE = frozenset({429, 502, 503, 504})  # OTLP/HTTP: every other failure is permanent
MAX_STREAMS = 200_000  # start times remembered; past it they start afresh (bounded memory)
MAX_GROUP_EXTRA = 10_000  # points a batch may grow by to keep one histogram whole
NO_RECORDED_VALUE = DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK  # OTLP's staleness
_PARTS = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def _name(labels: Labels) -> str:
    for key, value in labels:
        if key == "__name__":
            return value
    return ""


def _group(point: Point, resource: frozenset[str]) -> tuple[str, str, Labels, str]:
    """(metric name, part, attributes, bucket bound or quantile) of a point."""
    labels, _, _, kind = point
    name = _name(labels)
    part, family = "", name
    for suffix in _PARTS.get(kind, ()):
        if name.endswith(suffix):
            part, family = suffix, name[: -len(suffix)]
            break
    special = "le" if part == "_bucket" else "quantile" if kind == "summary" and not part else ""
    bound = ""
    attrs = []
    for key, value in labels:
        if key == "__name__" or key in resource:
            continue
        if key == special:
            bound = value
            continue
        attrs.append((key, value))
    return family, part, tuple(attrs), bound


@dataclass
class _Aggregate:
    """The series of one histogram or summary point, gathered from a batch."""

    kind: str
    t_ms: int
    attrs: Labels
    bounds: dict[float, float] = field(default_factory=dict)  # le or quantile -> value
    sum: float | None = None
    count: float | None = None
    stale: bool = False
    bad: bool = False  # a bound that is no number
    samples: int = 0


@dataclass
class _Stream:
    start_ms: int
    last: float
    last_ms: int


class StartTimes:
    """The start time of each cumulative stream: first seen, or just after the point before a reset."""

    def __init__(self) -> None:
        self.streams: dict[tuple[str, Labels], _Stream] = {}

    def start(self, key: tuple[str, Labels], t_ms: int, value: float) -> int:
        stream = self.streams.get(key)
        if stream is None:
            if len(self.streams) >= MAX_STREAMS:
                self.streams.clear()
            stream = self.streams[key] = _Stream(t_ms, value, t_ms)
        elif t_ms >= stream.last_ms:
            if value < stream.last:
                stream.start_ms = min(t_ms, stream.last_ms + 1)
            stream.last, stream.last_ms = value, t_ms
        return stream.start_ms

    def forget(self, key: tuple[str, Labels]) -> None:
        self.streams.pop(key, None)


def _kv(pairs: Labels) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in pairs]


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class Encoder:
    """Batches of points into ExportMetricsServiceRequest bytes; keeps the streams' start times."""

    def __init__(self, resource: Labels) -> None:
        self.resource = resource
        self.resource_names = frozenset(k for k, _ in resource)
        self.starts = StartTimes()

    def encode(self, batch: list[Point]) -> tuple[bytes, int]:
        """The request body, and how many samples were left out as malformed."""
        metrics: dict[tuple[str, str], Metric] = {}
        aggregates: dict[tuple[str, Labels, int], _Aggregate] = {}

        def metric(name: str, kind: str) -> Metric:
            found = metrics.get((name, kind))
            if found is None:
                found = metrics[(name, kind)] = Metric(name=name)
                if kind == "counter":
                    found.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
                    found.sum.is_monotonic = True
                elif kind == "histogram":
                    found.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
                elif kind == "summary":
                    found.summary.SetInParent()
                else:
                    found.gauge.SetInParent()
            return found

        for point in batch:
            labels, t_ms, value, kind = point
            family, part, attrs, bound = _group(point, self.resource_names)
            if kind in _PARTS and (part or kind == "summary"):
                key = (family, attrs, t_ms)
                agg = aggregates.get(key)
                if agg is None:
                    agg = aggregates[key] = _Aggregate(kind, t_ms, attrs)
                agg.samples += 1
                if is_stale(value):
                    agg.stale = True
                elif part == "_sum":
                    agg.sum = value
                elif part == "_count":
                    agg.count = value
                else:
                    le = _float(bound)
                    if le is None:
                        agg.bad = True
                    else:
                        agg.bounds[le] = value
                continue
            number_kind = "counter" if kind == "counter" else "gauge"
            name = family if kind in _PARTS else _name(labels)
            target = metric(name, number_kind)
            dp = (target.sum if number_kind == "counter" else target.gauge).data_points.add()
            dp.time_unix_nano = t_ms * 1_000_000
            dp.attributes.extend(_kv(attrs))
            if is_stale(value):
                dp.flags = NO_RECORDED_VALUE
                self.starts.forget((name, attrs))
                continue
            dp.as_double = value
            if number_kind == "counter":
                dp.start_time_unix_nano = self.starts.start((name, attrs), t_ms, value) * 1_000_000
        malformed = 0
        for (family, _, _), agg in aggregates.items():
            if not self._aggregate(metric(family, agg.kind), family, agg):
                malformed += agg.samples
        for empty in [k for k, m in metrics.items() if not _points(m)]:
            del metrics[empty]
        request = ExportMetricsServiceRequest(
            resource_metrics=[
                ResourceMetrics(
                    resource=Resource(attributes=_kv(self.resource)),
                    scope_metrics=[
                        ScopeMetrics(scope=InstrumentationScope(name="sidecars.adapter"), metrics=metrics.values())
                    ],
                )
            ]
        )
        return request.SerializeToString(), malformed

    def _aggregate(self, target: Any, family: str, agg: _Aggregate) -> bool:
        """Adds the histogram or summary point; False when its series do not make one."""
        key = (family, agg.attrs)
        if agg.bad:
            return False
        if agg.stale:
            dp = (target.histogram if agg.kind == "histogram" else target.summary).data_points.add()
            dp.time_unix_nano = agg.t_ms * 1_000_000
            dp.attributes.extend(_kv(agg.attrs))
            dp.flags = NO_RECORDED_VALUE
            self.starts.forget(key)
            return True
        if agg.kind == "summary":
            if agg.count is None or not agg.count >= 0:
                return False
            sdp = target.summary.data_points.add()
            sdp.time_unix_nano = agg.t_ms * 1_000_000
            sdp.attributes.extend(_kv(agg.attrs))
            sdp.count = int(agg.count)
            sdp.sum = agg.sum if agg.sum is not None else 0.0
            for quantile, value in sorted(agg.bounds.items()):
                sdp.quantile_values.add(quantile=quantile, value=value)
            sdp.start_time_unix_nano = self.starts.start(key, agg.t_ms, agg.count) * 1_000_000
            return True
        bounds = sorted(agg.bounds.items())
        if not bounds or bounds[-1][0] != math.inf:
            return False
        total = bounds[-1][1]
        if (agg.count is not None and agg.count != total) or not total >= 0 or total != int(total):
            return False
        counts, previous = [], 0.0
        for _, cumulative in bounds:
            if not cumulative >= previous or cumulative != int(cumulative):
                return False
            counts.append(int(cumulative - previous))
            previous = cumulative
        hdp = target.histogram.data_points.add()
        hdp.time_unix_nano = agg.t_ms * 1_000_000
        hdp.attributes.extend(_kv(agg.attrs))
        hdp.count = int(total)
        if agg.sum is not None:
            hdp.sum = agg.sum
        hdp.explicit_bounds.extend(le for le, _ in bounds[:-1])
        hdp.bucket_counts.extend(counts)
        hdp.start_time_unix_nano = self.starts.start(key, agg.t_ms, total) * 1_000_000
        return True


def _points(m: Metric) -> int:
    kind = m.WhichOneof("data")
    points: list[object] = [] if kind is None else getattr(m, kind).data_points
    return len(points)


class OtlpOutput(PushOutput):
    name = "otlp"
    DROP_REASONS = ("queue_full", "rejected", "malformed", "partial_rejected")

    def __init__(self, state, settings) -> None:  # type: ignore[no-untyped-def]
        super().__init__(state, settings)
        url = settings.otlp_url or settings.push_url
        if not url:
            raise ValueError("the otlp output needs otlp_url (or push_url)")
        self.url: str = url
        self.headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT}
        authorization = settings.otlp_authorization()
        if authorization is not None:
            self.headers["Authorization"] = authorization
        self.encoder = Encoder(self.selection.labels)

    def batch_size(self) -> int:
        # A histogram's series go out in one request: extend past the bound to the end of its group.
        queue = self.queue
        n = super().batch_size()
        if n == 0 or n == len(queue) or queue[n - 1][3] not in _PARTS:
            return n
        names = self.encoder.resource_names
        last = _group(queue[n - 1], names)
        limit = min(len(queue), n + MAX_GROUP_EXTRA)
        while n < limit and queue[n][3] in _PARTS and queue[n][1] == queue[n - 1][1]:
            nxt = _group(queue[n], names)
            if (nxt[0], nxt[2]) != (last[0], last[2]):
                break
            n += 1
        return n

    async def send(self, session: aiohttp.ClientSession, batch: list[Point]) -> None:
        body, malformed = await asyncio.to_thread(self.encoder.encode, batch)
        if malformed:
            self.count_dropped("malformed", malformed)
        async with session.post(self.url, data=body, headers=self.headers, allow_redirects=False) as resp:
            answer = await resp.content.read(64 * 1024)
            if 200 <= resp.status < 300:
                self._partial(answer)
                return
            text = answer[:512].decode("utf-8", "replace").strip()
            detail = f"{redact_url(self.url)} answered {resp.status}: {text}"
            if resp.status in RETRYABLE:
                wait = retry_after_secs(resp.headers.get("Retry-After"))
                raise PushError(f"http_{resp.status // 100}xx", detail, wait)
            raise PushError("rejected", detail)

    def _partial(self, answer: bytes) -> None:
        """OTLP's partial success: the receiver took the request but refused some points."""
        if not answer:
            return
        try:
            response = ExportMetricsServiceResponse.FromString(answer)
        except DecodeError:
            return
        refused = int(response.partial_success.rejected_data_points)
        if refused > 0:
            self.count_dropped("partial_rejected", refused, detail=response.partial_success.error_message[:300])
