from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from sidecars.ambassador.plugin import Ambassador
from sidecars.ambassador.settings import (
    HTTP_IDLE_TIMEOUT_SECS,
    TCP_IDLE_TIMEOUT_SECS,
    AmbassadorSettings,
    ListenerConfig,
)
from sidecars.core import config


def test_shorthand_makes_one_http_listener_on_loopback() -> None:
    s = config.load(AmbassadorSettings, environ={}, flags={"listen_port": ["7001"], "upstreams": ["a:80, b:81"]})
    (listener,) = s.settings.all_listeners()  # type: ignore[attr-defined]
    assert (listener.name, listener.port, listener.mode) == ("default", 7001, "http")
    assert listener.host == ["127.0.0.1", "::1"]  # loopback of both families, never a wildcard
    assert listener.cluster.endpoints == ["a:80", "b:81"]


def test_listeners_from_env_json_and_flags_through_the_core_loader() -> None:
    listeners = [{"name": "users", "port": 7001, "cluster": {"endpoints": ["u:80"]}}]
    loaded = config.load(
        AmbassadorSettings,
        environ={"AMBASSADOR_LISTENERS": json.dumps(listeners)},
        flags={"listen_port": ["7002"], "upstreams": ["p:80,q:80"]},
    )
    names = [li.name for li in loaded.settings.all_listeners()]  # type: ignore[attr-defined]
    assert names == ["users", "default"]


