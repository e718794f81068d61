"""Jittered exponential backoff: the one formula behind every retry loop (task restarts, log
deliveries, proxied request retries, discovery restarts), so they all behave and read alike."""

from __future__ import annotations

import random

FULL_JITTER = 0.0  # anywhere in [0, ceiling]: spreads many clients retrying one server best
EQUAL_JITTER = 0.5  # in [ceiling/2, ceiling]: never retries at once, still never in step


def jittered_backoff(attempt: int, initial: float, maximum: float, *, floor: float = EQUAL_JITTER) -> float:
    """The delay before retry number `attempt` (0 for the first): its ceiling starts at `initial` and
    doubles per attempt up to `maximum`; the delay is drawn uniformly from [floor x ceiling, ceiling]."""
    ceiling = min(maximum, initial * 2.0 ** min(max(attempt, 0), 64))  # 2**64: past any cap, no overflow
    return random.uniform(ceiling * floor, ceiling)
