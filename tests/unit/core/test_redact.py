"""URL and text redaction: what every place that shows a URL, an error or a config value relies on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from yarl import URL

from sidecars.core import redact
from sidecars.core.redact import MARKER, is_secret_key, is_secret_param, redact_text, redact_url, register_secret

M = MARKER


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    redact.forget_secrets()
    yield
    redact.forget_secrets()


@pytest.mark.parametrize(
    "name",
    [
        "api_key", "apikey", "API_KEY", "Api-Key", "x-api-key", "key", "KEY", "token", "access_token",
        "refresh_token", "id_token", "auth_token", "secret", "client_secret", "password", "passwd", "pwd",
        "pass", "sig", "Sig", "signature", "auth", "X-Amz-Signature", "x-amz-signature", "X-Amz-Credential",
        "X-Amz-Security-Token", "X-Goog-Signature", "X-Goog-Credential", "code", "jwt", "session",
        "sessionid", "PHPSESSID", "jsessionid", "subscription-key", "access_key", "SharedAccessKey",
        "private_key", "authorization", "credentials", "hmac", "otp", "ticket", "passphrase", "x-auth",
        "api%5Fkey", "auth[token]", "user.password",
    ],
)  # fmt: skip
def test_secret_parameter_names(name: str) -> None:
    assert is_secret_param(name)
    assert redact_url(f"https://h/p?{name}=v4lue&page=2") == f"https://h/p?{name}={M}&page=2"


@pytest.mark.parametrize(
    "name", ["page", "limit", "q", "sv", "se", "sp", "X-Amz-Date", "X-Amz-Expires", "tenant", "author", "codec"]
)
def test_ordinary_parameter_names_are_kept(name: str) -> None:
    assert not is_secret_param(name)
    assert redact_url(f"https://h/p?{name}=v") == f"https://h/p?{name}=v"


def test_url_userinfo_is_replaced_whole() -> None:
    assert redact_url("https://user:pa55@es:9200/_bulk") == f"https://{M}@es:9200/_bulk"
    # A token given as the user name (GitHub, Sentry style) is as secret as a password.
    assert redact_url("https://ghp_abcdef@github.com/x") == f"https://{M}@github.com/x"
    # An unencoded `@` in the password: the userinfo runs to the last `@` of the authority.
    assert redact_url("http://u:p@ss@h/x?y=1") == f"http://{M}@h/x?y=1"
    assert redact_url("http://h:80/a@b") == "http://h:80/a@b"  # an `@` in the path is no userinfo
    assert redact_url("http://@h/") == "http://@h/"


def test_the_whole_url_stays_readable() -> None:
    url = "https://user:pw@logs.example:8443/v1/push;jsessionid=ABC?tenant=t1&X-Amz-Signature=f00&X-Amz-Date=20240101#access_token=zz&state=s"
    assert redact_url(url) == (
        f"https://{M}@logs.example:8443/v1/push;jsessionid={M}?tenant=t1&X-Amz-Signature={M}&X-Amz-Date=20240101"
        f"#access_token={M}&state=s"
    )


def test_secret_parameters_with_odd_values() -> None:
    assert redact_url("https://h/?api_key=&x=1") == "https://h/?api_key=&x=1"  # nothing to hide
    assert redact_url("https://h/?token=a%20b%26c&x=1") == f"https://h/?token={M}&x=1"
    assert redact_url("https://h/p;jsessionid=A1?page=2") == f"https://h/p;jsessionid={M}?page=2"
    assert redact_url("https://h/?token=1&token=2") == f"https://h/?token={M}&token={M}"
    assert redact_url(URL("https://u:p@h/?sig=Zm9v")) == f"https://{M}@h/?sig={M}"


def test_urls_inside_messages_are_redacted() -> None:
    # aiohttp's ClientResponseError and InvalidURL quote the URL in yarl's repr.
    message = "404, message='Not Found', url=URL('https://127.0.0.1:9/i?api_key=QQ1&b=2')"
    assert redact_text(message) == f"404, message='Not Found', url=URL('https://127.0.0.1:9/i?api_key={M}&b=2')"
    assert redact_text('{"url": "http://a:b@h/?token=t"}') == f'{{"url": "http://{M}@h/?token={M}"}}'
    assert redact_text("GET /metrics?token=abc HTTP/1.1") == f"GET /metrics?token={M} HTTP/1.1"
    assert redact_text("see http://h/x and mail me@example.org") == "see http://h/x and mail me@example.org"


def test_authorization_values_in_dumped_headers() -> None:
    assert redact_text("{'Authorization': 'Bearer eyJhbGc.x.y', 'Accept': '*/*'}") == (
        f"{{'Authorization': 'Bearer {M}', 'Accept': '*/*'}}"
    )
    assert redact_text("Authorization: Basic dXNlcjpwYXNz\r\n") == f"Authorization: Basic {M}\r\n"
    assert redact_text('"authorization":"abc123"') == f'"authorization":"{M}"'
    assert redact_text("proxy-authorization=xyz") == f"proxy-authorization={M}"


def test_text_without_secrets_is_untouched() -> None:
    for text in ["expected key=value pairs separated by commas", "a=b", "ratio 3/4 at 10:00", "", "=&?#;"]:
        assert redact_text(text) == text


def test_registered_secret_values_are_masked_anywhere() -> None:
    register_secret("tok-123456")
    register_secret("tok-123456-longer")  # containing another: masked whole, longest first
    register_secret("short")  # under MIN_SECRET_CHARS: would mask ordinary words
    register_secret(None)
    assert redact_text("x tok-123456-longer y tok-123456 z") == f"x {M} y {M} z"
    assert redact_text("a short word") == "a short word"
    redact.forget_secrets()
    assert redact_text("tok-123456") == "tok-123456"


def test_hostile_text_is_redacted_in_one_pass() -> None:
    # Long runs that every pattern starts on but never completes; each scan is disjoint from the
    # next, so this takes milliseconds (a backtracking pattern would take hours).
    hostile = ("?" + "a" * 300) * 3000 + ("://" + "b" * 300) * 3000 + "&" * 500_000 + "Authorization " * 20_000
    assert redact_text(hostile) == hostile
    tail = "?api_key=" + "s" * 100_000
    assert redact_text(hostile + tail) == hostile + "?api_key=" + M
    long_name = "x" * 5000 + "_token"
    assert redact_url(f"https://h/?{long_name}=v") == f"https://h/?{long_name}={M}"


def test_the_name_caches_are_bounded() -> None:
    for cached, check in ((redact._secret_param_cached, is_secret_param), (redact._secret_key_cached, is_secret_key)):
        cached.cache_clear()
        assert check("x" * 129 + "token")  # too long to be kept
        assert cached.cache_info().currsize == 0
        for i in range(5000):
            check(f"name{i}")
        assert cached.cache_info().currsize == 4096
