"""A listener left at its default host answers on IPv4 and IPv6 loopback: an app may resolve
`localhost` to either (several runtimes try `::1` first and do not fall back)."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from sidecars.testing import free_port, start_process
from tests.integration.ambassador.conftest import read_response
from tests.integration.ambassador.upstream_process import upstream_process


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("mode", ["http", "tcp"])
async def test_a_default_listener_answers_on_both_loopbacks(mode: str) -> None:
    if not _has_ipv6_loopback():
        pytest.fail("this machine has no ::1: the dual-stack test needs IPv6 loopback")
    port = free_port()
    async with upstream_process() as up:
        cluster = {"endpoints": [up.address], "health_check": {"kind": "none"}}
        settings = {"listeners": [{"name": "app", "port": port, "mode": mode, "cluster": cluster}]}
        command = [sys.executable, "-m", "sidecars.ambassador"]
        async with start_process("ambassador", settings, command=command) as proc:
            await proc.wait_http("/readyz", 200)
            answers = []
            for host in ("127.0.0.1", "::1"):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                status, _, body = await asyncio.wait_for(read_response(reader), 5)
                writer.close()
                answers.append((host, status, body))
            # Bound to the two addresses, not to a wildcard: 127.0.0.2 (loopback too, but another
            # address) is refused, as the Pod IP would be.
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.2", port)
    assert answers == [("127.0.0.1", 200, b"ok\n"), ("::1", 200, b"ok\n")]
