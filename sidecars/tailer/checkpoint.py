"""Acknowledged offsets per file identity, persisted atomically in their own directory.

An offset moves only when the sink has acknowledged every record before it (see `Track`), and the
file is written at most every `checkpoint_interval_secs`, never per line: after a restart or a
`kill -9`, reading resumes at the last written offset, so only unacknowledged batches are sent again.
The write is tmp + fsync + rename + directory fsync: a crash leaves the old file or the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sidecars.tailer.identity import Fingerprint

FILE_NAME = "checkpoints.json"
LOCK_NAME = "lock"
VERSION = 1


@dataclass(slots=True)
class Entry:
    """The acknowledged offset of one file identity (its head fingerprint tells reuse from identity)."""

    key: str  # "dev:ino"
    fingerprint: Fingerprint
    offset: int
    path: str
    seen: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "fp": self.fingerprint.digest,
            "fp_len": self.fingerprint.length,
            "offset": self.offset,
            "path": self.path,
            "seen": round(self.seen, 3),
        }

    @classmethod
    def from_json(cls, key: str, doc: dict[str, Any]) -> Entry:
        return cls(
            key=key,
            fingerprint=Fingerprint(int(doc["fp_len"]), str(doc["fp"])),
            offset=int(doc["offset"]),
            path=str(doc["path"]),
            seen=float(doc.get("seen", time.time())),
        )


class CheckpointLockedError(RuntimeError):
    pass


class CheckpointStore:
    """The entries in memory, the file on disk; `flush()` writes only when something changed.

    The entries belong to the event loop: only the write itself runs in a thread.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self.entries: dict[str, Entry] = {}
        self.existed = False  # a checkpoint file was there at start: not the very first start
        self.loaded_mtime: float | None = None  # when it was last written before this start
        self.problem: str | None = None  # why the file on disk could not be used
        self.dirty = False
        self.last_write = time.time()
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the directory, take the lock (one tailer per directory) and load the entries."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointLockedError(
                f"checkpoint_dir {self.directory} is in use by another tailer process"
            ) from None
        self._lock_fd = fd
        self.load()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        self.existed = True
        with contextlib.suppress(OSError):
            self.loaded_mtime = self.path.stat().st_mtime
        try:
            doc = orjson.loads(raw)
            files = doc["files"]
            self.entries = {k: Entry.from_json(k, v) for k, v in files.items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            # Renamed aside, not deleted: an operator can still look at it. Starting over re-sends
            # (duplicates) rather than skips: `existed` stays true, so start_at=end does not apply.
            aside = self.path.with_suffix(f".corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            self.entries = {}
            self.problem = f"checkpoint file {self.path} is unreadable ({exc}); moved to {aside}, files are read again"

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def put(self, entry: Entry) -> None:
        self.entries[entry.key] = entry
        self.dirty = True

    def remove(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self.dirty = True

    def changed(self) -> None:
        """An entry was changed in place: it is written at the next flush."""
        self.dirty = True

    @property
    def age_secs(self) -> float:
        """Seconds since the last write while changes wait for the next; 0 while the file is current."""
        return time.time() - self.last_write if self.dirty else 0.0

    def gc(self, retention_secs: float, keep: set[str]) -> int:
        """Forget entries of files not seen for `retention_secs` (except `keep`); returns how many."""
        cutoff = time.time() - retention_secs
        old = [k for k, e in self.entries.items() if e.seen < cutoff and k not in keep]
        for k in old:
            del self.entries[k]
        if old:
            self.dirty = True
        return len(old)

    def snapshot(self) -> bytes:
        files = {k: e.to_json() for k, e in self.entries.items()}
        return orjson.dumps({"version": VERSION, "files": files})

    async def flush(self) -> bool:
        """Write the entries if they changed since the last write, and always once after `open()`.

        The snapshot is taken here, on the loop; the write runs in a thread. Returns whether it
        wrote; an OSError is raised with the entries still marked for the next flush.
        """
        if not self.dirty and self.existed:
            return False
        data = self.snapshot()
        self.dirty = False
        try:
            await asyncio.to_thread(self.write, data)
        except OSError:
            self.dirty = True
            raise
        self.existed = True
        return True

    def flush_blocking(self) -> None:
        """The last flush, at shutdown, in the calling thread: only if something changed."""
        if self.dirty:
            self.write(self.snapshot())
            self.dirty = False

    def write(self, data: bytes) -> None:
        """Atomically replace the file with `data` (blocking: run it in a thread)."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with contextlib.suppress(OSError):
                os.fsync(dfd)
        finally:
            os.close(dfd)
        self.last_write = time.time()


class Track:
    """Offsets of the records of one file content handed to batches, and the acknowledged prefix.

    Each batch carrying records of the file registers the offset just past its last record; acks may
    arrive out of order (concurrent sends), but the entry only moves to the end of the longest
    acknowledged prefix, so a restart never skips an unacknowledged record.
    """

    __slots__ = ("_pending", "dead", "entry", "store")

    def __init__(self, store: CheckpointStore, entry: Entry) -> None:
        self.store = store
        self.entry = entry
        self._pending: deque[list[int]] = deque()  # [batch seq, end offset, acked]
        self.dead = False  # set when acks must no longer move the entry

    @property
    def committed(self) -> int:
        return self.entry.offset

    @property
    def idle(self) -> bool:
        """Nothing handed out is waiting for an acknowledgement."""
        return not self._pending

    def handed(self, seq: int, end: int | None) -> None:
        """Batch `seq` carries records up to `end` (None: records, but no boundary moved)."""
        if self._pending and self._pending[-1][0] == seq:
            if end is not None:
                self._pending[-1][1] = end
            return
        if end is None:  # still blocks later batches from committing past it
            end = self._pending[-1][1] if self._pending else self.entry.offset
        self._pending.append([seq, end, 0])

    def acked(self, seq: int) -> None:
        for item in self._pending:
            if item[0] == seq:
                item[2] = 1
                break
        end = -1
        while self._pending and self._pending[0][2]:
            end = self._pending.popleft()[1]
        if end >= 0 and not self.dead and end > self.entry.offset:
            self.entry.offset = end
            self.entry.seen = time.time()
            self.store.changed()
