"""The strict OTLP receiver the otlp output is tested into refuses what it says it refuses.

The otlp tests pass only while the receiver records no rejection; these requests, built by hand with
opentelemetry-proto's classes, show that each kind of malformed or inconsistent metric is answered
400 and recorded, so a silent receiver cannot make those tests pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
    DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK,
    Metric,
)

from .otlp_receiver import StrictOtlpReceiver

T0 = 1_700_000_000_000_000_000  # ns


@pytest.fixture
async def receiver() -> AsyncIterator[StrictOtlpReceiver]:
    served = StrictOtlpReceiver()
    await served.start()
    try:
        yield served
    finally:
        await served.stop()


def request(*metrics: Metric) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    scope = req.resource_metrics.add().scope_metrics.add()
    scope.scope.name = "test"
    for metric in metrics:
        scope.metrics.add().CopyFrom(metric)
    return req


def counter(value: float, t: int = T0 + 10, start: int = T0, name: str = "jobs_total") -> Metric:
    metric = Metric(name=name)
    metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    metric.sum.is_monotonic = True
    point = metric.sum.data_points.add(time_unix_nano=t, start_time_unix_nano=start, as_double=value)
    point.attributes.add(key="queue").value.string_value = "a"
    return metric


def histogram(bounds: list[float], buckets: list[int], count: int) -> Metric:
    metric = Metric(name="lat_seconds")
    metric.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    metric.histogram.data_points.add(
        time_unix_nano=T0 + 10, start_time_unix_nano=T0, explicit_bounds=bounds, bucket_counts=buckets, count=count
    )
    return metric


def delta() -> Metric:
    metric = counter(1)
    metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_DELTA
    return metric


def stale_with_a_value() -> Metric:
    metric = Metric(name="temp")
    metric.gauge.data_points.add(time_unix_nano=T0, as_double=1, flags=DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK)
    return metric


def repeated_attribute() -> Metric:
    metric = counter(1)
    metric.sum.data_points[0].attributes.add(key="queue").value.string_value = "b"
    return metric


def no_time() -> Metric:
    metric = Metric(name="temp")
    metric.gauge.data_points.add(as_double=1)
    return metric


async def post(receiver: StrictOtlpReceiver, body: bytes, content_type: str = "application/x-protobuf") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(receiver.url, data=body, headers={"Content-Type": content_type}) as resp,
    ):
        return resp.status


async def test_a_well_formed_request_is_taken(receiver: StrictOtlpReceiver) -> None:
    body = request(counter(5), histogram([0.1, 1], [1, 2, 1], 4)).SerializeToString()
    assert await post(receiver, body) == 200
    assert receiver.rejections == [] and len(receiver.points) == 2
    # The same stream counting on, then reset with a start after its last point.
    assert await post(receiver, request(counter(7, t=T0 + 20)).SerializeToString()) == 200
    assert await post(receiver, request(counter(1, t=T0 + 40, start=T0 + 30)).SerializeToString()) == 200
    assert receiver.rejections == []


@pytest.mark.parametrize(
    ("build", "says"),
    [
        (lambda: request(delta()), "a sum that is not cumulative and monotonic"),
        (lambda: request(histogram([0.1, 1], [1, 2], 3)), "2 bucket counts for 2 bounds"),
        (lambda: request(histogram([0.1, 1], [1, 2, 1], 5)), "buckets add up to 4, count is 5"),
        (lambda: request(histogram([1, 0.1], [1, 2, 1], 4)), "bounds not finite and strictly increasing"),
        (lambda: request(stale_with_a_value()), "no recorded value, yet a value"),
        (lambda: request(repeated_attribute()), "repeated attribute keys"),
        (lambda: request(no_time()), "no time"),
        (lambda: request(counter(5, start=T0 + 20)), "not within (0, time"),
        (lambda: request(counter(1, name="bad-name")), "metric name 'bad-name'"),
        (ExportMetricsServiceRequest, "no resource_metrics"),
    ],
)
async def test_each_malformed_metric_is_refused_and_recorded(
    receiver: StrictOtlpReceiver, build: Callable[[], ExportMetricsServiceRequest], says: str
) -> None:
    assert await post(receiver, build().SerializeToString()) == 400
    assert len(receiver.rejections) == 1 and says in receiver.rejections[0], receiver.rejections
    assert receiver.points == []


async def test_inconsistent_streams_and_bodies_are_refused(receiver: StrictOtlpReceiver) -> None:
    assert await post(receiver, request(counter(5)).SerializeToString()) == 200
    # A cumulative value that falls without a new start, and a time that goes backwards.
    assert await post(receiver, request(counter(3, t=T0 + 20)).SerializeToString()) == 400
    assert await post(receiver, request(counter(9, t=T0 + 5)).SerializeToString()) == 400
    # The name that was a sum arrives as a gauge.
    gauge = Metric(name="jobs_total")
    gauge.gauge.data_points.add(time_unix_nano=T0 + 30, as_double=1)
    assert await post(receiver, request(gauge).SerializeToString()) == 400
    assert await post(receiver, b"\xff\xff not protobuf") == 400
    assert await post(receiver, request(counter(9, t=T0 + 40)).SerializeToString(), "application/json") == 400
    reasons = receiver.rejections
    assert len(reasons) == 5, reasons
    assert "fell from 5.0 to 3.0 without a reset" in reasons[0] and "not after the previous point" in reasons[1]
    assert "was a sum, now a gauge" in reasons[2] and "not an ExportMetricsServiceRequest" in reasons[3]
    assert "content type 'application/json'" in reasons[4]
