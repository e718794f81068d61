"""h2load (nghttp2's load generator) through the ambassador to an h2c nginx: every request of many
streams over a few connections answered by nginx, balanced one stream at a time."""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import run_sidecar
from tests.integration.ambassador.conftest import listener
from tests.support.nginx import Nginx, write_config

pytestmark = pytest.mark.timeout(120)  # h2load: Debian's nghttp2-client (.ci/packages/ambassador.txt)

SERVER = """
        location / {{ add_header x-served-by {name}; return 200 "{name}\\n"; }}
"""


@contextlib.asynccontextmanager
async def h2c_nginx(name: str) -> AsyncIterator[Nginx]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "www" / "files").mkdir(parents=True)
        nginx = Nginx(tmp, SERVER, name=name)
        # HTTP/2 with prior knowledge on a plain port: what `protocol: http2` speaks upstream.
        write_config(tmp, SERVER, nginx.port, name=name, listen="reuseport http2")
        try:
            await nginx.start()
            yield nginx
        finally:
            nginx.stop()


async def test_h2load_through_the_ambassador_gets_every_answer() -> None:
    async with h2c_nginx("n1") as n1, h2c_nginx("n2") as n2:
        config = listener([n1.address, n2.address], cluster={"protocol": "http2", "balancer": "round_robin"})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            port = sc.plugin.listeners[0].port
            proc = await asyncio.create_subprocess_exec(
                "h2load",
                "-n",
                "2000",
                "-c",
                "4",
                "-m",
                "50",
                f"http://127.0.0.1:{port}/",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 90)
            text = out.decode()
            upstreams = dict(sc.plugin.listeners[0].stats.upstream_connections)
            by_endpoint = {ep: n for (ep, _cls), n in sc.plugin.listeners[0].stats.requests.items()}
    assert proc.returncode == 0, text
    assert re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored", text), text
    assert re.search(r"status codes: 2000 2xx", text), text
    assert set(by_endpoint) == {n1.address, n2.address}
    assert all(900 <= n <= 1100 for n in by_endpoint.values()), by_endpoint  # round robin, stream by stream
    assert upstreams  # multiplexed over pooled HTTP/2 connections
