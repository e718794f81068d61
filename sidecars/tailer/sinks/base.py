"""The sink contract: what the delivery pipeline hands a sink and what a sink answers.

The pipeline batches lines, awaits `Sink.send` once per batch and owns retries, backoff and the
permanent-error policy. A sink encodes the whole batch, delivers it, and returns only once the
receiver acknowledged it; it classifies failures precisely instead of retrying by itself:

- `RetryableError`: the same batch may succeed later (429, 5xx, 408, connection errors, timeouts),
  with the receiver's `Retry-After` when it sent one;
- `PermanentError`: it will never succeed as sent (other 4xx);
- `SendResult`: accepted, possibly in part (lines rejected for good, lines to send again).

Company sinks subclass `Sink` and register under the entry-point group `sidecars.tailer.sinks`,
under a name of their own (a built-in's name cannot be taken: see `sidecars.core.registry`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict
from structlog.typing import FilteringBoundLogger

from sidecars.core.registry import Registry
from sidecars.core.telemetry import LogLimiter

ENTRY_POINT_GROUP = "sidecars.tailer.sinks"

# Built-in sinks, imported only when chosen so one sink's dependencies never load another's.
BUILTIN_SINKS: dict[str, str] = {
    "stdout": "sidecars.tailer.sinks.stdout:StdoutSink",
    "http": "sidecars.tailer.sinks.http_ndjson:HttpNdjsonSink",
    "loki": "sidecars.tailer.sinks.loki:LokiSink",
    "elasticsearch": "sidecars.tailer.sinks.elasticsearch:ElasticsearchSink",
    "otlp": "sidecars.tailer.sinks.otlp:OtlpSink",
    "syslog": "sidecars.tailer.sinks.syslog:SyslogSink",
    "file": "sidecars.tailer.sinks.file:FileSink",
}


@dataclass(slots=True)
class Stream:
    """The lines of one file in a batch; the labels are shared by all of them."""

    path: str
    labels: Mapping[str, str]  # static labels + Pod metadata (Downward API env) + {"path": path}
    lines: list[str]  # decoded records (invalid UTF-8 replaced), no trailing newline
    timestamps_ns: list[int]  # read time per line (or parsed time), same length as lines
    fields: list[dict[str, Any]] | None = None  # parsed JSON-line fields per line, when JSON parsing is on


@dataclass(slots=True)
class Batch:
    streams: list[Stream]

    def __len__(self) -> int:
        return sum(len(s.lines) for s in self.streams)

    def split(self) -> tuple[Batch, Batch]:
        """Two batches of about half the records each, in order (a stream may be cut in two)."""
        half = len(self) // 2
        first: list[Stream] = []
        second: list[Stream] = []
        taken = 0
        for s in self.streams:
            n = len(s.lines)
            if taken >= half:
                second.append(s)
            elif taken + n <= half:
                first.append(s)
            else:
                cut = half - taken
                first.append(_slice(s, 0, cut))
                second.append(_slice(s, cut, n))
            taken += n
        return Batch(first), Batch(second)


def _slice(s: Stream, start: int, end: int) -> Stream:
    fields = s.fields[start:end] if s.fields is not None else None
    return Stream(s.path, s.labels, s.lines[start:end], s.timestamps_ns[start:end], fields)


@dataclass
class SendResult:
    """A batch the receiver accepted, possibly in part.

    `rejected` lines will never be accepted (e.g. mapping errors) and are dropped, counted under
    `reason`; `retry` holds the lines the receiver asked to have sent again (e.g. per-item 429).
    """

    rejected: int = 0
    reason: str | None = None
    retry: Batch | None = None


class RetryableError(Exception):
    """The batch may succeed later: 429, 5xx, 408, connection errors, timeouts."""

    def __init__(self, message: str, retry_after_secs: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs


class PermanentError(Exception):
    """The batch will never succeed as sent (a 4xx other than 408/429); `reason` is a short label."""

    def __init__(self, message: str, reason: str = "rejected") -> None:
        super().__init__(message)
        self.reason = reason


class TooLargeError(PermanentError):
    """The receiver refused the request for its size (HTTP 413): the batch is sent again in halves,
    down to single records; only a single record too large goes to the permanent-error policy."""


class SinkSettings(BaseModel):
    """Base of every sink's settings: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=BaseModel)

