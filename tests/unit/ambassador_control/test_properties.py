"""Properties over generated inputs: ring stability for any endpoint set, budget never overspent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.ambassador.cluster.balancer import ConsistentHash
from sidecars.ambassador.cluster.budget import RetryBudget
from sidecars.ambassador.cluster.config import RetryBudgetConfig
from sidecars.ambassador.cluster.endpoint import Endpoint, Outcome


class _Owner:
    def _on_errors(self, endpoint: Endpoint, outcome: Outcome) -> None:
        pass

    def _on_idle_draining(self, endpoint: Endpoint) -> None:
        pass


KEYS = [b"k%d" % i for i in range(300)]


@settings(max_examples=40, deadline=None)
@given(
    ports=st.lists(st.integers(1, 65535), min_size=2, max_size=12, unique=True),
    data=st.data(),
)
def test_removing_any_endpoints_moves_only_their_keys(ports: list[int], data: st.DataObject) -> None:
    eps = [Endpoint("10.9.0.1", p, _Owner()) for p in ports]
    leaving = data.draw(st.lists(st.sampled_from(eps), min_size=1, max_size=len(eps) - 1, unique=True))
    ring = ConsistentHash()
    ring.update(eps)
    before = {k: ring.pick(k) for k in KEYS}
    ring.update([ep for ep in eps if ep not in leaving])
    for k in KEYS:
        after = ring.pick(k)
        assert after not in leaving
        if before[k] not in leaving:
            assert after is before[k]


@settings(max_examples=60, deadline=None)
@given(
    ratio=st.floats(0, 100),
    floor=st.floats(0, 20),
    window=st.integers(1, 30),
    steps=st.lists(st.tuples(st.sampled_from(["req", "retry", "tick"]), st.integers(1, 40)), max_size=100),
)
def test_budget_grants_no_more_than_ratio_plus_floor(
    ratio: float, floor: float, window: int, steps: list[tuple[str, int]]
) -> None:
    now = [0.0]
    budget = RetryBudget(
        RetryBudgetConfig(ratio_percent=ratio, min_retries_per_sec=floor, window_secs=window), lambda: now[0]
    )
    granted = 0
    for op, n in steps:
        for _ in range(n):
            if op == "req":
                budget.on_request()
            elif op == "retry":
                if budget.can_retry():
                    granted += 1  # at the moment of a grant, the window's retries fit the budget
                    assert budget.retries_in_window <= floor * window + ratio / 100 * budget.requests_in_window + 1e-9
            else:
                now[0] += 0.7
        assert budget.requests_in_window >= 0 and 0 <= budget.retries_in_window <= granted
