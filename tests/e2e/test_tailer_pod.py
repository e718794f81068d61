"""The tailer example run as a Pod: every line the app logged reaches the log store."""

from __future__ import annotations

import json
import time
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
    first = json.loads(pod.stdout("log-receiver").splitlines()[0])
    assert first["labels"] == {
        "pod": "tailer",
        "namespace": "default",
        "node": "e2e-node",
        "path": "/var/log/app/app.log",
    }
    assert first["seq"] == 1 and first["event"] == "tick"  # parse_json: the app's fields, not a string


def test_tailer_killed_and_restarted_resumes_from_its_checkpoint(pod_factory: Callable[[str], Pod]) -> None:
    """SIGKILL (no drain) while the app keeps writing; the restarted tailer loses nothing."""
    pod = pod_factory("03-tailer/pod.yaml")
    for _ in range(100):
        assert pod.request(8080, "/")[0] == 200
    wait_until(lambda: received_lines(pod) >= 100, "the tailer to forward lines")
    time.sleep(2)  # past checkpoint_interval_secs (1 s): the offsets of those lines are on disk
    pod.crash_and_restart("tailer")
    before = received_lines(pod)
    wait_until(lambda: received_lines(pod) >= before + 10, "the restarted tailer to forward new lines")
    states = pod.stop()
    assert_clean_ordered_exit(states, ["app", "tailer", "log-receiver"])
    assert_every_line_delivered(pod, allow_duplicates=True)
    # Resumed from its checkpoint, not from the start of the file: at most what was in flight
    # at the kill comes again, far fewer than the 100+ lines delivered before it.
    delivered = seqs(pod.stdout("log-receiver").encode())
    assert len(delivered) - len(set(delivered)) < 50


def test_classic_tailer_forwards_while_running(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("03-tailer/pod-classic.yaml")
    wait_until(lambda: received_lines(pod) >= 10, "the tailer to forward lines")
    written = set(seqs(pod.read_volume_file("app-logs", "app.log")))
    delivered = seqs(pod.stdout("log-receiver").encode())
    assert delivered and set(delivered) <= written
    states = pod.stop_all_at_once()
    assert {n: s["ExitCode"] for n, s in states.items()} == {"app": 0, "log-receiver": 0, "tailer": 0}
