"""What a redis or memcached listener adds to a listener: its secrets, its health probe, its proxy.

Construction does no I/O; `load()` reads the password files when the listener starts (before the
first health check, which authenticates with the server password), with the trailing newline
removed as Kubernetes Secret files usually have one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from sidecars.ambassador.cluster import health
from sidecars.ambassador.cluster.sharding import HASHING
from sidecars.ambassador.proxy import shard_metrics
from sidecars.ambassador.proxy.memcached_proxy import MemcachedProxy
from sidecars.ambassador.proxy.redis_proxy import RESP, RedisProxy
from sidecars.ambassador.proxy.sharded_proxy import ShardedProxy
from sidecars.ambassador.proxy.shards import ShardSet

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from sidecars.ambassador.cluster.cluster import Cluster
    from sidecars.ambassador.cluster.config import HealthCheckConfig
    from sidecars.ambassador.cluster.endpoint import Endpoint
    from sidecars.ambassador.proxy.stats import ListenerStats
    from sidecars.ambassador.settings import ListenerConfig


def _read_secret(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read {what} file {path}: {exc.strerror or exc}") from None


class ShardedSetup:
    def __init__(self, config: ListenerConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.registry = registry
        self.server_password: bytes | None = None
        self.client_password: bytes | None = None

    def load(self) -> None:
        sh = self.config.sharding
        self.server_password = _read_secret(sh.server_password_file, "sharding.server_password_file")
        self.client_password = _read_secret(sh.client_password_file, "sharding.client_password_file")

    async def probe(self, config: HealthCheckConfig, endpoint: Endpoint) -> str | None:
        return await health.probe(config, endpoint, self.server_password)

    def proxy(
        self, cluster: Cluster, stats: ListenerStats, loop: asyncio.AbstractEventLoop, log: FilteringBoundLogger
    ) -> ShardedProxy:
        cfg = self.config
        shards = ShardSet(cfg.name, cfg.sharding, cluster, log)
        shard_metrics.attach(self.registry, shards)
        builds = {"hashing": HASHING} if cfg.mode == "memcached" else {"hashing": HASHING, "parser": RESP}
        log.info("sharded request path", **{k: f"{b.name} ({b.reason})" for k, b in builds.items()})
        if cfg.mode == "redis":
            return RedisProxy(
                cfg,
                cluster,
                stats,
                loop,
                log,
                shards,
                server_password=self.server_password,
                client_password=self.client_password,
            )
        return MemcachedProxy(cfg, cluster, stats, loop, log, shards)
