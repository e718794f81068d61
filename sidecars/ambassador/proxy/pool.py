"""Idle keep-alive upstream connections, per endpoint, reused last-in first-out.

LIFO keeps the busiest few connections warm and lets the rest age out through the idle timeout, so
the pool shrinks by itself after a burst. A connection the server closed while idle is dropped the
moment its EOF arrives (the protocol tells the pool), and `take()` re-checks, so a request is never
written into a connection already known to be dead: the main half of the keep-alive race.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from sidecars.ambassador.cluster.endpoint import Endpoint


class Pooled(Protocol):
    """What the pool needs of a connection."""

    endpoint: Endpoint
    idle_since: float
    in_pool: bool

    def usable(self) -> bool: ...
    def close(self) -> None: ...


class Pool:
    """Idle connections of one listener's cluster, keyed by endpoint."""

    def __init__(self, max_idle_per_endpoint: int, idle_timeout_secs: float) -> None:
        self.max_idle = max_idle_per_endpoint
        self.idle_timeout = idle_timeout_secs
        self._idle: dict[str, list[Pooled]] = {}

    def take(self, endpoint: Endpoint) -> Pooled | None:
        """The most recently used live idle connection to `endpoint`, or None."""
        stack = self._idle.get(endpoint.key)
        while stack:
            conn = stack.pop()
            conn.in_pool = False
            if conn.usable():
                return conn
            conn.close()
        return None

    def put(self, conn: Pooled, now: float) -> None:
        """Keep `conn` for reuse, unless its endpoint is leaving or the pool is full."""
        endpoint = conn.endpoint
        if endpoint.draining or not conn.usable():
            conn.close()
            return
        stack = self._idle.setdefault(endpoint.key, [])
        if len(stack) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        conn.in_pool = True
        stack.append(conn)

    def discard(self, conn: Pooled) -> None:
        """Forget `conn` (it closed while idle)."""
        stack = self._idle.get(conn.endpoint.key)
        if stack and conn.in_pool:
            conn.in_pool = False
            with contextlib.suppress(ValueError):
                stack.remove(conn)

    def close_endpoint(self, endpoint: Endpoint) -> None:
        """Close every idle connection to `endpoint` (removed by discovery); busy ones finish first."""
        for conn in self._idle.pop(endpoint.key, []):
            conn.in_pool = False
            conn.close()

    def sweep(self, now: float) -> None:
        """Close connections idle longer than the idle timeout; the oldest sit at the bottom."""
        limit = now - self.idle_timeout
        for key, stack in list(self._idle.items()):
            expired = 0
            while expired < len(stack) and stack[expired].idle_since <= limit:
                expired += 1
            if expired:
                for conn in stack[:expired]:
                    conn.in_pool = False
                    conn.close()
                del stack[:expired]
            if not stack:
                del self._idle[key]

    def retire(self) -> None:
        """Close every idle connection and keep none from now on: its connections drain (they were
        opened with TLS material since replaced)."""
        self.max_idle = 0
        self.close_all()

    def idle_count(self) -> int:
        return sum(len(s) for s in self._idle.values())

    def close_all(self) -> None:
        for stack in self._idle.values():
            for conn in stack:
                conn.in_pool = False
                conn.close()
        self._idle.clear()
