"""gRPC through the ambassador over h2c: real grpcio servers (own processes) and a real grpcio client."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import RunningSidecar, run_sidecar
from tests.integration.ambassador.conftest import listener
from tests.integration.ambassador.grpc_service import EchoClient, GrpcServer, grpc_server

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def servers(*names: str) -> AsyncIterator[list[GrpcServer]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(grpc_server(name)) for name in names]


@contextlib.asynccontextmanager
async def ambassador(upstreams: list[GrpcServer], **options: Any) -> AsyncIterator[tuple[RunningSidecar, int]]:
    cluster = {"protocol": "http2", **options.pop("cluster", {})}
    config = listener([s.address for s in upstreams], cluster=cluster, **options)
    async with run_sidecar(Ambassador, listeners=[config]) as sc:
        yield sc, sc.plugin.listeners[0].port


async def test_every_kind_of_method_passes_through() -> None:
    async with servers("s1") as ups, ambassador(ups) as (_, port):
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            assert await asyncio.to_thread(client.unary, b"hello", timeout=10) == b"s1:hello"
            got = await asyncio.to_thread(lambda: list(client.server_stream(b"5", timeout=10)))
            assert got == [b"s1:%d" % i for i in range(5)]
            parts = [b"a", b"b", b"c"]
            assert await asyncio.to_thread(client.client_stream, iter(parts), timeout=10) == b"s1:abc"
            echoed = await asyncio.to_thread(lambda: list(client.bidi(iter([b"x", b"y"]), timeout=10)))
            assert echoed == [b"s1:x", b"s1:y"]
        finally:
            client.close()
