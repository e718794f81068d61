"""Structured access log lines: off, failures only (rate-limited), or every request (sampled).

Logging a line costs more than proxying a small request, so the default logs only the requests the
proxy itself failed, at most `ERRORS_PER_SEC` a second, each naming the failure reason.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from sidecars.ambassador.http_proxy import Exchange

ERRORS_PER_SEC = 10.0


class AccessLog:
    def __init__(self, log: FilteringBoundLogger, listener: str, mode: str, sample_percent: float) -> None:
        self.log = log
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
            "path": _path(ex.head),
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

    def bad_request(self, status: int, reason: str, url: bytes) -> None:
        if self.enabled and self._allow_error():
            self.log.warning(
                "bad request", listener=self.listener, status=status, reason=reason, path=url[:200].decode("latin-1")
            )


def _path(head: bytes) -> str:
    line = head[: head.find(b"\r\n")]
    parts = line.split(b" ")
    return parts[1][:200].decode("latin-1") if len(parts) > 1 else ""
