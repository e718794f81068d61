"""Load balancers: given the endpoints that may serve, choose one for the next try.

Each balancer is told the candidate list when it changes (`update`, rare: discovery, health,
ejection) and picks from it per request (`pick`, hot: O(1), or O(log n) for the hash ring).
`exclude` holds endpoints this request already failed on; a pick avoids them while another exists.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import time
import zlib
from collections.abc import Collection, Sequence
from typing import ClassVar

from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.core.registry import Registry


class Balancer:
    name: ClassVar[str]

    def __init__(self) -> None:
        self._eps: Sequence[Endpoint] = ()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        """The candidates changed; `endpoints` is in a stable (discovery) order."""
        self._eps = endpoints

    def pick(
        self, hash_key: bytes | None = None, exclude: Collection[Endpoint] = (), now: float = 0.0
    ) -> Endpoint | None:
        """`now` is the caller's monotonic time (read once per request); 0 means read it here."""
        raise NotImplementedError

    def _first_not_excluded(self, exclude: Collection[Endpoint]) -> Endpoint | None:
        for ep in self._eps:
            if ep not in exclude:
                return ep
        return None


class RoundRobin(Balancer):
    """Each endpoint in turn; an endpoint in slow start is skipped with probability 1 - weight."""

    name = "round_robin"

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def pick(
        self, hash_key: bytes | None = None, exclude: Collection[Endpoint] = (), now: float = 0.0
    ) -> Endpoint | None:
        eps = self._eps
        n = len(eps)
        if not n:
            return None
        for _ in range(n):
            i = self._next % n
            self._next = i + 1
            ep = eps[i]
            if ep in exclude:
                continue
            if ep._ramp_secs:
                now = now or time.monotonic()
                if random.random() >= ep.weight(now):
                    continue
            return ep
        return self._first_not_excluded(exclude)


class _PowerOfTwo(Balancer):
    """Two distinct endpoints drawn at random; the lower `_cost` wins (ties go to the first drawn)."""

    def pick(
        self, hash_key: bytes | None = None, exclude: Collection[Endpoint] = (), now: float = 0.0
    ) -> Endpoint | None:
        eps = self._eps
        n = len(eps)
        if n <= 1:
            return eps[0] if n and eps[0] not in exclude else None
        i = int(random.random() * n)
        j = int(random.random() * (n - 1))
        if j >= i:
            j += 1
        a = eps[i]
        b = eps[j]
        if exclude:
            if a in exclude:
                a = b
                if a in exclude:
                    return self._first_not_excluded(exclude)
                return a
            if b in exclude:
                return a
        now = now or time.monotonic()
        return a if self._cost(a, now) <= self._cost(b, now) else b

    @staticmethod
    def _cost(ep: Endpoint, now: float) -> float:
        raise NotImplementedError


class P2cEwma(_PowerOfTwo):
    """Power of two choices on peak-EWMA latency x requests in flight (Finagle's and Linkerd's default)."""

    name = "p2c_ewma"
    # The endpoint's own method, unbound: one call per candidate instead of two.
    _cost = staticmethod(Endpoint.load)  # type: ignore[assignment]


class LeastRequest(_PowerOfTwo):
    """Power of two choices on requests in flight (Envoy's least_request), divided by the weight."""

    name = "least_request"

    @staticmethod
    def _cost(ep: Endpoint, now: float) -> float:
        if ep._ramp_secs:
            return (ep.active + 1) / ep.weight(now)
        return ep.active + 1


_MASK64 = (1 << 64) - 1


def hash64(data: bytes) -> int:
    """A stable 64-bit hash for ring points: the same endpoint lands on the same points everywhere."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def key_hash(data: bytes) -> int:
    """A stable 64-bit hash of a request's key, five times cheaper than blake2b (it runs per request):
    CRC-32 spread over 64 bits by Fibonacci multiplication, so the high bits the ring compares
    depend on every input bit. Stable across processes, unlike `hash()`."""
    return (zlib.crc32(data) * 0x9E3779B97F4A7C15) & _MASK64


class ConsistentHash(Balancer):
    """A hash ring with `VNODES` points per endpoint, placed by hashing the endpoint's key.

    Points depend only on the endpoint's own key, so when an endpoint leaves only the keys that
    mapped to it move (to the next point on the ring); all other keys stay where they were.
    Without a hash key a request goes to a random endpoint.
    """

    name = "hash"
    VNODES = 160

    def __init__(self) -> None:
        super().__init__()
        self._points: list[int] = []
        self._owners: list[Endpoint] = []

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        super().update(endpoints)
        ring = sorted((hash64(f"{ep.key}#{v}".encode()), ep.key, ep) for ep in endpoints for v in range(self.VNODES))
        self._points = [p for p, _, _ in ring]
        self._owners = [ep for _, _, ep in ring]

    def pick(
        self, hash_key: bytes | None = None, exclude: Collection[Endpoint] = (), now: float = 0.0
    ) -> Endpoint | None:
        owners = self._owners
        if not owners:
            return None
        if hash_key is None:
            i = int(random.random() * len(owners))
        else:
            i = bisect.bisect_left(self._points, key_hash(hash_key))
        n = len(owners)
        ep = owners[i % n]
        if ep not in exclude:
            return ep
        # Walk on to the next endpoint on the ring, as if the excluded one had left.
        for step in range(1, n):
            ep = owners[(i + step) % n]
            if ep not in exclude:
                return ep
        return None


BALANCERS: dict[str, type[Balancer]] = {cls.name: cls for cls in (P2cEwma, LeastRequest, RoundRobin, ConsistentHash)}
# Installed packages add balancers here (`name = "package.module:Class"`, a `Balancer` subclass), each
# under a name of its own: a built-in's name has one provider (see sidecars.core.registry).
ENTRY_POINT_GROUP = "sidecars.ambassador.balancers"
REGISTRY: Registry[Balancer] = Registry(ENTRY_POINT_GROUP, Balancer, BALANCERS, kind="balancer")


def balancer_names() -> list[str]:
    """Built-in balancers first, then those installed packages provide."""
    return REGISTRY.names()


def balancer_class(name: str) -> type[Balancer]:
    """The class of a balancer by name; PluginError (a ValueError) saying why not and what is installed."""
    return REGISTRY.load(name)


def make_balancer(name: str) -> Balancer:
    return balancer_class(name)()
