"""The mounted-file watcher on real files: a ConfigMap volume updated as the kubelet does, bad updates,
and changes that inotify never reports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from sidecars.core.watch import MountedFiles, mounted_file

WAIT_SECS = 20.0  # a bound for a loaded machine, not an expected duration
NEVER_SECS = 3600.0  # a poll that never comes within a test: only inotify can notice a change


class Volume:
    """A ConfigMap volume laid out as the kubelet's atomic writer does.

    `mount/..2024_N/<items>` holds the files, `mount/..data` points at the current one, and each
    top-level item is a symlink `mount/<item> -> ..data/<item>`. An update writes a new directory,
    points `..data_tmp` at it, renames that over `..data` (atomic) and removes the old directory.
    """

    def __init__(self, mount: Path, items: dict[str, str]) -> None:
        self.mount = mount
        self.version = 0
        mount.mkdir()
        self._write(items)
        os.symlink(self._current(), mount / "..data")
        for top in {Path(name).parts[0] for name in items}:
            os.symlink(Path("..data") / top, mount / top)

    def _current(self) -> str:
        return f"..2024_{self.version:02d}"

    def _write(self, items: dict[str, str]) -> None:
        for name, text in items.items():
            path = self.mount / self._current() / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def update(self, items: dict[str, str]) -> None:
        old = self._current()
        self.version += 1
        self._write(items)
        os.symlink(self._current(), self.mount / "..data_tmp")
        os.rename(self.mount / "..data_tmp", self.mount / "..data")
        shutil.rmtree(self.mount / old)


def inotify_watched_inodes() -> set[int]:
    """Inodes this process's inotify instances watch now, as the kernel lists them."""
    inodes = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
                if line.startswith("inotify wd:"):
                    fields = dict(part.split(":", 1) for part in line.split()[1:])
                    inodes.add(int(fields["ino"], 16))
    return inodes


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for a condition (checked every 10 ms) within WAIT_SECS."""
    async with asyncio.timeout(WAIT_SECS):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


async def watched(directory: Path) -> None:
    """Wait until the kernel holds a watch on `directory` (symlinks followed)."""
    inode = directory.stat().st_ino
    await until(lambda: inode in inotify_watched_inodes(), f"no inotify watch on {directory}")


class Updates:
    """What the watcher reported."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.errors: list[Exception] = []
        self.event = asyncio.Event()

    def changed(self, value: str) -> None:
        self.values.append(value)
        self.event.set()

    def refused(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.event.set()

    async def next(self) -> None:
        async with asyncio.timeout(WAIT_SECS):
            await self.event.wait()
        self.event.clear()


def parse(data: bytes) -> str:
    text = data.decode()
    if not text.startswith("rules:"):
        raise ValueError(f"not a rules file: {text[:20]!r}")
    return text


@contextlib.asynccontextmanager
async def running(watcher: MountedFiles[str]) -> AsyncIterator[None]:
    task = asyncio.create_task(watcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def watch(path: Path, updates: Updates, poll_secs: float = NEVER_SECS, **kw: int) -> MountedFiles[str]:
    return mounted_file(
        path,
        parse,
        poll_secs=poll_secs,
        log=structlog.get_logger(),
        on_change=updates.changed,
        on_error=updates.refused,
        **kw,
    )


async def test_a_configmap_update_is_seen_through_the_data_symlink_swap(tmp_path: Path) -> None:
    volume = Volume(tmp_path / "config", {"rules.yaml": "rules: v1"})
    updates = Updates()
    watcher = watch(volume.mount / "rules.yaml", updates)
    assert watcher.load() == "rules: v1"
    async with running(watcher):
        await watched(volume.mount)
        volume.update({"rules.yaml": "rules: v2"})
        await updates.next()
        assert watcher.value == "rules: v2"
        # Once more: the watches were set again after the swap.
        await watched(volume.mount)
        volume.update({"rules.yaml": "rules: v3"})
        await updates.next()
    assert updates.values == ["rules: v2", "rules: v3"] and watcher.value == "rules: v3"
    assert updates.errors == [] and watcher.status() is None


async def test_an_item_in_a_subdirectory_follows_the_swap_of_its_volume(tmp_path: Path) -> None:
    # ConfigMap `items` with `path: conf/rules.yaml`: the file's own directory lives inside the
    # timestamped directory, which every update deletes; the volume's `..data` is one level up.
    volume = Volume(tmp_path / "config", {"conf/rules.yaml": "rules: v1", "other": "x"})
    updates = Updates()
    watcher = watch(volume.mount / "conf" / "rules.yaml", updates)
    watcher.load()
    async with running(watcher):
        await watched(volume.mount)
        volume.update({"conf/rules.yaml": "rules: v2", "other": "x"})
        await updates.next()
        await watched(volume.mount / "conf")  # the new directory, reached through the new `..data`
        volume.update({"conf/rules.yaml": "rules: v3", "other": "x"})
        await updates.next()
    assert updates.values == ["rules: v2", "rules: v3"]


async def test_a_bad_update_keeps_the_last_good_content_until_a_good_one(tmp_path: Path) -> None:
    volume = Volume(tmp_path / "config", {"rules.yaml": "rules: v1"})
    updates = Updates()
    watcher = watch(volume.mount / "rules.yaml", updates)
    check = watcher.check_named("rules-reload")
    watcher.load()
    async with running(watcher):
        await watched(volume.mount)
        volume.update({"rules.yaml": "half written"})
        await updates.next()
        assert watcher.value == "rules: v1"
        assert [str(e) for e in updates.errors] == ["not a rules file: 'half written'"]
        assert check.warn and check.probe() == (
            "last update refused, the previous content stays in force: not a rules file: 'half written'"
        )
        # Looked at again and again (every notification, every poll): reported once.
        for _ in range(3):
            assert watcher.check(changed=True) is False
        assert len(updates.errors) == 1
        volume.update({"rules.yaml": "rules: v2"})
        await updates.next()
    assert watcher.value == "rules: v2" and updates.values == ["rules: v2"]
    assert check.probe() is None


def test_back_to_the_content_in_force_clears_the_refusal_without_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: v1")
    updates = Updates()
    watcher = watch(path, updates)
    watcher.load()
    path.write_text("broken")
    assert watcher.check(changed=True) is False and watcher.status() is not None
    path.write_text("rules: v1")
    assert watcher.check(changed=True) is False and watcher.status() is None
    path.unlink()
    assert watcher.check() is False and "cannot be read: No such file or directory" in str(watcher.status())
    assert watcher.check() is False and len(updates.errors) == 2  # the missing file reported once
    path.write_text("rules: v1")
    assert watcher.check() is False and watcher.status() is None
    assert updates.values == [] and watcher.reloads == 0


async def test_the_poll_catches_a_change_inotify_does_not_report(tmp_path: Path) -> None:
    # A write through a hard link in another directory changes the file, and inotify reports it only
    # to watchers of that other directory: the modification-time poll is what notices.
    (tmp_path / "config").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "config" / "rules.yaml"
    path.write_text("rules: v1")
    alias = tmp_path / "elsewhere" / "alias"
    os.link(path, alias)
    updates = Updates()
    watcher = watch(path, updates, poll_secs=0.2)
    watcher.load()
    async with running(watcher):
        await watched(path.parent)
        with alias.open("r+") as f:
            f.write("rules: v2")
        await updates.next()
    assert updates.values == ["rules: v2"]


def test_an_unchanged_content_is_not_reloaded_and_a_big_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: v1")
    updates = Updates()
    watcher = watch(path, updates, max_bytes=64)
    watcher.load()
    os.utime(path, ns=(1, 1))  # touched: another identity, the same content
    assert watcher.check() is False and updates.values == []
    path.write_text("rules: " + "x" * 64)
    assert watcher.check() is False
    assert str(updates.errors[0]) == f"{path}: larger than 64 bytes" and watcher.value == "rules: v1"


async def test_several_files_change_together_and_a_missing_directory_is_polled(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls" / "tls.crt", tmp_path / "tls" / "tls.key"
    values: list[tuple[bytes, ...]] = []
    changed = asyncio.Event()

    def on_change(value: tuple[bytes, ...]) -> None:
        values.append(value)
        changed.set()

    watcher = MountedFiles([cert, key], tuple, poll_secs=0.1, log=structlog.get_logger(), on_change=on_change)
    with pytest.raises(ValueError, match=r"tls\.crt: cannot be read: No such file or directory"):
        watcher.load()
    with capture_logs() as logs:
        async with running(watcher):
            # Nothing to watch yet (the Secret is not mounted): the poll takes it up once it is.
            await until(lambda: any("cannot watch" in e["event"] for e in logs), "no warning about the watch")
            Volume(tmp_path / "tls", {"tls.crt": "CERT", "tls.key": "KEY"})
            async with asyncio.timeout(WAIT_SECS):
                await changed.wait()
    assert values == [(b"CERT", b"KEY")] and watcher.value == (b"CERT", b"KEY")
    warnings = [e for e in logs if "cannot watch" in e["event"]]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"


async def test_a_file_bad_at_load_is_reported_by_the_watch_and_taken_up_once_good(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("broken")
    updates = Updates()
    watcher = watch(path, updates, poll_secs=0.1)
    with pytest.raises(ValueError, match="not a rules file"):
        watcher.load()
    async with running(watcher):
        await updates.next()  # the first look reports what load() refused
        assert [str(e) for e in updates.errors] == ["not a rules file: 'broken'"]
        path.write_text("rules: v1")
        await updates.next()
    assert watcher.value == "rules: v1" and updates.values == ["rules: v1"] and watcher.status() is None
