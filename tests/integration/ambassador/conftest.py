from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import RunningSidecar, run_sidecar

Proxy = Callable[..., contextlib.AbstractAsyncContextManager[tuple[RunningSidecar, int]]]


def listener(endpoints: list[str], **options: Any) -> dict[str, Any]:
    """A listener config on a free port; cluster options under `cluster`."""
    cluster = {
        "health_check": {"kind": "none"},
        **({"endpoints": endpoints} if endpoints else {}),
        **options.pop("cluster", {}),
    }
    return {"name": options.pop("name", "web"), "port": 0, "cluster": cluster, **options}


@contextlib.asynccontextmanager
async def _proxy(engine: str, endpoints: list[str], **options: Any) -> AsyncIterator[tuple[RunningSidecar, int]]:
    settings = {"http_engine": engine, **options.pop("settings", {})}
    async with run_sidecar(Ambassador, listeners=[listener(endpoints, **options)], **settings) as sc:
        yield sc, sc.plugin.listeners[0].port


# Every test through `proxy` runs on both builds of the request path: the compiled one (the default
# wherever a compiler was present at install) and the pure Python one (the fallback).
@pytest.fixture(params=["compiled", "python"])
def proxy(request: pytest.FixtureRequest) -> Proxy:
    """`async with proxy([addr, ...], **listener_options) as (sidecar, port):`"""
    return functools.partial(_proxy, request.param)


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a raw stream: status, lower-cased headers, de-chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if head_only or status in (101, 204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, headers, bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return status, headers, await reader.read()


async def raw_request(port: int, data: bytes, count: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return [await asyncio.wait_for(read_response(reader), 10) for _ in range(count)]
    finally:
        writer.close()