OUTCOMES = ("ok", "partial", "retryable", "permanent", "error")


class _Series:
    """The metric families, registered once per registry and shared by every sink on it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tailer_sink_requests",
            "Batches sent to the sink, by outcome (ok, partial, retryable, permanent, error).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.sent_bytes = Counter(
            "tailer_sink_sent_bytes",
            "Bytes sent to the sink as on the wire (after compression).",
            ["sink"],
            registry=registry,
        )
        self.rejected_lines = Counter(
            "tailer_sink_rejected_lines",
            "Lines the receiver rejected for good inside an accepted batch.",
            ["sink"],
            registry=registry,
        )
        self.duration = Histogram(
            "tailer_sink_request_duration_seconds",
            "Time from sending a batch to the receiver's acknowledgement.",
            ["sink"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


_SERIES: weakref.WeakKeyDictionary[CollectorRegistry, _Series] = weakref.WeakKeyDictionary()


class SinkMetrics:
    """The `tailer_sink_*` series of one sink: requests by outcome, bytes sent (as on the wire), latency."""

    def __init__(self, registry: CollectorRegistry, sink: str) -> None:
        series = _SERIES.get(registry)
        if series is None:
            series = _SERIES[registry] = _Series(registry)
        self._requests = {o: series.requests.labels(sink=sink, outcome=o) for o in OUTCOMES}
        self._bytes = series.sent_bytes.labels(sink=sink)
        self._rejected = series.rejected_lines.labels(sink=sink)
        self._duration = series.duration.labels(sink=sink)

    def add_bytes(self, n: int) -> None:
        self._bytes.inc(n)

    @contextlib.contextmanager
    def request(self) -> Iterator[_Request]:
        """Time one request and count its outcome from the exception raised or the result set."""
        req = _Request()
        start = time.perf_counter()
        try:
            yield req
        except RetryableError:
            self._requests["retryable"].inc()
            raise
        except PermanentError:
            self._requests["permanent"].inc()
            raise
        except asyncio.CancelledError:
            raise  # shutdown, not an outcome of the request
        except BaseException:
            self._requests["error"].inc()
            raise
        else:
            result = req.result
            partial = result is not None and (result.rejected or result.retry is not None)
            self._requests["partial" if partial else "ok"].inc()
            if result is not None and result.rejected:
                self._rejected.inc(result.rejected)
        finally:
            self._duration.observe(time.perf_counter() - start)


@dataclass(slots=True)
class _Request:
    result: SendResult | None = field(default=None)


class Sink(abc.ABC, Generic[S]):
    """Base class of every sink. Construction does no I/O; `open` connects, `close` releases.

    `send` is awaited once per batch and must return only once the receiver acknowledged it.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]

    def __init__(self, settings: S, log: FilteringBoundLogger, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.log = log.bind(sink=self.name)
        self.metrics = SinkMetrics(registry, self.name)
        self._limiters: dict[float, LogLimiter] = {}

    def warn_limited(self, event: str, interval_secs: float = 60.0, **kw: Any) -> None:
        """Log a recurring problem once, then at most once per interval with how often it recurred.

        The metrics count every occurrence; the log only has to say that (and why) it happens.
        """
        limiter = self._limiters.get(interval_secs)
        if limiter is None:
            limiter = self._limiters[interval_secs] = LogLimiter(self.log, interval_secs)
        limiter.warning(event, **kw)

    async def open(self) -> None:
        """Acquire connections or files; called once before the first `send`."""

    async def close(self) -> None:
        """Release what `open` acquired; called once, also after a failed `open`."""

    @abc.abstractmethod
    async def send(self, batch: Batch) -> SendResult:
        """Deliver the whole batch; return once acknowledged, or raise RetryableError/PermanentError."""


SINKS: Registry[Sink[Any]] = Registry(ENTRY_POINT_GROUP, Sink, BUILTIN_SINKS, kind="sink")


def known_sinks() -> list[str]:
    return sorted(SINKS.names())


def load_sink(name: str) -> type[Sink[Any]]:
    """The sink class registered under `name`: a built-in, or one from the entry-point group.

    PluginError (a LookupError) for an unknown name, a name claimed twice, or a failing plugin.
    """
    return SINKS.load(name)
