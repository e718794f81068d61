"""Assertions shared by the end-to-end tests of the sidecar patterns."""

from __future__ import annotations

import collections
import json
import re
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.podrunner import Pod

SEQ = re.compile(rb'"seq":\s*(\d+)')


def wait_until(condition: Callable[[], Any], what: str, timeout_secs: float = 30) -> Any:
    """Poll until `condition()` is truthy; bounded, so a broken feature fails instead of hanging."""
    deadline = time.monotonic() + timeout_secs
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except OSError as exc:  # not listening yet, connection reset while restarting, ...
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def docker_time(text: str) -> tuple[str, int]:
    """Docker's RFC 3339 times trim trailing zeros of the nanoseconds: compare them as numbers."""
    whole, _, frac = text.rstrip("Z").partition(".")
    return whole, int(frac.ljust(9, "0")[:9] or 0)


def seqs(data: bytes) -> list[int]:
    return [int(m) for m in SEQ.findall(data)]


def received_lines(pod: Pod, port: int = 9880) -> int:
    status, body = pod.request(port, "/stats")
    assert status == 200
    return int(json.loads(body)["lines"])


def assert_every_line_delivered(pod: Pod, *, allow_duplicates: bool = False) -> int:
    """After the Pod stopped: what the app wrote equals what the receiver printed, once each.

    `allow_duplicates` for runs with a crash: at-least-once may resend what was delivered but not
    yet checkpointed when the process died.
    """
    written = seqs(pod.read_volume_file("app-logs", "app.log"))
    delivered = seqs(pod.stdout("log-receiver").encode())
    assert written, "the app wrote nothing"
    assert written == list(range(1, len(written) + 1))
    missing = sorted(set(written) - set(delivered))
    assert not missing, f"{len(missing)} of {len(written)} lines never arrived, first {missing[:10]}"
    dupes = [s for s, n in collections.Counter(delivered).items() if n > 1]
    assert allow_duplicates or not dupes, f"delivered twice: {dupes[:10]}"
    return len(written)


def upstream_counts(pod: Pod, n: int, port: int = 15000) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        status, body = pod.request(port, "/")
        assert status == 200, body
        counts[json.loads(body)["upstream"]] += 1
    return counts


def healthz(pod: Pod, path: str = "/healthz?verbose", port: int = 8086) -> tuple[int, str]:
    return pod.request(port, path)


def toggle_bad(pod: Pod, bad: bool) -> None:
    status, _ = pod.request(8080, f"/toggle?bad={int(bad)}", method="POST")
    assert status == 200


def assert_clean_ordered_exit(states: dict[str, dict[str, Any]], order: list[str]) -> None:
    """Every container exited 0 (no SIGKILL after the grace period), and finished in `order`."""
    codes = {name: s["ExitCode"] for name, s in states.items()}
    assert all(code == 0 for code in codes.values()), codes
    finished = [docker_time(states[name]["FinishedAt"]) for name in order]
    assert finished == sorted(finished), {name: states[name]["FinishedAt"] for name in order}


def healthy_endpoints(pod: Pod, admin_port: int = 9802) -> int:
    """Endpoints the ambassador's health checks count as healthy, from its own /metrics."""
    status, body = pod.request(admin_port, "/metrics")
    assert status == 200
    m = re.search(r'^ambassador_cluster_endpoints\{[^}]*state="healthy"[^}]*\} (\S+)$', body, re.M)
    return int(float(m.group(1))) if m else 0
