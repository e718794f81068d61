"""The elasticsearch sink against a strict _bulk receiver answering per-item errors inside a 200."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from sidecars.core.redact import MARKER
from sidecars.tailer.sinks import PermanentError, RetryableError, load_sink
from tests.integration.tailer_sinks.sink_receivers import bulk_answer, make_batch, validate_bulk

Es = load_sink("elasticsearch")


def by_message(doc: dict[str, Any]) -> tuple[int, str | None]:
    message = doc.get("message", "")
    if message.startswith("bad"):
        return 400, "mapper_parsing_exception"
    if message.startswith("busy"):
        return 429, "es_rejected_execution_exception"
    if message.startswith("broken"):
        return 503, "unavailable_shards_exception"
    return 201, None


async def test_pairs_index_pattern_and_pipeline(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_bulk, bulk_answer(by_message))
    sink = Es(Es.Settings(url=rx.url, index="logs-app-%Y.%m.%d", pipeline="parse-nginx"), log, registry)
    day2 = 1_700_000_000_000_000_000 + 86_400 * 10**9
    batch = make_batch(("/l/a.log", ["one", "two"]), labels={"pod": "web-0"})
    batch.streams += make_batch(("/l/b.log", ["three"]), t0=day2).streams
    await sink.open()
    result = await sink.send(batch)
    await sink.close()
    assert rx.violations == [] and result.rejected == 0 and result.retry is None
    assert rx.requests[0].query["pipeline"] == "parse-nginx"
    pairs = rx.parsed[0]
    assert [(a, i, d["message"]) for a, i, d in pairs] == [
        ("create", "logs-app-2023.11.14", "one"),
        ("create", "logs-app-2023.11.14", "two"),
        ("create", "logs-app-2023.11.15", "three"),
    ]
    assert pairs[0][2]["labels"] == {"pod": "web-0", "path": "/l/a.log"}
    assert pairs[0][2]["@timestamp"] == "2023-11-14T22:13:20.000000000Z"


async def test_per_item_errors_inside_a_200(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_bulk, bulk_answer(by_message))
    sink = Es(Es.Settings(url=rx.url, index="logs", action="index"), log, registry)
    batch = make_batch(("/l/a.log", ["ok1", "bad1", "busy1", "ok2"]), ("/l/b.log", ["broken1", "bad2", "ok3"]))
    await sink.open()
    result = await sink.send(batch)
    assert rx.violations == []
    assert result.rejected == 2 and result.reason == "mapper_parsing_exception"
    assert result.retry is not None
    assert [(s.path, s.lines) for s in result.retry.streams] == [("/l/a.log", ["busy1"]), ("/l/b.log", ["broken1"])]
    assert result.retry.streams[0].timestamps_ns == [batch.streams[0].timestamps_ns[2]]
    # The retry batch goes through once the cluster has capacity again.
    rx.answer = bulk_answer(lambda doc: (201, None))
    again = await sink.send(result.retry)
    await sink.close()
    assert again.rejected == 0 and again.retry is None
    assert [d["message"] for _, _, d in rx.parsed[1]] == ["busy1", "broken1"]
    assert registry.get_sample_value("tailer_sink_requests_total", {"sink": "elasticsearch", "outcome": "partial"}) == 1
    assert registry.get_sample_value("tailer_sink_rejected_lines_total", {"sink": "elasticsearch"}) == 2


async def test_item_count_mismatch_is_retryable(start_receiver, log, registry) -> None:
    def short(rec, parsed):  # type: ignore[no-untyped-def]
        return 200, {}, b'{"errors":true,"items":[{"create":{"status":201}}]}'

    rx = await start_receiver(validate_bulk, short)
    sink = Es(Es.Settings(url=rx.url), log, registry)
    await sink.open()
    with pytest.raises(RetryableError, match="1 items for 2 documents"):
        await sink.send(make_batch(("/l/a.log", ["a", "b"])))
    await sink.close()


async def test_whole_request_errors_classified(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_bulk, bulk_answer(by_message))
    rx.queued += [(429, {"Retry-After": "2"}, b"{}"), (400, {}, b'{"error":"illegal_argument_exception"}')]
    sink = Es(Es.Settings(url=rx.url + "/_bulk"), log, registry)
    await sink.open()
    with pytest.raises(RetryableError) as err:
        await sink.send(make_batch(("/l/a.log", ["a"])))
    with pytest.raises(PermanentError):
        await sink.send(make_batch(("/l/a.log", ["a"])))
    await sink.close()
    assert err.value.retry_after_secs == 2
    assert rx.violations == []


def test_invalid_index_name_rejected() -> None:
    with pytest.raises(ValidationError, match="index"):
        Es.Settings(url="http://es:9200", index="Logs Upper")


async def test_unreadable_item_is_sent_again(start_receiver, log, registry) -> None:
    def odd(rec, parsed):  # type: ignore[no-untyped-def]
        items = [{"create": {"status": 201}}, {"create": {}}, "garbage"]
        return 200, {}, orjson.dumps({"errors": True, "items": items})

    rx = await start_receiver(validate_bulk, odd)
    sink = Es(Es.Settings(url=rx.url), log, registry)
    await sink.open()
    result = await sink.send(make_batch(("/l/a.log", ["fine", "unknown-1", "unknown-2"])))
    await sink.close()
    assert result.rejected == 0 and result.retry is not None
    assert result.retry.streams[0].lines == ["unknown-1", "unknown-2"]


@pytest.mark.parametrize(
    "answer",
    [
        b"<html><body>502 Bad Gateway</body></html>",  # a proxy's page under a 200
        b"",
        b"{}",
        b'{"acknowledged": true}',
        b'{"errors": "no", "items": []}',
        b'{"errors": false, "items": [{"create": {"status": 201}}]}',  # one item for two documents
    ],
)
async def test_a_2xx_that_is_not_a_bulk_answer_is_retried_not_an_ack(start_receiver, log, registry, answer) -> None:  # type: ignore[no-untyped-def]
    rx = await start_receiver(validate_bulk, lambda rec, parsed: (200, {}, answer))
    sink = Es(Es.Settings(url=rx.url), log, registry)
    await sink.open()
    with pytest.raises(RetryableError, match=r"not a _bulk answer|items for 2 documents"):
        await sink.send(make_batch(("/l/a.log", ["a", "b"])))
    await sink.close()
    labels = {"sink": "elasticsearch", "outcome": "retryable"}
    assert registry.get_sample_value("tailer_sink_requests_total", labels) == 1


async def test_a_non_bulk_answer_quoting_a_secret_is_shown_redacted(start_receiver, log, registry) -> None:  # type: ignore[no-untyped-def]
    key = "s3cr3t-es-key-0123456789"
    answer = f"<pre>echo of your request: X-Api-Key: {key}</pre>".encode()  # a debugging proxy's page
    rx = await start_receiver(validate_bulk, lambda rec, parsed: (200, {}, answer))
    sink = Es(Es.Settings(url=rx.url, secret_headers={"X-Api-Key": key}), log, registry)
    await sink.open()
    with pytest.raises(RetryableError, match="not a _bulk answer") as raised:
        await sink.send(make_batch(("/l/a.log", ["a", "b"])))
    await sink.close()
    assert key not in str(raised.value) and MARKER in str(raised.value)
