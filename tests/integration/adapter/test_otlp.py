"""The `otlp` output into a strict receiver built on opentelemetry-proto (`otlp_receiver.py`), which
answers 400 to anything malformed or inconsistent: counters, gauges, histograms and summaries arrive as
the page says, resets and staleness as OTLP expresses them, Retry-After honoured, the queue bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecars.adapter.settings import AdapterSettings
from sidecars.core.config import ConfigError, load

from .conftest import MetricsApp
from .otlp_receiver import StrictOtlpReceiver
from .test_adapter import adapter, wait_for

TOKEN = "otlp-T0ken-s3cret"
PAGE = """# TYPE jobs_total counter
jobs_total{queue="a"} COUNT
# TYPE temp_celsius gauge
temp_celsius{room="x"} 21.5
# TYPE lat_seconds histogram
lat_seconds_bucket{path="/",le="0.1"} 1
lat_seconds_bucket{path="/",le="0.5"} 3
lat_seconds_bucket{path="/",le="+Inf"} 4
lat_seconds_sum{path="/"} 1.25
lat_seconds_count{path="/"} 4
lat_seconds_bucket{path="/b",le="0.1"} 0
lat_seconds_bucket{path="/b",le="0.5"} 0
lat_seconds_bucket{path="/b",le="+Inf"} 2
lat_seconds_sum{path="/b"} 7
lat_seconds_count{path="/b"} 2
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds{quantile="0.99"} 0.9
rpc_seconds_sum 12
rpc_seconds_count 40
"""


@pytest.fixture
async def receiver() -> AsyncIterator[StrictOtlpReceiver]:
    served = StrictOtlpReceiver()
    await served.start()
    try:
        yield served
    finally:
        await served.stop()


def otlp(receiver: StrictOtlpReceiver, **more: object) -> dict[str, object]:
    return {
        "outputs": ["health", "otlp"],
        "otlp_url": receiver.url,
        "otlp_bearer_token": TOKEN,
        "push_labels": ["pod=web-1"],
        "scrape_interval_secs": 0.2,
        "scrape_timeout_secs": 0.2,
        "push_max_backoff_secs": 0.2,
        **more,
    }


async def test_every_kind_arrives_as_the_page_says_with_resets_and_staleness(
    app: MetricsApp, receiver: StrictOtlpReceiver
) -> None:
    app.page = PAGE.replace("COUNT", "5")
    # Two samples a batch: without keeping each histogram whole, its points would arrive in pieces.
    async with adapter(app, None, **otlp(receiver, push_batch_max_samples=2)) as sc:
        await wait_for(lambda: receiver.latest("rpc_seconds") is not None and receiver.latest("jobs_total") is not None)
        jobs = receiver.latest("jobs_total", queue="a")
        assert jobs is not None and (jobs.kind, jobs.value, jobs.attrs) == ("sum", 5.0, {"queue": "a"})
        assert jobs.resource == {"pod": "web-1"}  # push_labels: the resource's attributes, not the points'
        temp = receiver.latest("temp_celsius")
        assert temp is not None and (temp.kind, temp.value, temp.attrs) == ("gauge", 21.5, {"room": "x"})
        lat = receiver.latest("lat_seconds", path="/")
        assert lat is not None and lat.kind == "histogram"
        assert (lat.bounds, lat.buckets, lat.count, lat.sum) == ([0.1, 0.5], [1, 2, 1], 4, 1.25)
        lat_b = receiver.latest("lat_seconds", path="/b")
        assert lat_b is not None and (lat_b.buckets, lat_b.count, lat_b.sum) == ([0, 0, 2], 2, 7.0)
        rpc = receiver.latest("rpc_seconds")
        assert rpc is not None and (rpc.kind, rpc.count, rpc.sum) == ("summary", 40, 12.0)
        assert receiver.requests[0][1]["Authorization"] == f"Bearer {TOKEN}"
        first_start = jobs.start_ns

        app.page = PAGE.replace("COUNT", "7")
        await wait_for(lambda: (p := receiver.latest("jobs_total")) is not None and p.value == 7)
        grown = receiver.latest("jobs_total")
        assert grown is not None and grown.start_ns == first_start  # the same stream, counting on

        app.page = PAGE.replace("COUNT", "2")  # the app restarted: the counter starts again
        await wait_for(lambda: (p := receiver.latest("jobs_total")) is not None and p.value == 2)
        reset = receiver.latest("jobs_total")
        assert reset is not None and reset.start_ns > grown.time_ns  # a new start, after the last point

        app.page = PAGE.replace("COUNT", "2").replace('temp_celsius{room="x"} 21.5\n', "")
        await wait_for(lambda: (p := receiver.latest("temp_celsius")) is not None and p.value is None)
        assert receiver.rejections == []
        assert sc.sample("adapter_push_dropped_samples_total", {"output": "otlp", "reason": "malformed"}) == 0
        assert TOKEN not in str(sc.logs)


async def test_a_histogram_that_contradicts_itself_is_dropped_and_counted(
    app: MetricsApp, receiver: StrictOtlpReceiver
) -> None:
    # +Inf below a lower bucket, and a count that disagrees: no histogram can say that.
    bad = PAGE.replace("COUNT", "1").replace('le="+Inf"} 4', 'le="+Inf"} 2')
    app.page = bad
    async with adapter(app, None, **otlp(receiver)) as sc:
        labels = {"output": "otlp", "reason": "malformed"}
        await wait_for(lambda: (sc.sample("adapter_push_dropped_samples_total", labels) or 0) >= 5)
        await wait_for(lambda: receiver.latest("lat_seconds", path="/b") is not None)
        assert receiver.latest("lat_seconds", path="/") is None  # never sent
        assert receiver.rejections == []  # and nothing malformed reached the receiver
        assert sc.events("push samples dropped")[0]["reason"] == "malformed"


async def test_retry_after_is_honoured_and_a_refused_request_dropped(
    app: MetricsApp, receiver: StrictOtlpReceiver
) -> None:
    app.page = "# TYPE one gauge\none 1\n"
    receiver.answers = [(503, {"Retry-After": "1"}), (500, {})]  # 500 is permanent in OTLP/HTTP
    settings = otlp(receiver, scrape_interval_secs=0.5, scrape_timeout_secs=0.5, push_batch_max_samples=1)
    async with adapter(app, None, **settings) as sc:
        await wait_for(lambda: len(receiver.points) >= 1, 20)
        (t1, _, body1), (t2, _, body2) = receiver.requests[:2]
        assert t2 - t1 >= 0.95, "Retry-After: 1 was not waited for"
        assert body1 == body2, "the failed batch is sent again, the same"
        metric = {"output": "otlp"}
        assert sc.sample("adapter_push_failures_total", {**metric, "reason": "http_5xx"}) == 1
        assert sc.sample("adapter_push_failures_total", {**metric, "reason": "rejected"}) == 1
        assert sc.sample("adapter_push_dropped_samples_total", {**metric, "reason": "rejected"}) == 1
        assert receiver.rejections == []


async def test_partial_success_and_a_full_queue_are_counted(app: MetricsApp, receiver: StrictOtlpReceiver) -> None:
    app.page = PAGE.replace("COUNT", "1")
    receiver.answers = [(503, {"Retry-After": "2"})]
    receiver.partial_reject = 3
    async with adapter(app, None, **otlp(receiver, push_queue_max_samples=30)) as sc:

        def dropped(reason: str) -> float:
            return sc.sample("adapter_push_dropped_samples_total", {"output": "otlp", "reason": reason}) or 0

        # 18 samples a page, ten pages in the 2 s the receiver asked for: past the bound of 30.
        await wait_for(lambda: dropped("queue_full") > 0)
        assert (sc.sample("adapter_push_queue_samples", {"output": "otlp"}) or 0) <= 30
        await wait_for(lambda: dropped("partial_rejected") >= 3)
        assert receiver.rejections == []


def test_the_otlp_output_needs_a_receiver_and_its_token_comes_from_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(AdapterSettings, flags={"outputs": ["otlp"]}, environ={})
    assert "the otlp output needs otlp_url (or push_url)" in caught.value.render()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    loaded = load(
        AdapterSettings,
        environ={"ADAPTER_OTLP_URL": "http://127.0.0.1:9/v1/metrics", "ADAPTER_OTLP_BEARER_TOKEN_FILE": str(token)},
    )
    settings = loaded.settings
    assert isinstance(settings, AdapterSettings) and settings.otlp_authorization() == f"Bearer {TOKEN}"
