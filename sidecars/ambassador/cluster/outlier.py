"""Passive outlier ejection: endpoints failing real requests leave the rotation for a growing time.

The endpoint counts its own failure streaks on the hot path and calls in here only when a streak
reaches a threshold. An ejection lasts `base_ejection_secs` times the number of ejections in a row
(capped); an endpoint that stayed in rotation for `max_ejection_secs` starts from the base again.
At most `max_ejection_percent` of the endpoints are ejected at once (at least one may always be),
so a cluster-wide problem cannot eject everything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sidecars.ambassador.cluster.config import OutlierConfig
from sidecars.ambassador.cluster.endpoint import Endpoint


class OutlierDetector:
    def __init__(self, config: OutlierConfig) -> None:
        self.config = config
        self.capped = 0  # ejections refused by max_ejection_percent, for metrics

    def max_ejected(self, live: int) -> int:
        return max(1, math.floor(live * self.config.max_ejection_percent / 100.0))

    def try_eject(
        self, endpoint: Endpoint, live: Sequence[Endpoint], now: float, *, refused: bool = False
    ) -> float | None:
        """Eject `endpoint` if the cap allows; returns the ejection time in seconds, or None if refused."""
        if endpoint.ejected_until > now:
            return None  # already out; late failures of requests sent before the ejection
        ejected = sum(1 for ep in live if ep.ejected_until > now)
        if ejected >= self.max_ejected(len(live)):
            self.capped += 1
            return None
        cfg = self.config
        if endpoint.returned_at and now - endpoint.returned_at >= cfg.max_ejection_secs:
            endpoint.ejections = 0
        endpoint.ejections += 1
        endpoint.ejections_total += 1
        secs = min(cfg.base_ejection_secs * endpoint.ejections, cfg.max_ejection_secs)
        endpoint.ejected_until = now + secs
        endpoint.ejected_by_refusal = refused
        endpoint.consecutive_errors = 0
        endpoint.consecutive_connect_failures = 0
        return secs

    @staticmethod
    def expire(live: Sequence[Endpoint], now: float) -> list[Endpoint]:
        """Bring back every endpoint whose ejection has run out; returns them."""
        back = []
        for ep in live:
            if ep.ejected_until and ep.ejected_until <= now:
                ep.ejected_until = 0.0
                ep.returned_at = now
                ep.forget_latency()
                back.append(ep)
        return back

    @staticmethod
    def next_expiry(live: Sequence[Endpoint]) -> float:
        return min((ep.ejected_until for ep in live if ep.ejected_until), default=math.inf)
