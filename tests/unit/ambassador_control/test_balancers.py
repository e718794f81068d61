"""Distribution of each balancer, exclusion of failed endpoints, hash stability, slow start."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection
from pathlib import Path

import pytest
from pydantic import ValidationError

from sidecars.ambassador.cluster import balancer as balancer_module
from sidecars.ambassador.cluster.balancer import BALANCERS, Balancer, ConsistentHash, make_balancer
from sidecars.ambassador.cluster.config import ClusterConfig
from sidecars.ambassador.cluster.endpoint import Endpoint, Outcome
from tests.support.distributions import install
from tests.unit.ambassador_control.conftest import FakeClock, MakeCluster


class _Owner:
    def _on_errors(self, endpoint: Endpoint, outcome: Outcome) -> None:
        pass

    def _on_idle_draining(self, endpoint: Endpoint) -> None:
        pass


def endpoints(n: int, base_port: int = 30001) -> list[Endpoint]:
    return [Endpoint("10.0.0.1", base_port + i, _Owner()) for i in range(n)]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(1234)


async def test_p2c_ewma_prefers_the_fast_endpoint(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(3)
    slow = cluster.endpoints[2]
    latency = {ep: (0.020 if ep is slow else 0.001) for ep in cluster.endpoints}
    picks: Counter[Endpoint] = Counter()
    for _ in range(3000):
        ep = cluster.pick()
        assert ep is not None
        picks[ep] += 1
        ep.start_request()
        clock.advance(latency[ep])
        ep.end_request(Outcome.OK, latency[ep])
    assert picks[slow] < 0.05 * 3000
    fast = [picks[ep] for ep in cluster.endpoints if ep is not slow]
    assert min(fast) > 0.4 * 3000


async def test_p2c_ewma_weighs_latency_by_requests_in_flight(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(2)
    a, b = cluster.endpoints
    for ep in (a, b):  # equal latency history
        ep.start_request()
        ep.end_request(Outcome.OK, 0.005)
    for _ in range(4):
        a.start_request()
    assert {cluster.pick() for _ in range(200)} == {b}


async def test_p2c_ewma_penalises_fast_failures(clock: FakeClock, make_cluster: MakeCluster) -> None:
    # An endpoint answering 5xx in 1 ms must not look faster than one answering 200 in 10 ms.
    cluster, _ = await make_cluster(2, outlier={"consecutive_errors": 0})
    bad, good = cluster.endpoints
    bad.start_request()
    bad.end_request(Outcome.HTTP_5XX, 0.001)
    good.start_request()
    good.end_request(Outcome.OK, 0.010)
    assert {cluster.pick() for _ in range(100)} == {good}


async def test_p2c_ewma_tries_a_once_slow_endpoint_again_later(clock: FakeClock, make_cluster: MakeCluster) -> None:
    cluster, _ = await make_cluster(2)
    slow, fast = cluster.endpoints
    slow.start_request()
    slow.end_request(Outcome.OK, 2.0)
    fast.start_request()
    fast.end_request(Outcome.OK, 0.010)
    assert cluster.pick() is fast
    clock.advance(120.0)  # the old sample has decayed: the slow one is worth a new look
    fast.start_request()
    fast.end_request(Outcome.OK, 0.010)
    assert slow in {cluster.pick() for _ in range(50)}


def test_least_request_never_picks_the_busiest() -> None:
    balancer = make_balancer("least_request")
    eps = endpoints(3)
    for ep, active in zip(eps, (0, 3, 5), strict=True):
        ep.active = active
    balancer.update(eps)
    picks = Counter(balancer.pick() for _ in range(3000))
    assert picks[eps[2]] == 0
    assert picks[eps[0]] > 0.6 * 3000  # chosen whenever it is one of the two drawn: 2/3 of the time
    assert picks[eps[1]] > 0.25 * 3000


def test_round_robin_is_even_and_in_order() -> None:
    balancer = make_balancer("round_robin")
    eps = endpoints(3)
    balancer.update(eps)
    picks = [balancer.pick() for _ in range(300)]
    assert Counter(picks) == {eps[0]: 100, eps[1]: 100, eps[2]: 100}
    assert picks[:6] == [eps[0], eps[1], eps[2], eps[0], eps[1], eps[2]]


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_every_balancer_avoids_excluded_endpoints(name: str) -> None:
    balancer = make_balancer(name)
    eps = endpoints(3)
    balancer.update(eps)
    for i in range(300):
        picked = balancer.pick(b"key-%d" % i, exclude=[eps[0]])
        assert picked is not None and picked is not eps[0]
    assert balancer.pick(b"k", exclude=eps) is None
    assert balancer.pick(b"k", exclude=eps[:2]) is eps[2]


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_every_balancer_returns_none_without_candidates(name: str) -> None:
    balancer = make_balancer(name)
    balancer.update([])
    assert balancer.pick(b"k") is None


def test_unknown_balancer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown balancer 'fastest'"):
        make_balancer("fastest")


KEYS = [f"user-{i}".encode() for i in range(4000)]


def mapping(balancer: ConsistentHash) -> dict[bytes, str]:
    out = {}
    for k in KEYS:
        ep = balancer.pick(k)
        assert ep is not None
        out[k] = ep.key
    return out


def test_hash_spreads_keys_and_is_the_same_in_every_replica() -> None:
    eps = endpoints(5)
    one, two = ConsistentHash(), ConsistentHash()
    one.update(eps)
    two.update(list(reversed(endpoints(5))))  # another process, other objects, other order
    first = mapping(one)
    assert first == mapping(two)
    share = Counter(first.values())
    assert len(share) == 5
    assert all(0.10 * len(KEYS) < n < 0.30 * len(KEYS) for n in share.values()), share


def test_hash_moves_only_the_keys_of_a_leaving_endpoint() -> None:
    eps = endpoints(5)
    ring = ConsistentHash()
    ring.update(eps)
    before = mapping(ring)
    gone = eps[2]
    ring.update([ep for ep in eps if ep is not gone])
    after = mapping(ring)
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == gone.key}
    assert all(after[k] != gone.key for k in KEYS)
    ring.update(eps)  # it comes back: its keys return to it, nothing else moves
    assert mapping(ring) == before


def test_hash_with_an_excluded_endpoint_walks_to_the_next_one_on_the_ring() -> None:
    eps = endpoints(4)
    ring = ConsistentHash()
    ring.update(eps)
    without = ConsistentHash()
    without.update(eps[1:])
    for k in KEYS[:500]:
        assert ring.pick(k, exclude=[eps[0]]) is without.pick(k)


def test_slow_start_weight_ramps_linearly_from_the_minimum() -> None:
    ep = endpoints(1)[0]
    ep.begin_slow_start(100.0, 10.0, 0.1)
    assert ep.weight(100.0) == pytest.approx(0.1)
    assert ep.weight(100.5) == pytest.approx(0.1)  # below the floor the floor holds
    assert ep.weight(105.0) == pytest.approx(0.5)
    assert ep.weight(109.0) == pytest.approx(0.9)
    assert ep.weight(110.0) == 1.0
    assert ep.weight(100.0) == 1.0  # the ramp is over for good


def simulate(balancer: Balancer, picks: int, in_flight: int = 8) -> Counter[Endpoint]:
    """Picks with `in_flight` requests outstanding, finished oldest first, each taking 5 ms."""
    seen: Counter[Endpoint] = Counter()
    outstanding: list[Endpoint] = []
    for _ in range(picks):
        if len(outstanding) >= in_flight:
            outstanding.pop(0).end_request(Outcome.OK, 0.005)
        ep = balancer.pick()
        assert ep is not None
        ep.start_request()
        outstanding.append(ep)
        seen[ep] += 1
    for ep in outstanding:
        ep.end_request(Outcome.OK, 0.005)
    return seen


@pytest.mark.parametrize("name", ["round_robin", "least_request", "p2c_ewma"])
def test_an_endpoint_in_slow_start_gets_less_traffic(clock: FakeClock, name: str) -> None:
    balancer = make_balancer(name)
    eps = endpoints(2)
    for ep in eps:
        ep.start_request()
        ep.end_request(Outcome.OK, 0.005)
    new, old = eps
    new.begin_slow_start(clock(), 10.0, 0.1)
    balancer.update(eps)
    early = simulate(balancer, 2000)
    clock.advance(8.0)
    late = simulate(balancer, 2000)
    clock.advance(3.0)
    done = simulate(balancer, 2000)
    assert early[new] < 0.25 * 2000 < early[old]
    assert early[new] < late[new]
    assert 0.4 * 2000 < done[new] < 0.6 * 2000


class FirstAlways(Balancer):
    """A balancer as a separate package would ship it."""

    name = "first_always"

    def pick(
        self, hash_key: bytes | None = None, exclude: Collection[Endpoint] = (), now: float = 0.0
    ) -> Endpoint | None:
        return self._first_not_excluded(exclude)


def test_balancers_from_installed_packages_are_found_by_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = {"first_always": f"{__name__}:FirstAlways", "not_a_balancer": f"{__name__}:endpoints"}
    install(tmp_path, monkeypatch, "acme-balancers", {balancer_module.ENTRY_POINT_GROUP: entries})
    assert balancer_module.balancer_names() == [*BALANCERS, "first_always", "not_a_balancer"]
    config = ClusterConfig(endpoints=["10.0.0.1:80", "10.0.0.2:80"], balancer="first_always")
    balancer = make_balancer(config.balancer)
    eps = endpoints(2)
    balancer.update(eps)
    assert {balancer.pick() for _ in range(20)} == {eps[0]}
    with pytest.raises(ValueError, match=r"'not_a_balancer' \(acme-balancers 1.0 .*is not a subclass of .*Balancer"):
        make_balancer("not_a_balancer")
    with pytest.raises(ValidationError, match=r"unknown balancer 'nope'; installed: p2c_ewma, .*first_always"):
        ClusterConfig(endpoints=["10.0.0.1:80"], balancer="nope")


def test_a_package_cannot_take_a_built_in_balancers_name_or_fail_unnamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One rule for every plugin kind: a name has one provider, and an import failure is named.
    entries = {"round_robin": f"{__name__}:FirstAlways", "broken": "acme_missing_module:Balancer"}
    install(tmp_path, monkeypatch, "acme-balancers", {balancer_module.ENTRY_POINT_GROUP: entries})
    with pytest.raises(ValidationError, match=r"balancer 'round_robin' is provided more than once: built in .*acme"):
        ClusterConfig(endpoints=["10.0.0.1:80"], balancer="round_robin")
    with pytest.raises(ValidationError, match=r"balancer 'broken' .*cannot be loaded: ModuleNotFoundError"):
        ClusterConfig(endpoints=["10.0.0.1:80"], balancer="broken")
    assert type(make_balancer("p2c_ewma")) is BALANCERS["p2c_ewma"]  # the other names keep working


async def test_p2c_ewma_forgets_a_one_off_stall_at_high_request_rates(
    clock: FakeClock, make_cluster: MakeCluster
) -> None:
    # A GC pause or CPU throttling makes one answer of a fast endpoint look slow. At thousands of
    # requests a second that must not make it look worse than a truly slow endpoint for long.
    cluster, _ = await make_cluster(2)
    fast, slow = cluster.endpoints

    def answer(ep: Endpoint, latency: float) -> None:
        ep.start_request()
        clock.advance(0.0001)
        ep.end_request(Outcome.OK, latency)

    for _ in range(50):
        answer(fast, 0.001)
        answer(slow, 0.020)
    answer(fast, 0.060)  # the stall
    assert fast.latency_ewma_s == 0.060
    for _ in range(100):  # twenty milliseconds of traffic later
        answer(fast, 0.001)
        answer(slow, 0.020)
    assert fast.latency_ewma_s < 0.002
    assert {cluster.pick() for _ in range(50)} == {fast}


async def test_a_sole_candidate_is_picked_directly_and_the_shortcut_follows_the_candidates(
    clock: FakeClock, make_cluster: MakeCluster
) -> None:
    # With one candidate left the cluster skips its built-in balancer; exclusion, ejection expiry and
    # a second candidate must still behave as if the balancer had been asked.
    cluster, _ = await make_cluster(2, outlier={"consecutive_errors": 3, "max_ejection_percent": 50})
    bad, good = cluster.endpoints
    for _ in range(3):
        bad.start_request()
        bad.end_request(Outcome.HTTP_5XX, 0.001)
    assert not bad.healthy
    assert {cluster.pick() for _ in range(50)} == {good}
    assert cluster.pick(exclude=(good,)) is None
    clock.advance(3600.0)  # the ejection ends: two candidates again, the balancer decides
    assert {cluster.pick() for _ in range(200)} == {bad, good}


class Refusing(Balancer):
    """A package balancer that declines every pick (e.g. its own admission control)."""

    name = "refusing"

    def pick(
        self, hash_key: bytes | None = None, exclude: Collection[Endpoint] = (), now: float = 0.0
    ) -> Endpoint | None:
        return None


async def test_a_package_balancer_is_asked_even_for_a_sole_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_cluster: MakeCluster
) -> None:
    entries = {"refusing": f"{__name__}:Refusing"}
    install(tmp_path, monkeypatch, "acme-balancers", {balancer_module.ENTRY_POINT_GROUP: entries})
    cluster, _ = await make_cluster(1, balancer="refusing")
    assert cluster.pick() is None
