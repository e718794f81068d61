"""gRPC over HTTP/2 as the proxy sees it: which requests are calls, their deadline, and the answers the
proxy makes itself.

A call is an HTTP/2 request whose `content-type` is `application/grpc` (or `application/grpc+proto`,
...). Its `grpc-timeout` header (`<digits><unit>`, at most 8 digits, units H M S m u n) is the call's
deadline. A failure the proxy produces is answered as gRPC clients expect it (the gRPC HTTP/2 protocol,
"Trailers-Only"): HTTP 200, `content-type: application/grpc`, `grpc-status` and a percent-encoded
`grpc-message`, in one HEADERS frame that ends the stream; never as an HTTP error page, which a gRPC
client can only report as UNKNOWN or INTERNAL.
"""

from __future__ import annotations

from collections.abc import Iterable

Header = tuple[bytes, bytes]

# Status codes (grpc/status.h), by the names `retry_on_grpc_status` and the metrics use.
OK = 0
CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNAVAILABLE = 14

STATUS_NAMES = {
    0: "ok",
    1: "cancelled",
    2: "unknown",
    3: "invalid-argument",
    4: "deadline-exceeded",
    5: "not-found",
    6: "already-exists",
    7: "permission-denied",
    8: "resource-exhausted",
    9: "failed-precondition",
    10: "aborted",
    11: "out-of-range",
    12: "unimplemented",
    13: "internal",
    14: "unavailable",
    15: "data-loss",
    16: "unauthenticated",
}
CODES = {name: code for code, name in STATUS_NAMES.items()}

# What each failure the proxy answers itself becomes for a gRPC client. Transient failures of the
# upstream are UNAVAILABLE (a client may retry them), timeouts DEADLINE_EXCEEDED, the proxy's own
# limits RESOURCE_EXHAUSTED, an upstream that broke the protocol INTERNAL. Anything else: UNAVAILABLE.
REASON_STATUS = {
    "no_healthy_upstream": UNAVAILABLE,
    "connect_failed": UNAVAILABLE,
    "upstream_reset": UNAVAILABLE,
    "upstream_refused_stream": UNAVAILABLE,
    "upstream_goaway": UNAVAILABLE,
    "upstream_5xx": UNAVAILABLE,
    "draining": UNAVAILABLE,
    "deadline_exceeded": DEADLINE_EXCEEDED,
    "upstream_timeout": DEADLINE_EXCEEDED,
    "overflow": RESOURCE_EXHAUSTED,
    "local_resources_exhausted": RESOURCE_EXHAUSTED,
    "client_connection_limit": RESOURCE_EXHAUSTED,
    "upstream_protocol_error": INTERNAL,
    "upstream_head_too_large": INTERNAL,
    "upstream_invalid_status": INTERNAL,
}

_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
MAX_TIMEOUT_DIGITS = 8  # the gRPC protocol's bound: a longer value is malformed


def is_grpc(content_type: bytes | None) -> bool:
    """`application/grpc`, alone or with a `+format` or parameters (the protocol's definition)."""
    if content_type is None or not content_type.startswith(b"application/grpc"):
        return False
    rest = content_type[16:17]
    return rest in (b"", b"+", b";")


def parse_timeout(value: bytes) -> float | None:
    """Seconds of a `grpc-timeout` value, or None when it is malformed (then it is ignored, as gRPC
    servers ignore it: the call has no deadline of its own, the listener's still applies)."""
    digits, unit = value[:-1], value[-1:]
    if not digits or len(digits) > MAX_TIMEOUT_DIGITS or not digits.isdigit() or unit not in _UNITS:
        return None
    return int(digits) * _UNITS[unit]


def format_timeout(secs: float) -> bytes:
    """`secs` as a `grpc-timeout` value, in the coarsest unit that keeps millisecond precision."""
    millis = max(0, int(secs * 1000))
    if millis < 10**MAX_TIMEOUT_DIGITS:
        return b"%dm" % millis
    return b"%dS" % min(int(secs), 10**MAX_TIMEOUT_DIGITS - 1)


def encode_message(text: str) -> bytes:
    """`grpc-message` percent-encoding: printable ASCII but `%` as is, every other byte as %XX."""
    out = bytearray()
    for byte in text.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def status_for(reason: str) -> int:
    return REASON_STATUS.get(reason, UNAVAILABLE)


def trailers_only(code: int, message: str, reason: str, extra: Iterable[Header] = ()) -> list[Header]:
    """The one HEADERS frame of a call the proxy ends itself: HTTP 200 and the gRPC status."""
    return [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"%d" % code),
        (b"grpc-message", encode_message(message)),
        (b"x-ambassador-reason", reason.encode()),
        *extra,
    ]


def status_of(headers: Iterable[Header]) -> int | None:
    """The `grpc-status` among `headers` (trailers, or a Trailers-Only response), None if absent or bad."""
    for name, value in headers:
        if name == b"grpc-status":
            return int(value) if value.isdigit() and len(value) <= 3 else None
    return None


def method_of(path: bytes) -> str:
    """`/package.Service/Method` as a log shows it (bounded: a path is at most a header list long)."""
    return path[:200].decode("latin-1")


__all__ = [
    "CODES",
    "STATUS_NAMES",
    "encode_message",
    "format_timeout",
    "is_grpc",
    "method_of",
    "parse_timeout",
    "status_for",
    "status_of",
    "trailers_only",
]
