"""Cluster settings validation and the endpoints-file format: clear errors naming what and where."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidecars.ambassador.cluster.config import ClusterConfig, parse_address
from sidecars.ambassador.cluster.discovery import parse_endpoints_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:80", ("10.0.0.1", 80)),
        (" users.default.svc:8080 ", ("users.default.svc", 8080)),
        ("[::1]:9000", ("::1", 9000)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.0.0.1", "not host:port"),
        ("10.0.0.1:0", "port must be 1-65535"),
        ("10.0.0.1:http", "port must be 1-65535"),
        ("::1:80", "IPv6"),
        (":80", "not host:port"),
        ("a b:80", "bad host"),
    ],
)
def test_parse_address_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_address(text)


def test_config_needs_a_source() -> None:
    with pytest.raises(ValidationError, match="at least one of endpoints, dns, endpoints_file, discovery_plugin"):
        ClusterConfig()


def test_config_names_every_bad_endpoint_by_index() -> None:
    with pytest.raises(ValidationError) as err:
        ClusterConfig(endpoints=["10.0.0.1:80", "nope", "10.0.0.2:99999"])
    text = str(err.value)
    assert "endpoints[1]" in text and "endpoints[2]" in text and "endpoints[0]" not in text


def test_config_rejects_unknown_and_inconsistent_fields() -> None:
    with pytest.raises(ValidationError, match="balancr"):
        ClusterConfig(endpoints=["a:1"], balancr="hash")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="timeout_secs must not exceed"):
        ClusterConfig(endpoints=["a:1"], health_check={"interval_secs": 1, "timeout_secs": 2})
    with pytest.raises(ValidationError, match="dns"):
        ClusterConfig(dns="users.svc")


def test_config_from_yaml_shaped_dict() -> None:
    config = ClusterConfig.model_validate(
        {
            "dns": "users.default.svc.cluster.local:8080",
            "balancer": "least_request",
            "health_check": {"kind": "http", "path": "/ready", "expected_statuses": [200, 204]},
            "outlier": {"consecutive_errors": 3},
        }
    )
    assert config.health_check.expected_statuses == [200, 204]
    assert config.outlier.max_ejection_percent == 50.0


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1:80\n10.0.0.2:80\n",
        "# pods\n10.0.0.1:80   # a\n\n10.0.0.2:80\n",
        '["10.0.0.1:80", "10.0.0.2:80"]',
        "- 10.0.0.1:80\n- 10.0.0.2:80\n",
    ],
)
def test_endpoints_file_formats(text: str) -> None:
    assert parse_endpoints_text(text) == {("10.0.0.1", 80), ("10.0.0.2", 80)}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.0.0.1:80\n10.0.0.2\n", "line 2"),
        ('["10.0.0.1:80", "x:y"]', "item 2"),
        ("", "no endpoints listed"),
        ("# nothing\n\n", "no endpoints listed"),
        ("- a: 1\n- b\n", "YAML list of host:port"),
        ('{"a": 1}', "not a mapping"),
    ],
)
def test_endpoints_file_errors_say_where(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_endpoints_text(text)


def test_endpoints_file_that_is_neither_json_nor_yaml() -> None:
    with pytest.raises(ValueError, match="neither JSON nor YAML"):
        parse_endpoints_text('["10.0.0.1:80", ')
