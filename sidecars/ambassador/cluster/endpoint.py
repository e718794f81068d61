"""One upstream address and the per-request bookkeeping the data plane feeds it.

This is the hot path: `start_request`/`end_request` run once per request, so they do integer and
float arithmetic on slotted attributes and call back into the cluster only on the rare events
(a failure streak reaching the ejection threshold, the last request of a drained endpoint).
"""

from __future__ import annotations

import enum
import errno
import math
import time
from typing import Protocol

# A failed request counts as at least this slow for the latency average, so an endpoint that fails
# fast does not attract traffic the way a fast one does (the "black hole" of least-latency balancing).
FAILURE_PENALTY_SECS = 1.0
# Load of an endpoint that has requests in flight but no latency sample yet: send it one probe
# request at a time until it answers (Finagle's peak EWMA does the same).
UNMEASURED_PENALTY = 1.0e6
# Each new sample weighs at least this much in the average. The weight is otherwise time-based
# (1 - exp(-elapsed / decay)), which at thousands of requests a second gives each sample almost none:
# one stall of the process (a GC pause, CPU throttling) would then inflate the average for the whole
# decay time and starve a healthy endpoint. With the floor, a few dozen fast answers wash it out.
MIN_SAMPLE_WEIGHT = 1.0 / 16


class Outcome(enum.Enum):
    """How one try against an endpoint ended, as the data plane saw it."""

    OK = 0
    HTTP_5XX = 1
    CONNECT_FAILURE = 2
    RESET = 3
    TIMEOUT = 4
    LOCAL_ERROR = 5  # our side failed (client went away, bad request): says nothing about the endpoint


_OK, _LOCAL_ERROR, _CONNECT_FAILURE = Outcome.OK, Outcome.LOCAL_ERROR, Outcome.CONNECT_FAILURE

