"""The syslog sink against a real syslog-ng receiver (RFC 5424, octet counting, TCP and TLS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from sidecars.tailer.sinks import Batch, RetryableError, load_sink
from sidecars.testing import free_port
from tests.integration.tailer_sinks.sink_receivers import make_batch, make_cert
from tests.integration.tailer_sinks.syslog_ng_receiver import running

Syslog = load_sink("syslog")


def make(log, registry, port: int, **config):  # type: ignore[no-untyped-def]
    return Syslog(Syslog.Settings(host="127.0.0.1", port=port, **config), log, registry)


def lines_of(batch: Batch) -> list[str]:
    return [line for s in batch.streams for line in s.lines]


async def test_every_line_arrives_with_fields_and_structured_data(tmp_path: Path, log, registry) -> None:
    port = free_port()
    labels = {"pod": 'web-0 "blue"', "odd]value": "back\\slash]", "namespace": "shop"}
    batches = [
        make_batch((f"/var/log/app/{n}.log", [f"batch {b} line {i} ünïcødé €" for i in range(300)]), labels=labels)
        for b, n in enumerate(["a", "b", "c"])
    ]
    trace = "Traceback (most recent call last):\n  File x\nValueError: y"
    special_lines = [trace, "", "tab\there", "日本語のログ", "x" * 60_000]
    special = make_batch(("/var/log/app/d.log", special_lines), labels=labels)
    batches.append(special)
    sink = make(log, registry, port, hostname="web-0", app_name="shop-api", procid="42", msgid="ACCESS",
                facility="local3", severity="warning")  # fmt: skip
    with running(tmp_path / "sng", port) as sng:
        await sink.open()
        for batch in batches:
            await sink.send(batch)
        await sink.close()
        expected = [line for b in batches for line in lines_of(b)]
        got = await sng.wait_for(len(expected))
    assert [m["message"] for m in got] == expected
    first = got[0]
    assert (first["host"], first["program"], first["pid"], first["msgid"]) == ("web-0", "shop-api", "42", "ACCESS")
    assert (first["facility"], first["severity"]) == ("local3", "warning")
    assert first["isodate"] == "2023-11-14T22:13:20.000000+00:00"
    sd = first["_SDATA"]["labels@32473"]
    assert sd == {"pod": 'web-0 "blue"', "odd_value": "back\\slash]", "namespace": "shop", "path": "/var/log/app/a.log"}
    assert got[-1]["_SDATA"]["labels@32473"]["path"] == "/var/log/app/d.log"
    assert {m["program"] for m in got} == {"shop-api"}
    assert registry.get_sample_value("tailer_sink_requests_total", {"sink": "syslog", "outcome": "ok"}) == 4


async def test_reconnects_after_the_receiver_restarts(tmp_path: Path, log, registry) -> None:
    port = free_port()
    sink = make(log, registry, port, structured_data_id=None)
    await sink.open()
    with running(tmp_path / "one", port) as sng:
        await sink.send(make_batch(("/l/a.log", ["before-1", "before-2"])))
        first = await sng.wait_for(2)
    # The receiver is gone: the connection's EOF is noticed and the reconnect is refused.
    with pytest.raises(RetryableError):
        await sink.send(make_batch(("/l/a.log", ["while-down"])))
    assert registry.get_sample_value("tailer_sink_requests_total", {"sink": "syslog", "outcome": "retryable"}) == 1
    with running(tmp_path / "two", port) as sng:
        await sink.send(make_batch(("/l/a.log", ["after-1", "after-2"])))
        second = await sng.wait_for(2)
    await sink.close()
    assert [m["message"] for m in first] == ["before-1", "before-2"]
    assert [m["message"] for m in second] == ["after-1", "after-2"]
    assert second[0]["sdata"] == ""


async def test_connection_refused_is_retryable(log, registry) -> None:
    sink = make(log, registry, free_port())
    await sink.open()
    with pytest.raises(RetryableError, match="connect"):
        await sink.send(make_batch(("/l/a.log", ["x"])))
    await sink.close()


async def test_tls(tmp_path: Path, registry) -> None:
    cert, key = make_cert(tmp_path)
    port = free_port()
    with running(tmp_path / "sng", port, tls=(cert, key)) as sng:
        # A certificate we do not trust is refused...
        untrusted = make(structlog.get_logger(), registry, port, tls=True)
        await untrusted.open()
        with pytest.raises(RetryableError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.send(make_batch(("/l/a.log", ["never"])))
        await untrusted.close()
        # ...and accepted with its CA.
        sink = Syslog(Syslog.Settings(host="127.0.0.1", port=port, tls=True, tls_ca_file=cert),
                      structlog.get_logger(), registry)  # fmt: skip
        await sink.open()
        await sink.send(make_batch(("/l/a.log", ["over tls", "zwei"])))
        await sink.close()
        got = await sng.wait_for(2)
    assert [m["message"] for m in got] == ["over tls", "zwei"]


def test_invalid_header_fields_rejected() -> None:
    with pytest.raises(ValidationError) as err:
        Syslog.Settings(app_name="my app", facility="local9", msgid="x" * 33)
    text = str(err.value)
    assert "app_name" in text and "facility" in text and "msgid" in text


async def test_app_name_from_a_label(tmp_path: Path, log, registry) -> None:
    port = free_port()
    sink = make(log, registry, port, app_name="fallback", app_name_label="container", structured_data_id=None)
    batch = make_batch(("/l/a.log", ["from web"]), labels={"container": "web server"})
    batch.streams += make_batch(("/l/b.log", ["no label"])).streams
    with running(tmp_path / "sng", port) as sng:
        await sink.open()
        await sink.send(batch)
        await sink.close()
        got = await sng.wait_for(2)
    assert [(m["program"], m["message"]) for m in got] == [("webserver", "from web"), ("fallback", "no label")]
