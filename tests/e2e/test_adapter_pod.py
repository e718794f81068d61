"""The adapter example run as a Pod: /healthz follows the app's metrics, and so does the app's readiness."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.patterns import assert_clean_ordered_exit, healthz, toggle_bad, wait_until
from tests.e2e.podrunner import Pod

pytestmark = pytest.mark.e2e


def app_readiness(pod: Pod) -> str | None:
    """The app's readinessProbe from the manifest (it asks the adapter), run once."""
    return pod.probe_once("app", pod.containers["app"].spec["readinessProbe"])


def test_native_adapter_turns_unhealthy_with_bad_metrics_and_back(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("05-adapter/pod.yaml")
    status, body = healthz(pod)
    assert status == 200, body
    assert "[+]queue-backed-up ok" in body

    toggle_bad(pod, True)
    status, body = wait_until(lambda: (r := healthz(pod))[0] == 503 and r, "/healthz to answer 503")
    assert "[-]queue-backed-up" in body
    assert app_readiness(pod) == "HTTP 503"  # the kubelet would take the Pod out of its Service
    assert pod.check_liveness() == {"adapter": None, "app": None}  # liveness never follows the app

    toggle_bad(pod, False)
    wait_until(lambda: healthz(pod)[0] == 200, "/healthz to answer 200 again")
    assert app_readiness(pod) is None

    states = pod.stop()
    assert_clean_ordered_exit(states, ["app", "adapter"])


def test_classic_adapter_serves_health(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("05-adapter/pod-classic.yaml")
    wait_until(lambda: healthz(pod)[0] == 200, "/healthz to answer 200")
    toggle_bad(pod, True)
    wait_until(lambda: healthz(pod)[0] == 503, "/healthz to answer 503")
    states = pod.stop_all_at_once()
    assert all(s["ExitCode"] == 0 for s in states.values()), states
