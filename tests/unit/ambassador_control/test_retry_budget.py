"""Retry budget (share of recent requests plus a floor, over a sliding window) and circuit breaker."""

from __future__ import annotations

from sidecars.ambassador.cluster.budget import CircuitBreaker, RetryBudget
from sidecars.ambassador.cluster.config import CircuitBreakerConfig, RetryBudgetConfig
from tests.unit.ambassador_control.conftest import MakeCluster


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def retries_allowed(budget: RetryBudget, limit: int = 10_000) -> int:
    n = 0
    while n < limit and budget.can_retry():
        n += 1
    return n


def test_budget_allows_the_configured_share_of_requests() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio_percent=20, min_retries_per_sec=0, window_secs=10), Clock())
    for _ in range(100):
        budget.on_request()
    assert retries_allowed(budget) == 20
    assert budget.denied == 1
    for _ in range(5):
        budget.on_request()
    assert retries_allowed(budget) == 1  # 20 % of 105 = 21


def test_budget_floor_lets_quiet_traffic_retry() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio_percent=20, min_retries_per_sec=1, window_secs=10), Clock())
    budget.on_request()
    assert retries_allowed(budget) == 10  # 1/s over a 10 s window, 0.2 from the one request


def test_budget_forgets_requests_and_retries_outside_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(RetryBudgetConfig(ratio_percent=50, min_retries_per_sec=0, window_secs=5), clock)
    for _ in range(10):
        budget.on_request()
    assert retries_allowed(budget) == 5
    clock.now += 3
    for _ in range(10):
        budget.on_request()
    assert retries_allowed(budget) == 5  # 20 requests, 5 retries already spent
    clock.now += 3  # the first second's requests and retries fell out of the window
    assert budget.requests_in_window == 10 and budget.retries_in_window == 5
    clock.now += 100  # idle far longer than the window: everything is forgotten
    assert budget.requests_in_window == 0 and budget.retries_in_window == 0
    assert not budget.can_retry()


def test_circuit_breaker_refuses_beyond_each_limit_and_counts() -> None:
    breaker = CircuitBreaker(CircuitBreakerConfig(max_connections=2, max_pending=1, max_requests=3))
    assert breaker.try_acquire_pending()
    assert not breaker.try_acquire_pending()
    assert breaker.open
    breaker.release_pending()
    assert breaker.try_acquire_pending()
    breaker.release_pending()
    assert not breaker.open
    assert [breaker.try_acquire_connection() for _ in range(3)] == [True, True, False]
    breaker.release_connection()
    assert breaker.try_acquire_connection()
    assert [breaker.try_acquire_request() for _ in range(4)] == [True, True, True, False]
    assert breaker.overflows == {"connections": 1, "pending": 1, "requests": 1}


async def test_cluster_exports_budget_and_breaker_counters(make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(1, retry_budget={"ratio_percent": 0, "min_retries_per_sec": 0})
    assert not cluster.retry_budget.can_retry()
    cluster.breaker.try_acquire_pending()
    registry = cluster._registry
    assert registry.get_sample_value("ambassador_retry_budget_denied_total", {"cluster": "test"}) == 1
    in_use = {"cluster": "test", "limit": "pending"}
    assert registry.get_sample_value("ambassador_circuit_breaker_in_use", in_use) == 1
