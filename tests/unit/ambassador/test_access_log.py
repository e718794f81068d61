"""What an access log line shows of a request target: query values redacted, dropped or kept."""

from __future__ import annotations

import pytest

from sidecars.ambassador.proxy.access_log import MAX_PATH_CHARS, shown_target
from sidecars.core.redact import MARKER, redact_text


@pytest.mark.parametrize(
    ("target", "redact", "drop"),
    [
        (b"/plain", "/plain", "/plain"),
        (b"/a?token=s3cr3t&page=2", "/a?token=**********&page=**********", "/a"),
        (b"/a?s3cr3t", "/a?**********", "/a"),  # no "=": it may be a bare token
        (b"/a?empty=&x=1=2", "/a?empty=&x=**********", "/a"),  # an empty value hides nothing
        (b"/a?k=v#frag", "/a?k=**********", "/a"),
        (b"/a?", "/a?", "/a"),
        (b"http://user:pw@host:80/p?k=v", "http://**********@host:80/p?k=**********", "http://**********@host:80/p"),
        (b"http://host/p@q?k=v", "http://host/p@q?k=**********", "http://host/p@q"),
        (b"/app;jsessionid=s3cr3t?y=1", "/app;jsessionid=**********?y=**********", "/app;jsessionid=**********"),
    ],
)
def test_query_values_and_userinfo_are_redacted_or_dropped(target: bytes, redact: str, drop: str) -> None:
    assert shown_target(target, "redact") == redact
    assert shown_target(target, "drop") == drop
    assert shown_target(target, "full") == redact_text(target.decode())  # what every log line masks


def test_a_long_target_is_cut_without_showing_any_part_of_a_value() -> None:
    secret = "s3cr3t" * 100
    shown = shown_target(b"/p?" + b"n=v&" * 60 + b"token=" + secret.encode(), "redact")
    assert len(shown) == MAX_PATH_CHARS
    assert "s3cr3t" not in shown and "=v" not in shown
    assert len(shown_target(b"/" + b"x" * 10_000, "full")) == MAX_PATH_CHARS


@pytest.mark.parametrize("query", ["redact", "drop", "full"])
def test_a_userinfo_longer_than_the_cut_is_masked_in_every_mode(query: str) -> None:
    token = "t0ken" * 60  # the `@` after it lies past MAX_PATH_CHARS
    shown = shown_target(f"http://{token}@host/p?k=v".encode(), query)
    assert shown.startswith(f"http://{MARKER}@host/p")
    assert "t0ken" not in shown
