"""Fixtures of the control plane's integration tests; the helpers live in `support`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecars.ambassador.cluster.cluster import Cluster, ClusterConfig
from sidecars.core.logs import Capture
from sidecars.testing import free_port
from tests.integration.ambassador_control.support import NGINX_SERVER, Upstream
from tests.support.nginx import Nginx


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[[int], Awaitable[list[Upstream]]]]:
    made: list[Upstream] = []

    async def make(n: int) -> list[Upstream]:
        servers = [Upstream(free_port()) for _ in range(n)]
        for s in servers:
            await s.start()
        made.extend(servers)
        return servers

    yield make
    for s in made:
        await s.stop()


@pytest.fixture
async def clusters() -> AsyncIterator[Callable[..., Cluster]]:
    """`clusters(config_dict, resolver=...)`: an unstarted cluster with captured logs, stopped at the end."""
    made: list[Cluster] = []

    def make(resolver: Any = None, **config: Any) -> Cluster:
        capture = Capture()
        cluster = Cluster("it", ClusterConfig(**config), CollectorRegistry(), capture.logger(), resolver=resolver)
        cluster.capture = capture  # type: ignore[attr-defined]
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        await cluster.stop()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path, NGINX_SERVER)
    yield server
    server.stop()
