"""Config from flags, env and a YAML file: precedence, conversions, secrets, and every error at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr, field_validator

from sidecars.core import SidecarSettings, secret
from sidecars.core.config import ConfigError, load, redacted, render, secret_values


class Demo(SidecarSettings):
    env_prefix = "DEMO_"
    admin_port: int = Field(9899, description="admin")
    target_url: str = Field(description="required target")
    include: list[str] = Field(["/var/log/*.log"], description="globs")
    labels: dict[str, str] = Field({}, description="static labels")
    batch_lines: int = Field(100, gt=0, description="lines per batch")
    gzip: bool = Field(False, description="compress")
    token: SecretStr | None = secret(description="bearer token")


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("target_url: http://file\nbatch_lines: 10\ngzip: true\nadmin_port: 1\n")
    env = {"DEMO_TARGET_URL": "http://env", "DEMO_BATCH_LINES": "20", "SIDECAR_ADMIN_PORT": "2"}
    loaded = load(Demo, flags={"target_url": ["http://flag"]}, environ=env, config_file=cfg)
    s = loaded.settings
    assert isinstance(s, Demo)
    assert (s.target_url, s.batch_lines, s.gzip, s.admin_port) == ("http://flag", 20, True, 2)
    assert s.include == ["/var/log/*.log"]
    assert loaded.sources == {
        "target_url": "--target-url",
        "batch_lines": "env DEMO_BATCH_LINES",
        "gzip": f"{cfg}:3 gzip",
        "admin_port": "env SIDECAR_ADMIN_PORT",
    }


def test_lists_dicts_and_yaml_values_from_text() -> None:
    env = {"DEMO_INCLUDE": "/a/*.log, /b/**/*.log", "DEMO_LABELS": "team=core,env=prod"}
    s = load(Demo, flags={"target_url": ["x"]}, environ=env).settings
    assert isinstance(s, Demo)
    assert s.include == ["/a/*.log", "/b/**/*.log"]
    assert s.labels == {"team": "core", "env": "prod"}
    s2 = load(Demo, flags={"target_url": ["x"], "include": ["/c", "/d"], "labels": ['{"a": "b"}']}, environ={})
    assert isinstance(s2.settings, Demo)
    assert s2.settings.include == ["/c", "/d"] and s2.settings.labels == {"a": "b"}


def test_every_problem_reported_at_once_with_its_source(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_lines: 0\nbatch_linez: 5\n")
    with pytest.raises(ConfigError) as info:
        load(Demo, flags={"admin_port": ["http"]}, environ={"DEMO_GZIP": "perhaps"}, config_file=cfg)
    text = str(info.value)
    problems = {p.where: p.message for p in info.value.problems}
    assert "5 problems" in text
    assert "greater than 0" in problems[f"{cfg}:1 batch_lines"]
    assert "did you mean 'batch_lines'" in problems[f"{cfg}:2 batch_linez"]
    assert "valid integer" in problems["--admin-port"]
    assert "valid boolean" in problems["env DEMO_GZIP"]
    assert "--target-url" in problems["target_url"] and "DEMO_TARGET_URL" in problems["target_url"]


def test_bad_yaml_and_unreadable_file_are_problems_not_tracebacks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError) as info:
        load(Demo, flags={"target_url": ["x"]}, environ={}, config_file=bad)
    assert "not valid YAML" in str(info.value) and "line" in str(info.value)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(Demo, flags={"target_url": ["x"]}, environ={}, config_file=tmp_path / "missing.yaml")


def test_secret_from_file_and_redacted_everywhere(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-value\n")
    loaded = load(Demo, flags={"target_url": ["x"]}, environ={"DEMO_TOKEN_FILE": str(token_file)})
    s = loaded.settings
    assert isinstance(s, Demo) and s.token is not None
    assert s.token.get_secret_value() == "s3cr3t-value"
    assert loaded.sources["token"] == "env DEMO_TOKEN_FILE"
    assert "s3cr3t" not in render(loaded) and "s3cr3t" not in repr(s)
    assert redacted(s)["token"] == "**********"


def test_secret_looking_keys_inside_mappings_are_redacted() -> None:
    s = load(Demo, flags={"target_url": ["x"], "labels": ["password=hunter2,team=a"]}, environ={}).settings
    assert redacted(s)["labels"] == {"password": "**********", "team": "a"}


def test_unknown_env_with_our_prefix_warns_but_service_links_are_quiet() -> None:
    env = {"DEMO_TARGET_URL": "x", "DEMO_BATCH_LINEZ": "5", "DEMO_PORT": "tcp://10.0.0.1:80", "DEMO_SERVICE_HOST": "h"}
    loaded = load(Demo, environ=env)
    assert [str(w) for w in loaded.warnings] == [
        "env DEMO_BATCH_LINEZ: matches no option and is ignored (did you mean DEMO_BATCH_LINES?)"
    ]


class Validated(SidecarSettings):
    env_prefix = "VAL_"
    rules: str = Field("", description="rules text")

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: str) -> str:
        if value == "bad":
            raise ValueError("2 problems in rules:\nrule a: bad expr\nrule b: no name")
        return value


def test_validator_messages_lose_the_prefix_and_keep_their_lines_under_the_bullet() -> None:
    with pytest.raises(ConfigError) as info:
        load(Validated, flags={"rules": ["bad"]}, environ={})
    assert info.value.problems[0].message.startswith("2 problems in rules:")
    assert "  - --rules: 2 problems in rules:\n    rule a: bad expr\n    rule b: no name" in str(info.value)


def test_errors_never_echo_a_mapping_that_may_hold_credentials() -> None:
    class WithSink(SidecarSettings):
        sink_config: dict[str, str] = Field({}, description="free-form sink options")

        @field_validator("sink_config")
        @classmethod
        def _known(cls, value: dict[str, str]) -> dict[str, str]:
            if "bearer_tokn" in value:
                raise ValueError("sink_config.bearer_tokn: unknown option")
            return value

    with pytest.raises(ConfigError) as info:
        load(WithSink, flags={"sink_config": ['{"url": "http://x", "bearer_tokn": "abc123"}']}, environ={})
    assert "abc123" not in str(info.value) and "bearer_tokn: unknown option" in str(info.value)
    shown = redacted(load(WithSink, flags={"sink_config": ["X-Api-Key=k9,Private-Key=p1,team=a"]}, environ={}).settings)
    assert shown["sink_config"] == {"X-Api-Key": "**********", "Private-Key": "**********", "team": "a"}


class WithUrls(SidecarSettings):
    env_prefix = "URLS_"
    target_url: str = Field("http://127.0.0.1/metrics", description="a URL")
    mirrors: list[str] = Field([], description="more URLs")
    sink_config: dict[str, Any] = Field({}, description="free-form sink options")
    token: SecretStr | None = secret(description="bearer token")
    retries: int = Field(3, ge=0, description="a number")

    @field_validator("target_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith("http"):
            raise ValueError(f"must be an http URL, got {value}")
        return value


def test_print_config_shows_urls_without_credentials_or_secret_parameters() -> None:
    flags = {
        "target_url": ["https://user:pw-1@app:8443/metrics?token=tk-1&format=text"],
        "mirrors": ["http://m1/?X-Amz-Signature=sg-1&X-Amz-Date=20240101,http://m2/?page=2"],
        "sink_config": ['{"url": "https://logs/push?api_key=ak-1", "headers": {"X-Team": "a"}}'],
    }
    text = render(load(WithUrls, flags=flags, environ={}))
    for secret_text in ("pw-1", "tk-1", "sg-1", "ak-1", "user:"):
        assert secret_text not in text, secret_text
    assert "target_url: https://**********@app:8443/metrics?token=**********&format=text  # from --target-url" in text
    assert "- http://m1/?X-Amz-Signature=**********&X-Amz-Date=20240101" in text
    assert "- http://m2/?page=2" in text
    assert "url: https://logs/push?api_key=**********" in text and "X-Team: a" in text


def test_configuration_errors_show_urls_redacted() -> None:
    with pytest.raises(ConfigError) as info:
        load(WithUrls, flags={"target_url": ["ftp://u:pw-2@h/?sig=sg-2"], "retries": ["x?token=tk-2"]}, environ={})
    shown = str(info.value)
    assert "pw-2" not in shown and "sg-2" not in shown and "tk-2" not in shown
    assert "--target-url: must be an http URL, got ftp://**********@h/?sig=**********" in shown
    assert "--retries: Input should be a valid integer" in shown and "(got 'x?token=**********')" in shown


def test_secret_values_lists_what_the_logs_must_mask() -> None:
    flags = {
        "token": ["tok-999"],
        "sink_config": ['{"bearer_token": "bt-999", "secret_headers": {"X-Key": "sh-999"}, "url": "http://h"}'],
    }
    assert secret_values(load(WithUrls, flags=flags, environ={}).settings) == {"tok-999", "bt-999", "sh-999"}
