"""The adapter's options for the target: no credentials in the URL, basic auth or a bearer token."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from sidecars.adapter.settings import AdapterSettings
from sidecars.core.config import ConfigError, load, render

SECRET = "s3cr3t-Pa55"


def problems(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load(AdapterSettings, **kwargs)  # type: ignore[arg-type]
    return caught.value.render()


@pytest.mark.parametrize("url", [f"http://scraper:{SECRET}@127.0.0.1:8080/metrics", f"http://{SECRET}@127.0.0.1/m"])
def test_credentials_in_the_url_are_refused_from_every_source(url: str, tmp_path: Path) -> None:
    config = tmp_path / "adapter.yaml"
    config.write_text(f"target_url: {url}\n")
    for source in ({"flags": {"target_url": [url]}}, {"environ": {"ADAPTER_TARGET_URL": url}}, {"config_file": config}):
        text = problems(**{"environ": {}, **source})
        assert "target_url must not hold credentials" in text and SECRET not in text


def test_the_url_must_be_http_with_a_host() -> None:
    text = problems(environ={"ADAPTER_TARGET_URL": "file:///etc/passwd"})
    assert "must be an http:// or https:// URL with a host" in text


def test_basic_auth_from_a_file_and_its_header(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    loaded = load(
        AdapterSettings,
        environ={
            "ADAPTER_TARGET_BASIC_AUTH_USERNAME": "scraper",
            "ADAPTER_TARGET_BASIC_AUTH_PASSWORD_FILE": str(secret_file),
        },
    )
    settings = loaded.settings
    assert isinstance(settings, AdapterSettings)
    assert settings.target_authorization() == "Basic " + base64.b64encode(f"scraper:{SECRET}".encode()).decode()
    assert SECRET not in render(loaded) and "target_basic_auth_password: '**********'" in render(loaded)


def test_a_bearer_token_and_its_header() -> None:
    settings = load(AdapterSettings, environ={"ADAPTER_TARGET_BEARER_TOKEN": SECRET}).settings
    assert isinstance(settings, AdapterSettings)
    assert settings.target_authorization() == f"Bearer {SECRET}"
    assert AdapterSettings().target_authorization() is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"ADAPTER_TARGET_BEARER_TOKEN": SECRET, "ADAPTER_TARGET_BASIC_AUTH_USERNAME": "u"},
            "choose basic auth or a bearer token for the target, not both",
        ),
        ({"ADAPTER_TARGET_BASIC_AUTH_PASSWORD": SECRET}, "target_basic_auth_username is required"),
    ],
)
def test_inconsistent_auth_options_are_refused(environ: dict[str, str], message: str) -> None:
    text = problems(environ=environ)
    assert message in text and SECRET not in text


@pytest.mark.parametrize(
    ("given", "interval", "timeout"),
    [
        ({"ADAPTER_SCRAPE_INTERVAL_SECS": "1"}, 1.0, 1.0),
        ({"ADAPTER_SCRAPE_INTERVAL_SECS": "0.5"}, 0.5, 0.5),
        ({"ADAPTER_SCRAPE_INTERVAL_SECS": "30"}, 30.0, 5.0),
        ({}, 10.0, 5.0),
        ({"ADAPTER_SCRAPE_INTERVAL_SECS": "1", "ADAPTER_SCRAPE_TIMEOUT_SECS": "0.25"}, 1.0, 0.25),
    ],
)
def test_an_unset_timeout_follows_an_interval_shorter_than_its_default(
    given: dict[str, str], interval: float, timeout: float
) -> None:
    settings = load(AdapterSettings, environ=given).settings
    assert isinstance(settings, AdapterSettings)
    assert (settings.scrape_interval_secs, settings.scrape_timeout_secs) == (interval, timeout)


def test_a_timeout_given_above_the_interval_is_still_refused() -> None:
    text = problems(environ={"ADAPTER_SCRAPE_INTERVAL_SECS": "1", "ADAPTER_SCRAPE_TIMEOUT_SECS": "2"})
    assert "scrape_timeout_secs (2.0) must not exceed scrape_interval_secs (1.0)" in text
    text = problems(environ={"ADAPTER_SCRAPE_INTERVAL_SECS": "often"})
    assert "ADAPTER_SCRAPE_INTERVAL_SECS: Input should be a valid number" in text and "timeout" not in text
