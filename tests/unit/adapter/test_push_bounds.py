"""The push path's bounds that only a crafted page or a long run reaches: each one shown held."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry

from sidecars.adapter.outputs import otlp, remote_write
from sidecars.adapter.outputs.otlp import OtlpOutput, StartTimes
from sidecars.adapter.outputs.push import Point, PushMetrics
from sidecars.adapter.outputs.remote_write import RemoteWriteOutput
from sidecars.adapter.settings import AdapterSettings
from sidecars.adapter.state import State

URL = "http://127.0.0.1:9/v1/metrics"


def test_each_registry_gets_push_metrics_registered_on_it() -> None:
    # Sidecars made one after another in a process: a new registry often lands where a freed one was.
    gc.collect()
    before = len(PushMetrics._instances)  # registries other tests still hold
    for _ in range(20):
        registry = CollectorRegistry()
        PushMetrics.of(registry).sent.labels(output="remote_write").inc()
        assert registry.get_sample_value("adapter_push_samples_total", {"output": "remote_write"}) == 1
        del registry
        gc.collect()
    assert len(PushMetrics._instances) <= before  # none kept for registries gone


def test_otlp_start_times_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp, "MAX_STREAMS", 50)
    starts = StartTimes()
    for i in range(1_000):
        starts.start(("jobs_total", (("i", str(i)),)), 1_000, 1.0)
        assert len(starts.streams) <= 50


def histogram_buckets(n: int) -> list[Point]:
    labels = [(("__name__", "lat_seconds_bucket"), ("le", str(i)), ("path", "/")) for i in range(n)]
    return [(lab, 1_000, float(i), "histogram") for i, lab in enumerate(labels)]


def test_an_otlp_batch_grows_to_keep_a_histogram_whole_but_only_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp, "MAX_GROUP_EXTRA", 10)
    settings = AdapterSettings(outputs=["otlp"], otlp_url=URL, push_batch_max_samples=5)
    output = OtlpOutput(State(), settings)
    output.queue.extend(histogram_buckets(12))
    assert output.batch_size() == 12  # one histogram, sent whole though past the batch bound
    output.queue.extend(histogram_buckets(100))
    assert output.batch_size() == 5 + 10  # a histogram of a hundred buckets is split past the extra


def test_remote_write_label_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_write, "MAX_LABEL_CACHE", 30)
    settings = AdapterSettings(outputs=["remote_write"], push_url=URL)
    output = RemoteWriteOutput(State(), settings)
    for start in range(0, 200, 20):
        output.encode([((("__name__", "x"), ("i", str(i))), 1_000, 1.0, "gauge") for i in range(start, start + 20)])
        assert len(output._labels) <= 30 + 20  # cleared once past the bound, then one batch's worth
