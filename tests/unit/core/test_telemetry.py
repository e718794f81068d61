"""Telemetry helpers: the metric and the rate-limited line booked together."""

from __future__ import annotations

import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sidecars.core.metrics import SidecarMetrics
from sidecars.core.telemetry import MAX_KEYS, LogLimiter, Telemetry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_recurring_line_is_written_once_per_interval_with_what_was_left_out() -> None:
    clock = Clock()
    limiter = LogLimiter(structlog.get_logger(), 60.0, clock=clock)
    with capture_logs() as logs:
        written = [limiter.warning("sink failing", error=i) for i in range(5)]
        clock.now += 59.0
        limiter.warning("sink failing", error=5)
        limiter.warning("other problem")  # its own key: written at once
        clock.now += 1.5
        limiter.warning("sink failing", error=6)
    assert written == [True, False, False, False, False]
    assert [(e["event"], e.get("error"), e["suppressed_since_last"]) for e in logs] == [
        ("sink failing", 0, 0),
        ("other problem", None, 0),
        ("sink failing", 6, 5),
    ]


def test_burst_and_once_per_key_and_reset() -> None:
    clock = Clock()
    burst = LogLimiter(structlog.get_logger(), 1.0, burst=10, clock=clock)
    assert sum(burst.allow("k") is not None for _ in range(25)) == 10
    clock.now += 0.5  # half the interval gives back half the burst
    assert sum(burst.allow("k") is not None for _ in range(25)) == 5
    once = LogLimiter(structlog.get_logger(), None, clock=clock)
    assert once.allow("k") == 0
    clock.now += 10**9
    assert once.allow("k") is None and once.allow("k") is None
    once.reset("k")
    assert once.allow("k") == 0  # suppressed ones before a reset are not carried over


def test_keys_are_bounded() -> None:
    limiter = LogLimiter(structlog.get_logger(), None)
    for i in range(10 * MAX_KEYS):
        limiter.allow(f"reason-{i}")
    assert len(limiter._keys) == MAX_KEYS
    assert limiter.allow(f"reason-{10 * MAX_KEYS - 1}") is None  # recent keys are still remembered


def test_dropped_and_error_book_the_base_series_and_one_line_per_reason() -> None:
    registry = CollectorRegistry()
    metrics = SidecarMetrics("probe", registry)
    telemetry = Telemetry(metrics, structlog.get_logger())
    with capture_logs() as logs:
        for _ in range(3):
            telemetry.dropped("permanent", 7, "records dropped", file="a.log")
        telemetry.dropped("rejected", 2)
        telemetry.dropped("rejected", 0)  # nothing dropped: nothing booked or logged
        for _ in range(4):
            telemetry.error("read", "read failed", error="EIO")
    assert registry.get_sample_value("sidecar_events_dropped_total", {"reason": "permanent"}) == 21
    assert registry.get_sample_value("sidecar_events_dropped_total", {"reason": "rejected"}) == 2
    assert registry.get_sample_value("sidecar_errors_total", {"type": "read"}) == 4
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("records dropped", "warning"),
        ("events dropped", "warning"),
        ("read failed", "error"),
    ]
    assert logs[0]["reason"] == "permanent" and logs[0]["count"] == 7 and logs[0]["file"] == "a.log"
    assert logs[2]["error_type"] == "read" and logs[2]["error"] == "EIO"
