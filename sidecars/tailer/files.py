"""The set of followed files: what a path names now, identity on open, rotation, truncation, closing.

Everything here is synchronous and cheap (stat, fstat, a pread of the head): it runs in the poll loop
and on change events, independently of reading, so a rotation or truncation is noticed and the
rotated content held open even while reading is paused behind a sink outage.
"""

from __future__ import annotations

import heapq
import os
import stat
import time
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from sidecars.core.limits import open_file_limit
from sidecars.tailer.checkpoint import CheckpointStore, Entry, Track
from sidecars.tailer.confine import RefusedError
from sidecars.tailer.discovery import Matcher, Scan
from sidecars.tailer.follower import Chunk, Counts, Follower, Options
from sidecars.tailer.identity import Fingerprint, file_key, read_head
from sidecars.tailer.metrics import TailerMetrics
from sidecars.tailer.settings import TailerSettings

# Descriptors kept for everything but files (sockets, the watcher, the checkpoint, the runtime's own).
_RESERVED_FDS = 64


def default_max_open_files() -> int:
    """Handles for followed files: the soft RLIMIT_NOFILE less a reserve (a quarter, at least 64)."""
    soft = open_file_limit()
    return max(soft - max(_RESERVED_FDS, soft // 4), 8)


# The warning that files wait for a handle, at most this often (files may wait and get one in turns).
_LIMIT_LOG_EVERY_SECS = 600.0
# In a checkpoint key, what follows the inode of a content truncated away from it: "dev:ino@digest".
_CONTENT_RECORD = "@"
# Refused paths remembered for logging once; past this many the memory is cleared.
_MAX_REFUSED_REMEMBERED = 10_000


class FileSet:
    def __init__(
        self,
        *,
        settings: TailerSettings,
        store: CheckpointStore,
        matcher: Matcher,
        options: Options,
        counts: Counts,
        base_labels: dict[str, str],
        metrics: TailerMetrics,
        log: FilteringBoundLogger,
        wake: Callable[[], None],
        stash: Callable[[Chunk], None],
    ) -> None:
        self.s = settings
        self.store = store
        self.matcher = matcher
        self.options = options
        self.counts = counts
        self.base_labels = base_labels
        self.metrics = metrics
        self.log = log
        self._wake = wake  # the reader has something to do
        self._stash = stash  # records produced here (at a truncation) for the reader to batch
        self.followers: dict[str, Follower] = {}  # by identity key "dev:ino"
        self.by_path: dict[str, str] = {}  # matching path -> key of the file it names now
        self.draining = False  # no new files once shutdown began
        self.initial_scan = False
        self.first_start = not store.existed
        self._unopenable: set[str] = set()
        self.confine = matcher.confinement
        self.max_open = settings.max_open_files or default_max_open_files()
        if self.max_open > open_file_limit() - _RESERVED_FDS:
            # Honoured as set, but opens past the real limit fail (counted as open errors) and take
            # the sink's sockets and checkpoint writes with them.
            log.warning(
                "max_open_files leaves too few descriptors under RLIMIT_NOFILE for sockets and checkpoints",
                max_open_files=self.max_open,
                rlimit_nofile=open_file_limit(),
                reserve=_RESERVED_FDS,
            )
        # Paths that found no free handle, in the order they asked: path -> (label path, identity key).
        self.waiting: dict[str, tuple[str | None, str]] = {}
        self._limit_logged_at: float | None = None
        self._refused: dict[str, str] = {}  # path -> reason, so each refusal is counted and logged once

    def _head(self, fd: int) -> bytes:
        """The head a fingerprint covers; empty when it cannot be read."""
        try:
            return read_head(fd, self.s.fingerprint_bytes)
        except OSError:
            return b""

    def _tail_matches(self, f: Follower) -> bool:
        """Whether the bytes before `f`'s read offset are those it read; a failed read proves nothing."""
        try:
            return f.tail_matches()
        except OSError:
            return True

    def _lstat(self, path: str) -> os.stat_result:
        """What a path names, symlinks followed only where they may be."""
        return os.stat(path) if self.confine.follow_symlinks else os.lstat(path)

    def refuse(self, path: str, reason: str, detail: str) -> None:
        """A path not read for where it leads: counted and logged once per path and reason."""
        if self._refused.get(path) == reason:
            return
        if len(self._refused) >= _MAX_REFUSED_REMEMBERED:
            self._refused.clear()  # a hostile volume with endless links costs repeated logs, not memory
        self._refused[path] = reason
        self.metrics.refused_files.labels(reason=reason).inc()
        self.log.warning("file not followed", path=path, reason=reason, detail=detail)

    def _labels(self, path: str) -> dict[str, str]:
        labels = dict(self.base_labels)
        labels["path"] = path
        return labels

    def found(self, scan: Scan, rescan: bool = True) -> None:
        """Take the result of a discovery walk: refusals reported (once), matching files looked at."""
        for path, reason, detail in scan.refused:
            self.refuse(path, reason, detail)
        for path in scan.files:
            self.check_path(path, rescan=rescan)

    def check_path(self, path: str, rescan: bool = False) -> None:
        """Look at a matching path: new file, the same file grown, or a new file under an old name."""
        try:
            st = self._lstat(path)
        except OSError:
            return  # gone (renamed or deleted): the poller notices on the open file
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISLNK(st.st_mode):
                self.refuse(path, "symlink", "a symlink (follow_symlinks is off)")
            return
        key = file_key(st)
        now = time.monotonic()
        cur = self.by_path.get(path)
        if cur == key:
            f = self.followers.get(key)
            if f is not None:
                if st.st_size != f.read_offset:
                    self.check(f, now)  # growth, or truncation (checked before reading on)
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
            self._wake()
            return
        if self.draining:
            return
        entry = self.store.get(key)
        if rescan and entry is not None and entry.offset == st.st_size and entry.path == path:
            entry.seen = time.time()  # known, nothing new: no need to hold it open
            return
        self._open(path)

    def _open(self, path: str, label_path: str | None = None) -> Follower | None:
        if len(self.followers) >= self.max_open:
            self._wait_for_handle(path, label_path)
            return None
        self.waiting.pop(path, None)
        try:
            fd = self.confine.open(path)
        except RefusedError as exc:
            if exc.reason != "not_regular":
                self.refuse(path, exc.reason, exc.detail)
            return None
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
            head = read_head(fd, self.s.fingerprint_bytes)
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
                self._continue_content(entry, entry.offset, b"", None)
            offset = st.st_size if (self.initial_scan and self.first_start and self.s.start_at == "end") else 0
            fingerprint = Fingerprint.of(head)
            entry = Entry(key, fingerprint, offset, path)
            self.store.put(entry)
        f = Follower(
            path=path,
            fd=fd,
            st=st,
            fingerprint=fingerprint,
            track=Track(self.store, entry),
            offset=offset,
            labels=self._labels(label_path or path),
            options=self.options,
            counts=self.counts,
        )
        if label_path is not None:
            f.label_path = label_path
        self.followers[key] = f
        if label_path is None:
            self.by_path[path] = key
        self._wake()
        return f

    def _find_copy(self, entry: Entry, offset: int, tail: bytes) -> tuple[str, os.stat_result] | None:
        """The copy `copytruncate` made of `entry`'s content: a sibling with its head, at least `offset`
        long, and with `tail` (the bytes last read, when known) just before `offset`: older copies of
        contents that all start alike have the head too."""
        if not entry.fingerprint.identifies:
            return None
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
                st = self._lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or file_key(st) in self.followers or st.st_size < offset:
                continue
            try:
                head = self.confine.read_head(path, entry.fingerprint.length)
                if not entry.fingerprint.matches(head):
                    continue
                if tail and self.confine.read_at(path, offset - len(tail), len(tail)) != tail:
                    continue
            except (OSError, RefusedError):
                continue
            if best is None or st.st_mtime > best[0]:
                best = (st.st_mtime, path, st)
        return None if best is None else (best[1], best[2])

    def _continue_content(self, entry: Entry, offset: int, held: bytes, donor: Follower | None) -> Follower | None:
        """`entry`'s content left its inode (truncated in place): carry on where the content lives now.

        Lines written between our last read and the truncation exist only in the copy logrotate made
        (same head, another inode): it is read from `offset` on. A copy with nothing more is claimed
        all the same (the entry moves to its inode), and with no copy the entry stays as the content's
        own record: either way a restart that finds the copy resumes it at the acknowledged offset, as
        it was read through the original, instead of sending it again from its start. Returns the
        follower of the copy when there is more to read.
        """
        self.store.remove(entry.key)
        tail = donor.tail if donor is not None else b""
        found = self._find_copy(entry, offset, tail)
        if found is None:
            entry.key = f"{entry.key}{_CONTENT_RECORD}{entry.fingerprint.digest}"
            self.store.put(entry)
            return None
        path, st = found
        label_path = donor.label_path if donor is not None else entry.path
        entry.key, entry.path = file_key(st), path
        self.store.put(entry)
        self.metrics.rotations.labels(kind="copy_found").inc()
        if st.st_size == offset and not held:
            return None
        try:
            # Not subject to max_open_files: the copy's rest exists nowhere else (logrotate deletes it
            # in time), so it is read now, on a descriptor of the reserve, and closed once read.
            fd = self.confine.open(path)
            st = os.fstat(fd)
        except (OSError, RefusedError):
            return None
        if file_key(st) != entry.key:
            os.close(fd)  # replaced since we looked: the entry stays the record of the content
            return None
        track = donor.track if donor is not None else Track(self.store, entry)
        f = Follower(
            path=path,
            fd=fd,
            st=st,
            fingerprint=entry.fingerprint,
            track=track,
            offset=offset - len(held),
            labels=self._labels(label_path),
            options=self.options,
            counts=self.counts,
            tail=tail if donor is not None else None,  # without a donor nothing is held: read at `offset`
        )
        f.label_path = label_path
        f.buf = held
        f.rotated_at = time.monotonic()
        if donor is not None:
            f.skipping = donor.skipping
            f.grouper = donor.grouper
        self.followers[entry.key] = f
        self.log.info("reading the rest of a copy-truncated file from its copy", path=path, offset=offset)
        self._wake()
        return f

    def recover_rotated(self) -> None:
        """After a restart: rotated siblings (`app.log.1`, `app.log-20240501`) with lines never delivered.

        A known file renamed while we were down is resumed at its checkpoint (found by inode); a file
        we never knew, written after our last checkpoint write, was created and rotated away while we
        were down and is read from its start. A file whose head is a known content's head is a
        copytruncate copy, read once: resumed at the checkpoint of a content that left its inode, or,
        while the original still holds that content, read on from the original instead.
        """
        since = self.store.loaded_mtime
        if since is None:
            return  # the very first start: nothing was followed before
        by_dir: dict[str, set[str]] = {}
        for e in self.store.entries.values():
            d, b = os.path.split(e.path)
            by_dir.setdefault(d, set()).add(b)
        known = {e.key: e for e in self.store.entries.values()}
        contents = [e for e in known.values() if _CONTENT_RECORD in e.key and e.fingerprint.identifies]
        fingerprints = [e.fingerprint for e in known.values() if e.fingerprint.identifies and e not in contents]
        for directory, bases in by_dir.items():
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                base = next((x for x in bases if name != x and name.startswith(x)), None)
                if base is None or not self.matcher.name_allowed(name):
                    continue
                path = os.path.join(directory, name)
                if self.matcher(path):
                    continue  # followed under its own name anyway
                try:
                    st = self._lstat(path)
                except OSError:
                    continue
                key = file_key(st)
                if key in self.followers or not stat.S_ISREG(st.st_mode):
                    continue
                entry = known.get(key)
                if entry is not None:
                    if st.st_size > entry.offset:
                        self._resume_rotated(path, os.path.join(directory, base))
                    continue
                if st.st_mtime <= since:
                    continue  # not written since our last checkpoint: not ours to read
                try:
                    head = self.confine.read_head(path, self.s.fingerprint_bytes)
                except (OSError, RefusedError):
                    continue
                record = next((e for e in contents if e.fingerprint.matches(head)), None)
                if record is not None:  # the copy of a content we read through its original
                    contents.remove(record)
                    self.store.remove(record.key)
                    record.key, record.path = key, path
                    self.store.put(record)
                    if st.st_size > record.offset:
                        self._resume_rotated(path, os.path.join(directory, base))
                    continue
                if any(fp.matches(head) for fp in fingerprints):
                    continue
                self._resume_rotated(path, os.path.join(directory, base))

    def _resume_rotated(self, path: str, label_path: str, event: str = "reading a file rotated while stopped") -> None:
        f = self._open(path, label_path=label_path)
        if f is not None:
            f.rotated_at = time.monotonic()
            self.log.info(event, path=path, offset=f.read_offset)

    def _truncated(self, f: Follower, now: float) -> None:
        """`f`'s content was replaced in place (copytruncate): finish the old content, restart at zero."""
        assert f.fd is not None
        self.metrics.rotations.labels(kind="truncated").inc()
        old_track = f.track
        held = f.buf[f.pos :]
        copy = self._continue_content(old_track.entry, f.read_offset, held, f)
        if copy is None:
            # What was read goes out (a held partial line or multi-line record included); its acks
            # move the old content's record, which its copy, when found after a restart, resumes from.
            # Whole lines are framed within the batch limits first: one read may hold thousands.
            while (framed := f.frame(self.s.batch_max_lines, self.s.batch_max_bytes)) is not None:
                self._stash(framed)
            for held_chunk in (f.flush_partial(now, force=True), f.flush_multiline(now, force=True)):
                if held_chunk is not None:
                    self._stash(held_chunk)
            self.log.warning(
                "file truncated in place; reading it again from the start", path=f.path, was_at=f.read_offset
            )
        head = self._head(f.fd)
        fingerprint = Fingerprint.of(head)
        entry = Entry(f.key, fingerprint, 0, f.path)
        self.store.put(entry)
        f.restart_at_zero(Track(self.store, entry), fingerprint)
        f.size = len(head)
        self._wake()

    def check(self, f: Follower, now: float) -> None:
        if f.fd is None:
            return
        try:
            st = os.fstat(f.fd)
        except OSError:
            self.close(f, "error")
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
                self.check_path(f.path)  # the new file under the old name, if there is one yet
        size = st.st_size
        if size < f.read_offset or f.replaced:  # replaced: a read found the content changed under it
            self._truncated(f, now)
            return
        if size != f.size and not self._tail_matches(f):  # rewritten, and its head is the old one's
            self._truncated(f, now)
            return
        fp = f.fingerprint
        if size != f.size and fp.length:
            head = self._head(f.fd)
            if not fp.matches(head):
                self._truncated(f, now)
                return
            if fp.length < self.s.fingerprint_bytes and len(head) > fp.length:
                f.fingerprint = f.track.entry.fingerprint = Fingerprint.of(head)
                self.store.changed()
        elif not fp.length and size > 0 and size != f.size:
            head = self._head(f.fd)
            f.fingerprint = f.track.entry.fingerprint = Fingerprint.of(head)
            self.store.changed()
        if size > f.read_offset and not self.draining:  # a drain reads up to the sizes it started with
            f.at_eof = False
            self._wake()
        f.size = max(size, f.read_offset)
        self._maybe_close(f, now)

    def _maybe_close(self, f: Follower, now: float) -> None:
        done = f.settled and f.track.idle
        if f.deleted_at is not None:
            if done:
                self.close(f, "deleted")
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
                self.close(f, "deleted_limit")
                self.store.remove(f.track.entry.key)
        elif f.rotated_at is not None:
            if done and now - max(f.last_growth, f.rotated_at) >= self.s.rotate_wait_secs:
                self.close(f, "rotated")
        elif done and now - f.last_growth >= self.s.close_inactive_secs:
            self.close(f, "inactive")

    def _wait_for_handle(self, path: str, label_path: str | None) -> None:
        """No handle free for `path`: it waits its turn, its identity and start offset recorded now.

        The checkpoint entry made here is what lets a waiting file be found again by inode when it is
        renamed away before its turn (`find_moved`), and keeps `start_at: end` meaning the end as of
        the initial scan, not as of whenever a handle frees up.
        """
        try:
            st = self._lstat(path)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        key = file_key(st)
        if self.store.get(key) is None:
            try:
                head = self.confine.read_head(path, self.s.fingerprint_bytes)
            except (OSError, RefusedError):
                head = b""  # fingerprinted when opened (an empty fingerprint matches any head)
            offset = st.st_size if (self.initial_scan and self.first_start and self.s.start_at == "end") else 0
            self.store.put(Entry(key, Fingerprint.of(head), offset, path))
        self.waiting[path] = (label_path, key)
        now = time.monotonic()
        if self._limit_logged_at is None or now - self._limit_logged_at >= _LIMIT_LOG_EVERY_SECS:
            self._limit_logged_at = now
            self.log.warning(
                "more matching files than file handles: reading them in turn",
                max_open_files=self.max_open,
                open=len(self.followers),
            )

    def open_waiting(self) -> None:
        """Give handles to the files waiting for one, oldest request first (run once per poll).

        Handles are freed here in bulk, not per open: the files read to their end and acknowledged,
        idle longest first. Per open that would be one pass over every follower for each waiting
        file; here it is one pass per poll.
        """
        if not self.waiting or self.draining:
            return
        need = len(self.waiting) - (self.max_open - len(self.followers))
        if need > 0:
            closable = (
                f
                for f in self.followers.values()
                if f.deleted_at is None and f.rotated_at is None and f.settled and f.track.idle
            )
            for f in heapq.nsmallest(need, closable, key=lambda f: f.last_growth):
                self.close(f, "handle_limit")
        waiting, self.waiting = self.waiting, {}
        for path, (label_path, key) in waiting.items():
            if len(self.followers) >= self.max_open:
                self.waiting[path] = (label_path, key)  # keeps its place in the queue
            elif label_path is None:
                self.check_path(path, rescan=True)  # nothing new since its checkpoint: no handle taken
            else:
                self._resume_rotated(path, label_path, "reading a rotated file now that a handle is free")

    def waiting_keys(self) -> set[str]:
        """Checkpoint entries of waiting files: kept, however long they wait."""
        return {key for _, key in self.waiting.values()}

    def waiting_check(self) -> str | None:
        if not self.waiting:
            return None
        return (
            f"{len(self.waiting)} matching files wait for a file handle (max_open_files={self.max_open}); "
            "they are read in turn"
        )

    def find_moved(self) -> None:
        """Known files without a handle that have unread lines where the include globs do not look.

        Rename+create while a file was closed (idle, or for the handle limit) leaves its last lines
        under the new name: it is found again by inode next to where it was, and read on from its
        checkpoint; so is a rotated file or copy whose open failed.
        """
        by_dir: dict[str, list[Entry]] = {}
        for e in list(self.store.entries.values()):
            if e.key in self.followers or _CONTENT_RECORD in e.key:
                continue
            try:
                st = os.lstat(e.path)
            except OSError:
                by_dir.setdefault(os.path.dirname(e.path), []).append(e)
                continue
            if file_key(st) != e.key:
                by_dir.setdefault(os.path.dirname(e.path), []).append(e)
            elif st.st_size > e.offset and not self.matcher(e.path) and e.path not in self.waiting:
                # A rotated file or copy with unread lines and no handle (its open failed or raced a
                # rename): the glob never names it, so nothing else would read it before a restart.
                self._resume_rotated(e.path, e.path, "reading on a rotated file with unread lines")
        for directory, entries in by_dir.items():
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            wanted = {e.key: e for e in entries}
            for name in names:
                path = os.path.join(directory, name)
                try:
                    st = self._lstat(path)
                except OSError:
                    continue
                moved_entry = wanted.pop(file_key(st), None)
                if moved_entry is None or not stat.S_ISREG(st.st_mode):
                    continue
                label_path = moved_entry.path
                moved_entry.path = path
                if st.st_size > moved_entry.offset and not self.draining:
                    self._resume_rotated(path, label_path, "reading on a file renamed while its handle was closed")
                if not wanted:
                    break

    def close(self, f: Follower, reason: str) -> None:
        f.close()
        self.followers.pop(f.key, None)
        if self.by_path.get(f.path) == f.key:
            del self.by_path[f.path]
        self.log.debug("file closed", path=f.path, reason=reason)

    def status(self) -> list[dict[str, object]]:
        """What each followed file is doing, for the admin `/files` page (paths are fine here, not in labels)."""
        now = time.monotonic()
        out: list[dict[str, object]] = []
        for f in self.followers.values():
            state = "deleted" if f.deleted_at is not None else "rotated" if f.rotated_at is not None else "live"
            out.append(
                {
                    "path": f.path,
                    "label_path": f.label_path,
                    "identity": f.key,
                    "state": state,
                    "size": f.size,
                    "read_offset": f.read_offset,
                    "acknowledged_offset": f.track.committed,
                    "bytes_behind": max(f.size - f.track.committed, 0),
                    "idle_secs": round(now - f.last_growth, 1),
                }
            )
        return sorted(out, key=lambda d: str(d["path"]))
