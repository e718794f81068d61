"""Retry budget and circuit breaker: plain counters checked on the request path, O(1) each."""

from __future__ import annotations

import time
from collections.abc import Callable

from sidecars.ambassador.cluster.config import CircuitBreakerConfig, RetryBudgetConfig


class RetryBudget:
    """Retries allowed: `ratio` of the requests of the last `window_secs`, plus a floor per second.

    Like Finagle's budget: every request deposits `ratio` of a retry, every retry withdraws one, and a
    reserve of `min_retries_per_sec * window_secs` lets quiet clusters retry at all. Counts live in
    one-second buckets rotated lazily when the second changes, so no timer runs.
    """

    __slots__ = ("_buckets", "_clock", "_now_sec", "_ratio", "_requests", "_reserve", "_retries", "denied")

    def __init__(self, config: RetryBudgetConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._ratio = config.ratio_percent / 100.0
        self._reserve = config.min_retries_per_sec * config.window_secs
        self._clock = clock
        self._buckets = [[0, 0] for _ in range(config.window_secs)]  # [requests, retries] per second
        self._now_sec = int(clock())
        self._requests = 0  # sums over the window
        self._retries = 0
        self.denied = 0  # retries refused, for metrics

    def _rotate(self) -> list[int]:
        sec = int(self._clock())
        buckets = self._buckets
        if sec != self._now_sec:
            # Clear every bucket that fell out of the window since the last call (all of them if idle long).
            for s in range(max(self._now_sec + 1, sec - len(buckets) + 1), sec + 1):
                old = buckets[s % len(buckets)]
                self._requests -= old[0]
                self._retries -= old[1]
                old[0] = old[1] = 0
            self._now_sec = sec
        return buckets[sec % len(buckets)]

    def on_request(self) -> None:
        """Count one original request (not a retry)."""
        self._rotate()[0] += 1
        self._requests += 1

    def can_retry(self) -> bool:
        """True if one more retry fits the budget, and then counts it as spent."""
        bucket = self._rotate()
        if self._retries + 1 > self._reserve + self._ratio * self._requests:
            self.denied += 1
            return False
        bucket[1] += 1
        self._retries += 1
        return True

    @property
    def retries_in_window(self) -> int:
        self._rotate()
        return self._retries

    @property
    def requests_in_window(self) -> int:
        self._rotate()
        return self._requests


class CircuitBreaker:
    """Limits of connections, pending and in-flight requests; a refused acquire means answer 503 now."""

    __slots__ = (
        "connections",
        "max_connections",
        "max_pending",
        "max_requests",
        "overflows",
        "pending",
        "requests",
    )

    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.max_connections = config.max_connections
        self.max_pending = config.max_pending
        self.max_requests = config.max_requests
        self.connections = 0
        self.pending = 0
        self.requests = 0
        # Refusals by limit, for metrics: connections, pending, requests.
        self.overflows = {"connections": 0, "pending": 0, "requests": 0}

    def try_acquire_connection(self) -> bool:
        if self.connections >= self.max_connections:
            self.overflows["connections"] += 1
            return False
        self.connections += 1
        return True

    def release_connection(self) -> None:
        self.connections -= 1

    def try_acquire_pending(self) -> bool:
        if self.pending >= self.max_pending:
            self.overflows["pending"] += 1
            return False
        self.pending += 1
        return True

    def release_pending(self) -> None:
        self.pending -= 1

    def try_acquire_request(self) -> bool:
        if self.requests >= self.max_requests:
            self.overflows["requests"] += 1
            return False
        self.requests += 1
        return True

    def release_request(self) -> None:
        self.requests -= 1

    @property
    def open(self) -> bool:
        """True while some limit is reached (new work of that kind is refused)."""
        return (
            self.connections >= self.max_connections
            or self.pending >= self.max_pending
            or self.requests >= self.max_requests
        )
