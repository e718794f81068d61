"""The redis and memcached listener settings: twemproxy's server syntax, defaults, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from sidecars.ambassador.cluster.sharding_config import ServerEntry, parse_server
from sidecars.ambassador.settings import AmbassadorSettings, ListenerConfig
from sidecars.core import config


def _listener(**values: Any) -> ListenerConfig:
    return ListenerConfig(**{"name": "cache", "port": 0, "mode": "redis", **values})


def test_twemproxy_server_syntax() -> None:
    assert parse_server("10.0.0.1:6379:2 users-1") == ServerEntry("10.0.0.1", 6379, 2, "users-1")
    assert parse_server("redis-0.redis:6379:1") == ServerEntry("redis-0.redis", 6379, 1, None)
    assert parse_server("[::1]:6379:1").address == "[::1]:6379"
    for bad, message in [
        ("10.0.0.1:6379", "is not host:port"),
        ("10.0.0.1:6379:0", "weight of at least 1"),
        ("/tmp/redis.sock:1", "unix sockets"),
        ("10.0.0.1:99999:1", "port must be"),
        ("a:1:1 two words", "a name has no spaces"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_server(bad)


def test_servers_give_the_endpoints_and_the_protocol_check_is_the_default() -> None:
    listener = _listener(cluster={}, sharding={"servers": ["a:6379:1 one", "b:6380:2"]})
    assert listener.cluster.endpoints == ["a:6379", "b:6380"]
    assert listener.cluster.health_check.kind == "redis"
    memcached = _listener(mode="memcached", cluster={"endpoints": ["m:11211"], "health_check": {"interval_secs": 2}})
    assert memcached.cluster.health_check.kind == "memcached"
    assert memcached.cluster.health_check.interval_secs == 2
    explicit = _listener(cluster={"endpoints": ["a:1"], "health_check": {"kind": "tcp"}})
    assert explicit.cluster.health_check.kind == "tcp"


def test_the_shorthand_listener_in_redis_mode() -> None:
    s = AmbassadorSettings(listen_port=6379, listen_mode="redis", upstreams=["a:6379", "b:6379"])
    (listener,) = s.all_listeners()
    assert listener.mode == "redis"
    assert listener.cluster.health_check.kind == "redis"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "http", "sharding": {"hash": "md5"}, "cluster": {"endpoints": ["a:1"]}}, "redis and memcached"),
        ({"mode": "memcached", "sharding": {"database": 1}, "cluster": {"endpoints": ["a:1"]}}, "redis settings"),
        ({"sharding": {"hash": "sha256"}, "cluster": {"endpoints": ["a:1"]}}, "unknown hash 'sha256'"),
        ({"sharding": {"distribution": "rendezvous"}, "cluster": {"endpoints": ["a:1"]}}, "unknown distribution"),
        ({"sharding": {"hash_tag": "{"}, "cluster": {"endpoints": ["a:1"]}}, "two ASCII characters"),
        ({"sharding": {"servers": ["a:1:1 x", "b:1:1 x"]}, "cluster": {}}, "name 'x' is used twice"),
        ({"sharding": {"servers": ["a:1:1", "a:1:2"]}, "cluster": {}}, "listed twice"),
        ({"sharding": {"max_value_bytes": 2048, "max_command_bytes": 1024}, "cluster": {"endpoints": ["a:1"]}},
         "must not exceed max_command_bytes"),
        ({"cluster": {}}, "a cluster needs at least one of"),
    ],
)  # fmt: skip
def test_bad_sharding_settings_are_refused_naming_the_problem(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _listener(**values)


def test_print_config_shows_the_sharding_section_and_no_password() -> None:
    listeners = [
        {
            "name": "cache",
            "port": 6379,
            "mode": "redis",
            "cluster": {"endpoints": ["a:6379"]},
            "sharding": {"server_password_file": "/etc/redis/password"},
        }
    ]
    loaded = config.load(AmbassadorSettings, flags={"listeners": [json.dumps(listeners)]})
    text = config.render(loaded)
    assert "on_shard_failure: keep" in text and "hash: fnv1a_64" in text
    assert "server_password_file: '**********'" in text  # keys naming a password are redacted, paths too
