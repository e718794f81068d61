"""The built-in sidecars running for real, shared by the monitoring tests (dashboards, alerts, admin pages)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from sidecars.adapter.plugin import Adapter
from sidecars.ambassador.plugin import Ambassador
from sidecars.core.http import start_server
from sidecars.injector.plugin import Injector
from sidecars.tailer.plugin import Tailer
from sidecars.testing import RunningSidecar, http_get, run_sidecar
from tests.integration.injector.conftest import SERVICE, SecretVolume


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[dict[str, RunningSidecar]]:
    """Each sidecar, real and doing its work on 127.0.0.1."""

    async def text(body: str, _: web.Request) -> web.Response:
        return web.Response(text=body)

    app = web.Application()
    app.router.add_get("/metrics", functools.partial(text, "demo_queue_depth 3\n"))
    app.router.add_post("/ingest", functools.partial(text, "ok"))
    app.router.add_get("/", functools.partial(text, "hello"))
    server = await start_server(app, "127.0.0.1", 0)
    port = server.port
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("one\ntwo\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: queue\n    expr: demo_queue_depth > 100\n    severity: fail\n")
    ca = trustme.CA()
    volume = SecretVolume(tmp_path / "tls")
    volume.install(ca.issue_cert(SERVICE))
    listener = {
        "name": "web",
        "port": 0,
        "cluster": {"endpoints": [f"127.0.0.1:{port}"], "health_check": {"kind": "none"}},
    }
    try:
        async with (
            run_sidecar(Tailer, include=[f"{logs}/*.log"], checkpoint_dir=str(tmp_path / "cp"), sink="http",
                        sink_config={"url": f"http://127.0.0.1:{port}/ingest"}, batch_wait_secs=0.05) as tailer,
            run_sidecar(Ambassador, listeners=[listener]) as ambassador,
            run_sidecar(Adapter, target_url=f"http://127.0.0.1:{port}/metrics", rules_file=str(rules),
                        listen_host="127.0.0.1", listen_port=0, scrape_interval_secs=0.2,
                        scrape_timeout_secs=0.2) as adapter,
            run_sidecar(Injector, listen_host="127.0.0.1", listen_port=0, tls_cert_file=str(volume.cert),
                        tls_key_file=str(volume.key)) as injector,
        ):  # fmt: skip
            status, _ = await http_get(f"http://127.0.0.1:{ambassador.plugin.listeners[0].port}/")
            assert status == 200
            yield {"tailer": tailer, "ambassador": ambassador, "adapter": adapter, "injector": injector}
    finally:
        await server.close()


@pytest.fixture
async def pages(running: dict[str, RunningSidecar]) -> dict[str, str]:
    """Each sidecar's /metrics page."""
    out: dict[str, str] = {}
    for name, sc in running.items():
        status, page = await http_get(sc.admin_url + "/metrics")
        assert status == 200
        out[name] = page
    return out
