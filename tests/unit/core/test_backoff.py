"""The shared jittered exponential backoff: bounds per attempt, the cap, both jitter kinds."""

from __future__ import annotations

from sidecars.core.backoff import EQUAL_JITTER, FULL_JITTER, jittered_backoff


def test_the_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    for attempt in range(10):
        ceiling = min(8.0, 0.5 * 2**attempt)
        delays = [jittered_backoff(attempt, 0.5, 8.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)  # equal jitter is the default
        assert len(set(delays)) > 1


def test_full_jitter_reaches_down_to_zero_and_equal_jitter_does_not() -> None:
    full = [jittered_backoff(3, 1.0, 100.0, floor=FULL_JITTER) for _ in range(500)]
    equal = [jittered_backoff(3, 1.0, 100.0, floor=EQUAL_JITTER) for _ in range(500)]
    assert min(full) < 1.0 and max(full) <= 8.0
    assert min(equal) >= 4.0 and max(equal) <= 8.0


def test_any_attempt_count_stays_capped_and_never_overflows() -> None:
    assert 15.0 <= jittered_backoff(10_000, 0.1, 30.0) <= 30.0
    assert jittered_backoff(-1, 2.0, 30.0) <= 2.0  # before the first retry: the initial ceiling
