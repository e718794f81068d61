"""The app controls the shared volume: symlinks in it must not lead the tailer to other files.

A link to a 0600 file elsewhere, to /proc/self/environ or through a symlinked directory is never read
by default; with `follow_symlinks` a link is followed only to a target inside the include roots; a
volume full of links to `.` under `**` is walked once, the tailer becomes ready and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sidecars.testing import start_process
from tests.integration.tailer.conftest import (
    FAST,
    TailerFactory,
    assert_exactly,
    numbered,
    wait_sample,
    write_lines,
)
from tests.integration.tailer.ndjson_receiver import NdjsonReceiver

SECRET = "token-that-must-never-leave-0123456789"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A directory outside the volume with a private file, as the tailer's own secrets are."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    secret = d / "secret.log"
    write_lines(secret, [SECRET])
    os.chmod(secret, 0o600)
    return d


async def wait_refused(sc: Any, reason: str, count: int) -> None:
    await wait_sample(sc, "tailer_refused_files_total", {"reason": reason}, count)


async def test_symlinks_out_of_the_volume_are_never_read_by_default(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, elsewhere: Path
) -> None:
    lines = numbered("app", 0, 20)
    write_lines(logs / "app.log", lines)
    (logs / "leak.log").symlink_to(elsewhere / "secret.log")
    (logs / "env.log").symlink_to("/proc/self/environ")
    async with tailer() as sc:
        await receiver.wait_for(20)
        await wait_refused(sc, "symlink", 2)
        (logs / "late.log").symlink_to(elsewhere / "secret.log")  # seen by the watcher, not a rescan
        more = numbered("more", 0, 5)
        write_lines(logs / "app.log", more)
        await receiver.wait_for(25)
        await wait_refused(sc, "symlink", 3)
        await asyncio.sleep(1.2)  # two more rescans: each refusal is counted and logged once
        assert sc.sample("tailer_refused_files_total", {"reason": "symlink"}) == 3
        refusals = sc.events("file not followed")
        assert sorted(e["path"] for e in refusals) == sorted(str(logs / n) for n in ("leak.log", "env.log", "late.log"))
    assert_exactly(receiver, lines + more)
    assert not any(SECRET in m or "PATH=" in m for m in receiver.messages)


async def test_a_symlinked_directory_is_not_entered_by_default(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, elsewhere: Path
) -> None:
    (logs / "real").mkdir()
    write_lines(logs / "real" / "app.log", ["inside"])
    (logs / "outside").symlink_to(elsewhere, target_is_directory=True)
    async with tailer(include=[f"{logs}/**/*.log", f"{logs}/*/*.log"]) as sc:
        await receiver.wait_for(1)
        await wait_refused(sc, "symlink", 1)
        await asyncio.sleep(0.6)
    assert receiver.messages == ["inside"]


async def test_follow_symlinks_follows_inside_the_roots_and_refuses_outside(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, elsewhere: Path
) -> None:
    store = logs / "store"  # inside the root, not matched by the glob itself
    store.mkdir()
    kept = numbered("kept", 0, 10)
    write_lines(store / "current.txt", kept)
    (logs / "current.log").symlink_to(store / "current.txt")
    (logs / "leak.log").symlink_to(elsewhere / "secret.log")
    (logs / "up.log").symlink_to(Path("..") / "elsewhere" / "secret.log")  # relative, climbing out
    (logs / "env.log").symlink_to("/proc/self/environ")
    async with tailer(follow_symlinks=True) as sc:
        await receiver.wait_for(10)
        await wait_refused(sc, "outside_roots", 2)
        await wait_refused(sc, "proc_sys", 1)
        write_lines(store / "current.txt", ["grown"])  # followed by descriptor, like any file
        await receiver.wait_for(11)
        await asyncio.sleep(1.2)
        assert sc.sample("tailer_refused_files_total", {"reason": "outside_roots"}) == 2
        assert sc.sample("tailer_refused_files_total", {"reason": "proc_sys"}) == 1
        assert len(sc.events("file not followed")) == 3
    assert_exactly(receiver, [*kept, "grown"])
    assert {d["labels"]["path"] for d in receiver.docs} == {str(logs / "current.log")}


@pytest.mark.parametrize("follow_symlinks", [False, True])
async def test_directory_links_to_dot_under_doublestar_are_walked_once_and_sigterm_stops_it(
    receiver: NdjsonReceiver, tmp_path: Path, follow_symlinks: bool
) -> None:
    logs = tmp_path / "logs"
    (logs / "a" / "b").mkdir(parents=True)
    expected = []
    for d in (logs, logs / "a", logs / "a" / "b"):
        for name in ("l1", "l2", "l3"):
            (d / name).symlink_to(".", target_is_directory=True)
        (d / "up").symlink_to("..", target_is_directory=True)
        write_lines(d / "x.log", [f"in {d.name}"])
        expected.append(f"in {d.name}")
    settings: dict[str, Any] = {
        **FAST,
        "include": [f"{logs}/**/*.log"],
        "checkpoint_dir": str(tmp_path / "cp"),
        "sink": "http",
        "sink_config": {"url": receiver.url},
        "follow_symlinks": follow_symlinks,
        "startup_timeout_secs": 20.0,
        "shutdown_timeout_secs": 5.0,
    }
    async with start_process("tailer", settings, command=[sys.executable, "-m", "sidecars.tailer"]) as p:
        await p.wait_http("/readyz", timeout_secs=20)
        await receiver.wait_for(3)
        await asyncio.sleep(1.2)  # rescans walk the loops again: still nothing twice
        p.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert await p.wait_exit(settings["shutdown_timeout_secs"] + 5) == 0, p.read_output()
        assert time.monotonic() - started < settings["shutdown_timeout_secs"]
    assert_exactly(receiver, expected)
