"""Which files to follow: include/exclude globs, a periodic rescan, and one change watcher per process.

The watcher (watchfiles, inotify underneath) only shortens latency; correctness never depends on it:
the follower stats open files every `poll_interval_secs` and the globs are expanded again every
`rescan_interval_secs`, so a missed or overflowed event (inotify queues are finite) costs latency,
never lines. Where inotify is unavailable (NFS, instance limit reached) polling is all there is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from structlog.typing import FilteringBoundLogger

from sidecars.tailer.confine import Confinement

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

    def __init__(
        self,
        include: Iterable[str],
        exclude: Iterable[str],
        *,
        follow_symlinks: bool = False,
        max_depth: int = 32,
    ) -> None:
        self.include = list(include)
        self.confinement = Confinement((base_dir(p) for p in self.include), follow_symlinks)
        self.max_depth = max_depth
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

    def scan(self) -> Scan:
        """Every regular file matching now (a snapshot; files may come and go meanwhile)."""
        scan = Scan()
        for pattern in self.include:
            _walk(pattern, self.confinement, self.max_depth, scan)
        scan.files = sorted(p for p in set(scan.files) if self(p))
        return scan


@dataclass(slots=True)
class Scan:
    files: list[str] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, detail)


def _segment(part: str) -> re.Pattern[str] | None:
    """One path component of a pattern as a regex; None for `**`."""
    return None if part == "**" else compile_glob(part)


def _walk(pattern: str, confinement: Confinement, max_depth: int, scan: Scan) -> None:
    """Expand one include pattern, component by component, the way glob does but bounded.

    A directory is entered at most once per set of pattern positions (keyed by device and inode),
    never below `max_depth` levels, and never through a symlink unless `follow_symlinks` allows it
    and it stays inside the include roots: a volume full of links to `.` costs one pass over it, not
    one per path through it. As with glob, `*` does not match a leading dot and `**` does not enter
    hidden directories.
    """
    base = base_dir(pattern)
    rest = pattern[len(base) :].lstrip("/")
    if not rest:
        return
    parts = rest.split("/")
    segments = [_segment(p) for p in parts]
    dotted = [p.startswith(".") for p in parts]
    last = len(parts) - 1

    def closure(states: set[int]) -> frozenset[int]:
        out = set(states)
        todo = list(states)
        while todo:
            i = todo.pop()
            if i <= last and segments[i] is None and i + 1 not in out:
                out.add(i + 1)
                todo.append(i + 1)
        return frozenset(out)

    try:
        st = os.stat(base)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    seen: set[tuple[int, int, frozenset[int]]] = set()
    stack: list[tuple[str, frozenset[int], int]] = [(base, closure({0}), 0)]
    seen.add((st.st_dev, st.st_ino, stack[0][1]))
    follow = confinement.follow_symlinks
    while stack:
        directory, states, depth = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            hidden = name.startswith(".")
            files = False
            below: set[int] = set()
            for i in states:
                if i > last:
                    continue
                seg = segments[i]
                if seg is None:
                    if not hidden:
                        below.add(i)
                    continue
                if (hidden and not dotted[i]) or not seg.match(name):
                    continue
                if i == last:
                    files = True
                else:
                    below.add(i + 1)
            if not files and not below:
                continue
            path = os.path.join(directory, name)
            try:
                is_link = entry.is_symlink()
                if is_link:
                    if not follow:
                        scan.refused.append((path, "symlink", "a symlink (follow_symlinks is off)"))
                        continue
                    real = os.path.realpath(path)
                    why = confinement.target_allowed(real)
                    if why is not None:
                        scan.refused.append((path, why, f"leads to {real}, outside the include roots"))
                        continue
                    target = os.stat(path)
                else:
                    target = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if files and stat.S_ISREG(target.st_mode):
                scan.files.append(path)
            if below and stat.S_ISDIR(target.st_mode):
                if depth >= max_depth:
                    scan.refused.append((path, "too_deep", f"deeper than max_depth={max_depth}"))
                    continue
                next_states = closure(below)
                key = (target.st_dev, target.st_ino, next_states)
                if key not in seen:
                    seen.add(key)
                    stack.append((path, next_states, depth + 1))


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
