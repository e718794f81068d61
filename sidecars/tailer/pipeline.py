"""The tailer's moving parts in one place: discovery -> followers -> batches -> sink -> checkpoints.

Tasks (one process-wide set, no task per file or per line):
- reader: round-robin over followers with data, frames chunks into the open batch, seals full or
  old batches; pauses while `max_buffer_bytes` are read but unacknowledged or the send queue is full
  (backpressure: the files are the buffer);
- senders: deliver sealed batches, then move each file's checkpoint track;
- poller: fstat()s every open file: growth, truncation (size or head), deletion, rename, closing;
- watcher + rescan: new files and rotations, fast through inotify, surely through the rescan;
- checkpointer: writes acknowledged offsets at most every `checkpoint_interval_secs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Callable
from typing import Any

from structlog.typing import FilteringBoundLogger

from sidecars.core.logs import pod_metadata
from sidecars.tailer.checkpoint import CheckpointStore, Entry, Track
from sidecars.tailer.delivery import Batcher, DeadLetter, Sealed, Sender
from sidecars.tailer.discovery import Matcher, Watcher
from sidecars.tailer.follower import Chunk, Counts, Follower, Options
from sidecars.tailer.identity import Fingerprint, file_key
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
        self.matcher = Matcher(s.include, s.exclude)
        self.counts = Counts()
        self.options = Options(
            max_line_bytes=s.max_line_bytes,
            read_chunk_bytes=s.read_chunk_bytes,
            fingerprint_bytes=s.fingerprint_bytes,
            partial_line_flush_secs=s.partial_line_flush_secs,
            parse_json=s.parse_json,
            json_timestamp_key=s.json_timestamp_key,
            multiline=s.multiline,
            multiline_start_pattern=s.multiline_start_pattern,
            multiline_flush_secs=s.multiline_flush_secs,
            multiline_max_lines=s.multiline_max_lines,
            multiline_max_bytes=s.multiline_max_bytes,
        )
        base = dict(pod_metadata()) if s.pod_labels else {}
        base.update(s.labels)
        self.base_labels = base
        self.followers: dict[str, Follower] = {}
        self.by_path: dict[str, str] = {}
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
        self._unopenable: set[str] = set()
        self._stash: list[Chunk] = []  # records produced outside the reader (at a truncation)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._rescan_now = asyncio.Event()
        self._draining = False
        self._read_done = asyncio.Event()
        self._finished = asyncio.Event()
        self._first_start = not store.existed
        self._initial_scan = False
        self._checkpoint_failures = 0
        self._watch_ok = s.watch_mode == "inotify"

    # ====================================================================================== lifecycle

    async def run(self, ready: Callable[[], None]) -> None:
        try:
            self._initial_scan = True
            for path in await asyncio.to_thread(self.matcher.scan):
                self._check_path(path, rescan=True)
            self._initial_scan = False
            self._recover_rotated()
            await self._write_checkpoint()  # from now on this is not the very first start
            self.log.info("following files", files=len(self.followers), include=self.s.include)
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
            for f in list(self.followers.values()):
                f.close()
            self.followers.clear()
            self.by_path.clear()
            self._write_checkpoint_sync()

    async def drain(self, budget_secs: float) -> None:
        """Read every file to its end, deliver, persist checkpoints; within `budget_secs`."""
        deadline = time.monotonic() + budget_secs
        with contextlib.suppress(OSError):  # a last look for files no event told us about yet
            for path in await asyncio.to_thread(self.matcher.scan):
                self._check_path(path)
        self._draining = True
        for f in list(self.followers.values()):
            self._check_follower(f, time.monotonic())
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
                await self._add(self._stash.pop(0))
            for f in list(self.followers.values()):
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
            for f in list(self.followers.values()):
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
            if self._draining and b.empty and all(f.settled for f in self.followers.values()):
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

    # ====================================================================================== files

    def _labels(self, path: str) -> dict[str, str]:
        labels = dict(self.base_labels)
        labels["path"] = path
        return labels

    def _check_path(self, path: str, rescan: bool = False) -> None:
        """Look at a matching path: new file, the same file grown, or a new file under an old name."""
        try:
            st = os.stat(path)
        except OSError:
            return  # gone (renamed or deleted): the poller notices on the open file
        if not stat.S_ISREG(st.st_mode):
            return
        key = file_key(st)
        now = time.monotonic()
        cur = self.by_path.get(path)
        if cur == key:
            f = self.followers.get(key)
            if f is not None:
                if st.st_size != f.read_offset:
                    self._check_follower(f, now)  # growth, or truncation (checked before reading on)
                return
        if cur is not None and cur != key:
            old = self.followers.get(cur)
            if old is not None and old.rotated_at is None and old.deleted_at is None:
                old.rotated_at = now
                self.metrics.rotations.labels(kind="renamed").inc()
                self.log.info("file rotated away: reading it to its end", path=path)
            del self.by_path[path]
        f = self.followers.get(key)
        if f is not None:  # a followed file under a (new) matching name
            f.path = path
            f.rotated_at = None
            self.by_path[path] = key
            f.at_eof = False
            self._wake.set()
            return
        if self._draining:
            return
        entry = self.store.get(key)
        if rescan and entry is not None and entry.offset == st.st_size and entry.path == path:
            entry.seen = time.time()  # known, nothing new: no need to hold it open
            return
        self._open(path, st)

    def _open(self, path: str, st0: os.stat_result, label_path: str | None = None) -> Follower | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            self.metrics.errors.labels(type="open").inc()
            if path not in self._unopenable:  # logged once, not at every rescan
                self._unopenable.add(path)
                self.log.warning("cannot open file", path=path, error=str(exc))
            return None
        self._unopenable.discard(path)
        try:
            st = os.fstat(fd)
            key = file_key(st)
            if key in self.followers or not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            head = os.pread(fd, self.s.fingerprint_bytes, 0)
        except OSError as exc:
            os.close(fd)
            self.log.warning("cannot read file", path=path, error=str(exc))
            return None
        entry = self.store.get(key)
        if entry is not None and entry.fingerprint.matches(head) and entry.offset <= st.st_size:
            offset = entry.offset
            entry.path = path
            entry.seen = time.time()
            fingerprint = entry.fingerprint
        else:
            if entry is not None:
                # Its inode now holds other content: truncated in place while we were away (find the
                # copy logrotate made) or reused by a new file.
                self.store.remove(key)
                self._adopt_copy(entry, entry.offset, b"", None)
            offset = st.st_size if (self._initial_scan and self._first_start and self.s.start_at == "end") else 0
            fingerprint = Fingerprint.of(head)
            entry = Entry(key, fingerprint, offset, path)
            self.store.put(entry)
        f = Follower(
            path,
            fd,
            st,
            fingerprint,
            Track(self.store, entry),
            offset,
            self._labels(label_path or path),
            self.options,
            self.counts,
        )
        if label_path is not None:
            f.label_path = label_path
        self.followers[key] = f
        if label_path is None:
            self.by_path[path] = key
        self._wake.set()
        return f

    def _adopt_copy(self, entry: Entry, offset: int, held: bytes, donor: Follower | None) -> Follower | None:
        """Find the copy `copytruncate` made of a content (same head, another inode) and read its rest.

        Lines written between our last read and the truncation exist only in that copy.
        """
        directory, base = os.path.split(entry.path)
        best: tuple[float, str, os.stat_result] | None = None
        try:
            names = os.listdir(directory)
        except OSError:
            return None
        for name in names:
            if name == base or not name.startswith(base):
                continue
            path = os.path.join(directory, name)
            if not self.matcher.name_allowed(name):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or file_key(st) in self.followers or st.st_size < offset:
                continue
            try:
                with open(path, "rb") as fh:
                    head = fh.read(entry.fingerprint.length)
            except OSError:
                continue
            if entry.fingerprint.matches(head) and (best is None or st.st_mtime > best[0]):
                best = (st.st_mtime, path, st)
        if best is None:
            return None
        _, path, st = best
        if st.st_size == offset and not held:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        key = file_key(st)
        self.store.remove(entry.key)
        entry.key, entry.path = key, path
        self.store.put(entry)
        track = donor.track if donor is not None else Track(self.store, entry)
        f = Follower(
            path,
            fd,
            st,
            entry.fingerprint,
            track,
            offset - len(held),
            self._labels(donor.label_path if donor else entry.path),
            self.options,
            self.counts,
        )
        f.buf = held
        f.rotated_at = time.monotonic()
        if donor is not None:
            f.label_path = donor.label_path
            f.skipping = donor.skipping
            f.grouper = donor.grouper
        self.followers[key] = f
        self.metrics.rotations.labels(kind="copy_found").inc()
        self.log.info("reading the rest of a copy-truncated file from its copy", path=path, offset=offset)
        self._wake.set()
        return f

    def _recover_rotated(self) -> None:
        """After a restart: files renamed away (rotated) while we were down, with lines left to read."""
        for entry in list(self.store.entries.values()):
            if entry.key in self.followers:
                continue
            directory, base = os.path.split(entry.path)
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                if not name.startswith(base) or name == base:
                    continue
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if file_key(st) != entry.key or st.st_size <= entry.offset:
                    continue
                f = self._open(path, st, label_path=entry.path)
                if f is not None:
                    f.rotated_at = time.monotonic()
                    self.log.info("resuming a file rotated while stopped", path=path, offset=entry.offset)
                break

    def _truncated(self, f: Follower, now: float) -> None:
        """`f`'s content was replaced in place (copytruncate): finish the old content, restart at zero."""
        assert f.fd is not None
        self.metrics.rotations.labels(kind="truncated").inc()
        old_track = f.track
        held = f.buf[f.pos :]
        copy = self._adopt_copy(old_track.entry, f.read_offset, held, f)
        if copy is None:
            # What was read goes out (a held partial line or multi-line record included); its acks no
            # longer move a checkpoint.
            for held_chunk in (f.flush_partial(now, force=True), f.flush_multiline(now, force=True)):
                if held_chunk is not None:
                    self._stash.append(held_chunk)
            old_track.dead = True
            self.store.remove(f.key)
            self.log.warning(
                "file truncated in place; reading it again from the start", path=f.path, was_at=f.read_offset
            )
        try:
            head = os.pread(f.fd, self.s.fingerprint_bytes, 0)
        except OSError:
            head = b""
        fingerprint = Fingerprint.of(head)
        entry = Entry(f.key, fingerprint, 0, f.path)
        self.store.put(entry)
        f.restart_at_zero(Track(self.store, entry), fingerprint)
        f.size = len(head)
        self._wake.set()

    def _check_follower(self, f: Follower, now: float) -> None:
        if f.fd is None:
            return
        try:
            st = os.fstat(f.fd)
        except OSError:
            self._close(f, "error")
            return
        if st.st_nlink == 0 and f.deleted_at is None:
            f.deleted_at = now
            self.metrics.rotations.labels(kind="deleted").inc()
        if f.deleted_at is None and f.rotated_at is None:
            try:
                pst = os.stat(f.path)
                moved = (pst.st_dev, pst.st_ino) != (f.dev, f.ino)
            except OSError:
                moved = True
            if moved:
                f.rotated_at = now
                self.metrics.rotations.labels(kind="renamed").inc()
                self.log.info("file rotated away: reading it to its end", path=f.path)
                if self.by_path.get(f.path) == f.key:
                    del self.by_path[f.path]
                self._check_path(f.path)  # the new file under the old name, if there is one yet
        size = st.st_size
        if size < f.read_offset:
            self._truncated(f, now)
            return
        fp = f.fingerprint
        if size != f.size and fp.length:
            try:
                head = os.pread(f.fd, self.s.fingerprint_bytes, 0)
            except OSError:
                head = b""
            if not fp.matches(head):
                self._truncated(f, now)
                return
            if fp.length < self.s.fingerprint_bytes and len(head) > fp.length:
                f.fingerprint = f.track.entry.fingerprint = Fingerprint.of(head)
                self.store.dirty = True
        elif not fp.length and size > 0 and size != f.size:
            try:
                head = os.pread(f.fd, self.s.fingerprint_bytes, 0)
            except OSError:
                head = b""
            f.fingerprint = f.track.entry.fingerprint = Fingerprint.of(head)
            self.store.dirty = True
        if size > f.read_offset and not self._draining:  # a drain reads up to the sizes it started with
            f.at_eof = False
            self._wake.set()
        f.size = max(size, f.read_offset)
        self._maybe_close(f, now)

    def _maybe_close(self, f: Follower, now: float) -> None:
        done = f.settled and f.track.idle
        if f.deleted_at is not None:
            if done:
                self._close(f, "deleted")
                self.store.remove(f.track.entry.key)
            elif now - f.deleted_at > self.s.deleted_max_secs or f.unread_bytes > self.s.deleted_max_bytes:
                lost = f.unread_bytes
                self.metrics.dropped_bytes.labels(reason="deleted_file").inc(lost)
                self.metrics.base.events_dropped.labels(reason="deleted_file").inc()
                self.log.error(
                    "deleted file closed before it was read to its end: its rest is lost",
                    path=f.path,
                    unread_bytes=lost,
                    deleted_for_secs=round(now - f.deleted_at, 1),
                )
                self._close(f, "deleted_limit")
                self.store.remove(f.track.entry.key)
        elif f.rotated_at is not None:
            if done and now - max(f.last_growth, f.rotated_at) >= self.s.rotate_wait_secs:
                self._close(f, "rotated")
        elif done and now - f.last_growth >= self.s.close_inactive_secs:
            self._close(f, "inactive")

    def _close(self, f: Follower, reason: str) -> None:
        f.close()
        self.followers.pop(f.key, None)
        if self.by_path.get(f.path) == f.key:
            del self.by_path[f.path]
        f.closing_reason = reason
        self.log.debug("file closed", path=f.path, reason=reason)

    # ====================================================================================== loops

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.poll_interval_secs)
            now = time.monotonic()
            for f in list(self.followers.values()):
                self._check_follower(f, now)
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
        m.files_watched.set(len(self.followers))
        m.open_files.set(sum(1 for f in self.followers.values() if f.fd is not None))
        m.bytes_behind.set(sum(max(f.size - f.track.committed, 0) for f in self.followers.values()))
        m.buffered_bytes.set(self.buffered)
        m.checkpoint_age.set(time.time() - self.store.last_write if self.store.dirty else 0.0)
        since = self.sender.failing_since
        m.sink_failing.set(time.monotonic() - since if since is not None else 0.0)

    async def _rescan_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rescan_now.wait(), self.s.rescan_interval_secs)
            self._rescan_now.clear()
            if self._draining:
                continue
            for path in await asyncio.to_thread(self.matcher.scan):
                self._check_path(path, rescan=True)
            self.store.gc(self.s.checkpoint_retention_secs, keep=set(self.followers))

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
            self._check_path(path)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.checkpoint_interval_secs)
            await self._write_checkpoint()

    async def _write_checkpoint(self) -> None:
        if not self.store.dirty and self.store.existed:
            return
        data = self.store.snapshot()
        self.store.dirty = False
        try:
            await asyncio.to_thread(self.store.write, data)
            self.metrics.checkpoint_writes.inc()
            self.store.existed = True
            self._checkpoint_failures = 0
        except OSError as exc:
            self.store.dirty = True
            self._checkpoint_failures += 1
            self.metrics.errors.labels(type="checkpoint").inc()
            self.log.error("checkpoint write failed", path=str(self.store.path), error=str(exc))

    def _write_checkpoint_sync(self) -> None:
        if not self.store.dirty:
            return
        try:
            self.store.write(self.store.snapshot())
            self.store.dirty = False
        except OSError as exc:
            self.log.error("checkpoint write failed", path=str(self.store.path), error=str(exc))
