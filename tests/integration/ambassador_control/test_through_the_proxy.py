"""The control plane inside the running ambassador: endpoint changes under load cost no request."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import aiohttp

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import http_get, run_sidecar
from tests.integration.ambassador_control.support import MakeUpstreams, eventually


async def burst(url: str, clients: int, per_client: int, statuses: Counter[object]) -> None:
    async def client(session: aiohttp.ClientSession) -> None:
        for _ in range(per_client):
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


async def test_file_discovery_change_under_load_drains_without_errors(tmp_path: Path, upstreams: MakeUpstreams) -> None:
    a, b, c, d = await upstreams(4)
    path = tmp_path / "endpoints"
    path.write_text(f"{a.address}\n{b.address}\n{c.address}\n")
    listener = {
        "name": "web",
        "port": 0,
        "cluster": {
            "endpoints_file": str(path),
            "health_check": {"kind": "http", "interval_secs": 0.2, "timeout_secs": 0.2},
        },
    }
    async with run_sidecar(Ambassador, listeners=[listener]) as sc:
        port = sc.plugin.listeners[0].port
        cluster = sc.plugin.listeners[0].cluster
        url = f"http://127.0.0.1:{port}/"
        statuses: Counter[object] = Counter()
        load = asyncio.create_task(burst(url, 8, 150, statuses))
        await eventually(lambda: b.hits > 20, "b serves traffic before it is removed")
        tmp = path.with_name("endpoints.tmp")
        tmp.write_text(f"{a.address}\n{c.address}\n{d.address}\n")
        os.replace(tmp, path)  # b leaves, d joins: a rollout step
        await eventually(lambda: {ep.port for ep in cluster.endpoints} == {a.port, c.port, d.port}, "b drained")
        await load
        assert statuses == {200: 1200}, statuses
        b_hits = b.hits
        await burst(url, 4, 50, statuses)
        assert b.hits == b_hits  # nothing reaches a removed endpoint once it is drained
        assert d.hits > 0  # the new one takes traffic
        status, text = await http_get(f"{sc.admin_url}/metrics")
        assert status == 200
        assert f'ambassador_endpoint_state{{cluster="web",endpoint="{d.address}",state="healthy"}} 1.0' in text
        assert 'ambassador_discovery_updates_total{cluster="web",source="file"} 2.0' in text


async def test_shorthand_dns_upstreams_resolve_to_a_real_server(upstreams: MakeUpstreams) -> None:
    (server,) = await upstreams(1)
    async with run_sidecar(Ambassador, listen_port=0, upstreams_dns=f"localhost:{server.port}") as sc:
        listener = sc.plugin.listeners[0]
        assert [ep.key for ep in listener.cluster.endpoints] == [f"127.0.0.1:{server.port}"]
        status, text = await http_get(f"http://127.0.0.1:{listener.port}/")
        assert (status, text) == (200, f"hello from {server.port}")
        assert listener.cluster.snapshot()["discovery"]["dns"]["updates"] == 1
