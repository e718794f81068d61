"""Real upstream servers for the ambassador's tests: nginx from a temp config, and small asyncio servers
that misbehave on purpose (hang, reset, close idle connections early)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from tests.support.nginx import Nginx, running_nginx

SERVER = """
        client_max_body_size 0;
        location = /hello {{ add_header x-served-by {name}; return 200 "hello from {name}\\n"; }}
        location = /slow {{ echo_sleep 0.2; echo "slow from {name}"; }}
        location = /echo-headers {{ echo "$echo_client_request_headers"; }}
        location = /upload {{
            # discards the body after reading it; answers with the byte count nginx saw
            echo_read_request_body;
            echo "got $content_length";
        }}
        location /files/ {{ root {dir}/www; }}
        location / {{ add_header x-served-by {name}; return 200 "{name} $request_uri\\n"; }}
"""


def nginx(name: str = "n1", files: dict[str, bytes] | None = None) -> contextlib.AbstractAsyncContextManager[Nginx]:
    """A real nginx named `name` (in its answers and x-served-by), serving `files` under /files/."""
    return running_nginx(SERVER, name=name, echo=True, files=files)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    """A raw asyncio server on a free port running `handler` per connection."""
    tasks: set[asyncio.Task[None]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            tasks.discard(task)
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")
