"""A real nginx on 127.0.0.1 from a config in a temp directory: the one config and runner the tests
and the benchmarks share.

`write_config(directory, server, port)` writes a config whose one server block holds `server` (its
`{port}`, `{dir}` and `{name}` placeholders filled in); `command(directory)` runs it. `Nginx(directory,
server)` does both for a test: `start()` waits until the port answers, `stop()` is nginx's fast
shutdown, `kill()` a crash; start and stop as often as a test needs, on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sidecars.testing import free_port

NGINX_CONF = """
{modules}
daemon off;
master_process on;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{http}
    server {{
        listen 127.0.0.1:{port} {listen};
{server}
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


def write_config(
    directory: Path,
    server: str,
    port: int,
    *,
    name: str = "nginx",
    echo: bool = False,
    http: str = "",
    listen: str = "reuseport",
    worker_connections: int = 1024,
) -> Path:
    """`directory/nginx.conf`: one server on 127.0.0.1:`port` holding `server` (placeholders filled
    in), `http` (upstream blocks, directives) as it is at the http level, `listen` the listen options."""
    modules = f"load_module {echo_module()};" if echo else ""
    body = server.format(port=port, dir=directory, name=name)
    conf = NGINX_CONF.format(
        modules=modules,
        dir=directory,
        port=port,
        server=body,
        http=http,
        listen=listen,
        worker_connections=worker_connections,
    )
    path = directory / "nginx.conf"
    path.write_text(conf)
    return path


def command(directory: Path) -> list[str]:
    """The command line that runs the config `write_config` wrote into `directory`, in the foreground."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")]


class Nginx:
    def __init__(self, directory: Path, server: str, *, name: str = "nginx", echo: bool = False) -> None:
        self.dir = directory
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        write_config(directory, server, self.port, name=name, echo=echo)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            command(self.dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: kill() reaches master and workers at once
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr and self.proc.poll() is not None else ""
                self.kill()
                raise RuntimeError(f"nginx did not start on {self.address}: {err}")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        """nginx's fast shutdown: the master stops its worker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """A crash: SIGKILL to the whole process group in one call. Killing the worker first would let
        the master respawn one, which outlives the master and goes on serving the port."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.asynccontextmanager
async def running_nginx(
    server: str, *, name: str = "nginx", echo: bool = False, files: dict[str, bytes] | None = None
) -> AsyncIterator[Nginx]:
    """An nginx in its own temp directory, `files` under `{dir}/www/files/`, stopped on the way out."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "www" / "files").mkdir(parents=True)
        for fname, content in (files or {}).items():
            (tmp / "www" / "files" / fname).write_bytes(content)
        nginx = Nginx(tmp, server, name=name, echo=echo)
        try:
            await nginx.start()
            yield nginx
        finally:
            nginx.stop()
