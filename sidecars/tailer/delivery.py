"""Batches and their delivery: batching by lines/bytes/time, retries, the permanent-error policy.

A batch is sent until the sink acknowledges it: retryable failures wait a jittered, doubling delay
(or the receiver's `Retry-After`) and try again, for as long as it takes: the files are the buffer,
and reading pauses meanwhile. A permanent failure (the receiver will never accept the batch as sent)
goes through an explicit, counted policy: drop, dead-letter file, or retry forever.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from structlog.typing import FilteringBoundLogger

from sidecars.core.backoff import EQUAL_JITTER, jittered_backoff
from sidecars.core.telemetry import LogLimiter
from sidecars.tailer.checkpoint import Track
from sidecars.tailer.follower import Chunk
from sidecars.tailer.metrics import TailerMetrics
from sidecars.tailer.sinks.base import Batch, PermanentError, RetryableError, Sink, Stream, TooLargeError


@dataclass(slots=True)
class Sealed:
    """A batch ready to send, with the tracks whose offsets it moves once acknowledged."""

    seq: int
    batch: Batch
    tracks: list[Track]
    lines: int
    nbytes: int


@dataclass(slots=True)
class Batcher:
    """The batch being filled; `add` takes whole chunks (the follower sizes them to the room left)."""

    max_lines: int
    max_bytes: int
    json_fields: bool
    seq: int = 1
    lines: int = 0
    nbytes: int = 0
    first_at: float | None = None
    _streams: dict[int, Stream] = field(default_factory=dict)
    _tracks: dict[int, Track] = field(default_factory=dict)

    @property
    def room_lines(self) -> int:
        return max(self.max_lines - self.lines, 0)

    @property
    def room_bytes(self) -> int:
        return max(self.max_bytes - self.nbytes, 0)

    @property
    def full(self) -> bool:
        return self.lines >= self.max_lines or self.nbytes >= self.max_bytes

    @property
    def empty(self) -> bool:
        return not self._tracks

    def add(self, chunk: Chunk) -> None:
        track = chunk.track
        tid = id(track)
        self._tracks[tid] = track
        if self.first_at is None:
            self.first_at = time.monotonic()
        n = len(chunk.lines)
        if n:
            stream = self._streams.get(tid)
            if stream is None:
                f = chunk.follower
                stream = Stream(
                    path=f.label_path,
                    labels=f.labels,
                    lines=[],
                    timestamps_ns=[],
                    fields=[] if self.json_fields else None,
                )
                self._streams[tid] = stream
            stream.lines.extend(chunk.lines)
            stream.timestamps_ns.extend(chunk.timestamps_ns or [chunk.ts_ns] * n)
            if stream.fields is not None and chunk.fields is not None:
                stream.fields.extend(chunk.fields)
            self.lines += n
        self.nbytes += chunk.nbytes
        if chunk.end is not None or n:
            track.handed(self.seq, chunk.end)

    def seal(self) -> Sealed:
        sealed = Sealed(
            self.seq, Batch(list(self._streams.values())), list(self._tracks.values()), self.lines, self.nbytes
        )
        self.seq += 1
        self.lines = self.nbytes = 0
        self.first_at = None
        self._streams = {}
        self._tracks = {}
        return sealed


def backoff_delay(attempt: int, initial: float, maximum: float, retry_after: float | None = None) -> float:
    """Equal-jitter exponential backoff; a receiver's Retry-After is a floor (capped at 10x maximum)."""
    delay = jittered_backoff(attempt, initial, maximum, floor=EQUAL_JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, maximum * 10))
    return delay


