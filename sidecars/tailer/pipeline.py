"""The tailer's moving parts in one place: discovery -> followers -> batches -> sink -> checkpoints.

Tasks (one process-wide set, no task per file or per line):
- reader: round-robin over followers with data, frames chunks into the open batch, seals full or
  old batches; pauses while `max_buffer_bytes` are read but unacknowledged or the send queue is full
  (backpressure: the files are the buffer);
- senders: deliver sealed batches, then move each file's checkpoint track;
- poller: fstat()s every open file: growth, truncation (size or head), deletion, rename, closing
  (the file-level decisions live in `files.FileSet`);
- watcher + rescan: new files and rotations, fast through inotify, surely through the rescan;
- checkpointer: writes acknowledged offsets at most every `checkpoint_interval_secs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from structlog.typing import FilteringBoundLogger

from sidecars.core.logs import pod_metadata
from sidecars.tailer.checkpoint import CheckpointStore
from sidecars.tailer.delivery import Batcher, DeadLetter, Sealed, Sender
from sidecars.tailer.discovery import Matcher, Watcher
from sidecars.tailer.files import FileSet
from sidecars.tailer.follower import Chunk, Counts, Follower, Options
from sidecars.tailer.metrics import TailerMetrics
from sidecars.tailer.settings import TailerSettings
from sidecars.tailer.sinks.base import Sink

# Chunks framed from one follower before the reader moves to the next: fairness between files.
_TURN_CHUNKS = 4


class Pipeline:
    def __init__(
        self,
        settings: TailerSettings,
        sink: Sink[Any],
        store: CheckpointStore,
        metrics: TailerMetrics,
        log: FilteringBoundLogger,
    ) -> None:
        s = self.s = settings
        self.sink = sink
        self.store = store
        self.metrics = metrics
        self.log = log
        self.matcher = Matcher(s.include, s.exclude, follow_symlinks=s.follow_symlinks, max_depth=s.max_depth)
        self.counts = Counts()
        self.options = Options.from_settings(s)
        base = dict(pod_metadata()) if s.pod_labels else {}
        base.update(s.labels)
        self._stash: list[Chunk] = []  # records produced outside the reader (at a truncation)
        self.files = FileSet(
            settings=s,
            store=store,
            matcher=self.matcher,
            options=self.options,
            counts=self.counts,
            base_labels=base,
            metrics=metrics,
            log=log,
            wake=self._wake_reader,
            stash=self._stash.append,
        )
        self.batcher = Batcher(s.batch_max_lines, s.batch_max_bytes, s.parse_json)
        self.queue: asyncio.Queue[Sealed] = asyncio.Queue(maxsize=s.max_in_flight_batches)
        self.buffered = 0
        self.sender = Sender(
            sink,
            retry_initial_secs=s.retry_initial_secs,
            retry_max_secs=s.retry_max_secs,
            on_permanent_error=s.on_permanent_error,
            dead_letter=DeadLetter(s.dead_letter_dir or s.checkpoint_dir / "dead-letter", s.dead_letter_max_bytes),
            metrics=metrics,
            log=log,
        )
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._rescan_now = asyncio.Event()
        self._draining = False
        self._read_done = asyncio.Event()
        self._finished = asyncio.Event()
        self._checkpoint_failures = 0
        self._watch_ok = s.watch_mode == "inotify"

    def _wake_reader(self) -> None:
        self._wake.set()

    # ====================================================================================== lifecycle

    async def run(self, ready: Callable[[], None]) -> None:
        try:
            self.files.initial_scan = True
            self.files.found(await asyncio.to_thread(self.matcher.scan))
            self.files.initial_scan = False
            self.files.recover_rotated()
            await self._write_checkpoint()  # from now on this is not the very first start
            self.log.info("following files", files=len(self.files.followers), include=self.s.include)
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._reader(), name="tailer.reader")]
                tasks += [tg.create_task(self._send_loop()) for _ in range(self.s.send_concurrency)]
                tasks.append(tg.create_task(self._poll_loop()))
                tasks.append(tg.create_task(self._rescan_loop()))
                tasks.append(tg.create_task(self._checkpoint_loop()))
                if self._watch_ok:
                    tasks.append(tg.create_task(self._watch_loop()))
                ready()
                await self._finished.wait()
                for t in tasks:
                    t.cancel()
        finally:
            for f in list(self.files.followers.values()):
                f.close()
            self.files.followers.clear()
            self.files.by_path.clear()
            self._write_checkpoint_sync()

    async def drain(self, budget_secs: float) -> None:
        """Read every file to its end, deliver, persist checkpoints; within `budget_secs`."""
        deadline = time.monotonic() + budget_secs
        with contextlib.suppress(OSError):  # a last look for files no event told us about yet
            self.files.found(await asyncio.to_thread(self.matcher.scan), rescan=False)
        self._draining = self.files.draining = True
        for f in list(self.files.followers.values()):
            self.files.check(f, time.monotonic())
            if f.fd is not None and f.size > f.read_offset:
                f.at_eof = False  # read up to the size seen now; what comes later waits for the restart
        self._wake.set()
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                await self._read_done.wait()
                await self.queue.join()
            self.log.info("drained: every file read to its end and delivered")
        except TimeoutError:
            self.log.warning(
                "drain budget spent before everything was delivered; undelivered records are sent again "
                "after the restart",
                queued_batches=self.queue.qsize(),
                buffered_bytes=self.buffered,
            )
        finally:
            await self._write_checkpoint()
            self._finished.set()

    def checks_sink(self) -> str | None:
        since = self.sender.failing_since
        if since is not None and time.monotonic() - since >= self.s.unhealthy_after_secs:
            return f"sink failing for {time.monotonic() - since:.0f}s: {self.sender.last_error}"
        return None

    def checks_checkpoint(self) -> str | None:
        if self._checkpoint_failures >= 3:
            return f"checkpoint writes failing ({self._checkpoint_failures} in a row)"
        return None

    # ====================================================================================== reading

    async def _reader(self) -> None:
        while True:
            progressed = False
            while self._stash:
                stashed = self._stash.pop(0)
                b = self.batcher
                if len(stashed.lines) > b.room_lines or stashed.nbytes > b.room_bytes:
                    await self._seal()  # sized for an empty batch, not for the room left in this one
                await self._add(stashed)
            for f in list(self.files.followers.values()):
                if f.fd is None:
                    continue
                for _ in range(_TURN_CHUNKS):
                    chunk = await self._next_chunk(f)
                    if chunk is None:
                        break
                    progressed = True
                    await self._add(chunk)
            now = time.monotonic()
            force = self._draining and not progressed
            for f in list(self.files.followers.values()):
                if f.has_unframed or f.grouper is not None:
                    for held in (f.flush_partial(now, force), f.flush_multiline(now, force)):
                        if held is not None:
                            progressed = True
                            await self._add(held)
            b = self.batcher
            if not b.empty and (force or (b.first_at is not None and now - b.first_at >= self.s.batch_wait_secs)):
                await self._seal()
            if progressed:
                await asyncio.sleep(0)  # let senders and acks run between rounds
                continue
            if self._draining and b.empty and all(f.settled for f in self.files.followers.values()):
                self._read_done.set()
                self._update_gauges()
                await self._finished.wait()
                return
            timeout = 0.25
            if not b.empty and b.first_at is not None:
                timeout = min(timeout, max(b.first_at + self.s.batch_wait_secs - now, 0.0))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _next_chunk(self, f: Follower) -> Chunk | None:
        """Framed records from `f`, reading more when the buffer has no complete line; None when idle."""
        while True:
            if self.batcher.full:
                await self._seal()
            b = self.batcher
            chunk = f.frame(b.room_lines or b.max_lines, b.room_bytes if not b.empty else b.max_bytes)
            if chunk is not None:
                return chunk
            if f.at_eof or f.fd is None:
                return None
            await self._wait_room()
            if f.fd is None:
                return None
            try:
                more = await f.fill()
            except OSError as exc:
                self.metrics.errors.labels(type="read").inc()
                self.log.error("read failed", path=f.path, error=str(exc))
                f.at_eof = True
                return None
            if f.replaced:  # truncated under the read: finish the old content from its copy now
                self.files.check(f, time.monotonic())
                continue
            if not more and not f.has_unframed:
                return None

    async def _add(self, chunk: Chunk) -> None:
        self.buffered += chunk.nbytes
        self.batcher.add(chunk)
        if self.batcher.full:
            await self._seal()

    async def _seal(self) -> None:
        if self.batcher.empty:
            return
        sealed = self.batcher.seal()
        if sealed.lines == 0:  # only checkpoint moves (e.g. the rest of an over-long line skipped)
            for t in sealed.tracks:
                t.acked(sealed.seq)
            self.buffered -= sealed.nbytes
            return
        await self.queue.put(sealed)  # blocks while max_in_flight_batches are queued: backpressure

    async def _wait_room(self) -> None:
        while self.buffered >= self.s.max_buffer_bytes:
            await self._seal()  # a half-full batch must not hold the room it waits for
            self._room.clear()
            if self.buffered < self.s.max_buffer_bytes:
                return
            await self._room.wait()

    # ====================================================================================== delivery

    async def _send_loop(self) -> None:
        while True:
            sealed = await self.queue.get()
            try:
                taken = await self.sender.deliver(sealed)
                for t in sealed.tracks:
                    t.acked(sealed.seq)
                self.metrics.records_sent.inc(taken)
                self.metrics.base.events_out.inc(taken)
                self.metrics.bytes_sent.inc(sealed.nbytes)
            finally:
                self.buffered -= sealed.nbytes
                self._room.set()
                self.queue.task_done()

    # ====================================================================================== loops

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.poll_interval_secs)
            now = time.monotonic()
            for f in list(self.files.followers.values()):
                self.files.check(f, now)
            self.files.open_waiting()
            self._update_gauges()

    def _update_gauges(self) -> None:
        m = self.metrics
        c, last = self.counts, m.absorbed
        # Logged at most once per poll interval, with counts, however many lines were affected.
        if c.truncated > last.truncated:
            self.log.warning(
                "over-long lines truncated", lines=c.truncated - last.truncated, max_line_bytes=self.s.max_line_bytes
            )
        if c.invalid_utf8 > last.invalid_utf8:
            self.log.warning("invalid UTF-8 replaced", lines=c.invalid_utf8 - last.invalid_utf8)
        if c.json_errors > last.json_errors:
            self.log.warning("lines that looked like JSON did not parse", lines=c.json_errors - last.json_errors)
        m.absorb(c)
        m.files_watched.set(len(self.files.followers))
        m.open_files.set(sum(1 for f in self.files.followers.values() if f.fd is not None))
        m.files_waiting.set(len(self.files.waiting))
        m.bytes_behind.set(sum(max(f.size - f.track.committed, 0) for f in self.files.followers.values()))
        m.buffered_bytes.set(self.buffered)
        m.checkpoint_age.set(self.store.age_secs)
        since = self.sender.failing_since
        m.sink_failing.set(time.monotonic() - since if since is not None else 0.0)

    async def _rescan_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rescan_now.wait(), self.s.rescan_interval_secs)
            self._rescan_now.clear()
            if self._draining:
                continue
            self.files.found(await asyncio.to_thread(self.matcher.scan))
            self.files.find_moved()
            # A file waiting for a handle keeps its entry however long it waits: it is how it is found
            # again if it is renamed before its turn.
            keep = set(self.files.followers) | self.files.waiting_keys()
            self.store.gc(self.s.checkpoint_retention_secs, keep=keep)

    async def _watch_loop(self) -> None:
        stop = asyncio.Event()
        while True:
            watcher = Watcher(self.matcher, self._on_change, self._rescan_now.set, self.log)
            task = asyncio.ensure_future(watcher.run(stop))
            try:
                while not task.done():
                    await asyncio.wait([task], timeout=self.s.rescan_interval_secs)
                    if not task.done() and watcher.dirs != self.matcher.base_dirs():
                        stop.set()  # a base directory appeared or went: watch the new set
                        await task
                ok = task.result()
            finally:
                if not task.done():
                    stop.set()
                    with contextlib.suppress(Exception):
                        await task
            stop.clear()
            if not ok:
                self.metrics.errors.labels(type="watch").inc()
                return  # polling and rescans carry on alone
            await asyncio.sleep(min(self.s.rescan_interval_secs, 1.0))

    def _on_change(self, paths: set[str]) -> None:
        for path in paths:
            self.files.check_path(path)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.checkpoint_interval_secs)
            await self._write_checkpoint()

    async def _write_checkpoint(self) -> None:
        try:
            if not await self.store.flush():
                return
        except OSError as exc:
            self._checkpoint_failures += 1
            self.metrics.errors.labels(type="checkpoint").inc()
            self.log.error("checkpoint write failed", path=str(self.store.path), error=str(exc))
            return
        self.metrics.checkpoint_writes.inc()
        self._checkpoint_failures = 0

    def _write_checkpoint_sync(self) -> None:
        try:
            self.store.flush_blocking()
        except OSError as exc:
            self.log.error("checkpoint write failed", path=str(self.store.path), error=str(exc))
