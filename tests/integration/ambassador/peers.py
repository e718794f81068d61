"""Real upstream servers for the ambassador's tests: nginx from a temp config, and small asyncio servers
that misbehave on purpose (hang, reset, close idle connections early)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from sidecars.testing import free_port

NGINX_CONF = """
daemon off;
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location = /hello {{ add_header x-served-by {name}; return 200 "hello from {name}\\n"; }}
        location = /slow {{ echo_sleep 0.2; echo "slow from {name}"; }}
        location = /echo-headers {{ echo "$echo_client_request_headers"; }}
        location = /upload {{
            # discards the body after reading it; answers with the byte count nginx saw
            echo_read_request_body;
            echo "got $content_length";
        }}
        location /files/ {{ root {tmp}/www; }}
        location / {{ add_header x-served-by {name}; return 200 "{name} $request_uri\\n"; }}
    }}
}}
"""


ECHO_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_http_echo_module.so",  # Debian's libnginx-mod-http-echo
    "/usr/share/nginx/modules/ngx_http_echo_module.so",
)


def echo_module() -> str:
    """nginx's echo module (slow and header-echoing test endpoints); missing is an error, not a skip."""
    for path in ECHO_MODULE_PATHS:
        if Path(path).is_file():
            return path
    raise FileNotFoundError(f"nginx echo module not found in {ECHO_MODULE_PATHS}: install libnginx-mod-http-echo")


class Nginx:
    def __init__(self, name: str, port: int, tmp: Path, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.port = port
        self.tmp = tmp
        self.proc = proc

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """Crash it: SIGKILL the worker (a child of the master, so first) and then the master."""
        if self.proc.poll() is None:
            subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)], check=False)
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # nginx's fast shutdown: the master stops its worker
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


async def _wait_port(port: int, wait_secs: float = 10.0) -> None:
    deadline = time.monotonic() + wait_secs
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def nginx(name: str = "n1", files: dict[str, bytes] | None = None) -> AsyncIterator[Nginx]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "www" / "files").mkdir(parents=True)
        for fname, content in (files or {}).items():
            (tmp / "www" / "files" / fname).write_bytes(content)
        port = free_port()
        conf = tmp / "nginx.conf"
        modules = f"load_module {echo_module()};\n"
        conf.write_text(modules + NGINX_CONF.format(tmp=tmp, port=port, name=name))
        proc = subprocess.Popen([binary, "-p", str(tmp), "-c", str(conf)], stderr=subprocess.PIPE)
        server = Nginx(name, port, tmp, proc)
        try:
            await _wait_port(port)
            yield server
        finally:
            server.stop()


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
