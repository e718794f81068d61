"""The admin pages of real sidecar processes, as a person and as a script read them.

A person runs `kubectl port-forward` and opens `/` in a browser: here Debian's Chromium, headless,
against `python -m sidecars.ambassador` proxying to a real upstream. The rendered DOM must name the
sidecar, its version and state, show every check the probe endpoints report and the key figures
(endpoints healthy, requests served, the endpoint's row), and each link of the index must lead to a
page. The page holds no script (its CSP forbids them), so what the DOM shows is what the server
sent. A script asks with `Accept: application/json` and gets the same document as JSON; a browser's
Accept gets HTML. `/config` never shows a secret: the adapter runs with a password from an env var,
a token from a file and a token in its target's URL, and neither the JSON nor the page a browser
shows holds any of them, only the redaction marker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest
from aiohttp import web

import sidecars
from sidecars.core.http import start_server
from sidecars.testing import Process, free_port, http_get, start_process
from tests.support.browser import Dom, dump_dom

MARKER = "**********"
# What Chromium and Firefox send for a page typed into the address bar.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    server = await start_server(app, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.fixture
async def ambassador(upstream: str) -> AsyncIterator[tuple[Process, int]]:
    port = free_port()
    listener = {"name": "web", "port": port, "cluster": {"endpoints": [upstream], "health_check": {"kind": "tcp"}}}
    command = [sys.executable, "-m", "sidecars.ambassador"]
    async with start_process("ambassador", {"listeners": [listener]}, command=command) as proc:
        await proc.wait_http("/readyz", 200)
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{port}/x") as resp:
                    assert resp.status == 200 and await resp.text() == "hello"
        yield proc, port


async def test_status_page_in_a_browser_against_a_running_ambassador(
    ambassador: tuple[Process, int], upstream: str, tmp_path: Path
) -> None:
    proc, _ = ambassador
    _, body = await http_get(proc.admin_url + "/", headers={"Accept": "application/json"})
    doc = json.loads(body)
    dom = Dom(await asyncio.to_thread(dump_dom, proc.admin_url + "/", tmp_path / "profile"))

    text = " ".join(" ".join(dom.text).split())
    assert "ambassador ready" in text  # the heading: name and state
    assert f"sidecars {sidecars.__version__}" in text
    assert "ambassador: ready" in dom.text  # the tab's title
    assert [tag for tag, _ in dom.elements if tag in ("script", "iframe", "form")] == []

    checks = dom.table("checks")
    assert checks[0] == ["endpoint", "check", "status", "reason"]
    shown = {(row[0], row[1], row[2]) for row in checks[1:]}
    for endpoint, results in doc["checks"].items():
        for r in results:
            assert (f"/{endpoint}", r["name"], r["status"]) in shown, (endpoint, r)
    assert ("/readyz", "clusters", "pass") in shown and ("/livez", "ping", "pass") in shown

    figures = {row[0]: row[1] for row in dom.table("figures")}
    assert figures["endpoints healthy"] == "1 of 1"
    assert figures["requests"] == "3" and figures["listeners"] == "1"
    assert figures["http engine"] in ("compiled", "python")
    (endpoints,) = [rows for tid, rows in dom.tables if tid is None and rows and "endpoint" in rows[0]]
    header, row = endpoints
    assert dict(zip(header, row, strict=True))["endpoint"] == upstream
    assert dict(zip(header, row, strict=True))["state"] == "healthy"

    links = dom.links()
    assert {"/", "/config", "/metrics", "/clusters", "/readyz?verbose", "/livez?verbose"} <= set(links)
    for link in dict.fromkeys(links):
        status, _ = await http_get(urljoin(proc.admin_url + "/", link))
        assert status == 200, link  # ready and healthy: every page answers 200


async def test_accept_chooses_json_or_html(ambassador: tuple[Process, int]) -> None:
    proc, _ = ambassador
    async with aiohttp.ClientSession() as session:
        async with session.get(proc.admin_url + "/", headers={"Accept": "application/json"}) as resp:
            assert resp.content_type == "application/json"
            doc = json.loads(await resp.text())
        async with session.get(proc.admin_url + "/", headers={"Accept": BROWSER_ACCEPT}) as resp:
            assert resp.content_type == "text/html"
            page = await resp.text()
        async with session.get(proc.admin_url + "/", headers={"Accept": "*/*"}) as resp:
            assert resp.content_type == "text/html"  # curl's default: a person at a terminal
    assert (doc["sidecar"], doc["state"], doc["version"]) == ("ambassador", "ready", sidecars.__version__)
    assert page.startswith("<!DOCTYPE html>") and "<h1>ambassador " in page


@pytest.fixture
async def guarded_target(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A /metrics page behind basic auth: the adapter is ready only if it sent the password."""
    password = f"s3cr3t-pw-{uuid.uuid4().hex[:10]}"
    expected = "Basic " + base64.b64encode(f"scraper:{password}".encode()).decode()

    async def metrics(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        return web.Response(text="demo_up 1\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = await start_server(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}/metrics", password
    finally:
        await server.close()


async def test_config_never_shows_a_secret_as_json_or_in_a_browser(
    guarded_target: tuple[str, str], tmp_path: Path
) -> None:
    target, password = guarded_target
    url_token, push_token = (f"s3cr3t-{tag}-{uuid.uuid4().hex[:10]}" for tag in ("url", "push"))
    token_file = tmp_path / "push-token"
    token_file.write_text(push_token + "\n")
    settings = {
        "target_url": f"{target}?access_token={url_token}",
        "target_basic_auth_username": "scraper",
        "push_url": f"http://127.0.0.1:{free_port()}/api/v1/write",
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "scrape_interval_secs": 0.2,
    }
    env = {"ADAPTER_TARGET_BASIC_AUTH_PASSWORD": password, "ADAPTER_PUSH_BEARER_TOKEN_FILE": str(token_file)}
    command = [sys.executable, "-m", "sidecars.adapter"]
    async with start_process("adapter", settings, env=env, command=command) as proc:
        await proc.wait_http("/readyz", 200)  # scraped: the password reached the target
        _, as_json = await http_get(proc.admin_url + "/config", headers={"Accept": "application/json"})
        _, as_browser = await http_get(proc.admin_url + "/config", headers={"Accept": BROWSER_ACCEPT})
        dom = Dom(await asyncio.to_thread(dump_dom, proc.admin_url + "/config", tmp_path / "profile"))
        _, status_page = await http_get(proc.admin_url + "/", headers={"Accept": BROWSER_ACCEPT})
        _, status_json = await http_get(proc.admin_url + "/", headers={"Accept": "application/json"})
    shown_in_browser = "".join(dom.text)
    for page in (as_json, as_browser, shown_in_browser, status_page, status_json):
        for value in (password, url_token, push_token):
            assert value not in page
    config = json.loads(as_json)["config"]
    assert config["target_basic_auth_password"] == MARKER and config["push_bearer_token"] == MARKER
    assert config["target_url"] == f"{target}?access_token={MARKER}"
    for page in (as_browser, shown_in_browser):
        assert f"target_basic_auth_password: '{MARKER}'" in page
        assert f"push_bearer_token: '{MARKER}'" in page
        assert f"target_url: {target}?access_token={MARKER}" in page
        assert "target_basic_auth_username: scraper" in page  # not a secret: shown
