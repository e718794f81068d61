"""All three sidecars beside one app, as native sidecars: each pattern end to end, then the shutdown order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.patterns import (
    assert_clean_ordered_exit,
    assert_every_line_delivered,
    docker_time,
    healthy_endpoints,
    healthz,
    received_lines,
    toggle_bad,
    upstream_counts,
    wait_until,
)
from tests.e2e.podrunner import Pod

pytestmark = pytest.mark.e2e


def test_all_three_sidecars_beside_one_app(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("06-all-three/pod.yaml")
    # Native sidecars started in manifest order, each before the next and all before the app.
    starts = {name: docker_time(pod.state(name)["StartedAt"]) for name in pod.started}
    order = ["log-receiver", "tailer", "ambassador", "adapter", "app"]
    assert [starts[n] for n in order] == sorted(starts[n] for n in order)

    wait_until(lambda: healthy_endpoints(pod) == 2, "both upstreams to be checked healthy")
    for _ in range(30):  # through the app, so its calls go via the ambassador and it logs each
        assert pod.request(8080, "/")[0] == 200
    counts = upstream_counts(pod, 60)
    assert min(counts.values()) >= 12, counts

    toggle_bad(pod, True)
    wait_until(lambda: healthz(pod)[0] == 503, "the adapter's /healthz to answer 503")
    toggle_bad(pod, False)
    wait_until(lambda: healthz(pod)[0] == 200, "the adapter's /healthz to answer 200 again")

    wait_until(lambda: received_lines(pod) >= 30, "the tailer to forward the app's lines")
    assert all(reason is None for reason in pod.check_liveness().values())

    states = pod.stop()
    assert_clean_ordered_exit(states, ["app", "adapter", "ambassador", "tailer", "log-receiver"])
    assert assert_every_line_delivered(pod) >= 30


def test_all_three_classic_form_runs_and_stops(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("06-all-three/pod-classic.yaml")
    wait_until(lambda: healthy_endpoints(pod) == 2, "both upstreams to be checked healthy")
    assert pod.request(8080, "/")[0] == 200
    wait_until(lambda: healthz(pod)[0] == 200, "the adapter's /healthz to answer 200")
    wait_until(lambda: received_lines(pod) >= 5, "the tailer to forward the app's lines")
    states = pod.stop_all_at_once()
    assert all(s["ExitCode"] == 0 for s in states.values()), {n: s["ExitCode"] for n, s in states.items()}
