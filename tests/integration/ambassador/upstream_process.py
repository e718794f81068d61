"""An HTTP/1.1 upstream in its own process that fails on request, and counts what reached it.

`python -m tests.integration.ambassador.upstream_process` listens on a free 127.0.0.1 port, prints
`listening <port>` and serves keep-alive HTTP/1.1 with Content-Length bodies. What it does depends
on the path (a query string is ignored):

- `/status/<code>`: answers `<code>` with a short body;
- `/reset`: reads the request, body included, and closes the connection without answering;
- `/hang`: reads the request and never answers;
- `/sleep/<ms>`: answers 200 after `<ms>` milliseconds;
- anything else: 200.

Every request is recorded when its body has been read: `GET /__hits` (not recorded itself) answers
JSON `{"<METHOD> <path>": [body length of each request, ...]}`. In a process of its own it shares
nothing with the proxy under test, and `kill()` is a real crash (SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

MAX_HEAD = 65536
ROOT = Path(__file__).resolve().parents[3]  # where `tests` is importable from


class Upstream:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def hits(self) -> dict[str, list[int]]:
        """What reached this upstream: request key -> the body length of each request."""
        async with aiohttp.ClientSession() as session, session.get(f"http://{self.address}/__hits") as resp:
            result: dict[str, list[int]] = await resp.json(content_type=None)
            return result

    async def count(self, key: str) -> int:
        return len((await self.hits()).get(key, []))

    def kill(self) -> None:
        """A crash: SIGKILL, so the kernel closes every connection it had, requests in flight included."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@contextlib.asynccontextmanager
async def upstream_process() -> AsyncIterator[Upstream]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.ambassador.upstream_process"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        if not line.startswith(b"listening "):
            raise RuntimeError(f"upstream process did not start: {line!r}")
        yield Upstream(proc, int(line.split()[1]))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- the server, run in its own process ---------------------------------------------------------------

_hits: defaultdict[str, list[int]] = defaultdict(list)


def _response(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            path = target.split("?", 1)[0]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if path == "/__hits":
                writer.write(_response(200, json.dumps(_hits).encode()))
                continue
            _hits[f"{method} {path}"].append(len(body))
            if path == "/reset":
                return
            if path == "/hang":
                await reader.read()  # until the proxy gives up and closes
                return
            if path.startswith("/status/"):
                code = int(path.rsplit("/", 1)[1])
                writer.write(_response(code, b"status %d\n" % code))
            elif path.startswith("/sleep/"):
                await asyncio.sleep(int(path.rsplit("/", 1)[1]) / 1000.0)
                writer.write(_response(200, b"slept\n"))  # head and body in one write
            else:
                writer.write(_response(200, b"ok\n"))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _main() -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0, limit=MAX_HEAD)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main())
