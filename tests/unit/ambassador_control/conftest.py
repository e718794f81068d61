"""Shared fixtures of the control plane's unit tests: a controllable clock and started clusters."""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecars.ambassador.cluster.cluster import Cluster, ClusterConfig
from sidecars.core.logs import Capture

# Modules of the control plane that read the monotonic clock.
CLOCK_USERS = ("endpoint", "cluster", "balancer", "metrics")


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """Replaces `time` in the control plane's modules only; the event loop keeps the real clock."""
    fake = FakeClock()
    namespace = types.SimpleNamespace(monotonic=fake, time=fake, perf_counter=fake)
    for module in CLOCK_USERS:
        monkeypatch.setattr(f"sidecars.ambassador.cluster.{module}.time", namespace)
    yield fake


MakeCluster = Callable[..., Awaitable[tuple[Cluster, Capture]]]


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., Awaitable[tuple[Cluster, Capture]]]]:
    """`await make_cluster(n, **config)`: a started cluster of n static endpoints, no active checks."""
    started: list[Cluster] = []

    async def make(n: int = 3, **config: Any) -> tuple[Cluster, Capture]:
        config.setdefault("health_check", {"kind": "none"})
        config.setdefault("endpoints", [f"127.0.0.1:{20001 + i}" for i in range(n)])
        capture = Capture()
        cluster = Cluster("test", ClusterConfig(**config), CollectorRegistry(), capture.logger())
        await cluster.start()
        started.append(cluster)
        return cluster, capture

    yield make
