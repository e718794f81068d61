"""Telemetry, Vector-style: one call books an event's metric and writes its rate-limited log line.

- `Telemetry.dropped(reason, n)`: `sidecar_events_dropped{reason}` grows by `n`, and one line says so;
- `Telemetry.error(type, event)`: `sidecar_errors{type}` grows by one, and one line says what failed.

The metric counts every occurrence; the log only has to say that, and why, something happens. So the
line is rate limited per reason or type (`LogLimiter`): the first is written at once, the next ones at
most `burst` per `interval_secs`, each saying how many were left out since the last
(`suppressed_since_last`). A sidecar's own series that count the same event in its own unit (the
tailer's records) are booked in the same method of its metrics class, never at the call site.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any, Literal

from structlog.typing import FilteringBoundLogger

from sidecars.core.metrics import SidecarMetrics

__all__ = ["LogLimiter", "Telemetry"]

Level = Literal["debug", "info", "warning", "error"]

# Distinct keys remembered; past it the oldest is forgotten (and may be logged again at once), so
# keys built from what a peer sends cannot grow the memory.
MAX_KEYS = 256


class LogLimiter:
    """Writes a recurring line at most `burst` times per `interval_secs` per key (`None`: once per key).

    A token bucket per key: `burst` lines at once, then one more every `interval_secs / burst`.
    """

    def __init__(
        self,
        log: FilteringBoundLogger,
        interval_secs: float | None = 60.0,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval_secs = interval_secs
        self.burst = max(burst, 1)
        self._clock = clock
        # key -> [tokens, stamp of the last refill, suppressed since the last line]
        self._keys: collections.OrderedDict[str, list[float]] = collections.OrderedDict()

    def allow(self, key: str) -> int | None:
        """None when a line for `key` must be left out now; else how many were left out before it."""
        now = self._clock()
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = [float(self.burst), now, 0.0]
            if len(self._keys) > MAX_KEYS:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            if self.interval_secs is not None:
                refill = (now - state[1]) * self.burst / self.interval_secs if self.interval_secs > 0 else self.burst
                state[0] = min(float(self.burst), state[0] + refill)
            state[1] = now
        if state[0] < 1.0:
            state[2] += 1
            return None
        state[0] -= 1.0
        suppressed, state[2] = int(state[2]), 0.0
        return suppressed

    def reset(self, key: str) -> None:
        """Forget `key`: its next line is written at once (e.g. a failure after a recovery)."""
        self._keys.pop(key, None)

    def write(self, level: Level, event: str, *, key: str | None = None, **fields: Any) -> bool:
        """Write `event` unless its key (the event itself by default) is over its rate; True if written."""
        suppressed = self.allow(event if key is None else key)
        if suppressed is None:
            return False
        getattr(self.log, level)(event, suppressed_since_last=suppressed, **fields)
        return True

    def warning(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.write("warning", event, key=key, **fields)

    def error(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.write("error", event, key=key, **fields)


class Telemetry:
    """The base events of one sidecar: what was dropped and what failed, booked and logged together."""

    def __init__(self, metrics: SidecarMetrics, log: FilteringBoundLogger, interval_secs: float | None = 60.0) -> None:
        self.metrics = metrics
        self.limiter = LogLimiter(log, interval_secs)

    def dropped(
        self, reason: str, n: int = 1, event: str = "events dropped", *, level: Level = "warning", **fields: Any
    ) -> None:
        """`n` units of work given up for `reason` (a small fixed vocabulary: it is a label)."""
        if n <= 0:
            return
        self.metrics.events_dropped.labels(reason=reason).inc(n)
        self.limiter.write(level, event, key=f"dropped:{reason}", reason=reason, count=n, **fields)

    def error(self, type: str, event: str, *, level: Level = "error", key: str | None = None, **fields: Any) -> None:
        """One error of `type` (a label); `event` says what failed. `key` limits lines finer than by type."""
        self.metrics.errors.labels(type=type).inc()
        limit_key = f"error:{type}:{key}" if key else f"error:{type}"
        self.limiter.write(level, event, key=limit_key, error_type=type, **fields)
