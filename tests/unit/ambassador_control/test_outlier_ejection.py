"""Passive outlier ejection through the public request path: streaks, growth, cap, panic mode."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest

from sidecars.ambassador.cluster.cluster import Cluster
from sidecars.ambassador.cluster.endpoint import Endpoint, Outcome
from sidecars.core.logs import Capture
from tests.unit.ambassador_control.conftest import FakeClock, MakeCluster


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(99)


@pytest.fixture
def make_cluster(make_cluster: MakeCluster) -> MakeCluster:
    """Round robin here, so what is picked depends on health alone, not on latency."""

    async def make(n: int = 3, **config: Any) -> tuple[Cluster, Capture]:
        config.setdefault("balancer", "round_robin")
        return await make_cluster(n, **config)

    return make


def fail(ep: Endpoint, outcome: Outcome, times: int = 1) -> None:
    for _ in range(times):
        ep.start_request()
        ep.end_request(outcome, 0.002)


def picks(cluster: Cluster, n: int = 300) -> Counter[Endpoint | None]:
    return Counter(cluster.pick() for _ in range(n))


def sample(cluster: Cluster, name: str, **labels: str) -> float | None:
    return cluster._registry.get_sample_value(name, {"cluster": "test", **labels})


async def test_consecutive_5xx_eject_and_a_success_resets_the_streak(
    clock: FakeClock, make_cluster: MakeCluster
) -> None:
    cluster, capture = await make_cluster(3, outlier={"consecutive_errors": 5})
    ep = cluster.endpoints[0]
    fail(ep, Outcome.HTTP_5XX, 4)
    fail(ep, Outcome.OK)
    fail(ep, Outcome.HTTP_5XX, 4)
    assert ep.healthy and ep in picks(cluster)
    fail(ep, Outcome.HTTP_5XX)
    assert not ep.healthy
    assert ep not in picks(cluster)
    assert sample(cluster, "ambassador_endpoint_ejections_total", endpoint=ep.key) == 1
    assert sample(cluster, "ambassador_endpoint_state", endpoint=ep.key, state="ejected") == 1
    events = [e for e in capture.events if e["event"] == "endpoint ejected"]
    assert events and events[0]["endpoint"] == ep.key and events[0]["reason"] == "http_5xx"


async def test_local_errors_say_nothing_about_the_endpoint(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(3, outlier={"consecutive_errors": 2})
    ep = cluster.endpoints[0]
    fail(ep, Outcome.LOCAL_ERROR, 10)
    assert ep.healthy and ep.latency_ewma_s == 0.0


async def test_one_refused_connect_ejects_so_a_dead_endpoint_is_not_tried_twice(
    clock: FakeClock, make_cluster: MakeCluster
) -> None:
    cluster, _ = await make_cluster(3)
    dead = cluster.endpoints[1]
    fail(dead, Outcome.CONNECT_FAILURE)
    assert dead not in picks(cluster, 500)


async def test_ejection_time_grows_with_each_ejection_and_resets_after_a_quiet_period(
    clock: FakeClock, make_cluster: MakeCluster
) -> None:
    cluster, capture = await make_cluster(
        3, outlier={"consecutive_errors": 1, "base_ejection_secs": 10, "max_ejection_secs": 25}
    )
    ep = cluster.endpoints[0]
    fail(ep, Outcome.TIMEOUT)
    clock.advance(9.9)
    assert ep not in picks(cluster)
    clock.advance(0.2)
    assert ep in picks(cluster)  # back after 10 s; `pick` notices lazily
    assert any(e["event"] == "endpoint back from ejection" for e in capture.events)
    fail(ep, Outcome.RESET)
    clock.advance(19.9)
    assert ep not in picks(cluster)  # second ejection in a row: 20 s
    clock.advance(0.2)
    assert ep in picks(cluster)
    fail(ep, Outcome.RESET)
    clock.advance(24.9)  # third: 30 s capped at max_ejection_secs = 25
    assert ep not in picks(cluster)
    clock.advance(0.2)
    assert ep in picks(cluster)
    clock.advance(30.0)  # stayed in rotation longer than max_ejection_secs: back to the base time
    fail(ep, Outcome.RESET)
    clock.advance(10.1)
    assert ep in picks(cluster)
    assert ep.ejections_total == 4


async def test_max_ejection_percent_caps_the_ejected_share(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(4, outlier={"consecutive_errors": 1, "max_ejection_percent": 50})
    a, b, c, d = cluster.endpoints
    for ep in (a, b, c):
        fail(ep, Outcome.HTTP_5XX)
    assert (a.healthy, b.healthy, c.healthy, d.healthy) == (False, False, True, True)
    assert set(picks(cluster)) == {c, d}
    assert sample(cluster, "ambassador_ejections_capped_total") == 1


async def test_at_least_one_endpoint_may_always_be_ejected(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(3, outlier={"consecutive_errors": 1, "max_ejection_percent": 10})
    a, b, _c = cluster.endpoints
    fail(a, Outcome.HTTP_5XX)
    fail(b, Outcome.HTTP_5XX)
    assert not a.healthy and b.healthy


async def test_a_refusing_endpoint_kept_by_the_cap_is_still_avoided(
    clock: FakeClock, make_cluster: MakeCluster
) -> None:
    cluster, _ = await make_cluster(3, outlier={"max_ejection_percent": 10})
    a, b, c = cluster.endpoints
    fail(a, Outcome.CONNECT_FAILURE)  # ejected
    fail(b, Outcome.CONNECT_FAILURE)  # the cap keeps it in rotation, but it is known dead
    assert b.healthy
    assert set(picks(cluster, 500)) == {c}
    clock.advance(cluster.config.outlier.base_ejection_secs + 1)
    assert b in picks(cluster, 500)  # known dead only for a while: it may have come back


async def test_panic_mode_balances_over_all_when_too_few_are_healthy(
    clock: FakeClock, make_cluster: MakeCluster
) -> None:
    cluster, capture = await make_cluster(
        4,
        outlier={"consecutive_errors": 1, "max_ejection_percent": 100, "base_ejection_secs": 5},
        panic_threshold_percent=50,
    )
    a, b, c, d = cluster.endpoints
    fail(a, Outcome.HTTP_5XX)
    fail(b, Outcome.HTTP_5XX)
    assert not cluster.panic and set(picks(cluster)) == {c, d}  # 2 of 4 healthy: not below 50 %
    fail(c, Outcome.HTTP_5XX)
    assert cluster.panic
    spread = picks(cluster, 2000)
    assert set(spread) == {a, b, c, d} and min(spread.values()) > 0.1 * 2000
    assert sample(cluster, "ambassador_cluster_panic") == 1
    assert any(e["event"].startswith("panic mode entered") for e in capture.events)
    clock.advance(5.1)
    cluster.pick()
    assert not cluster.panic and all(ep.healthy for ep in cluster.endpoints)


async def test_panic_threshold_zero_never_panics(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(
        2, outlier={"consecutive_errors": 1, "max_ejection_percent": 100}, panic_threshold_percent=0
    )
    for ep in cluster.endpoints:
        fail(ep, Outcome.HTTP_5XX)
    assert not cluster.panic
    assert cluster.pick() is None


async def test_failure_streaks_count_into_metrics(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(2, outlier={"consecutive_errors": 0, "consecutive_connect_failures": 0})
    ep = cluster.endpoints[0]
    fail(ep, Outcome.OK, 3)
    fail(ep, Outcome.TIMEOUT, 2)
    assert sample(cluster, "ambassador_endpoint_outcomes_total", endpoint=ep.key, outcome="ok") == 3
    assert sample(cluster, "ambassador_endpoint_outcomes_total", endpoint=ep.key, outcome="timeout") == 2
    assert ep.healthy  # detection off


async def test_an_endpoint_back_from_ejection_is_measured_afresh(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(2, balancer="p2c_ewma", outlier={"consecutive_errors": 1, "base_ejection_secs": 5})
    bad, good = cluster.endpoints
    fail(good, Outcome.OK)
    fail(bad, Outcome.HTTP_5XX)  # a 1 s latency penalty, then ejected
    assert bad.latency_ewma_s >= 1.0 and not bad.healthy
    clock.advance(5.1)
    assert cluster.pick() is bad  # unmeasured and idle: it gets the next request, not a minute of nothing
    assert bad.latency_ewma_s == 0.0


async def test_snapshot_shows_each_endpoint_state_and_why(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(2, outlier={"consecutive_errors": 1, "base_ejection_secs": 30})
    bad, good = cluster.endpoints
    fail(good, Outcome.OK, 2)
    fail(bad, Outcome.HTTP_5XX)
    snap = cluster.snapshot()
    json.dumps(snap)  # JSON-able as it is
    by_key = {e["endpoint"]: e for e in snap["endpoints"]}
    assert by_key[bad.key]["state"] == "ejected" and by_key[bad.key]["ejected_for_secs"] == 30.0
    assert by_key[bad.key]["outcomes"]["http_5xx"] == 1
    assert by_key[good.key]["state"] == "healthy" and by_key[good.key]["outcomes"]["ok"] == 2
    assert snap["ready"] and not snap["panic"] and snap["candidates"] == 1
    assert snap["discovery"]["static"] == {"updates": 1, "errors": 0, "last_error": None}
