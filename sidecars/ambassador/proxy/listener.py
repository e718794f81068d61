"""One listener: its cluster, its proxy (HTTP, TCP, redis or memcached) and its listening socket, started and
drained together.

Order matters for readiness: the cluster starts first (discovery loaded, first health check done), the
socket is bound after, so a connection the app makes once we report ready always finds endpoints.
On drain the socket closes (no new connections), the proxy finishes what is in flight and answers
`Connection: close`; `stop()` then cuts what is left and stops the cluster.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import cast

from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from sidecars.ambassador.cluster import health
from sidecars.ambassador.cluster.cluster import Cluster
from sidecars.ambassador.cluster.upstream_tls import H2, HTTP1, Alpn, UpstreamTls
from sidecars.ambassador.proxy.access_log import AccessLog
from sidecars.ambassador.proxy.client_limit import ClientLimit
from sidecars.ambassador.proxy.headers import local_response
from sidecars.ambassador.proxy.http2_detect import detecting
from sidecars.ambassador.proxy.http2_server import Http2Proxy
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
        self.tls: UpstreamTls | None = None
        if config.cluster.tls is not None:
            self.tls = UpstreamTls(
                config.name,
                config.cluster.tls,
                self.log,
                profiles=alpn_profiles(config),
                poll_secs=config.cluster.tls_poll_secs,
            )
            probe = functools.partial(health.probe, tls=self.tls)
        self.cluster = Cluster(config.name, config.cluster, registry, self.log, probe=probe, tls=self.tls)
        self._collector = collector
        self._client_limit = client_limit
        self.proxy: HttpProxy | TcpProxy | ShardedProxy | None = None
        self.http2: Http2Proxy | None = None  # HTTP/2 clients of an http listener, beside `proxy`
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
        factory: Callable[[], asyncio.BaseProtocol] | None = None
        if cfg.mode == "http":
            access = AccessLog(self.log, cfg.name, cfg.access_log, cfg.access_log_sample_percent, cfg.access_log_query)
            proxy = self._http_proxy_class(cfg, self.cluster, self.stats, access, loop)
            self.cluster.on_removed(proxy.on_endpoint_removed)
            refusal = local_response(503, "client_connection_limit", close=True)
            if cfg.http2.enabled or cfg.cluster.protocol == "http2":
                if self.http2 is None:
                    self.http2 = Http2Proxy(cfg, self.cluster, self.stats, access, loop)
                    self.cluster.on_removed(self.http2.on_endpoint_removed)
                    if self.tls is not None:
                        self.tls.on_rotate(self._retire_http2)
                # HTTP/1.1 clients: to HTTP/1.1 endpoints, or translated to HTTP/2 streams (http2).
                http1 = cast(Callable[[], asyncio.BaseProtocol], proxy)
                if cfg.cluster.protocol == "http2":
                    http1 = self.http2.http1
                factory = http1
                if cfg.http2.enabled:
                    factory = detecting(http1, self.http2, self.stats, cfg.request_header_timeout_secs)
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
        gated = self._client_limit.gate(factory or cast(Callable[[], asyncio.BaseProtocol], proxy), self.stats, refusal)
        try:
            for sock in bound.sockets:
                self.servers.append(await loop.create_server(gated, sock=sock, backlog=BACKLOG))
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

    def _retire_http2(self) -> None:
        """New TLS material: the HTTP/2 connections take no new stream and close once their streams
        end (as a removed endpoint's do); the next streams open connections with the new material."""
        if self.http2 is not None:
            pool = self.http2.pool
            for endpoint in list(pool.by_endpoint):
                pool.close_endpoint(endpoint)

    def sweep(self) -> None:
        if self.proxy is not None:
            self.proxy.sweep()
        if self.http2 is not None:
            self.http2.sweep()

    def active_connections(self) -> int:
        proxy = self.proxy
        if proxy is None:
            return 0
        h2 = len(self.http2.clients) if self.http2 is not None else 0
        return len(proxy.sessions) if isinstance(proxy, TcpProxy) else len(proxy.clients) + h2

    def stop_accepting(self) -> None:
        for server in self.servers:
            server.close()
        if self.proxy is not None:
            self.proxy.start_drain()
        if self.http2 is not None:
            self.http2.start_drain()

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        if self.proxy is not None:
            self.proxy.close_all()
        if self.http2 is not None:
            self.http2.close_all()
        if self.servers:
            # Servers' wait_closed() waits for connections on some Pythons; they are aborted above.
            await asyncio.sleep(0)
            self.servers = []
        self._collector.remove(self.stats)
        # Also a cluster never started: its series were attached when it was built.
        await self.cluster.stop()
        self._cluster_started = False


def alpn_profiles(config: ListenerConfig) -> list[Alpn]:
    """What the listener's TLS connections offer through ALPN, the default first.

    An http listener speaks HTTP/1.1 (its HTTP/1.1 requests, HTTP checks) and HTTP/2 (its streams to
    `protocol: http2|auto` endpoints, gRPC checks), each connection offering one of them, so the
    server's choice never turns a connection into a protocol its caller does not speak; with
    `protocol: http2` the default (what a `tcp` check's handshake offers) is h2. A tcp listener offers
    the cluster's own `tls.alpn`, nothing required (the app's protocol is opaque to it).
    """
    grpc_check = config.cluster.health_check.kind == "grpc"
    if config.mode != "http":
        return [Alpn(tuple(config.cluster.tls.alpn if config.cluster.tls else ()))] + ([H2] if grpc_check else [])
    return [H2, HTTP1] if config.cluster.protocol == "http2" else [HTTP1, H2]