class DeadLetter:
    """NDJSON files of records the sink refused for good, with a size cap."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._used: int | None = None

    def _usage(self) -> int:
        if self._used is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._used = sum(p.stat().st_size for p in self.directory.glob("*.ndjson"))
        return self._used

    def write(self, batch: Batch, reason: str) -> bool:
        """Append the batch; False (nothing written) when the cap would be passed. Blocking."""
        out = bytearray()
        for s in batch.streams:
            labels = dict(s.labels)
            for line, ts in zip(s.lines, s.timestamps_ns, strict=True):
                out += orjson.dumps({"ts_ns": ts, "path": s.path, "labels": labels, "line": line, "reason": reason})
                out += b"\n"
        if self._usage() + len(out) > self.max_bytes:
            return False
        path = self.directory / time.strftime("dead-letter-%Y%m%d.ndjson", time.gmtime())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, out)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._used = self._usage() + len(out)
        return True


class Sender:
    """Sends sealed batches to the sink until acknowledged (or given up by the permanent policy)."""

    def __init__(
        self,
        sink: Sink[Any],
        *,
        retry_initial_secs: float,
        retry_max_secs: float,
        on_permanent_error: str,
        dead_letter: DeadLetter | None,
        metrics: TailerMetrics,
        log: FilteringBoundLogger,
    ) -> None:
        self.sink = sink
        self.initial = retry_initial_secs
        self.maximum = retry_max_secs
        self.policy = on_permanent_error
        self.dead_letter = dead_letter
        self.metrics = metrics
        self.log = log
        self.failing_since: float | None = None
        self.last_error: str | None = None
        # Once per outage (reset on recovery), and once per process for splits: the fix is a smaller
        # batch_max_bytes, said the first time.
        self._once = LogLimiter(log, None)

    async def deliver(self, sealed: Sealed) -> int:
        """Returns the number of records the receiver took (or that were handled by policy)."""
        return await self._deliver(sealed.batch)

    async def _deliver(self, batch: Batch) -> int:
        attempt = 0
        delivered = 0
        while True:
            try:
                result = await self.sink.send(batch)
            except RetryableError as exc:
                delay = backoff_delay(attempt, self.initial, self.maximum, exc.retry_after_secs)
                self._failed("retryable", str(exc), delay)
            except PermanentError as exc:
                if isinstance(exc, TooLargeError) and len(batch) > 1:
                    return delivered + await self._split(batch, str(exc))
                if self.policy == "retry":
                    delay = backoff_delay(attempt, self.initial, self.maximum)
                    self._failed("permanent", str(exc), delay)
                else:
                    await self._give_up(batch, exc.reason, str(exc))
                    self._recovered()
                    return delivered
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink bug or an unclassified I/O error: keep the records, retry
                delay = backoff_delay(attempt, self.initial, self.maximum)
                self.metrics.errors.labels(type="sink").inc()  # the outage's line is _failed's
                self._failed("error", f"{type(exc).__name__}: {exc}", delay)
            else:
                self._recovered()
                n = len(batch)
                if result.rejected:
                    self.metrics.records_dropped(
                        "rejected", result.rejected, "receiver rejected records", cause=result.reason or "rejected"
                    )
                retry = result.retry
                if retry is None or not len(retry):
                    return delivered + n - result.rejected
                delivered += n - result.rejected - len(retry)
                batch = retry
                delay = backoff_delay(attempt, self.initial, self.maximum)
            attempt += 1
            self.metrics.retries.inc()
            await asyncio.sleep(delay)

    async def _split(self, batch: Batch, message: str) -> int:
        """Send a batch the receiver found too large as two halves, one after the other (order kept)."""
        self.metrics.batch_splits.inc()
        self._once.warning(
            "receiver refused a batch as too large: sending it in halves", records=len(batch), error=message
        )
        first, second = batch.split()
        return await self._deliver(first) + await self._deliver(second)

    def _failed(self, kind: str, message: str, delay: float) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = message
        self._once.warning("sink failing: retrying", kind=kind, error=message, retry_in_secs=round(delay, 2))

    def _recovered(self) -> None:
        if self.failing_since is not None:
            self.log.info("sink recovered", failed_for_secs=round(time.monotonic() - self.failing_since, 1))
        self.failing_since = None
        self.last_error = None
        self._once.reset("sink failing: retrying")

    async def _give_up(self, batch: Batch, reason: str, message: str) -> None:
        n = len(batch)
        if self.policy == "dead_letter" and self.dead_letter is not None:
            try:
                written = await asyncio.to_thread(self.dead_letter.write, batch, reason)
            except OSError as exc:
                self.metrics.telemetry.error("dead_letter", "dead-letter write failed", error=str(exc))
                written = False
            if written:
                self.metrics.dead_lettered.inc(n)
                self.metrics.telemetry.limiter.error(
                    "sink refused a batch for good: dead-lettered", records=n, cause=reason, error=message
                )
                return
            self.metrics.records_dropped(
                "dead_letter_full", n, "sink refused a batch, dead-letter full: dropped", cause=reason
            )
            return
        self.metrics.records_dropped(
            "permanent", n, "sink refused a batch for good: dropped", cause=reason, error=message
        )
