"""The ambassador's settings: one or more listeners, each with its upstream cluster and its timeouts.

Listeners are a list (YAML in the config file, JSON in `AMBASSADOR_LISTENERS` or `--listeners`). The
common case of one HTTP listener needs no list: `--listen-port 7001 --upstreams a:80,b:80`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sidecars.ambassador import engine
from sidecars.ambassador.cluster.config import ClusterConfig, HealthCheckConfig, Http2Window
from sidecars.ambassador.cluster.sharding_config import ShardingConfig, parse_server
from sidecars.ambassador.engine import EngineName
from sidecars.core.listen import LOOPBACK
from sidecars.core.settings import SidecarSettings, split_hosts

RetryOn = Literal["connect-failure", "reset", "5xx", "timeout"]
# The idempotent methods of RFC 9110 §9.2.2: the only ones that may be sent again once they may have
# reached the upstream. POST and PATCH never are (a connect failure is retried for every method).
RetryMethod = Literal["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
NEVER_RETRIED = ("POST", "PATCH", "CONNECT")
# gRPC statuses a call may be retried on, named as Envoy's retry_on names them.
GrpcRetryOn = Literal["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"]
Mode = Literal["http", "tcp", "redis", "memcached"]
SHARDED_MODES = ("redis", "memcached")

# What an http listener's TLS connections offer through ALPN, by cluster.protocol (listener.alpn_profiles):
# http2 and auto connections for HTTP/2 streams offer h2 alone, those for HTTP/1.1 requests http/1.1.
HTTP_ALPN = {"http1": ["http/1.1"], "http2": ["h2"], "auto": ["h2", "http/1.1"]}

HTTP_IDLE_TIMEOUT_SECS = 4.0
TCP_IDLE_TIMEOUT_SECS = 3600.0


class Http2Config(BaseModel):
    """HTTP/2 from the app: the connection's settings and the limits that make a hostile client harmless."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        True,
        description="Accept HTTP/2 with prior knowledge (h2c, what gRPC clients speak to localhost) on the "
        "listener's port beside HTTP/1.1, told apart by the connection preface.",
    )
    max_concurrent_streams: int = Field(
        100,
        ge=1,
        le=2**31 - 1,
        description="Streams one client connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS); one more "
        "is refused with REFUSED_STREAM, a client opening twice as many at once loses the connection.",
    )
    initial_stream_window_bytes: Http2Window = Field(
        262144,
        description="Flow-control window of each stream (SETTINGS_INITIAL_WINDOW_SIZE): request bytes a client "
        "may send ahead of the upstream taking them, per stream; what the ambassador holds of one request "
        "body at most (beyond the bytes kept for a retry).",
    )
    connection_window_bytes: Http2Window = Field(
        1048576,
        description="Flow-control window of each client connection: request bytes in flight for all of its "
        "streams together. Given back as the bytes arrive (while within `connection_buffer_bytes`), so a "
        "stream whose upstream does not read holds up its own stream window only, never the connection's other "
        "streams.",
    )
    connection_buffer_bytes: int = Field(
        4194304,
        ge=65536,
        le=2**31 - 1,
        description="Request bytes of one client connection's open streams the ambassador holds with their "
        "connection window given back at once; past it the window comes back only as bytes are passed on. "
        "One connection then holds at most this plus `connection_window_bytes`; under it, a stream whose "
        "upstream does not read never holds up the connection's other streams.",
    )
    max_header_list_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request header list, decoded (SETTINGS_MAX_HEADER_LIST_SIZE; HPACK bombs), and "
        "largest encoded header block: larger ends the connection with ENHANCE_YOUR_CALM.",
    )
    max_continuation_frames: int = Field(
        32, ge=1, le=64, description="CONTINUATION frames one header block may take (the CONTINUATION flood)."
    )
    max_resets_per_sec: float = Field(
        100.0,
        gt=0,
        description="Streams a client may reset per second (bursts up to twice as many): beyond it, rapid "
        "reset (CVE-2023-44487), the connection ends with ENHANCE_YOUR_CALM.",
    )
    max_pings_per_sec: float = Field(
        10.0, gt=0, description="PING frames a client may send per second (bursts up to twice as many)."
    )
    max_settings_per_sec: float = Field(
        10.0, gt=0, description="SETTINGS frames a client may send per second (bursts up to twice as many)."
    )
    zero_window_timeout_secs: float = Field(
        30.0,
        gt=0,
        description="A response stream that could not send for this long because the client's flow-control "
        "window stayed closed is reset (CANCEL), and its upstream stream with it.",
    )


