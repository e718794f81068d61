"""A strict OTLP/HTTP metrics receiver on 127.0.0.1, built on opentelemetry-proto's own classes.

It parses each request with `ExportMetricsServiceRequest` and answers 400 to anything malformed or
inconsistent, remembering why: a wrong content type, a body that does not parse, a metric without
exactly one kind of data, bad or repeated attributes, a point without a time, a sum that is not
cumulative and monotonic, a start time after its point's time, a stream whose time goes backwards,
whose start time moves without a reset or whose cumulative value falls without one, a histogram
whose bucket counts do not match its bounds or do not add up to its count, a point flagged "no
recorded value" that carries one, and a metric name that changes kind between requests.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK,
)

from sidecars.testing import free_port

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
Attrs = tuple[tuple[str, str], ...]


class Malformed(ValueError):
    pass


@dataclass
class Point:
    name: str
    kind: str  # sum, gauge, histogram, summary
    attrs: dict[str, str]
    time_ns: int
    start_ns: int
    value: float | None  # None: no recorded value
    bounds: list[float] = field(default_factory=list)
    buckets: list[int] = field(default_factory=list)
    count: int = 0
    sum: float | None = None
    resource: dict[str, str] = field(default_factory=dict)


@dataclass
class StrictOtlpReceiver:
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # consumed in order; then 200
    partial_reject: int = 0  # rejected_data_points said in every 200 answer
    points: list[Point] = field(default_factory=list)
    requests: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    streams: dict[tuple[str, Attrs], tuple[int, int, float]] = field(default_factory=dict)  # start, time, value
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/metrics", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/v1/metrics"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((time.monotonic(), dict(request.headers), body))
        if self.answers:
            status, headers = self.answers.pop(0)
            return web.Response(status=status, headers=headers, text="not now")
        try:
            if request.headers.get("Content-Type") != "application/x-protobuf":
                raise Malformed(f"content type {request.headers.get('Content-Type')!r}")
            points = self.check(body)
        except Malformed as exc:
            self.rejections.append(str(exc))
            return web.Response(status=400, text=str(exc))
        self.points.extend(points)
        response = ExportMetricsServiceResponse()
        if self.partial_reject:
            response.partial_success.rejected_data_points = self.partial_reject
            response.partial_success.error_message = "some points refused"
        return web.Response(body=response.SerializeToString(), content_type="application/x-protobuf")

    # -- validation ------------------------------------------------------------------------------
    def check(self, body: bytes) -> list[Point]:
        try:
            request = ExportMetricsServiceRequest.FromString(body)
        except DecodeError as exc:
            raise Malformed(f"not an ExportMetricsServiceRequest: {exc}") from None
        if request.SerializeToString() != body:
            raise Malformed("the body does not encode back to itself (unknown or repeated fields)")
        if not request.resource_metrics:
            raise Malformed("no resource_metrics")
        out: list[Point] = []
        for rm in request.resource_metrics:
            resource = dict(self.attrs(rm.resource.attributes, "resource"))
            for sm in rm.scope_metrics:
                if not sm.scope.name:
                    raise Malformed("a scope without a name")
                for metric in sm.metrics:
                    out.extend(self.metric(metric, resource))
        return out

    @staticmethod
    def attrs(items: Any, where: str) -> Attrs:
        seen = []
        for kv in items:
            if not kv.key or kv.value.WhichOneof("value") != "string_value":
                raise Malformed(f"{where}: attribute {kv.key!r} is not a non-empty key with a string value")
            seen.append((kv.key, kv.value.string_value))
        if len({k for k, _ in seen}) != len(seen):
            raise Malformed(f"{where}: repeated attribute keys {seen}")
        return tuple(sorted(seen))

    def metric(self, metric: Any, resource: dict[str, str]) -> list[Point]:
        name = metric.name
        if not _NAME.fullmatch(name):
            raise Malformed(f"metric name {name!r}")
        kind = metric.WhichOneof("data")
        if kind not in ("sum", "gauge", "histogram", "summary"):
            raise Malformed(f"{name}: data {kind!r}")
        if self.kinds.setdefault(name, kind) != kind:
            raise Malformed(f"{name}: was a {self.kinds[name]}, now a {kind}")
        data = getattr(metric, kind)
        if not data.data_points:
            raise Malformed(f"{name}: no data points")
        cumulative = kind in ("gauge", "summary") or data.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
        if kind == "sum" and not (cumulative and data.is_monotonic):
            raise Malformed(f"{name}: a sum that is not cumulative and monotonic")
        if kind == "histogram" and not cumulative:
            raise Malformed(f"{name}: a histogram that is not cumulative")
        out = []
        for dp in data.data_points:
            attrs = self.attrs(dp.attributes, name)
            if dp.time_unix_nano <= 0:
                raise Malformed(f"{name}{attrs}: no time")
            stale = bool(dp.flags & DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK)
            point = Point(name, kind, dict(attrs), dp.time_unix_nano, dp.start_time_unix_nano, None, resource=resource)
            if kind in ("sum", "gauge"):
                has = dp.WhichOneof("value")
                if stale and has is not None:
                    raise Malformed(f"{name}{attrs}: no recorded value, yet a value")
                if not stale and has != "as_double":
                    raise Malformed(f"{name}{attrs}: no value")
                point.value = None if stale else dp.as_double
            elif kind == "histogram":
                if stale:
                    if dp.bucket_counts or dp.explicit_bounds or dp.count:
                        raise Malformed(f"{name}{attrs}: no recorded value, yet buckets")
                else:
                    bounds, buckets = list(dp.explicit_bounds), list(dp.bucket_counts)
                    if len(buckets) != len(bounds) + 1:
                        raise Malformed(f"{name}{attrs}: {len(buckets)} bucket counts for {len(bounds)} bounds")
                    if any(not math.isfinite(b) for b in bounds) or any(a >= b for a, b in itertools.pairwise(bounds)):
                        raise Malformed(f"{name}{attrs}: bounds not finite and strictly increasing: {bounds}")
                    if sum(buckets) != dp.count:
                        raise Malformed(f"{name}{attrs}: buckets add up to {sum(buckets)}, count is {dp.count}")
                    point.bounds, point.buckets, point.count = bounds, buckets, dp.count
                    point.sum = dp.sum if dp.HasField("sum") else None
                    point.value = float(dp.count)
            else:
                qs = [q.quantile for q in dp.quantile_values]
                if any(not 0 <= q <= 1 for q in qs) or qs != sorted(qs):
                    raise Malformed(f"{name}{attrs}: quantiles {qs}")
                point.value = None if stale else float(dp.count)
                point.count, point.sum = dp.count, dp.sum
            if kind != "gauge" and not stale:
                self.cumulative(name, attrs, dp.start_time_unix_nano, dp.time_unix_nano, point.value or 0.0)
            if kind == "gauge" and dp.start_time_unix_nano > dp.time_unix_nano:
                raise Malformed(f"{name}{attrs}: start after time")
            out.append(point)
        return out

    def cumulative(self, name: str, attrs: Attrs, start: int, t: int, value: float) -> None:
        if not 0 < start <= t:
            raise Malformed(f"{name}{attrs}: start {start} not within (0, time {t}]")
        previous = self.streams.get((name, attrs))
        if previous is not None:
            p_start, p_time, p_value = previous
            if t <= p_time:
                raise Malformed(f"{name}{attrs}: time {t} not after the previous point's {p_time}")
            if start == p_start and value < p_value:
                raise Malformed(f"{name}{attrs}: cumulative value fell from {p_value} to {value} without a reset")
            if start != p_start and start <= p_time:
                raise Malformed(f"{name}{attrs}: a reset's start {start} is not after the previous point {p_time}")
        self.streams[(name, attrs)] = (start, t, value)

    # -- what the tests read ---------------------------------------------------------------------
    def latest(self, name: str, **attrs: str) -> Point | None:
        found = [p for p in self.points if p.name == name and all(p.attrs.get(k) == v for k, v in attrs.items())]
        return found[-1] if found else None
