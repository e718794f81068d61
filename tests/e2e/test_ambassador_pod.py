"""The ambassador example run as a Pod: balanced over the upstreams, and surviving one stopping."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.e2e.patterns import assert_clean_ordered_exit, healthy_endpoints, upstream_counts, wait_until
from tests.e2e.podrunner import Pod

pytestmark = pytest.mark.e2e


def test_native_ambassador_balances_and_survives_an_upstream_stopping(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("04-ambassador/pod.yaml")
    # The upstreams start after the ambassador (it is a native sidecar): wait for its health checks.
    wait_until(lambda: healthy_endpoints(pod) == 2, "both upstreams to be checked healthy")
    counts = upstream_counts(pod, 100)
    assert set(counts) == {"a", "b"}
    assert min(counts.values()) >= 20, counts  # balanced, not pinned to one endpoint
    # The app reaches its upstream through the ambassador's local address.
    status, body = pod.request(8080, "/")
    assert status == 200
    assert json.loads(json.loads(body)["upstream"])["upstream"] in {"a", "b"}

    assert pod.stop_container("upstream-a") == 0
    after = upstream_counts(pod, 50)  # every request answered: retried or routed away from a
    assert after == {"b": 50}

    states = pod.stop()
    assert_clean_ordered_exit(states, ["app", "ambassador"])


def test_classic_ambassador_serves_the_app(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("04-ambassador/pod-classic.yaml")
    wait_until(lambda: healthy_endpoints(pod) == 2, "both upstreams to be checked healthy")
    assert set(upstream_counts(pod, 20)) == {"a", "b"}
    assert pod.request(8080, "/")[0] == 200
    states = pod.stop_all_at_once()
    assert all(s["ExitCode"] == 0 for s in states.values()), states