# A connect failing with these says the process is out of descriptors or memory, nothing about the
# endpoint: a LOCAL_ERROR, since ejecting it would turn a local shortage into an outage of a healthy
# upstream.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def endpoint_key(host: str, port: int) -> str:
    """ "host:port", with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Owner(Protocol):
    def _on_errors(self, endpoint: Endpoint, outcome: Outcome) -> None: ...
    def _on_idle_draining(self, endpoint: Endpoint) -> None: ...


class Endpoint:
    """One upstream address.

    `healthy` combines the active check and the outlier state; `draining` means discovery removed it:
    no new requests, the ones in flight finish, then the cluster drops it.
    """

    __slots__ = (
        "_cost",
        "_owner",
        "_ramp_min",
        "_ramp_secs",
        "_ramp_start",
        "_stamp",
        "_tau",
        "active",
        "added_at",
        "connect_failure_limit",
        "consecutive_connect_failures",
        "consecutive_errors",
        "draining",
        "ejected_by_refusal",
        "ejected_until",
        "ejections",
        "ejections_total",
        "error_limit",
        "hc_failures",
        "hc_passes",
        "hc_reason",
        "hc_state",
        "hc_streak",
        "healthy",
        "host",
        "key",
        "outcomes",
        "port",
        "refuse_secs",
        "refused_until",
        "returned_at",
    )

    def __init__(
        self,
        host: str,
        port: int,
        owner: _Owner,
        *,
        ewma_decay_secs: float = 10.0,
        error_limit: int = 0,
        connect_failure_limit: int = 0,
        refuse_secs: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.key = endpoint_key(host, port)
        self.active = 0
        self.healthy = True
        self.draining = False
        # "up", "down" or "pending" (never checked yet); the cluster keeps `healthy` in step.
        self.hc_state = "up"
        self.ejected_until = 0.0
        self.ejections = 0  # ejections in a row; decides the next ejection's length
        self.ejections_total = 0
        self.ejected_by_refusal = False  # a passing active check ends such an ejection early
        self.returned_at = 0.0  # when the last ejection ended
        # After a refused connect the endpoint is known dead: not picked again before this time while
        # another endpoint can serve, even when the ejection cap keeps it in rotation.
        self.refused_until = 0.0
        self.refuse_secs = refuse_secs
        self.hc_streak = 0  # > 0: passes in a row, < 0: failures in a row
        self.hc_passes = 0
        self.hc_failures = 0
        self.hc_reason: str | None = None
        self.consecutive_errors = 0
        self.consecutive_connect_failures = 0
        self.error_limit = error_limit
        self.connect_failure_limit = connect_failure_limit
        self.outcomes = [0] * len(Outcome)
        self.added_at = time.monotonic()
        self._owner = owner
        self._tau = ewma_decay_secs
        self._cost = 0.0
        self._stamp = self.added_at
        self._ramp_start = 0.0
        self._ramp_secs = 0.0
        self._ramp_min = 1.0

    def __repr__(self) -> str:
        return f"Endpoint({self.key}, active={self.active}, healthy={self.healthy}, draining={self.draining})"

    # -- hot path ---------------------------------------------------------------------------------

    def start_request(self) -> None:
        self.active += 1

    def end_request(self, outcome: Outcome, latency_s: float) -> None:
        self.active -= 1
        self.outcomes[outcome._value_] += 1  # `_value_`: a plain attribute, `value` is a slow descriptor
        if outcome is _OK:
            self.consecutive_errors = 0
            self.consecutive_connect_failures = 0
            # `_observe` inlined: this branch runs for nearly every request.
            now = time.monotonic()
            elapsed = now - self._stamp
            self._stamp = now
            if latency_s >= self._cost:
                self._cost = latency_s
            else:
                alpha = 1.0 - math.exp(-elapsed / self._tau) if elapsed > 0 else 0.0
                if alpha < MIN_SAMPLE_WEIGHT:
                    alpha = MIN_SAMPLE_WEIGHT
                self._cost += (latency_s - self._cost) * alpha
        elif outcome is not _LOCAL_ERROR:
            now = time.monotonic()
            self._observe(max(latency_s, FAILURE_PENALTY_SECS), now)
            self.consecutive_errors += 1
            if outcome is _CONNECT_FAILURE:
                self.consecutive_connect_failures += 1
                self.refused_until = now + self.refuse_secs
            else:
                self.consecutive_connect_failures = 0
            if (0 < self.error_limit <= self.consecutive_errors) or (
                0 < self.connect_failure_limit <= self.consecutive_connect_failures
            ):
                self._owner._on_errors(self, outcome)
        if self.draining and self.active <= 0:
            self._owner._on_idle_draining(self)

    def _observe(self, rtt: float, now: float) -> None:
        """Peak EWMA: a slower sample takes over at once, faster ones pull the average down over time."""
        elapsed = now - self._stamp
        self._stamp = now
        if rtt >= self._cost:
            self._cost = rtt
        else:
            alpha = 1.0 - math.exp(-elapsed / self._tau) if elapsed > 0 else 0.0
            self._cost += (rtt - self._cost) * max(alpha, MIN_SAMPLE_WEIGHT)

    def load(self, now: float) -> float:
        """Expected cost of one more request: latency average x (requests in flight + 1) / weight.

        The average decays toward zero while no sample arrives, so an endpoint that was slow once is
        tried again later instead of being starved for good.
        """
        elapsed = now - self._stamp
        # Decay only once a thousandth of the time constant has passed: the stamp stays, so nothing is
        # lost, and a busy endpoint skips an exp() per pick.
        if elapsed > self._tau * 0.001:
            self._cost *= math.exp(-elapsed / self._tau)
            self._stamp = now
        cost = self._cost
        load = UNMEASURED_PENALTY + self.active if cost == 0.0 and self.active else cost * (self.active + 1)
        if self._ramp_secs:
            return load / self.weight(now)
        return load

    def forget_latency(self) -> None:
        """Back in rotation after an ejection or a failed check: its old samples (failure penalties
        included) say nothing now, so it is measured afresh, one probe request at a time."""
        self._cost = 0.0

    @property
    def latency_ewma_s(self) -> float:
        return self._cost

    # -- slow start ---------------------------------------------------------------------------------

    def begin_slow_start(self, now: float, secs: float, min_weight: float) -> None:
        if secs > 0:
            self._ramp_start = now
            self._ramp_secs = secs
            self._ramp_min = min_weight

    def weight(self, now: float) -> float:
        """1.0 normally; during slow start, ramps linearly from the minimum weight to 1."""
        if not self._ramp_secs:
            return 1.0
        progress = (now - self._ramp_start) / self._ramp_secs
        if progress >= 1.0:
            self._ramp_secs = 0.0
            return 1.0
        return max(self._ramp_min, progress)
