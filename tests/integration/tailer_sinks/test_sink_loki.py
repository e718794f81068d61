"""The loki sink against a receiver that checks the push API's JSON strictly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidecars.tailer.sinks import PermanentError, RetryableError, load_sink
from tests.integration.tailer_sinks.sink_receivers import ack_204, make_batch, validate_loki

Loki = load_sink("loki")


def make(log, registry, url: str, **config):  # type: ignore[no-untyped-def]
    return Loki(Loki.Settings(url=url + "/loki/api/v1/push", **config), log, registry)


async def test_streams_labels_and_order(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_loki, ack_204)
    sink = make(log, registry, rx.url, tenant_id="team-a")
    lines_a = [f"a{i}" for i in range(500)]
    batch = make_batch(("/var/log/app/a.log", lines_a), ("/var/log/app/b.log", ["b0", "multi\nline"]),
                       labels={"k8s.pod-name": "web-0", "9lives": "x", "app": "shop"})  # fmt: skip
    await sink.open()
    result = await sink.send(batch)
    await sink.close()
    assert rx.violations == [] and result.rejected == 0
    assert rx.requests[0].headers["X-Scope-OrgID"] == "team-a"
    a, b = rx.parsed[0]
    assert a["stream"] == {"k8s_pod_name": "web-0", "_9lives": "x", "app": "shop", "path": "/var/log/app/a.log"}
    assert [v[1] for v in a["values"]] == lines_a
    assert [int(v[0]) for v in a["values"]] == batch.streams[0].timestamps_ns
    assert b["values"][1] == [str(batch.streams[1].timestamps_ns[1]), "multi\nline"]


async def test_drop_labels_and_gzip(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_loki, ack_204)
    sink = make(log, registry, rx.url, drop_labels=["request_id"], rename_labels={"path": "filename"}, gzip=True)
    await sink.open()
    await sink.send(make_batch(("/l/a.log", ["x"]), labels={"request_id": "r1", "app": "shop"}))
    await sink.close()
    assert rx.violations == []
    assert rx.requests[0].headers["Content-Encoding"] == "gzip"
    assert rx.parsed[0][0]["stream"] == {"app": "shop", "filename": "/l/a.log"}
    assert "X-Scope-OrgID" not in rx.requests[0].headers


async def test_out_of_order_400_is_permanent_and_429_retryable(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_loki, ack_204)
    rx.queued += [(400, {}, b"entry out of order"), (429, {"Retry-After": "3"}, b"rate limited")]
    sink = make(log, registry, rx.url)
    await sink.open()
    with pytest.raises(PermanentError, match="entry out of order"):
        await sink.send(make_batch(("/l/a.log", ["x"])))
    with pytest.raises(RetryableError) as err:
        await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert err.value.retry_after_secs == 3


async def test_equal_lines_read_together_stay_distinct_entries(start_receiver, log, registry) -> None:
    # Loki keeps only one of several entries with the same timestamp and line; lines of one read
    # share their time, so repeated lines must still get distinct timestamps, in order.
    rx = await start_receiver(validate_loki, ack_204)
    sink = make(log, registry, rx.url)
    t = 1_700_000_000_000_000_000
    batch = make_batch(("/l/a.log", ["retrying", "retrying", "retrying", "done"]))
    batch.streams[0].timestamps_ns = [t, t, t, t + 1]
    await sink.open()
    await sink.send(batch)
    await sink.send(batch)  # a retry of the same batch: same timestamps, so Loki drops the duplicate
    await sink.close()
    first, again = (p[0]["values"] for p in rx.parsed)
    assert first == [[str(t), "retrying"], [str(t + 1), "retrying"], [str(t + 2), "retrying"], [str(t + 3), "done"]]
    assert again == first


def test_url_must_be_the_push_endpoint() -> None:
    with pytest.raises(ValidationError, match="loki/api/v1/push"):
        Loki.Settings(url="http://loki:3100/")