def test_a_list_in_the_file_is_a_yaml_list_not_text_parsed_again(tmp_path: Path) -> None:
    # Text is parsed once, by the core loader (flags, env vars); a string where the file needs a list
    # is a mistake named at its line.
    conf = tmp_path / "ambassador.yaml"
    conf.write_text('listen_port: 7001\nupstreams: "a:80,b:80"\nlisteners: "[]"\n')
    with pytest.raises(config.ConfigError) as caught:
        config.load(AmbassadorSettings, environ={}, config_file=conf)
    shown = str(caught.value)
    assert f"{conf}:2 upstreams" in shown and f"{conf}:3 listeners" in shown
    conf.write_text("listen_port: 7001\nupstreams: [a:80, b:80]\nlisteners: []\n")
    loaded = config.load(AmbassadorSettings, environ={}, config_file=conf)
    assert loaded.settings.upstreams == ["a:80", "b:80"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"listen_port": 7001}, "listen_port needs upstreams"),
        ({"upstreams": ["a:1"]}, "upstreams/upstreams_dns need listen_port"),
        ({"listen_port": 7001, "upstreams": ["nope"]}, "is not host:port"),
        (
            {"listeners": [{"name": "x", "port": 1, "cluster": {"endpoints": ["a:1"]}}] * 2},
            "listener names must be unique",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_reason(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AmbassadorSettings(**values)


def test_listener_timeouts_must_be_coherent() -> None:
    with pytest.raises(ValidationError, match="per_try_timeout_secs must not exceed overall_timeout_secs"):
        ListenerConfig(name="x", port=1, cluster={"endpoints": ["a:1"]}, per_try_timeout_secs=5, overall_timeout_secs=1)
    with pytest.raises(ValidationError, match="is not a header name"):
        ListenerConfig(name="x", port=1, cluster={"endpoints": ["a:1"]}, request_id_header="bad header")


def test_every_option_is_documented() -> None:
    for model in (AmbassadorSettings, ListenerConfig):
        assert not [n for n, f in model.model_fields.items() if not f.description], model
    assert Ambassador.Settings is AmbassadorSettings


def test_the_idle_timeout_default_depends_on_the_mode() -> None:
    cluster = {"endpoints": ["a:1"]}
    http = ListenerConfig(name="h", port=1, cluster=cluster)
    tcp = ListenerConfig(name="t", port=1, mode="tcp", cluster=cluster)
    assert (http.idle_timeout_secs, tcp.idle_timeout_secs) == (HTTP_IDLE_TIMEOUT_SECS, TCP_IDLE_TIMEOUT_SECS)
    assert TCP_IDLE_TIMEOUT_SECS >= 3600  # idle database and cache clients are normal: hours, not seconds
    explicit = [ListenerConfig(name="x", port=1, mode=m, cluster=cluster, idle_timeout_secs=7) for m in ("http", "tcp")]
    assert [li.idle_timeout_secs for li in explicit] == [7, 7]
    (shorthand,) = AmbassadorSettings(listen_port=1, listen_mode="tcp", upstreams=["a:1"]).all_listeners()
    assert shorthand.idle_timeout_secs == TCP_IDLE_TIMEOUT_SECS
    loaded = config.load(
        AmbassadorSettings,
        environ={"AMBASSADOR_LISTENERS": json.dumps([{"name": "db", "port": 1, "mode": "tcp", "cluster": cluster}])},
    )
    assert loaded.settings.listeners[0].idle_timeout_secs == TCP_IDLE_TIMEOUT_SECS  # type: ignore[attr-defined]


def test_access_log_query_defaults_to_redact_and_refuses_unknown_modes() -> None:
    cluster = {"endpoints": ["a:1"]}
    assert ListenerConfig(name="h", port=1, cluster=cluster).access_log_query == "redact"
    with pytest.raises(ValidationError, match="access_log_query"):
        ListenerConfig(name="h", port=1, cluster=cluster, access_log_query="some")


def test_retry_methods_default_to_the_safe_ones_and_never_take_post_or_patch() -> None:
    cluster = {"endpoints": ["a:1"]}
    assert ListenerConfig(name="h", port=1, cluster=cluster).retry_methods == ["GET", "HEAD", "OPTIONS", "TRACE"]
    opted = ListenerConfig(name="h", port=1, cluster=cluster, retry_methods="get, put,Delete")
    assert opted.retry_methods == ["GET", "PUT", "DELETE"]
    for method in ("POST", "patch"):
        with pytest.raises(ValidationError, match=f"{method.upper()}: not idempotent, never retried"):
            ListenerConfig(name="h", port=1, cluster=cluster, retry_methods=["GET", method])
    with pytest.raises(ValidationError, match="retry_methods"):
        ListenerConfig(name="h", port=1, cluster=cluster, retry_methods=["FETCH"])


def test_max_client_connections_must_be_positive() -> None:
    assert AmbassadorSettings().max_client_connections is None  # derived from the open-file limit at start
    with pytest.raises(ValidationError, match="max_client_connections"):
        AmbassadorSettings(max_client_connections=0)


def test_cluster_tls_with_http2_and_its_alpn_checked_against_the_protocol() -> None:
    def listener(protocol: str, alpn: list[str]) -> ListenerConfig:
        cluster = {"endpoints": ["h:443"], "protocol": protocol, "tls": {"alpn": alpn}}
        return ListenerConfig(name="h", port=7003, cluster=cluster)

    for protocol in ("http1", "http2", "auto"):
        assert listener(protocol, []).cluster.tls is not None  # TLS beside every protocol
    assert listener("http2", ["h2"]).cluster.protocol == "http2"
    assert listener("auto", ["http/1.1", "h2"]).cluster.protocol == "auto"
    for protocol, alpn, allowed in [
        ("http2", ["http/1.1"], r"\['h2'\]"),
        ("http2", ["h2", "http/1.1"], r"\['h2'\]"),
        ("auto", ["h2"], r"\['h2', 'http/1\.1'\]"),
        ("auto", ["h2", "h2"], r"\['h2', 'http/1\.1'\]"),
        ("http1", ["spdy/3"], r"\['http/1\.1'\]"),
    ]:
        with pytest.raises(
            ValidationError, match=rf"cluster\.tls\.alpn .*cluster\.protocol {protocol}: .*or {allowed}"
        ):
            listener(protocol, alpn)
    # A tcp listener's streams are opaque: any protocol names may be offered.
    tcp = ListenerConfig(name="t", port=7004, mode="tcp", cluster={"endpoints": ["h:443"], "tls": {"alpn": ["h2"]}})
    assert tcp.cluster.tls is not None and tcp.cluster.tls.alpn == ["h2"]


def test_cluster_tls_is_the_core_model_on_http_and_tcp_listeners_only() -> None:
    tls = {"ca_file": "/etc/tls/ca.crt", "server_name": "api.internal", "pinned_sha256": ["AB" * 32]}
    li = ListenerConfig(name="api", port=7001, mode="tcp", cluster={"endpoints": ["10.0.0.1:443"], "tls": tls})
    assert li.cluster.tls is not None and li.cluster.tls.server_name == "api.internal"
    assert li.cluster.tls.min_version == "1.2" and not li.cluster.tls.insecure_skip_verify
    with pytest.raises(ValidationError, match=r"cluster\.tls applies to http and tcp listeners"):
        ListenerConfig(name="r", port=7002, mode="redis", cluster={"endpoints": ["r:6379"], "tls": {}})
    with pytest.raises(ValidationError, match=r"protocol http1: .* \[\] \(the default\) or \['http/1\.1'\]"):
        ListenerConfig(name="h", port=7003, cluster={"endpoints": ["h:443"], "tls": {"alpn": ["h2"]}})
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        ListenerConfig(name="h", port=7003, cluster={"endpoints": ["h:443"], "tls": {"cert_file": "/c.pem"}})


@pytest.mark.parametrize("side", ["listener", "cluster"])
@pytest.mark.parametrize("key", ["initial_stream_window_bytes", "connection_window_bytes"])
@pytest.mark.parametrize(("value", "ok"), [(65534, False), (65535, True), (2**31 - 1, True), (2**31, False)])
def test_http2_windows_are_within_what_http2_allows_on_both_sides(side: str, key: str, value: int, ok: bool) -> None:
    cluster: dict[str, object] = {"endpoints": ["a:80"]}
    values: dict[str, object] = {"name": "web", "port": 7001, "cluster": cluster}
    (values if side == "listener" else cluster)["http2"] = {key: value}
    if ok:
        ListenerConfig.model_validate(values)
    else:
        with pytest.raises(ValidationError, match=r"65535|2147483647"):
            ListenerConfig.model_validate(values)
