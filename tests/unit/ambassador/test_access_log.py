"""What an access log line shows of a request target: query values redacted, dropped or kept."""

from __future__ import annotations

import pytest

from sidecars.ambassador.proxy.access_log import MAX_PATH_CHARS, AccessLog, shown_target
from sidecars.ambassador.proxy.http_proxy import Exchange
from sidecars.core.logs import Capture
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


def _exchange(target: bytes, rid: bytes | None) -> Exchange:
    """What `AccessLog.request` reads of an exchange: its head, method, request id and tries."""
    ex = Exchange.__new__(Exchange)  # the fields only: no client connection behind it
    ex.head, ex.method, ex.rid, ex.tries = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"GET", rid, 2
    return ex


def test_the_lines_of_both_protocols_keep_their_fields_and_their_order() -> None:
    """Each line's fields in the order the JSON renderer writes them, the suppressed count included."""
    capture = Capture()
    log = AccessLog(capture.logger(), "web", "all", 100.0)
    log.request(_exchange(b"/a?k=v", b"r-1"), 200, "127.0.0.1:81", "", 0.0012345)
    log.call(b"GET", b"/b?k=v", 200, None, "", 1, 0.002)
    log.call(b"POST", b"/pkg.Svc/Do", 200, 14, "upstream_reset", 3, 0.5)
    log.suppressed = 4
    log.request(_exchange(b"/c", None), 502, "", "connect_failed", 1.0)
    log.suppressed = 2
    log.call(b"POST", b"/d", 503, None, "no_endpoint", 0, 0.0)
    lines = [list(event.items()) for event in capture.events]
    assert lines == [
        [
            ("listener", "web"), ("method", "GET"), ("path", f"/a?k={MARKER}"), ("status", 200),
            ("endpoint", "127.0.0.1:81"), ("tries", 2), ("duration_ms", 1.234), ("request_id", "r-1"),
            ("event", "request"), ("log_level", "info"),
        ],
        [
            ("listener", "web"), ("protocol", "http2"), ("method", "GET"), ("status", 200), ("tries", 1),
            ("duration_ms", 2.0), ("path", f"/b?k={MARKER}"), ("event", "request"), ("log_level", "info"),
        ],
        [
            ("listener", "web"), ("protocol", "http2"), ("method", "POST"), ("status", 200), ("tries", 3),
            ("duration_ms", 500.0), ("grpc_method", "/pkg.Svc/Do"), ("grpc_status", 14),
            ("reason", "upstream_reset"), ("event", "request failed"), ("log_level", "warning"),
        ],
        [
            ("listener", "web"), ("method", "GET"), ("path", "/c"), ("status", 502), ("endpoint", None),
            ("tries", 2), ("duration_ms", 1000.0), ("request_id", None), ("reason", "connect_failed"),
            ("suppressed_since_last", 4), ("event", "request failed"), ("log_level", "warning"),
        ],
        [
            ("listener", "web"), ("protocol", "http2"), ("method", "POST"), ("status", 503), ("tries", 0),
            ("duration_ms", 0.0), ("path", "/d"), ("reason", "no_endpoint"), ("suppressed_since_last", 2),
            ("event", "request failed"), ("log_level", "warning"),
        ],
    ]  # fmt: skip
    assert log.suppressed == 0  # reported once, then counted afresh
