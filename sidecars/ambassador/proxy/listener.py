"""One listener: its cluster, its proxy (HTTP, TCP, redis or memcached) and its listening socket, started and
drained together.

Order matters for readiness: the cluster starts first (discovery loaded, first health check done), the
socket is bound after, so a connection the app makes once we report ready always finds endpoints.
On drain the socket closes (no new connections), the proxy finishes what is in flight and answers
`Connection: close`; `stop()` then cuts what is left and stops the cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from sidecars.ambassador.cluster import health
from sidecars.ambassador.cluster.cluster import Cluster
from sidecars.ambassador.proxy.access_log import AccessLog
from sidecars.ambassador.proxy.client_limit import ClientLimit
from sidecars.ambassador.proxy.headers import local_response
from sidecars.ambassador.proxy.http_proxy import HttpProxy
from sidecars.ambassador.proxy.sharded_listener import ShardedSetup
from sidecars.ambassador.proxy.sharded_proxy import ShardedProxy
from sidecars.ambassador.proxy.stats import ListenerStats, StatsCollector
from sidecars.ambassador.proxy.tcp_proxy import TcpProxy
from sidecars.ambassador.settings import SHARDED_MODES, ListenerConfig
from sidecars.core import listen

BACKLOG = 1024


class Listener:
    def __init__(
        self,
        config: ListenerConfig,
        registry: CollectorRegistry,
        collector: StatsCollector,
        log: FilteringBoundLogger,
        client_limit: ClientLimit,
        http_proxy_class: type[HttpProxy] = HttpProxy,
    ) -> None:
        self.config = config
        self._http_proxy_class = http_proxy_class  # this source's class or its compiled twin (engine.py)
        self.log = log.bind(listener=config.name)
        self.stats = ListenerStats(config.name, config.name)
        self.sharded = ShardedSetup(config, registry) if config.mode in SHARDED_MODES else None
        probe = self.sharded.probe if self.sharded is not None else health.probe
        self.cluster = Cluster(config.name, config.cluster, registry, self.log, probe=probe)
        self._collector = collector
        self._client_limit = client_limit
        self.proxy: HttpProxy | TcpProxy | ShardedProxy | None = None
        self.servers: list[asyncio.Server] = []  # one per address (IPv4 and IPv6 loopback by default)
        self.addresses: list[str] = []
        self.port = config.port
        self._cluster_started = False

    @property
    def bound(self) -> bool:
        return bool(self.servers)

    async def start(self) -> None:
        """Start the cluster, then bind; safe to call again after a restart of `run`."""
        if not self._cluster_started:
            if self.sharded is not None:
                self.sharded.load()  # the password files, before the first (authenticated) health check
            await self.cluster.start()
            self._cluster_started = True
        if self.servers:
            return
        loop = asyncio.get_running_loop()
        cfg = self.config
        proxy: HttpProxy | TcpProxy | ShardedProxy
        if cfg.mode == "http":
            access = AccessLog(self.log, cfg.name, cfg.access_log, cfg.access_log_sample_percent, cfg.access_log_query)
            proxy = self._http_proxy_class(cfg, self.cluster, self.stats, access, loop)
            self.cluster.on_removed(proxy.on_endpoint_removed)
            refusal = local_response(503, "client_connection_limit", close=True)
        elif isinstance(self.proxy, ShardedProxy):
            proxy = self.proxy  # after a restart of `run`: its shard set already follows the cluster
            refusal = b""
        elif self.sharded is not None:
            proxy = self.sharded.proxy(self.cluster, self.stats, loop, self.log)
            refusal = b""
        else:
            proxy = TcpProxy(cfg, self.cluster, self.stats, loop)
            refusal = b""
        self.proxy = proxy
        try:
            bound = listen.bind(cfg.host, cfg.port)
        except OSError as exc:
            raise OSError(exc.errno, f"listener {cfg.name}: {exc.strerror}") from exc
        # The request paths' protocols are asyncio protocols by their methods: a compiled (extension)
        # type cannot inherit from asyncio.Protocol.
        factory = self._client_limit.gate(cast(Callable[[], asyncio.BaseProtocol], proxy), self.stats, refusal)
        try:
            for sock in bound.sockets:
                self.servers.append(await loop.create_server(factory, sock=sock, backlog=BACKLOG))
        except BaseException:
            for server in self.servers:
                server.close()
            self.servers = []
            bound.close()
            raise
        self.port, self.addresses = bound.port, bound.addresses
        for address, why in bound.skipped:
            self.log.warning("listener: address left out, the node lacks its IP version", address=address, why=why)
        self._collector.add(self.stats)
        self.log.info(
            "listening", addresses=self.addresses, port=self.port, mode=cfg.mode, endpoints=len(self.cluster.endpoints)
        )

    def sweep(self) -> None:
        if self.proxy is not None:
            self.proxy.sweep()

    def active_connections(self) -> int:
        proxy = self.proxy
        if proxy is None:
            return 0
        return len(proxy.sessions) if isinstance(proxy, TcpProxy) else len(proxy.clients)

    def stop_accepting(self) -> None:
        for server in self.servers:
            server.close()
        if self.proxy is not None:
            self.proxy.start_drain()

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        if self.proxy is not None:
            self.proxy.close_all()
        if self.servers:
            # Servers' wait_closed() waits for connections on some Pythons; they are aborted above.
            await asyncio.sleep(0)
            self.servers = []
        self._collector.remove(self.stats)
        # Also a cluster never started: its series were attached when it was built.
        await self.cluster.stop()
        self._cluster_started = False
