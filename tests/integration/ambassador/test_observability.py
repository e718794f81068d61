"""What operators see and set: metrics per status class, access log lines with the failure reason and
no secret from the query string, optional forwarding headers and Host rewriting."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from sidecars.core.redact import MARKER
from sidecars.testing import free_port, http_get, start_process
from tests.integration.ambassador.conftest import Proxy, raw_request
from tests.integration.ambassador.peers import nginx, tcp_server
from tests.integration.ambassador.upstream_process import upstream_process

LABELS = {"listener": "web", "cluster": "web"}


async def test_metrics_count_requests_by_endpoint_and_status_class(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address]) as (sc, port):
        for path in (b"/hello", b"/hello", b"/nope"):
            await raw_request(port, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        await raw_request(port, b"BAD\r\n\r\n")
        status, body = await http_get(sc.admin_url + "/metrics")
        assert status == 200
        ok = sc.sample("ambassador_requests_total", {**LABELS, "endpoint": n1.address, "code_class": "2xx"})
        assert ok == 3  # nginx answers 200 on every path here
        assert sc.sample("ambassador_request_duration_seconds_count", {**LABELS, "code_class": "2xx"}) == 3
        assert sc.sample("ambassador_request_duration_seconds_count", {**LABELS, "code_class": "5xx"}) is None
        assert sc.sample("ambassador_errors_total", {**LABELS, "reason": "bad_request"}) == 1
        assert "ambassador_upstream_connections" in body and "ambassador_client_connections" in body
        # Which build of the request path runs, for fleets that mix images and source installs.
        assert sc.sample("ambassador_http_engine_info", {"engine": sc.plugin.settings.http_engine}) == 1


async def test_access_log_all_and_errors_with_reason(proxy: Proxy) -> None:
    async with nginx("n1") as n1, proxy([n1.address], access_log="all") as (sc, port):
        await raw_request(port, b"GET /hello HTTP/1.1\r\nHost: a\r\nX-Request-Id: rid-7\r\n\r\n")
        lines = [e for e in sc.logs if e.get("event") == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["method"], line["path"], line["status"], line["request_id"]) == ("GET", "/hello", 200, "rid-7")
    assert line["endpoint"] == n1.address and line["tries"] == 1

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with (
        tcp_server(hang) as up,
        proxy([f"127.0.0.1:{up}"], per_try_timeout_secs=0.2, overall_timeout_secs=0.5, retries=0) as (sc, port),
    ):
        await raw_request(port, b"GET /h HTTP/1.1\r\nHost: a\r\n\r\n")
        failed = [e for e in sc.logs if e.get("event") == "request failed"]
        ok_lines = [e for e in sc.logs if e.get("event") == "request"]
    assert [(e["status"], e["reason"]) for e in failed] == [(504, "upstream_timeout")]
    assert ok_lines == []  # the default logs failures only


async def test_forwarded_for_and_host_rewrite(proxy: Proxy) -> None:
    async with (
        nginx("n1") as n1,
        proxy([n1.address], forwarded="x-forwarded-for", host_rewrite="users.internal") as (_, port),
    ):
        ((_, _, body),) = await raw_request(port, b"GET /echo-headers HTTP/1.1\r\nHost: localhost:7001\r\n\r\n")
    lowered = body.lower()
    assert b"x-forwarded-for: 127.0.0.1" in lowered
    assert b"host: users.internal" in lowered and b"localhost:7001" not in lowered


SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize(
    ("mode", "shown"),
    [
        ("redact", "/hello?token=**********&page=**********&**********"),
        ("drop", "/hello"),
        ("full", f"/hello?token=**********&page=2&{SECRET}"),  # as every log line masks it
    ],
)
async def test_access_log_query_values_are_redacted_unless_asked_otherwise(proxy: Proxy, mode: str, shown: str) -> None:
    target = f"/hello?token={SECRET}&page=2&{SECRET}".encode()
    options = {"access_log": "all"} if mode == "redact" else {"access_log": "all", "access_log_query": mode}
    async with nginx("n1") as n1, proxy([n1.address], **options) as (sc, port):
        ((status, _, _),) = await raw_request(port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        # A malformed request after its target: logged as a bad request, with the same rule.
        ((bad, _, _),) = await raw_request(port, b"GET " + target + b" HTTP/1.1\r\nno colon here\r\n\r\n")
        lines = {e["event"]: e for e in sc.logs if e.get("event") in ("request", "bad request")}
    assert (status, bad) == (200, 400)
    assert lines["request"]["path"] == shown
    assert lines["bad request"]["path"] == shown
    if mode != "full":
        assert SECRET not in repr(sc.logs)


async def test_access_log_failure_lines_redact_the_query_too(proxy: Proxy) -> None:
    async with proxy(["127.0.0.1:9"], retries=0) as (sc, port):  # discard port: nothing listens
        ((status, _, _),) = await raw_request(port, f"GET /x?api_key={SECRET} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        failed = sc.events("request failed")
    assert status == 502
    assert [e["path"] for e in failed] == ["/x?api_key=**********"]
    assert SECRET not in repr(sc.logs)


@pytest.mark.parametrize(
    ("mode", "shown"),
    [
        (None, f"/hello?page={MARKER}&token={MARKER}&{MARKER}"),
        ("drop", "/hello"),
        # What every log line masks stays masked: the secret-looking parameter, not the others.
        ("full", f"/hello?page=2&token={MARKER}&bare-{SECRET}"),
    ],
)
async def test_the_access_log_of_a_real_process_shows_what_its_mode_allows(mode: str | None, shown: str) -> None:
    """The JSON lines on stdout, with the core's redaction of every line on top of the access log's."""
    port = free_port()
    async with upstream_process() as up:
        listener = {
            "name": "web",
            "port": port,
            "cluster": {"endpoints": [up.address], "health_check": {"kind": "none"}},
            "access_log": "all",
            **({"access_log_query": mode} if mode else {}),
        }
        settings = {"listeners": [listener], "shutdown_timeout_secs": 5.0}
        async with start_process("ambassador", settings, command=[sys.executable, "-m", "sidecars.ambassador"]) as proc:
            await proc.wait_http("/readyz", 200)
            target = f"/hello?page=2&token={SECRET}&bare-{SECRET}".encode()
            ((status, _, _),) = await raw_request(port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            proc.proc.terminate()
            assert await proc.wait_exit(15) == 0
            output = proc.read_output()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert status == 200
    assert [line["path"] for line in lines if line["event"] == "request"] == [shown]
    assert f"token={SECRET}" not in output
    if mode != "full":
        assert SECRET not in output
