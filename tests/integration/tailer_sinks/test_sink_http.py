"""The http NDJSON sink against a strict NDJSON receiver, and the error classification all HTTP sinks share."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import ssl
import time
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from sidecars.tailer.sinks import PermanentError, RetryableError, load_sink
from sidecars.testing import free_port
from tests.integration.tailer_sinks.sink_receivers import ack_204, make_batch, make_cert, validate_ndjson


def make_sink(log: object, registry: CollectorRegistry, **config: object):  # type: ignore[no-untyped-def]
    cls = load_sink("http")
    return cls(cls.Settings(**config), log, registry)


async def test_every_line_arrives_in_order_with_labels(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    sink = make_sink(log, registry, url=rx.url + "/ingest")
    batch = make_batch(("/var/log/a.log", ["a1", 'a2 "quoted"', "ünï €"]), ("/var/log/b.log", ["b1", ""]),
                       labels={"pod": "web-0"})  # fmt: skip
    await sink.open()
    try:
        result = await sink.send(batch)
    finally:
        await sink.close()
    assert rx.violations == []
    assert result.rejected == 0 and result.retry is None
    docs = rx.parsed[0]
    assert [d["message"] for d in docs] == ["a1", 'a2 "quoted"', "ünï €", "b1", ""]
    assert [d["labels"] for d in docs] == [{"pod": "web-0", "path": "/var/log/a.log"}] * 3 + [
        {"pod": "web-0", "path": "/var/log/b.log"}
    ] * 2
    assert docs[0]["timestamp"] == "2023-11-14T22:13:20.000000000Z"
    assert docs[4]["timestamp"] == "2023-11-14T22:13:20.000000004Z"
    assert rx.requests[0].path == "/ingest"
    assert registry.get_sample_value("tailer_sink_requests_total", {"sink": "http", "outcome": "ok"}) == 1
    assert registry.get_sample_value("tailer_sink_sent_bytes_total", {"sink": "http"}) == len(rx.requests[0].raw)
    assert registry.get_sample_value("tailer_sink_request_duration_seconds_count", {"sink": "http"}) == 1


async def test_json_fields_merged_at_top_level(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    sink = make_sink(log, registry, url=rx.url)
    batch = make_batch(("/l/app.log", ['{"level":"warn","msg":"x","n":3}', "not json"]))
    batch.streams[0].fields = [{"level": "warn", "msg": "x", "n": 3, "timestamp": "spoofed"}, {}]
    await sink.open()
    await sink.send(batch)
    await sink.close()
    first, second = rx.parsed[0]
    assert first["level"] == "warn" and first["msg"] == "x" and first["n"] == 3
    assert first["timestamp"].startswith("2023-") and "message" not in first
    assert second["message"] == "not json"


async def test_gzip_body_is_compressed_on_the_wire(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    sink = make_sink(log, registry, url=rx.url, gzip=True)
    lines = [f"line {i} " + "x" * 50 for i in range(2000)]
    await sink.open()
    await sink.send(make_batch(("/l/a.log", lines)))
    await sink.close()
    req = rx.requests[0]
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.raw[:2] == b"\x1f\x8b" and len(req.raw) < len(req.body) / 5
    assert [d["message"] for d in rx.parsed[0]] == lines
    assert gzip.decompress(req.raw) == req.body
    assert registry.get_sample_value("tailer_sink_sent_bytes_total", {"sink": "http"}) == len(req.raw)


async def test_raw_format_sends_lines_as_read(start_receiver, log, registry) -> None:
    def validate_text(rec):  # type: ignore[no-untyped-def]
        assert rec.headers["Content-Type"] == "text/plain; charset=utf-8"
        return rec.body

    rx = await start_receiver(validate_text, ack_204)
    sink = make_sink(log, registry, url=rx.url, format="raw")
    await sink.open()
    await sink.send(make_batch(("/l/a.log", ["one", "two  ", "thrée"])))
    await sink.close()
    assert rx.parsed[0] == "one\ntwo  \nthrée\n".encode()


async def test_basic_auth_and_headers_sent_and_secret_never_logged(start_receiver, registry) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    with structlog.testing.capture_logs() as logs:
        sink = make_sink(structlog.get_logger(), registry, url=rx.url, basic_auth_username="ingest",
                         basic_auth_password="s3cr3t-pw", headers={"X-Team": "payments"},
                         secret_headers={"X-Api-Key": "k3y-value"})  # fmt: skip
        await sink.open()
        await sink.send(make_batch(("/l/a.log", ["x"])))
        rx.queued.append((503, {}, b"down"))
        with pytest.raises(RetryableError):
            await sink.send(make_batch(("/l/a.log", ["y"])))
        await sink.close()
    headers = rx.requests[0].headers
    assert headers["Authorization"] == "Basic aW5nZXN0OnMzY3IzdC1wdw=="  # ingest:s3cr3t-pw
    assert headers["X-Team"] == "payments" and headers["X-Api-Key"] == "k3y-value"
    shown = repr(sink.settings) + str(sink.settings.model_dump()) + repr(logs)
    assert "s3cr3t-pw" not in shown and "k3y-value" not in shown


async def test_bearer_token_read_from_file_at_open(start_receiver, log, registry, tmp_path: Path) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    sink = make_sink(log, registry, url=rx.url, bearer_token_file=token)
    await sink.open()
    await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert rx.requests[0].headers["Authorization"] == "Bearer tok-123"


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_is_retryable(start_receiver, log, registry, status: int) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    rx.queued.append((status, {"Retry-After": "7"}, b"slow down"))
    sink = make_sink(log, registry, url=rx.url)
    await sink.open()
    with pytest.raises(RetryableError) as err:
        await sink.send(make_batch(("/l/a.log", ["x"])))
    # The next send (the pipeline's retry) goes through.
    await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert err.value.retry_after_secs == 7.0
    assert f"HTTP {status}" in str(err.value)
    outcome = {"sink": "http", "outcome": "retryable"}
    assert registry.get_sample_value("tailer_sink_requests_total", outcome) == 1


async def test_retry_after_http_date_is_retryable(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    rx.queued.append((503, {"Retry-After": email.utils.formatdate(time.time() + 120, usegmt=True)}, b""))
    sink = make_sink(log, registry, url=rx.url)
    await sink.open()
    with pytest.raises(RetryableError) as err:
        await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert err.value.retry_after_secs is not None and 100 < err.value.retry_after_secs <= 120


@pytest.mark.parametrize("status", [500, 502, 504, 408])
async def test_server_errors_and_request_timeout_are_retryable(start_receiver, log, registry, status: int) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    rx.queued.append((status, {}, b""))
    sink = make_sink(log, registry, url=rx.url)
    await sink.open()
    with pytest.raises(RetryableError) as err:
        await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert err.value.retry_after_secs is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 501])
async def test_client_errors_are_permanent(start_receiver, log, registry, status: int) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    rx.queued.append((status, {}, b"bad request: field x"))
    sink = make_sink(log, registry, url=rx.url)
    await sink.open()
    with pytest.raises(PermanentError) as err:
        await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert err.value.reason == f"http_{status}"
    assert "bad request: field x" in str(err.value)
    outcome = {"sink": "http", "outcome": "permanent"}
    assert registry.get_sample_value("tailer_sink_requests_total", outcome) == 1


async def test_connection_refused_is_retryable(log, registry) -> None:
    sink = make_sink(log, registry, url=f"http://127.0.0.1:{free_port()}/ingest")
    await sink.open()
    with pytest.raises(RetryableError):
        await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert registry.get_sample_value("tailer_sink_sent_bytes_total", {"sink": "http"}) == 0


async def test_slow_receiver_times_out_as_retryable(start_receiver, log, registry) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)

    async def stall() -> None:
        await asyncio.sleep(2)

    rx.delay = stall
    sink = make_sink(log, registry, url=rx.url, timeout_secs=0.3)
    await sink.open()
    with pytest.raises(RetryableError) as err:
        await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert "Timeout" in str(err.value)


@pytest.mark.parametrize("status", [301, 303, 308])
async def test_redirect_is_not_followed_and_not_an_ack(start_receiver, log, registry, status: int) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    rx.queued.append((status, {"Location": rx.url + "/elsewhere"}, b""))
    sink = make_sink(log, registry, url=rx.url + "/old")
    await sink.open()
    with pytest.raises(PermanentError, match=r"redirects to .*/elsewhere"):
        await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()
    assert [r.path for r in rx.requests] == ["/old"]


async def test_https_verifies_the_server_with_the_given_ca(start_receiver, log, registry, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    rx = await start_receiver(validate_ndjson, ack_204, ctx)
    assert rx.url.startswith("https://")
    untrusted = make_sink(log, registry, url=rx.url)
    await untrusted.open()
    with pytest.raises(RetryableError, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusted.send(make_batch(("/l/a.log", ["never"])))
    await untrusted.close()
    for config in ({"tls_ca_file": cert}, {"tls_verify": False}):
        sink = make_sink(log, registry, url=rx.url, **config)
        await sink.open()
        await sink.send(make_batch(("/l/a.log", ["over tls"])))
        await sink.close()
    assert [d["message"] for docs in rx.parsed for d in docs] == ["over tls", "over tls"]


async def test_missing_secret_file_is_a_clear_error_at_open(log, registry, tmp_path: Path) -> None:
    sink = make_sink(log, registry, url="http://127.0.0.1:9/x", bearer_token_file=tmp_path / "absent")
    with pytest.raises(ValueError, match=r"cannot read the secret file .*absent: No such file"):
        await sink.open()
    await sink.close()
