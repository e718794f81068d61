"""Real shards and the real twemproxy for the sharding tests: redis-server, memcached and nutcracker from
Debian's packages, each on a free 127.0.0.1 port with its files in a temp directory.

`Peer.start()` waits until the port accepts; `stop()` is a clean shutdown (SIGTERM), `kill()` a crash
(SIGKILL); both can be followed by `start()` again on the same port, as a restarted shard would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from sidecars.testing import free_port


def _binary(name: str, fallback: str) -> str:
    path = shutil.which(name) or fallback
    if not Path(path).exists():
        raise FileNotFoundError(f"{name} not found: install it (see .ci/packages/ambassador-sharding.txt)")
    return path


class Peer:
    name = "peer"

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.dir = directory
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    async def start(self) -> None:
        log = (self.dir / f"{self.name}-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                text = (self.dir / f"{self.name}-{self.port}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} did not start on {self.address}: {text}")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel does), nothing answers: a hung server."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class RedisServer(Peer):
    name = "redis"

    def __init__(self, directory: Path, password: str | None = None, **kwargs: object) -> None:
        super().__init__(directory, **kwargs)  # type: ignore[arg-type]
        self.password = password

    def command(self) -> list[str]:
        cmd = [_binary("redis-server", "/usr/bin/redis-server"), "--port", str(self.port), "--bind", self.host]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no"]
        cmd += ["--dbfilename", f"dump-{self.port}.rdb", "--loglevel", "warning"]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd


class Memcached(Peer):
    name = "memcached"

    def command(self) -> list[str]:
        binary = _binary("memcached", "/usr/bin/memcached")
        # -u root: memcached refuses to run as root without naming a user; -I 2m: the 1 MiB value test
        listen = ["-l", self.host, "-p", str(self.port), "-U", "0"]
        return [binary, *listen, "-m", "128", "-t", "1", "-u", "root", "-I", "2m"]


class Nutcracker(Peer):
    """twemproxy with one pool named `pool` over `servers` ("host:port:weight [name]")."""

    name = "nutcracker"

    def __init__(self, directory: Path, servers: Sequence[str], redis: bool = True, **pool: object) -> None:
        super().__init__(directory)
        self.stats_port = free_port()
        lines = [
            "pool:",
            f"  listen: 127.0.0.1:{self.port}",
            f"  redis: {'true' if redis else 'false'}",
            *(f"  {key}: {value}" for key, value in pool.items()),
            "  servers:",
            *(f"    - {s}" for s in servers),
        ]
        self.conf = directory / f"nutcracker-{self.port}.yml"
        self.conf.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        binary = _binary("nutcracker", "/usr/sbin/nutcracker")
        files = ["-o", str(self.dir / f"nutcracker-{self.port}.out"), "-p", str(self.dir / f"{self.port}.pid")]
        return [binary, "-c", str(self.conf), "-s", str(self.stats_port), "-a", "127.0.0.1", "-v", "4", *files]


def stop_all(peers: Sequence[Peer]) -> None:
    """Signal every peer first, then wait: memcached takes most of a second to exit."""
    for peer in peers:
        if peer.proc is not None and peer.proc.poll() is None:
            peer.proc.terminate()
    for peer in peers:
        peer.stop()


@contextlib.asynccontextmanager
async def redis_servers(count: int, password: str | None = None) -> AsyncIterator[list[RedisServer]]:
    with tempfile.TemporaryDirectory() as tmp:
        servers = [RedisServer(Path(tmp), password=password) for _ in range(count)]
        try:
            await asyncio.gather(*(s.start() for s in servers))
            yield servers
        finally:
            stop_all(servers)


@contextlib.asynccontextmanager
async def memcached_servers(
    count: int, hosts: Sequence[str] = (), port: int | None = None
) -> AsyncIterator[list[Memcached]]:
    """`hosts` and `port`: put each server on its own loopback address with one shared port (11211 to
    exercise the libmemcached naming rule)."""
    with tempfile.TemporaryDirectory() as tmp:
        if hosts:
            servers = [Memcached(Path(tmp), host=h, port=port) for h in hosts]
        else:
            servers = [Memcached(Path(tmp)) for _ in range(count)]
        try:
            await asyncio.gather(*(s.start() for s in servers))
            yield servers
        finally:
            stop_all(servers)


@contextlib.asynccontextmanager
async def nutcracker(servers: Sequence[str], redis: bool = True, **pool: object) -> AsyncIterator[Nutcracker]:
    with tempfile.TemporaryDirectory() as tmp:
        proxy = Nutcracker(Path(tmp), servers, redis=redis, **pool)
        try:
            await proxy.start()
            yield proxy
        finally:
            proxy.stop()