class ListenerConfig(BaseModel):
    """One local port the app connects to, and how its traffic reaches the upstream cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Name used in metrics and logs.")
    host: list[str] = Field(
        list(LOOPBACK),
        min_length=1,
        description="Addresses to bind, all on port. The default, loopback on IPv4 and IPv6 (127.0.0.1 and ::1; "
        "::1 is left out on a node without IPv6), lets only containers of the Pod connect, whichever way "
        "the app resolves localhost: the ambassador speaks for the app, nobody else should reach it.",
    )
    port: int = Field(..., ge=0, le=65535, description="Port to bind; 0 picks a free one (tests).")
    mode: Mode = Field(
        "http",
        description="http: HTTP/1.1 aware (retries, per-request balancing); tcp: opaque byte streams; "
        "redis, memcached: the cluster's endpoints are shards, each key goes to its shard (see sharding).",
    )
    cluster: ClusterConfig = Field(..., description="The upstream cluster behind this listener.")
    sharding: ShardingConfig = Field(
        default_factory=ShardingConfig, description="redis and memcached modes: how keys map to shards, and limits."
    )
    connect_timeout_secs: float = Field(1.0, gt=0, description="Time to establish one upstream connection.")
    per_try_timeout_secs: float = Field(
        10.0, gt=0, description="Time one try may take until the response head arrives (then the body streams)."
    )
    overall_timeout_secs: float = Field(
        15.0,
        gt=0,
        description="Deadline of the whole request until its response head: every try, connect and backoff "
        "included. Answered 504 deadline_exceeded when reached.",
    )
    idle_timeout_secs: float = Field(
        HTTP_IDLE_TIMEOUT_SECS,
        gt=0,
        description="http mode: a pooled upstream connection unused this long is closed (default 4 s). "
        "Keep it below the upstream server's keep-alive timeout (nginx 75 s, Node.js 5 s, uvicorn 5 s, "
        "gunicorn 2 s) so the server never closes a connection the proxy is about to reuse. tcp mode: a "
        "session with no bytes either way this long is closed (default 3600 s, as Envoy's tcp_proxy: "
        "database and cache clients keep connections idle in their pools for long).",
        json_schema_extra={"doc_default": "`4.0` (http), `3600.0` (tcp)"},
    )
    stream_idle_timeout_secs: float = Field(
        300.0,
        gt=0,
        description="An in-flight request or response body (or upgraded connection) with no bytes either "
        "way this long is aborted.",
    )
    client_idle_timeout_secs: float = Field(
        60.0, gt=0, description="An idle keep-alive client connection is closed after this long."
    )
    request_header_timeout_secs: float = Field(
        10.0, gt=0, description="A client must send a complete request head within this (slow-loris guard): 408."
    )
    retries: int = Field(2, ge=0, le=10, description="Retries after the first try (so at most retries + 1 tries).")
    retry_on: list[RetryOn] = Field(
        ["connect-failure", "reset", "5xx", "timeout"],
        description="Failures that are retried. reset, 5xx and timeout only for the methods in retry_methods "
        "and within the cluster's retry budget; connect-failure for any method, since the request never "
        "reached the upstream.",
    )
    retry_methods: list[RetryMethod] = Field(
        ["GET", "HEAD", "OPTIONS", "TRACE"],
        description="Methods retried after a reset, 5xx or timeout, when the request may have reached the "
        "upstream. By default the safe methods only: a PUT or DELETE that failed with a 5xx may have been "
        "applied, and many apps' PUT and DELETE are not idempotent in practice (a version bump, an audit "
        "entry, a cascade). Add PUT and DELETE where the upstream makes them idempotent; POST and PATCH "
        "are never retried once sent.",
    )
    retry_on_grpc_status: list[GrpcRetryOn] = Field(
        ["unavailable"],
        description="gRPC calls: statuses that are retried, for any method, within the retry budget, as gRPC's "
        "own retry policy does, while no response message has reached the app and the request is still held "
        "(max_retry_body_bytes); a connection lost before the response counts as unavailable, a try timing "
        "out as deadline-exceeded.",
    )
    retry_backoff_base_secs: float = Field(
        0.025, ge=0, description="Backoff before the first retry; doubles per retry, fully jittered."
    )
    retry_backoff_max_secs: float = Field(0.25, ge=0, description="Cap of one backoff.")
    max_header_bytes: int = Field(
        32768,
        ge=1024,
        description="Largest request head (request line and headers), larger: 431; and largest upstream "
        "response head, larger: 502.",
    )
    max_retry_body_bytes: int = Field(
        65536,
        ge=0,
        description="Request bodies up to this size are kept so the request can be retried; a larger body "
        "is streamed and the request is not retried once its body started.",
    )
    request_id_header: str = Field(
        "x-request-id", description='Header carrying a request id, added when missing; "" disables.'
    )
    forwarded: Literal["none", "x-forwarded-for", "forwarded"] = Field(
        "none",
        description="Add the client address as X-Forwarded-For or Forwarded (RFC 7239). The client is "
        "the app on localhost, so this is off by default.",
    )
    host_rewrite: str | None = Field(
        None, description="Replace the Host header with this (an upstream that routes by virtual host)."
    )
    max_idle_per_endpoint: int = Field(64, ge=0, description="Idle keep-alive connections kept per endpoint.")
    hash_header: str | None = Field(
        None, description="With the hash balancer: the request header whose value is the hash key."
    )
    http2: Http2Config = Field(default_factory=Http2Config, description="HTTP/2 from the app (http mode).")
    access_log: Literal["off", "errors", "all"] = Field(
        "errors",
        description="Access log lines: off; errors (requests the proxy failed, at most 10 lines a second); "
        "all (one line per request, sampled by access_log_sample_percent).",
    )
    access_log_sample_percent: float = Field(
        100.0, gt=0, le=100, description='Share of requests logged when access_log is "all".'
    )
    access_log_query: Literal["redact", "full", "drop"] = Field(
        "redact",
        description="The query string in access log lines: redact (parameter names kept, every value "
        "masked: tokens and signatures travel there), drop (the path only), full (as sent, but for what "
        "every log line masks: credentials and secret-looking parameters).",
    )

    @model_validator(mode="before")
    @classmethod
    def _idle_default_by_mode(cls, data: Any) -> Any:
        # An idle database connection is normal, an idle pooled HTTP connection is not: the default
        # depends on the mode; an explicit value is kept in both.
        if isinstance(data, dict) and data.get("idle_timeout_secs") is None:
            data = {k: v for k, v in data.items() if k != "idle_timeout_secs"}
            if data.get("mode") == "tcp":
                data["idle_timeout_secs"] = TCP_IDLE_TIMEOUT_SECS
        return data

    @field_validator("host", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        return split_hosts(value)

    @field_validator("retry_methods", mode="before")
    @classmethod
    def _retry_methods(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        methods = [m.upper() if isinstance(m, str) else m for m in value]
        refused = [m for m in methods if m in NEVER_RETRIED]
        if refused:
            raise ValueError(
                f"{', '.join(refused)}: not idempotent, never retried once it may have reached the upstream "
                "(connect failures are retried for every method anyway)"
            )
        return methods

    @field_validator("request_id_header", "hash_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value and not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError(f"{value!r} is not a header name")
        return value.lower() if value else value

    @model_validator(mode="before")
    @classmethod
    def _sharded_defaults(cls, data: Any) -> Any:
        """redis/memcached: endpoints from `sharding.servers` when the cluster names none, and the
        protocol's own health check (PING, version) unless one is configured."""
        if not isinstance(data, dict) or data.get("mode") not in SHARDED_MODES:
            return data
        data = dict(data)
        cluster = data.get("cluster", {})
        sharding = data.get("sharding") or {}
        servers = sharding.servers if isinstance(sharding, ShardingConfig) else sharding.get("servers", [])
        if isinstance(cluster, ClusterConfig):
            if "health_check" not in cluster.model_fields_set:
                check = HealthCheckConfig(kind=data["mode"])
                data["cluster"] = cluster.model_copy(update={"health_check": check})
            return data
        if not isinstance(cluster, dict):
            return data
        cluster = dict(cluster)
        sources = ("endpoints", "dns", "endpoints_file", "discovery_plugin")
        if servers and isinstance(servers, list) and not any(cluster.get(k) for k in sources):
            with contextlib.suppress(ValueError, TypeError):  # reported by ShardingConfig's own validation
                cluster["endpoints"] = [parse_server(s).address for s in servers]
        given = cluster.get("health_check")
        if given is None:
            cluster["health_check"] = {"kind": data["mode"]}
        elif isinstance(given, dict) and "kind" not in given:
            cluster["health_check"] = {**given, "kind": data["mode"]}
        data["cluster"] = cluster
        return data

    @model_validator(mode="after")
    def _coherent(self) -> ListenerConfig:
        if self.mode != "http" and self.cluster.protocol != "http1":
            raise ValueError("cluster.protocol applies to http listeners only")
        if self.mode not in SHARDED_MODES and "sharding" in self.model_fields_set:
            raise ValueError("sharding applies to redis and memcached listeners only")
        tls = self.cluster.tls
        if tls is not None and self.mode in SHARDED_MODES:
            raise ValueError("cluster.tls applies to http and tcp listeners (a TLS cache: use a tcp listener)")
        if tls is not None and self.mode == "http" and tls.alpn:
            allowed = HTTP_ALPN[self.cluster.protocol]
            if sorted(tls.alpn) != sorted(allowed) or len(set(tls.alpn)) != len(tls.alpn):
                raise ValueError(
                    f"cluster.tls.alpn {tls.alpn} of an http listener with cluster.protocol {self.cluster.protocol}: "
                    f"the ambassador offers what it speaks, so the only values are [] (the default) or {allowed}"
                )
        if self.mode == "memcached":
            sh = self.sharding
            if sh.server_password_file or sh.client_password_file or sh.database:
                raise ValueError("passwords and database are redis settings; memcached's text protocol has none")
        if self.per_try_timeout_secs > self.overall_timeout_secs:
            raise ValueError("per_try_timeout_secs must not exceed overall_timeout_secs")
        if self.retry_backoff_base_secs > self.retry_backoff_max_secs:
            raise ValueError("retry_backoff_base_secs must not exceed retry_backoff_max_secs")
        return self


