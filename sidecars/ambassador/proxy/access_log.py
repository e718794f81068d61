"""Structured access log lines: off, failures only (rate-limited), or every request (sampled).

Logging a line costs more than proxying a small request, so the default logs only the requests the
proxy itself failed, at most `ERRORS_PER_SEC` a second, each naming the failure reason.

Request targets carry secrets (`?token=`, signed-URL signatures, `user:password@` in an absolute-form
target), and log stores are read by more people than the app's secrets are. Every log line already
masks what looks secret (`sidecars.core.redact`); an access log line goes further by default and
replaces every query value with the same marker, the names kept, so a line still tells which
parameters were sent; a part without `=` may be a bare token and is replaced whole. Redaction runs on
the whole target (bounded by `max_header_bytes`) before it is cut to `MAX_PATH_CHARS`, so a cut never
exposes the start of a value.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from sidecars.core.redact import MARKER, redact_text

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from sidecars.ambassador.proxy.http_proxy import Exchange

ERRORS_PER_SEC = 10.0
MAX_PATH_CHARS = 200


class AccessLog:
    def __init__(
        self, log: FilteringBoundLogger, listener: str, mode: str, sample_percent: float, query: str = "redact"
    ) -> None:
        self.log = log
        self.query = query
        self.listener = listener
        self.enabled = mode != "off"
        self.all = mode == "all"
        self.sample = sample_percent / 100.0
        self._tokens = ERRORS_PER_SEC
        self._stamp = time.monotonic()
        self.suppressed = 0

    def _allow_error(self) -> bool:
        now = time.monotonic()
        self._tokens = min(ERRORS_PER_SEC, self._tokens + (now - self._stamp) * ERRORS_PER_SEC)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def request(self, ex: Exchange, status: int, endpoint: str, reason: str, elapsed_s: float) -> None:
        if reason:
            if not self._allow_error():
                return
        elif self.sample < 1.0 and random.random() >= self.sample:
            return
        fields: dict[str, Any] = {
            "listener": self.listener,
            "method": ex.method.decode("latin-1"),
            "path": shown_target(_target(ex.head), self.query),
            "status": status,
            "endpoint": endpoint or None,
            "tries": ex.tries,
            "duration_ms": round(elapsed_s * 1000.0, 3),
            "request_id": ex.rid.decode("latin-1") if ex.rid else None,
        }
        if reason:
            fields["reason"] = reason
            if self.suppressed:
                fields["suppressed_since_last"] = self.suppressed
                self.suppressed = 0
            self.log.warning("request failed", **fields)
        else:
            self.log.info("request", **fields)

    def call(
        self,
        method: bytes,
        path: bytes,
        status: int,
        grpc_status: int | None,
        reason: str,
        tries: int,
        elapsed_s: float,
    ) -> None:
        """One HTTP/2 stream; a gRPC call's line carries its method (the path) and its grpc_status."""
        if not self.enabled or (not reason and not self.all):
            return
        if reason:
            if not self._allow_error():
                return
        elif self.sample < 1.0 and random.random() >= self.sample:
            return
        fields: dict[str, Any] = {
            "listener": self.listener,
            "protocol": "http2",
            "method": method[:16].decode("latin-1"),
            "status": status,
            "tries": tries,
            "duration_ms": round(elapsed_s * 1000.0, 3),
        }
        if grpc_status is None:
            fields["path"] = shown_target(path[:2048], self.query)
        else:
            fields["grpc_method"] = path[:200].decode("latin-1")
            fields["grpc_status"] = grpc_status
        if reason:
            fields["reason"] = reason
            if self.suppressed:
                fields["suppressed_since_last"] = self.suppressed
                self.suppressed = 0
            self.log.warning("request failed", **fields)
        else:
            self.log.info("request", **fields)

    def bad_request(self, status: int, reason: str, url: bytes) -> None:
        if self.enabled and self._allow_error():
            self.log.warning(
                "bad request",
                listener=self.listener,
                status=status,
                reason=reason,
                path=shown_target(url, self.query),
            )


def _target(head: bytes) -> bytes:
    line = head[: head.find(b"\r\n")]
    parts = line.split(b" ")
    return parts[1] if len(parts) > 1 else b""


def shown_target(target: bytes, query: str) -> str:
    """The request target as a log line shows it: query values redacted, dropped or kept (`query`)."""
    # What every log line masks (userinfo, secret parameters) is masked here already, in every mode:
    # after the cut a long userinfo would have lost the `@` that the core's rule looks for.
    text = redact_text(target.decode("latin-1"))
    if query != "full":
        mark = text.find("?")
        if mark >= 0:
            text = text[:mark] if query == "drop" else text[: mark + 1] + _values_replaced(text[mark + 1 :])
    return text[:MAX_PATH_CHARS]


def _values_replaced(query: str) -> str:
    out = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq:
            out.append(f"{name}={MARKER}" if value else part)
        else:
            out.append(MARKER if part else part)
    return "&".join(out)
