"""Mounted files kept up to date: config files, ConfigMaps, Secrets (rules, endpoints, certificates).

`MountedFiles(paths, parse)` holds the value parsed from one or more files and replaces it when they
change. `parse` gets the files' contents and may raise anything: a bad update (half written, invalid,
unreadable, too big) is refused, reported once through `on_error`, shown by `status()` (a warn
check), and the last good value stays in force until a good update arrives.

How a change is noticed, three ways, because each alone misses some:

- inotify (watchfiles) on each file's directory: editors and `kubectl cp` replace a file by renaming
  over it, which a watch on the file itself would lose;
- the kubelet's ConfigMap/Secret update: it writes a new timestamped directory, points a `..data_tmp`
  symlink at it and renames that over `..data` (one atomic rename for every file of the volume). The
  directory holding `..data` is watched too, and after a swap the watches are set again, since a
  directory reached through the old `..data` is gone;
- a poll of each file's identity (device, inode, size, modification time) every `poll_secs`: the
  safety net when inotify is unavailable (instance limits are per user and node-wide), on network
  filesystems, or for changes made through another path (a hard link, a bind mount).

A notification re-reads the files; a poll re-reads them only when their identity changed. Content is
compared before parsing, so a touched or re-synced file that did not change is not reloaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from structlog.typing import FilteringBoundLogger

from sidecars.core.plugin import Check
from sidecars.core.redact import redact_text
from sidecars.core.telemetry import LogLimiter

__all__ = ["MAX_FILE_BYTES", "MountedFileError", "MountedFiles", "mounted_file"]

T = TypeVar("T")

# A ConfigMap holds at most 1 MiB; a CA bundle a few hundred KiB. Past this a file is refused unread.
MAX_FILE_BYTES = 16 * 1024 * 1024
# The kubelet's atomic writer: the symlink swapped on every update of a ConfigMap or Secret volume.
DATA_LINK = "..data"
# How far up from a file its volume's `..data` is looked for (items may sit in subdirectories).
_MOUNT_DEPTH = 8

Stamp = tuple[int, int, int, int] | str


class MountedFileError(ValueError):
    """A watched file that cannot be read as it is: missing, unreadable, too big."""


class MountedFiles(Generic[T]):
    """The value parsed from `paths`, reloaded when they change (see the module docstring).

    `load()` reads and parses them once (a failure raises, for start-up to stop on); `run()` watches
    until cancelled (without `load()` first, the first good content is taken up as an update).
    `on_change(value)` follows every accepted update, `on_error(exc)` every refused one (once per
    distinct bad content or read error, not once per poll), `on_watch_error(reason)` a failure to set
    up notifications (logged too, at most every ten minutes; the poll goes on meanwhile).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        parse: Callable[[list[bytes]], T],
        *,
        poll_secs: float,
        log: FilteringBoundLogger,
        on_change: Callable[[T], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_watch_error: Callable[[str], None] | None = None,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        if not paths:
            raise ValueError("no file to watch")
        self.paths = tuple(Path(os.path.abspath(p)) for p in paths)
        self.poll_secs = poll_secs
        self.max_bytes = max_bytes
        self.error: str | None = None  # why the last update was refused; None once one is accepted
        self.reloads = 0
        self._parse = parse
        self._on_change = on_change
        self._on_error = on_error
        self._on_watch_error = on_watch_error
        self._limiter = LogLimiter(log, 600.0)
        self._value: T | None = None
        self._loaded = False
        self._stamps: tuple[Stamp, ...] | None = None
        self._seen: str | None = None  # digest (or read error) of what was looked at last
        self._accepted: str | None = None  # digest of the contents in force

    @property
    def value(self) -> T:
        """The value in force (the last good one)."""
        if not self._loaded:
            raise RuntimeError("load() has not succeeded yet")
        return self._value  # type: ignore[return-value]

    def load(self) -> T:
        """Read and parse now; raises MountedFileError or whatever `parse` raised."""
        stamps = self._identity()  # before reading: a change while reading is seen next time
        contents = self._read()
        digest = _digest(contents)
        value = self._parse(contents)
        self._stamps = stamps  # only now: after a failure the next look reads (and reports) again
        self._accept(value, digest)
        return value

    def status(self) -> str | None:
        """None while the files' latest content is in force; else why it was refused (a warn check)."""
        if self.error is None:
            return None
        return f"last update refused, the previous content stays in force: {self.error}"

    def check_named(self, name: str) -> Check:
        """A warn check: listed with the reason while an update is refused, never failing its endpoint."""
        return Check(name, self.status, warn=True)

    def check(self, *, changed: bool = False) -> bool:
        """Look at the files now; True when a new value was accepted.

        `changed` (a notification arrived) reads them even if their identity looks the same.
        """
        stamps = self._identity()
        if stamps == self._stamps and not changed:
            return False
        self._stamps = stamps
        try:
            contents = self._read()
        except MountedFileError as exc:
            return self._refuse(exc, f"read:{exc}")
        digest = _digest(contents)
        if digest == self._seen:
            return False
        if digest == self._accepted:
            self._seen, self.error = digest, None  # back to the content in force after a refused update
            return False
        try:
            value = self._parse(contents)
        except Exception as exc:  # whatever the parser raises is a bad update, not a crash
            return self._refuse(exc, digest)
        self._accept(value, digest)
        self.reloads += 1
        if self._on_change is not None:
            self._on_change(value)
        return True

    async def run(self) -> None:
        """Watch until cancelled: notifications and the poll, whichever comes first.

        Looks once at the start, so a change since `load()` (or files that were not there yet) is
        taken up at once.
        """
        changed = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._notify(changed))
            self.check()
            while True:
                try:
                    async with asyncio.timeout(self.poll_secs):
                        await changed.wait()
                except TimeoutError:
                    pass
                notified = changed.is_set()
                changed.clear()
                self.check(changed=notified)

    # ------------------------------------------------------------------------------------------ internals

    def _accept(self, value: T, digest: str) -> None:
        self._value, self._loaded = value, True
        self._accepted = self._seen = digest
        self.error = None

    def _refuse(self, exc: Exception, seen: str) -> bool:
        if seen == self._seen:
            return False  # this very failure was reported already
        self._seen = seen
        self.error = redact_text(str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")[:500]
        if self._on_error is not None:
            self._on_error(exc)
        return False

    def _watch_failed(self, event: str, **fields: Any) -> None:
        if self._limiter.warning(event, poll_secs=self.poll_secs, **fields) and self._on_watch_error is not None:
            self._on_watch_error(f"{event}: {fields.get('error', '')}".rstrip(": "))

    def _identity(self) -> tuple[Stamp, ...]:
        stamps: list[Stamp] = []
        for path in self.paths:
            try:
                st = path.stat()  # follows the volume's symlinks to the file in force
            except OSError as exc:
                stamps.append(f"{type(exc).__name__}:{exc.errno}")
            else:
                stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _read(self) -> list[bytes]:
        contents = []
        for path in self.paths:
            try:
                with path.open("rb") as f:
                    data = f.read(self.max_bytes + 1)
            except OSError as exc:
                raise MountedFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
            if len(data) > self.max_bytes:
                raise MountedFileError(f"{path}: larger than {self.max_bytes} bytes")
            contents.append(data)
        return contents

    def _directories(self) -> tuple[list[Path], set[str]]:
        """The directories to watch now, and the entry names in them that matter."""
        dirs: dict[Path, None] = {}
        names = {DATA_LINK}
        for path in self.paths:
            dirs[path.parent] = None
            names.add(path.name)
            for depth, mount in enumerate(path.parents):
                if depth >= _MOUNT_DEPTH:
                    break
                if os.path.lexists(mount / DATA_LINK):
                    dirs[mount] = None
                    names.add(path.relative_to(mount).parts[0])  # the item's entry in the volume
                    break
        return [d for d in dirs if d.is_dir()], names

    async def _notify(self, changed: asyncio.Event) -> None:
        import watchfiles

        # watchfiles logs every change at info; the reload is what gets logged, by the caller.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        while True:
            dirs, names = self._directories()
            if not dirs:
                self._watch_failed(
                    "cannot watch for changes: no directory of the files exists, polling only",
                    files=[str(p) for p in self.paths],
                )
                await asyncio.sleep(self.poll_secs)
                continue
            try:
                async for batch in watchfiles.awatch(
                    *dirs,
                    watch_filter=_relevant(names, dirs),
                    debounce=50,
                    step=20,
                    recursive=False,
                ):
                    changed.set()
                    if any(Path(path).name == DATA_LINK or Path(path) in dirs for _change, path in batch):
                        # The volume swapped, or a watched directory itself went: set the watches
                        # again on what the paths lead to now.
                        break
            except (OSError, RuntimeError) as exc:
                # inotify exhausted, a directory gone meanwhile: the poll still runs.
                self._watch_failed(
                    "cannot watch for changes, polling only",
                    directories=[str(d) for d in dirs],
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(self.poll_secs)


def mounted_file(
    path: Path,
    parse: Callable[[bytes], T],
    *,
    poll_secs: float,
    log: FilteringBoundLogger,
    on_change: Callable[[T], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    on_watch_error: Callable[[str], None] | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> MountedFiles[T]:
    """One file: `parse` gets its content."""
    return MountedFiles(
        [path],
        lambda contents: parse(contents[0]),
        poll_secs=poll_secs,
        log=log,
        on_change=on_change,
        on_error=on_error,
        on_watch_error=on_watch_error,
        max_bytes=max_bytes,
    )


def _relevant(names: set[str], dirs: list[Path]) -> Callable[[object, str], bool]:
    def relevant(_change: object, path: str) -> bool:
        return Path(path).name in names or Path(path) in dirs

    return relevant


def _digest(contents: list[bytes]) -> str:
    h = hashlib.sha256()
    for data in contents:
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()
