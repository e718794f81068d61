"""Opening followed files without leaving the include roots: the app controls the volume, not the tailer's eyes.

Whoever controls the app can put a symlink into the shared volume: to a 0600 file elsewhere, to
`/proc/self/environ` (the tailer's own environment, sink credentials included) or to the service
account token. So by default no symlink is followed, in any path component below an include root:
each component is opened relative to its parent with `O_NOFOLLOW`. With `follow_symlinks` a link is
followed, but what was opened is verified on the descriptor itself (its `/proc/self/fd` path, or
realpath plus the same device and inode), so swapping a link between check and open gains nothing:
it must lie inside an include root. Files on `/proc` and `/sys` are refused whatever the settings.

The include roots are the base directories of the include patterns, as configured: an operator may
point one at a symlinked directory; what lies below it is the app's.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable

from sidecars.tailer.identity import read_head

# Never read, whatever the configuration: kernel state, not logs.
FORBIDDEN_TREES = ("/proc", "/sys")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


class RefusedError(Exception):
    """A path the tailer will not read; `reason` is a short label (symlink, outside_roots, proc_sys)."""

    def __init__(self, path: str, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class Confinement:
    """Where files may be opened from, and the one way to open them."""

    def __init__(self, roots: Iterable[str], follow_symlinks: bool) -> None:
        # Longest first: a path belongs to the innermost root that contains it.
        self.roots = sorted({os.path.normpath(r) for r in roots}, key=len, reverse=True)
        self.follow_symlinks = follow_symlinks
        self.real_roots = sorted({os.path.realpath(r) for r in self.roots}, key=len, reverse=True)
        self._forbidden_devs: set[int] = set()
        for tree in FORBIDDEN_TREES:
            with contextlib.suppress(OSError):
                self._forbidden_devs.add(os.stat(tree).st_dev)

    def root_of(self, path: str) -> str | None:
        return next((r for r in self.roots if _within(path, r)), None)

    def target_allowed(self, real: str) -> str | None:
        """Why a resolved path may not be read (None: it may)."""
        if any(_within(real, t) for t in FORBIDDEN_TREES):
            return "proc_sys"
        if not any(_within(real, r) for r in self.real_roots):
            return "outside_roots"
        return None

    def open(self, path: str) -> int:
        """A read-only descriptor of the regular file at `path`; RefusedError or OSError otherwise."""
        fd = self._open_following(path) if self.follow_symlinks else self._open_beneath(path)
        try:
            st = os.fstat(fd)
            if st.st_dev in self._forbidden_devs:
                raise RefusedError(path, "proc_sys", "a file of /proc or /sys is never read")
            if not stat.S_ISREG(st.st_mode):
                raise RefusedError(path, "not_regular", "not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read_head(self, path: str, size: int) -> bytes:
        """The first `size` bytes of the file at `path`, opened as `open` does."""
        fd = self.open(path)
        try:
            return read_head(fd, size)
        finally:
            os.close(fd)

    def read_at(self, path: str, offset: int, size: int) -> bytes:
        """`size` bytes at `offset` of the file at `path` (fewer past its end), opened as `open` does."""
        fd = self.open(path)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def _open_beneath(self, path: str) -> int:
        root = self.root_of(path)
        if root is None:
            raise RefusedError(path, "outside_roots", "not below an include root")
        parts = path[len(root) :].strip("/").split("/")
        if not parts or any(p in ("", ".", "..") for p in parts):
            raise RefusedError(path, "outside_roots", "not a plain path below an include root")
        dfd = os.open(root, _DIR_FLAGS)
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                try:
                    fd = os.open(part, (_FILE_FLAGS if last else _DIR_FLAGS) | os.O_NOFOLLOW, dir_fd=dfd)
                except OSError:
                    # ELOOP (or ENOTDIR for a directory) is how O_NOFOLLOW says "a symlink": say so.
                    with contextlib.suppress(OSError):
                        if stat.S_ISLNK(os.lstat(part, dir_fd=dfd).st_mode):
                            raise RefusedError(path, "symlink", "a symlink (follow_symlinks is off)") from None
                    raise
                if last:
                    return fd
                os.close(dfd)
                dfd = fd
        finally:
            os.close(dfd)
        raise AssertionError("unreachable")

    def _open_following(self, path: str) -> int:
        fd = os.open(path, _FILE_FLAGS)
        try:
            real = self._fd_path(fd, path)
            why = self.target_allowed(real)
            if why is not None:
                raise RefusedError(path, why, f"leads to {real}, outside the include roots")
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _fd_path(fd: int, path: str) -> str:
        """Where the descriptor really points (checked after the open: no window to swap a link)."""
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
        real = os.path.realpath(path)
        st, rst = os.fstat(fd), os.stat(real)
        if (st.st_dev, st.st_ino) != (rst.st_dev, rst.st_ino):
            raise RefusedError(path, "outside_roots", "changed while it was opened")
        return real
