"""The otlp sink against a strict OTLP/HTTP JSON receiver, partial success included."""

from __future__ import annotations

import pytest

from sidecars.core.redact import MARKER
from sidecars.tailer.sinks import PermanentError, RetryableError, load_sink
from tests.integration.tailer_sinks.sink_receivers import make_batch, otlp_answer, validate_otlp

Otlp = load_sink("otlp")


def make(log, registry, url: str, **config):  # type: ignore[no-untyped-def]
    return Otlp(Otlp.Settings(url=url + "/v1/logs", **config), log, registry)


async def test_resource_attributes_records_and_bodies(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_otlp, otlp_answer())
    sink = make(log, registry, rx.url)
    labels = {"pod": "web-0", "namespace": "shop", "team": "payments"}
    batch = make_batch(("/l/a.log", ["plain", '{"level":"error","n":5}']), ("/l/b.log", ["b"]), labels=labels)
    batch.streams[0].fields = [{}, {"level": "error", "n": 5, "tags": ["a", True], "ratio": 0.5}]
    await sink.open()
    result = await sink.send(batch)
    await sink.close()
    assert rx.violations == [] and result.rejected == 0
    records = rx.parsed[0]
    # One resource for both files: they share their Pod labels.
    assert len(records) == 3
    assert records[0]["_resource"] == {"k8s.pod.name": "web-0", "k8s.namespace.name": "shop", "team": "payments"}
    assert records[0]["body"] == {"stringValue": "plain"}
    assert records[0]["timeUnixNano"] == str(batch.streams[0].timestamps_ns[0])
    assert records[0]["attributes"] == [{"key": "log.file.path", "value": {"stringValue": "/l/a.log"}}]
    kv = {x["key"]: x["value"] for x in records[1]["body"]["kvlistValue"]["values"]}
    assert kv["level"] == {"stringValue": "error"} and kv["n"] == {"intValue": "5"}
    assert kv["ratio"] == {"doubleValue": 0.5}
    assert kv["tags"] == {"arrayValue": {"values": [{"stringValue": "a"}, {"boolValue": True}]}}
    assert (records[1]["severityText"], records[1]["severityNumber"]) == ("error", 17)
    assert "severityText" not in records[0]
    assert records[2]["body"] == {"stringValue": "b"}
    assert records[2]["attributes"][0]["value"] == {"stringValue": "/l/b.log"}


async def test_partial_success_counts_rejected(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_otlp, otlp_answer(rejected=2))
    sink = make(log, registry, rx.url)
    await sink.open()
    result = await sink.send(make_batch(("/l/a.log", ["a", "b", "c"])))
    await sink.close()
    assert result.rejected == 2 and result.reason == "otlp_rejected" and result.retry is None
    assert registry.get_sample_value("tailer_sink_rejected_lines_total", {"sink": "otlp"}) == 2


@pytest.mark.parametrize(("status", "error"), [(429, RetryableError), (503, RetryableError), (500, PermanentError),
                                               (400, PermanentError)])  # fmt: skip
async def test_statuses_follow_the_otlp_spec(start_receiver, log, registry, status, error) -> None:  # type: ignore[no-untyped-def]
    rx = await start_receiver(validate_otlp, otlp_answer())
    rx.queued.append((status, {"Content-Type": "application/json"}, b'{"code":3,"message":"nope"}'))
    sink = make(log, registry, rx.url, gzip=True)
    await sink.open()
    with pytest.raises(error):
        await sink.send(make_batch(("/l/a.log", ["a"])))
    await sink.close()
    assert rx.violations == []


@pytest.mark.parametrize(
    "answer",
    [
        b'{"partialSuccess": {"rejectedLogRecords": "many"}}',
        b'{"partialSuccess": {"rejectedLogRecords": 5}}',  # more than were sent
        b'{"partialSuccess": {"rejectedLogRecords": -1}}',
        b'{"partialSuccess": "none"}',
        b"<html><body>Welcome to nginx!</body></html>",
        b"[]",
    ],
)
async def test_a_2xx_that_is_not_an_otlp_response_is_retried_not_an_ack(start_receiver, log, registry, answer) -> None:  # type: ignore[no-untyped-def]
    rx = await start_receiver(validate_otlp, lambda rec, parsed: (200, {}, answer))
    sink = make(log, registry, rx.url)
    await sink.open()
    with pytest.raises(RetryableError, match="not an OTLP logs response"):
        await sink.send(make_batch(("/l/a.log", ["a"])))
    await sink.close()
    assert registry.get_sample_value("tailer_sink_requests_total", {"sink": "otlp", "outcome": "retryable"}) == 1


@pytest.mark.parametrize(
    "answer", [b"", b"{}", b'{"partialSuccess": {}}', b'{"partialSuccess": {"rejectedLogRecords": "0"}}']
)
async def test_empty_or_full_success_answers_are_acks(start_receiver, log, registry, answer) -> None:  # type: ignore[no-untyped-def]
    rx = await start_receiver(validate_otlp, lambda rec, parsed: (200, {}, answer))
    sink = make(log, registry, rx.url)
    await sink.open()
    result = await sink.send(make_batch(("/l/a.log", ["a"])))
    await sink.close()
    assert result.rejected == 0 and result.retry is None


async def test_a_non_otlp_answer_quoting_a_secret_is_shown_redacted(start_receiver, log, registry) -> None:  # type: ignore[no-untyped-def]
    token = "s3cr3t-otlp-token-0123456789"
    answer = f"<pre>echo of your request: Authorization: Bearer {token}</pre>".encode()
    rx = await start_receiver(validate_otlp, lambda rec, parsed: (200, {}, answer))
    sink = make(log, registry, rx.url, bearer_token=token)
    await sink.open()
    with pytest.raises(RetryableError, match="not an OTLP logs response") as raised:
        await sink.send(make_batch(("/l/a.log", ["a"])))
    await sink.close()
    assert token not in str(raised.value) and MARKER in str(raised.value)
