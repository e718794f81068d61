"""The settings of one upstream cluster: where its endpoints come from and how requests are spread.

A `ClusterConfig` is nested in each listener's settings (YAML file, env JSON or flags). Durations are
in seconds (`*_secs`), shares in percent (`*_percent`). Defaults follow Envoy's where Envoy has a
sensible one, and are stricter where Envoy's would let a dead endpoint keep receiving traffic.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sidecars.ambassador.cluster.balancer import balancer_class
from sidecars.core.tls import TlsClientSettings


def parse_address(text: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port" into its parts; ValueError with the reason if malformed."""
    entry = text.strip()
    host, sep, port_text = entry.rpartition(":")
    if not sep or not host or not port_text:
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write IPv6 addresses as [addr]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r}: bad host")
    return host, int(port_text)


# An HTTP/2 flow-control window, of a stream or a connection, either side: at least the 65535 bytes
# every connection starts with, at most 2^31-1 (RFC 9113 §6.9.1).
Http2Window = Annotated[int, Field(ge=65535, le=2**31 - 1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthCheckConfig(_Section):
    """Active checks: each endpoint is probed on its own timer, results counted against thresholds."""

    kind: Literal["none", "tcp", "http", "grpc", "redis", "memcached"] = Field(
        "tcp",
        description="none: no active checks (endpoints count as up until outlier detection says "
        "otherwise); tcp: a connect succeeds; http: a GET of `path` answers one of `expected_statuses`; "
        "grpc: grpc.health.v1.Health/Check of `grpc_service` over HTTP/2 answers SERVING; "
        "redis: PING answers PONG (after AUTH when the listener has a server password); memcached: "
        "version answers VERSION. redis and memcached listeners default to their own.",
    )
    grpc_service: str = Field(
        "",
        max_length=256,
        description='grpc checks: the service name asked about ("" is the server as a whole, as gRPC defines).',
    )
    path: str = Field("/healthz", description="Path requested by http checks.")
    host_header: str | None = Field(None, description="Host header of http checks; default the endpoint's host:port.")
    expected_statuses: list[int] = Field([200], min_length=1, description="Statuses an http check accepts as up.")
    interval_secs: float = Field(5.0, gt=0, description="Time between two checks of one endpoint.")
    interval_jitter_percent: float = Field(
        10.0, ge=0, le=100, description="Random spread added to each interval so checks of many sidecars do not align."
    )
    timeout_secs: float = Field(1.0, gt=0, description="A check not answered within this counts as failed.")
    healthy_threshold: int = Field(
        2,
        ge=1,
        description="Consecutive passes that bring an unhealthy endpoint back (the first check ever needs one).",
    )
    unhealthy_threshold: int = Field(3, ge=1, description="Consecutive failures that mark an endpoint unhealthy.")

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthCheckConfig:
        if self.timeout_secs > self.interval_secs:
            raise ValueError("health_check.timeout_secs must not exceed health_check.interval_secs")
        return self


class OutlierConfig(_Section):
    """Passive detection: endpoints failing real requests are ejected for a growing time."""

    consecutive_errors: int = Field(
        5, ge=0, description="Consecutive failed requests (5xx, reset, timeout, connect failure) that eject; 0 = off."
    )
    consecutive_connect_failures: int = Field(
        1,
        ge=0,
        description="Consecutive connect failures that eject; 1 means an endpoint refusing connections is not "
        "picked again while others can serve; 0 = off.",
    )
    base_ejection_secs: float = Field(
        10.0, gt=0, description="First ejection time; the n-th ejection in a row lasts n times as long."
    )
    max_ejection_secs: float = Field(
        300.0, gt=0, description="Cap of one ejection; an endpoint quiet for this long starts again from the base."
    )
    max_ejection_percent: float = Field(
        50.0,
        ge=0,
        le=100,
        description="Share of endpoints that may be ejected at once (at least one may always be ejected).",
    )


class RetryBudgetConfig(_Section):
    """Retries allowed as a share of recent requests, so a struggling cluster is not stormed."""

    ratio_percent: float = Field(20.0, ge=0, le=1000, description="Retries allowed per 100 requests in the window.")
    min_retries_per_sec: float = Field(
        10.0, ge=0, description="Retries always allowed per second, so low traffic can still retry."
    )
    window_secs: int = Field(10, ge=1, le=600, description="Window over which requests and retries are counted.")


class CircuitBreakerConfig(_Section):
    """Hard limits answered with an immediate 503 instead of queueing."""

    max_connections: int = Field(1024, ge=1, description="Upstream connections open to the cluster at once.")
    max_pending: int = Field(1024, ge=0, description="Requests waiting for an upstream connection at once.")
    max_requests: int = Field(4096, ge=1, description="Requests in flight to the cluster at once.")


class Http2UpstreamConfig(_Section):
    """HTTP/2 to the endpoints: streams multiplexed over a few connections per endpoint."""

    max_connections_per_endpoint: int = Field(
        4,
        ge=1,
        le=1024,
        description="HTTP/2 connections opened to one endpoint at most; another is opened only when every "
        "open one carries as many streams as its server allows (its MAX_CONCURRENT_STREAMS).",
    )
    max_streams_per_connection: int = Field(
        100,
        ge=1,
        le=2**31 - 1,
        description="Streams the ambassador opens on one upstream connection at most, even if the server allows more.",
    )
    initial_stream_window_bytes: Http2Window = Field(
        262144,
        description="Flow-control window of each upstream stream (SETTINGS_INITIAL_WINDOW_SIZE): response "
        "bytes the upstream may send ahead of the app reading them, per stream; what the ambassador holds "
        "of one response at most.",
    )
    connection_window_bytes: Http2Window = Field(
        1048576,
        description="Flow-control window of each upstream connection: response bytes in flight for all its "
        "streams together. Given back as the bytes arrive (while within `connection_buffer_bytes`), so a "
        "stream whose app does not read holds up its own stream window only, never the connection's other "
        "streams.",
    )
    connection_buffer_bytes: int = Field(
        4194304,
        ge=65536,
        le=2**31 - 1,
        description="Response bytes of one upstream connection's open streams the ambassador holds with their "
        "connection window given back at once; past it the window comes back only as bytes are passed on. "
        "One connection then holds at most this plus `connection_window_bytes`; under it, a stream whose "
        "app does not read never holds up the connection's other streams.",
    )
    max_header_list_bytes: int = Field(
        65536, ge=1024, description="Largest response header list accepted (SETTINGS_MAX_HEADER_LIST_SIZE)."
    )


class ClusterConfig(_Section):
    """One upstream cluster: discovery sources (at least one), balancing, health and limits."""

    endpoints: list[str] = Field([], description='Static endpoints, each "host:port".')
    dns: str | None = Field(
        None,
        description='"name:port" resolved to every address it has (a Kubernetes headless Service), '
        "re-resolved every dns_refresh_secs.",
    )
    dns_refresh_secs: float = Field(5.0, gt=0, description="Time between two resolutions of `dns`.")
    dns_family: Literal["any", "ipv4", "ipv6"] = Field(
        "any", description="Address families `dns` resolves to (a dual-stack Service answers both)."
    )
    endpoints_file: str | None = Field(
        None,
        description="File listing endpoints (a YAML/JSON list of host:port, or one per line, # comments; at "
        "most 1 MiB), watched and reloaded atomically; a bad, empty or larger update keeps the last good set.",
    )
    endpoints_file_poll_secs: float = Field(
        5.0, gt=0, description="Safety-net re-read of endpoints_file when no change notification arrives."
    )
    discovery_plugin: str | None = Field(
        None,
        description="A discovery source an installed package registers in the entry-point group "
        "sidecars.ambassador.discovery (a service registry, an API); its endpoints join the others. A name has "
        "one provider: two packages claiming it is an error naming both.",
    )
    discovery_options: dict[str, Any] = Field({}, description="Keyword arguments of discovery_plugin's source.")
    balancer: str = Field(
        "p2c_ewma",
        description="p2c_ewma: two random endpoints, the one with the lower latency x load wins; "
        "least_request: two random endpoints, fewer requests in flight wins; round_robin; "
        "hash: consistent hash of the request's hash key (only the keys of a leaving endpoint move); "
        "or a balancer an installed package registers in the entry-point group sidecars.ambassador.balancers, "
        "under a name of its own (one claiming a built-in's name is an error naming both).",
    )
    ewma_decay_secs: float = Field(10.0, gt=0, description="Time constant of the latency average used by p2c_ewma.")
    slow_start_secs: float = Field(
        0.0,
        ge=0,
        description="New (or newly healthy) endpoints get a weight ramping linearly over this time; 0 = off.",
    )
    slow_start_min_weight_percent: float = Field(
        10.0, gt=0, le=100, description="Weight of an endpoint at the start of its slow start."
    )
    panic_threshold_percent: float = Field(
        50.0,
        ge=0,
        le=100,
        description="Below this share of healthy endpoints, balance over all of them (healthy or not), "
        "as Envoy does: better some errors than all load on a few survivors; 0 = never.",
    )
    protocol: Literal["http1", "http2", "auto"] = Field(
        "http1",
        description="http listeners: the protocol spoken to the endpoints. http1: HTTP/1.1; http2: HTTP/2 "
        "(h2c, prior knowledge; with tls: TLS with ALPN h2, a server not selecting it refused as tls_alpn), "
        "every request a stream, streams balanced one by one; auto: the protocol the app spoke (an HTTP/2 "
        "client's streams go out as HTTP/2, an HTTP/1.1 client's requests as HTTP/1.1; with tls each "
        "connection offers its own through ALPN).",
    )
    http2: Http2UpstreamConfig = Field(default_factory=Http2UpstreamConfig, description="HTTP/2 to the endpoints.")
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig, description="Active health checks.")
    outlier: OutlierConfig = Field(default_factory=OutlierConfig, description="Passive outlier ejection.")
    retry_budget: RetryBudgetConfig = Field(default_factory=RetryBudgetConfig, description="Retry budget.")
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig, description="Connection and request limits."
    )
    tls: TlsClientSettings | None = Field(
        None,
        description="Connect to the endpoints over TLS: verified against ca_file (or the system store), the "
        "name checked and sent as SNI is server_name or the endpoint's host; cert_file and key_file for mutual "
        "TLS. The files are watched: new connections use new material, a bad update keeps the last good one.",
    )
    tls_poll_secs: float = Field(
        5.0, gt=0, description="Safety-net re-read of the tls files when no change notification arrives."
    )

    @field_validator("endpoints")
    @classmethod
    def _valid_endpoints(cls, value: list[str]) -> list[str]:
        errors = []
        for i, entry in enumerate(value):
            try:
                parse_address(entry)
            except ValueError as exc:
                errors.append(f"endpoints[{i}]: {exc}")
        if errors:
            raise ValueError("; ".join(errors))
        return value

    @field_validator("balancer")
    @classmethod
    def _known_balancer(cls, value: str) -> str:
        balancer_class(value)  # ValueError naming the known balancers
        return value

    @field_validator("discovery_plugin")
    @classmethod
    def _known_discovery_plugin(cls, value: str | None) -> str | None:
        if value is not None:
            from sidecars.ambassador.cluster.discovery import source_class  # discovery imports this module

            source_class(value)  # ValueError naming the installed plugins
        return value

    @field_validator("dns")
    @classmethod
    def _valid_dns(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_address(value)
            except ValueError as exc:
                raise ValueError(f"dns: {exc}") from None
        return value

    @model_validator(mode="after")
    def _has_a_source(self) -> ClusterConfig:
        if not self.endpoints and self.dns is None and self.endpoints_file is None and not self.discovery_plugin:
            raise ValueError("a cluster needs at least one of endpoints, dns, endpoints_file, discovery_plugin")
        return self
