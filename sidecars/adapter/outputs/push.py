"""What every push output shares: which series go out, a bounded queue, batches, retries, staleness.

After each scrape the kept samples (the families matching `push_keep`, with `push_labels` added) enter
one queue bounded in samples; past the bound the oldest are dropped and counted, so an unreachable
receiver costs a known amount of memory and loses only what did not fit. One sender takes batches from
the head in order, so a receiver sees each series in time order; a failed batch is retried (5xx, 429,
connection errors) after a jittered backoff or the receiver's `Retry-After`, and a batch the receiver
refuses (another 4xx) is dropped and counted. A series that disappears from the page, or every series
when a scrape fails, is sent once more as Prometheus' staleness marker.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import email.utils
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from sidecars.adapter.exposition import ParseResult
from sidecars.adapter.outputs.base import Output
from sidecars.adapter.outputs.json import family_of
from sidecars.adapter.promql.history import STALE_NAN, with_name
from sidecars.adapter.promql.regex import AnchoredRegex, compile_anchored
from sidecars.adapter.scraper import Scrape
from sidecars.core import Context, heap
from sidecars.core.backoff import jittered_backoff
from sidecars.core.redact import redact_text
from sidecars.core.telemetry import LogLimiter

Labels = tuple[tuple[str, str], ...]
Point = tuple[Labels, int, float, str]  # labels (with __name__), timestamp ms, value, family type
MAX_RETRY_AFTER_SECS = 300.0  # a receiver asking for more is asked again after this
RETRYABLE = frozenset({408, 429}) | frozenset(range(500, 600))
ENQUEUE_SLICE = 10_000  # points a page enters the queue by, on the loop (about 0.1 ms each)


class PushError(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


def retry_after_secs(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECS)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, when - (time.time() if now is None else now)), MAX_RETRY_AFTER_SECS)


class PushMetrics:
    _instances: dict[int, PushMetrics] = {}

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter("adapter_push_samples", "Samples a push receiver accepted.", ["output"], registry=registry)
        self.dropped = Counter(
            "adapter_push_dropped_samples",
            "Samples given up: queue_full (the oldest, past push_queue_max_samples), rejected (a 4xx), "
            "malformed (a histogram that cannot be sent), partial_rejected (refused within an accepted request).",
            ["output", "reason"],
            registry=registry,
        )
        self.failures = Counter(
            "adapter_push_failures", "Push requests that failed, by reason.", ["output", "reason"], registry=registry
        )
        self.queued = Gauge("adapter_push_queue_samples", "Samples waiting to be sent.", ["output"], registry=registry)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> PushMetrics:
        # One set per registry, shared by the push outputs of a process.
        found = cls._instances.get(id(registry))
        if found is None:
            found = cls._instances[id(registry)] = cls(registry)
        return found


@dataclass(frozen=True)
class Selection:
    keep: tuple[AnchoredRegex, ...]
    labels: Labels  # added to every series; a label of the page with the same name is replaced

    @classmethod
    def from_settings(cls, keep: Sequence[str], labels: Sequence[str]) -> Selection:
        pairs = dict(item.split("=", 1) for item in labels)
        return cls(tuple(compile_anchored(p) for p in keep), tuple(sorted(pairs.items())))


def select_points(result: ParseResult, t_ms: int, selection: Selection) -> list[Point]:
    """The samples of a page that go out, labelled and timed as they will be sent."""
    decided: dict[str, str | None] = {}  # sample name -> family type, None when not kept
    extra = selection.labels
    extra_names = {k for k, _ in extra}
    out: list[Point] = []
    for name, labels, value, ts in result.samples:
        kind = decided.get(name, "")
        if kind == "":
            family = family_of(name, result.types)
            keep = not selection.keep or any(p.matches(family) for p in selection.keep)
            kind = decided[name] = result.types.get(family, "untyped") if keep else None
        if kind is None:
            continue
        if extra:
            labels = tuple(sorted((*(p for p in labels if p[0] not in extra_names), *extra)))
        out.append((with_name(name, labels), t_ms if ts is None else ts, value, kind))
    return out


class PushOutput(Output):
    """A push output: subclasses say how a batch is encoded and sent (`send`)."""

    max_samples: int
    queue_max_samples: int
    DROP_REASONS: tuple[str, ...] = ("queue_full", "rejected")

    def __init__(self, state, settings) -> None:  # type: ignore[no-untyped-def]
        super().__init__(state, settings)
        self.selection = Selection.from_settings(settings.push_keep, settings.push_labels)
        self.batch_max = settings.push_batch_max_samples
        self.queue_max = settings.push_queue_max_samples
        self.timeout_secs = settings.push_timeout_secs
        self.max_backoff_secs = settings.push_max_backoff_secs
        self.queue: collections.deque[Point] = collections.deque()
        self._wake = asyncio.Event()
        self._live: dict[Labels, str] = {}  # series sent from the last page (no explicit timestamp)
        self._pending: list[Scrape] = []
        self._metrics: PushMetrics | None = None
        self._context: Context | None = None
        self._logged: str | None = None
        self._dropped_in_flight = 0  # dropped from the head since the batch being sent was taken

    def routes(self) -> list:  # type: ignore[type-arg]
        return []

    def families(self) -> frozenset[str] | None:
        return None

    @abc.abstractmethod
    async def send(self, session: aiohttp.ClientSession, batch: list[Point]) -> None:
        """Deliver one batch; raise PushError (reason, detail, Retry-After) when it did not arrive."""

    def start(self, context: Context) -> None:
        self._context = context
        self._lines = LogLimiter(context.log, 60.0)
        self._metrics = PushMetrics.of(context.metrics.registry)
        self._metrics.queued.labels(output=self.name).set(0)
        for reason in self.DROP_REASONS:
            self._metrics.dropped.labels(output=self.name, reason=reason)
        context.spawn(f"push-{self.name}", self.run)

    # -- intake, on the event loop ---------------------------------------------------------------
    def on_scrape(self, scrape: Scrape) -> None:
        # Converted in the sender's thread; the page is marked as being read until then.
        self._reading.add(id(scrape))
        self._pending.append(scrape)
        self._wake.set()

    def on_scrape_failed(self, scrape: Scrape) -> None:
        # As Prometheus after a failed scrape: every series of the last page goes stale (in the
        # sender's thread too, in order with the pages before it).
        self._pending.append(scrape)
        self._wake.set()

    def _convert(self, scrape: Scrape) -> list[Point]:
        """In a worker thread: the points of a page, or the stale markers of a failed one."""
        # A page's points live until sent: built without full collections, then frozen out of them.
        with heap.full_collections_held():
            if scrape.result is None:
                points: list[Point] = []
                live: dict[Labels, str] = {}
            else:
                points = select_points(scrape.result, scrape.t_ms, self.selection)
                live = {p[0]: p[3] for p in points if p[1] == scrape.t_ms}
            t_ms = scrape.t_ms
            points.extend((labels, t_ms, STALE_NAN, kind) for labels, kind in self._live.items() if labels not in live)
            previous, self._live = self._live, live
            heap.release([previous])  # 100k entries freed at once would hold the GIL for milliseconds
            if len(points) >= heap.FREEZE_MIN_OBJECTS:
                heap.freeze()
        return points

    def _enqueue(self, points: list[Point]) -> None:
        self.queue.extend(points)
        over = len(self.queue) - self.queue_max
        if over > 0:
            for _ in range(over):
                self.queue.popleft()  # the oldest go first: the newest say most about now
            self._dropped_in_flight += over
            if self._metrics is not None:
                self._metrics.dropped.labels(output=self.name, reason="queue_full").inc(over)
        if self._metrics is not None:
            self._metrics.queued.labels(output=self.name).set(len(self.queue))
        self._wake.set()

    # -- the sender ------------------------------------------------------------------------------
    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_secs)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            attempt = 0
            while True:
                while self._pending:
                    scrape = self._pending.pop(0)
                    try:
                        points = await asyncio.to_thread(self._convert, scrape)
                    finally:
                        self._reading.discard(id(scrape))
                    del scrape  # the adapter releases the page piecewise; no last reference here
                    for i in range(0, len(points), ENQUEUE_SLICE):
                        self._enqueue(points[i : i + ENQUEUE_SLICE])
                        await asyncio.sleep(0)  # the probes between slices
                    del points
                if not self.queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = list(itertools.islice(self.queue, self.batch_size()))
                self._dropped_in_flight = 0
                try:
                    await self.send(session, batch)
                except PushError as exc:
                    await self._failed(exc, batch, attempt)
                    attempt = 0 if exc.reason == "rejected" else attempt + 1
                    continue
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    reason = "timeout" if isinstance(exc, TimeoutError) else "connection"
                    await self._failed(PushError(reason, f"{type(exc).__name__}: {exc}"), batch, attempt)
                    attempt += 1
                    continue
                attempt = 0
                self._done(batch)
                assert self._metrics is not None
                self._metrics.sent.labels(output=self.name).inc(len(batch))
                if self._logged is not None and self._context is not None:
                    self._context.log.info("push delivering again", output=self.name)
                self._logged = None

    def batch_size(self) -> int:
        """How many points of the queue's head the next batch takes (a subclass may keep groups whole)."""
        return min(int(self.batch_max), len(self.queue))

    def count_dropped(self, reason: str, n: int, detail: str | None = None) -> None:
        """`n` samples given up for `reason` by the output itself (not sent, not to be retried)."""
        assert self._metrics is not None and self._context is not None
        self._metrics.dropped.labels(output=self.name, reason=reason).inc(n)
        self._lines.warning(
            "push samples dropped", key=f"dropped:{reason}", output=self.name, reason=reason, samples=n, detail=detail
        )

    def _done(self, batch: list[Point]) -> None:
        # The batch was the head of the queue; drops past the bound meanwhile took its oldest first.
        for _ in range(max(0, min(len(batch) - self._dropped_in_flight, len(self.queue)))):
            self.queue.popleft()
        self._dropped_in_flight = 0
        assert self._metrics is not None
        self._metrics.queued.labels(output=self.name).set(len(self.queue))

    async def _failed(self, exc: PushError, batch: list[Point], attempt: int) -> None:
        assert self._metrics is not None and self._context is not None
        self._metrics.failures.labels(output=self.name, reason=exc.reason).inc()
        detail = redact_text(str(exc))[:300]
        if self._logged != exc.reason:  # once per kind of failure, not once per retry
            self._logged = exc.reason
            self._context.log.warning("push failed", output=self.name, reason=exc.reason, detail=detail)
        if exc.reason == "rejected":
            self._done(batch)
            self._metrics.dropped.labels(output=self.name, reason="rejected").inc(len(batch))
            return
        delay = exc.retry_after
        if delay is None:
            delay = jittered_backoff(attempt, 0.5, self.max_backoff_secs)
        self._wake.clear()
        await asyncio.sleep(delay)
