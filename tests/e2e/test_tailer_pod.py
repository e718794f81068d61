"""The tailer example run as a Pod: every line the app logged reaches the log store."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.patterns import (
    assert_clean_ordered_exit,
    assert_every_line_delivered,
    received_lines,
    seqs,
    wait_until,
)
from tests.e2e.podrunner import Pod

pytestmark = pytest.mark.e2e


def test_native_tailer_delivers_every_line_and_drains_after_the_app(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("03-tailer/pod.yaml")
    for _ in range(20):  # request lines besides the app's ticks
        assert pod.request(8080, "/")[0] == 200
    wait_until(lambda: received_lines(pod) >= 30, "the tailer to forward lines")
    assert pod.check_liveness() == {"tailer": None, "app": None}
    states = pod.stop()
    # The app stops first; the tailer then reads to the end, delivers, exits 0; the receiver last.
    assert_clean_ordered_exit(states, ["app", "tailer", "log-receiver"])
    assert assert_every_line_delivered(pod) >= 30
    # Pod metadata from the Downward API travels with each record.
    first = pod.stdout("log-receiver").splitlines()[0]
    assert '"tailer"' in first and '"default"' in first and "e2e-node" in first


def test_classic_tailer_forwards_while_running(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("03-tailer/pod-classic.yaml")
    wait_until(lambda: received_lines(pod) >= 10, "the tailer to forward lines")
    written = set(seqs(pod.read_volume_file("app-logs", "app.log")))
    delivered = seqs(pod.stdout("log-receiver").encode())
    assert delivered and set(delivered) <= written
    states = pod.stop_all_at_once()
    assert {n: s["ExitCode"] for n, s in states.items()} == {"app": 0, "log-receiver": 0, "tailer": 0}