class AmbassadorSettings(SidecarSettings):
    """The ambassador: listeners on localhost, each hiding an upstream cluster."""

    env_prefix = "AMBASSADOR_"

    admin_port: int = Field(9802, ge=0, le=65535, description="Port of the admin server; 0 picks a free one.")
    listeners: list[ListenerConfig] = Field(
        [], description="Listeners (YAML list in the config file, JSON in the env var or flag)."
    )
    listen_port: int | None = Field(
        None, ge=0, le=65535, description="Shorthand for one listener named 'default' on this port."
    )
    listen_mode: Mode = Field("http", description="Mode of the shorthand listener (http, tcp, redis, memcached).")
    upstreams: list[str] = Field(
        [],
        description='Endpoints ("host:port") of the shorthand listener\'s cluster: a list in the config file, '
        "comma-separated in the env var or flag.",
    )
    upstreams_dns: str | None = Field(
        None, description='"name:port" of a headless Service resolving to the shorthand listener\'s endpoints.'
    )
    max_client_connections: int | None = Field(
        None,
        ge=1,
        description="Client connections open at once across all listeners; beyond it a new connection is "
        "closed at once (http: after a 503 client_connection_limit), counted and logged. Default: derived "
        "from the open-file limit (RLIMIT_NOFILE): half of what is left after a reserve of max(64, limit/16) "
        "descriptors, since each client connection may need an upstream one; the reserve keeps the admin "
        "server answering.",
        json_schema_extra={"doc_default": "derived from `RLIMIT_NOFILE`"},
    )
    http_engine: EngineName = Field(
        "auto",
        description="Build of the HTTP request path: auto (the compiled one when it is installed and "
        "matches the source, else Python, with the reason logged), compiled (start-up fails without it), "
        "python (the source as is).",
    )

    @field_validator("http_engine")
    @classmethod
    def _engine_available(cls, value: EngineName) -> EngineName:
        if value == "compiled":
            twin, reason = engine.compiled()
            if twin is None:
                raise ValueError(f"the compiled request path is {reason}")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> AmbassadorSettings:
        if self.listen_port is None and (self.upstreams or self.upstreams_dns):
            raise ValueError("upstreams/upstreams_dns need listen_port")
        if self.listen_port is not None and not (self.upstreams or self.upstreams_dns):
            raise ValueError("listen_port needs upstreams or upstreams_dns")
        names = [listener.name for listener in self.all_listeners()]
        if len(set(names)) != len(names):
            raise ValueError(f"listener names must be unique: {names}")
        return self

    def all_listeners(self) -> list[ListenerConfig]:
        """`listeners` plus the shorthand one, if set."""
        out = list(self.listeners)
        if self.listen_port is not None and (self.upstreams or self.upstreams_dns):
            cluster = ClusterConfig(endpoints=self.upstreams, dns=self.upstreams_dns)
            out.append(ListenerConfig(name="default", port=self.listen_port, mode=self.listen_mode, cluster=cluster))
        return out
