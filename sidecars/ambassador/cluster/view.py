"""What the data plane uses of a cluster: the one contract between `proxy/` and `cluster/`.

The HTTP and TCP request paths code against this protocol rather than against `Cluster`, so the
compiled request path depends on no control-plane class and a test can stand in for the cluster.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from sidecars.ambassador.cluster.budget import CircuitBreaker, RetryBudget
from sidecars.ambassador.cluster.endpoint import Endpoint


class ClusterView(Protocol):
    """Implemented by `sidecars.ambassador.cluster.cluster.Cluster`."""

    def pick(self, hash_key: bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None: ...

    @property
    def retry_budget(self) -> RetryBudget: ...

    @property
    def breaker(self) -> CircuitBreaker: ...
