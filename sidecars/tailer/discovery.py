"""Which files to follow: include/exclude globs, a periodic rescan, and one change watcher per process.

The watcher (watchfiles, inotify underneath) only shortens latency; correctness never depends on it:
the follower stats open files every `poll_interval_secs` and the globs are expanded again every
`rescan_interval_secs`, so a missed or overflowed event (inotify queues are finite) costs latency,
never lines. Where inotify is unavailable (NFS, instance limit reached) polling is all there is.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from structlog.typing import FilteringBoundLogger

_MAGIC = re.compile(r"[*?\[]")

# watchfiles logs every batch of changes at INFO: one line per 100 ms under a busy writer.
logging.getLogger("watchfiles").setLevel(logging.WARNING)


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex matching the same paths as the glob: `*`/`?` within one level, `**` across levels."""
    if not pattern:
        raise ValueError("empty glob pattern")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern.startswith("[!", i) or pattern.startswith("[]", i) else i + 1)
            if j < 0:
                raise ValueError(f"glob pattern {pattern!r}: unclosed '['")
            body = pattern[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as exc:
        raise ValueError(f"glob pattern {pattern!r}: {exc}") from None


def base_dir(pattern: str) -> str:
    """The longest leading directory of `pattern` without glob characters: where to watch."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


class Matcher:
    """Include/exclude decisions for one path; an exclude without `/` applies to the file name."""

    def __init__(self, include: Iterable[str], exclude: Iterable[str]) -> None:
        self.include = list(include)
        self._inc = [compile_glob(p) for p in self.include]
        exclude = list(exclude)
        self._exc_path = [compile_glob(p) for p in exclude if "/" in p]
        self._exc_name = [compile_glob(p) for p in exclude if "/" not in p]

    def __call__(self, path: str) -> bool:
        if not any(r.match(path) for r in self._inc):
            return False
        if any(r.match(path) for r in self._exc_path):
            return False
        name = path.rsplit("/", 1)[-1]
        return not any(r.match(name) for r in self._exc_name)

    def name_allowed(self, name: str) -> bool:
        """Whether no name-only exclude pattern rules out this file name (e.g. `*.gz`)."""
        return not any(r.match(name) for r in self._exc_name)

    def recursive(self) -> bool:
        """Whether any pattern reaches below its base directory (so the watch must be recursive)."""
        return any("/" in p[len(base_dir(p)) + 1 :] for p in self.include)

    def base_dirs(self) -> list[str]:
        """Existing base directories, none inside another (a recursive watch covers the inner one)."""
        dirs = sorted({base_dir(p) for p in self.include})
        out: list[str] = []
        for d in dirs:
            if not os.path.isdir(d):
                continue
            if any(d == o or d.startswith(o.rstrip("/") + "/") for o in out):
                continue
            out.append(d)
        return out

    def scan(self) -> list[str]:
        """Every regular file matching now (a snapshot; files may come and go meanwhile)."""
        found: set[str] = set()
        for pattern in self.include:
            for path in glob.iglob(pattern, recursive=True):
                if self(path):
                    found.add(path)
        return sorted(p for p in found if os.path.isfile(p))


class Watcher:
    """Calls `on_change(paths)` with the matching paths that changed, and `on_dirs()` when directories did.

    Runs until cancelled; returns False at once if inotify is unavailable so the caller polls instead.
    """

    def __init__(
        self,
        matcher: Matcher,
        on_change: Callable[[set[str]], None],
        on_dirs: Callable[[], None],
        log: FilteringBoundLogger,
    ) -> None:
        self.matcher = matcher
        self.on_change = on_change
        self.on_dirs = on_dirs
        self.log = log
        self.dirs: list[str] = []

    async def run(self, stop: asyncio.Event) -> bool:
        import watchfiles

        self.dirs = self.matcher.base_dirs()
        if not self.dirs:
            return True  # nothing to watch yet; the rescan restarts us once a directory exists
        try:
            async for changes in watchfiles.awatch(
                *self.dirs,
                recursive=self.matcher.recursive(),
                debounce=100,
                step=20,
                stop_event=stop,
                ignore_permission_denied=True,
                watch_filter=None,
                yield_on_timeout=False,
                force_polling=False,
            ):
                paths: set[str] = set()
                dirs_changed = False
                for change, path in changes:
                    if self.matcher(path):
                        paths.add(path)
                    elif change == watchfiles.Change.added and os.path.isdir(path):  # noqa: ASYNC240 - one stat, no I/O wait
                        dirs_changed = True  # files in a new directory may predate its watch
                if paths:
                    self.on_change(paths)
                if dirs_changed:
                    self.on_dirs()
        except (OSError, RuntimeError) as exc:
            self.log.warning("change notification unavailable: polling only", error=str(exc))
            return False
        return True
