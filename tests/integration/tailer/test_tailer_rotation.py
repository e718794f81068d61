"""Rotation with the real logrotate: rename+create (also twice before the reader caught up) and
copytruncate (also a truncation the tailer only notices after the file grew back)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from sidecars.testing import RunningSidecar, http_get
from tests.integration.tailer.conftest import (
    TailerFactory,
    assert_exactly,
    logrotate,
    numbered,
    wait_sample,
    write_lines,
)
from tests.integration.tailer.ndjson_receiver import NdjsonReceiver

PAD = "x" * 80  # lines of ~100 bytes: a few thousand overflow the smallest buffer


async def wait_read_offset(sc: RunningSidecar, path: Path, at_least: int, timeout_secs: float = 20) -> int:
    """Until the admin `/files` page shows `path` read up to `at_least`; returns its read offset."""

    async def _wait() -> int:
        while True:
            _, body = await http_get(sc.admin_url + "/files")
            offsets = [f["read_offset"] for f in orjson.loads(body)["files"] if f["path"] == str(path)]
            if offsets and offsets[0] >= at_least:
                return int(offsets[0])
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(_wait(), timeout_secs)


@pytest.mark.parametrize("mode", ["inotify", "poll"])
async def test_rename_create_rotated_twice_while_reader_lags(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path, mode: str
) -> None:
    app = logs / "app.log"
    first = [f"{m} {PAD}" for m in numbered("first", 0, 3000)]
    write_lines(app, first)
    receiver.fail_status = 503  # the sink is down: reading stops at max_buffer_bytes, far behind
    conf = f"{app} {{\n  rotate 5\n  create\n  missingok\n}}\n"
    async with tailer(max_buffer_bytes=64 * 1024, watch_mode=mode) as sc:
        await wait_sample(sc, "tailer_buffered_bytes", None, 60 * 1024)
        logrotate(conf, tmp_path)  # app.log -> app.log.1, new app.log
        second = numbered("second", 0, 1000)
        write_lines(app, second)
        await asyncio.sleep(0.5)  # the tailer opens the new file (and keeps the old one open)
        logrotate(conf, tmp_path)  # app.log.1 -> app.log.2, app.log -> app.log.1: twice before read
        third = numbered("third", 0, 1000)
        write_lines(app, third)
        await asyncio.sleep(0.5)
        assert (logs / "app.log.2").exists()
        receiver.fail_status = None
        await receiver.wait_for(5000)
        await asyncio.sleep(0.3)
        assert sc.sample("tailer_rotations_total", {"kind": "renamed"}) == 2
    assert_exactly(receiver, first + second + third)
    # Lines of one file arrive in file order, and keep the path they were found under.
    msgs = receiver.messages
    assert [m for m in msgs if m.startswith("first")] == first
    assert {d["labels"]["path"] for d in receiver.docs} == {str(app)}


async def test_copytruncate_while_reader_lags_reads_the_rest_from_the_copy(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    app = logs / "app.log"
    before = [f"{m} {PAD}" for m in numbered("before", 0, 3000)]
    write_lines(app, before)
    receiver.fail_status = 503
    conf = f"{app} {{\n  rotate 5\n  copytruncate\n  missingok\n}}\n"
    async with tailer(max_buffer_bytes=64 * 1024) as sc:
        await wait_sample(sc, "tailer_buffered_bytes", None, 60 * 1024)
        logrotate(conf, tmp_path)  # copies app.log to app.log.1, truncates app.log in place
        after = numbered("after", 0, 500)
        write_lines(app, after)
        await wait_sample(sc, "tailer_rotations_total", {"kind": "truncated"}, 1)
        receiver.fail_status = None
        await receiver.wait_for(3500)
        await asyncio.sleep(0.3)
        assert sc.sample("tailer_rotations_total", {"kind": "copy_found"}) == 1
    assert_exactly(receiver, before + after)


async def test_copytruncate_between_two_looks_is_caught_by_the_next_read(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    """The file is truncated and written again past where reading paused, and no look (poll, event,
    rescan) comes before the next read: that read finds the new content under the old offset. It
    must be recognised as such (the head changed), not sent as the old content's continuation while
    the old content's rest, in the copy, and the new content's start are skipped."""
    app = logs / "app.log"
    before = [f"{m} {PAD}" for m in numbered("before", 0, 3000)]
    write_lines(app, before)
    receiver.fail_status = 503  # reading pauses at max_buffer_bytes, far behind
    conf = f"{app} {{\n  rotate 5\n  copytruncate\n  missingok\n}}\n"
    async with tailer(
        max_buffer_bytes=64 * 1024,
        read_chunk_bytes=16 * 1024,
        watch_mode="poll",
        poll_interval_secs=120.0,  # no look at the file during the test: only the reads see it
        rescan_interval_secs=120.0,
    ) as sc:
        await wait_sample(sc, "tailer_retries_total", None, 1)
        paused_at = await wait_read_offset(sc, app, 60 * 1024)  # the buffer is full: reading paused
        logrotate(conf, tmp_path)
        after = [f"{m} {PAD}" for m in numbered("after", 0, 3000)]
        assert len("".join(line + "\n" for line in after)) > paused_at + 16 * 1024  # the next read finds lines
        write_lines(app, after)
        receiver.fail_status = None
        await receiver.wait_for(6000)
        await asyncio.sleep(0.3)
        assert sc.sample("tailer_rotations_total", {"kind": "truncated"}) == 1
        assert sc.sample("tailer_rotations_total", {"kind": "copy_found"}) == 1
    assert_exactly(receiver, before + after)


@pytest.mark.parametrize("older_copy", [False, True])
async def test_copytruncate_of_contents_with_the_same_head_is_caught_by_the_next_read(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path, older_copy: bool
) -> None:
    """As above, but every content starts with the same banner, longer than the fingerprint: the head
    still matches after the truncation. The bytes just before the read offset, as read, do not. With
    an older copy of another such content, the newest by mtime, the copy is still the right one."""
    app = logs / "app.log"
    banner = [f"banner {i:02d} {'=' * 90}" for i in range(12)]  # 12 x 101 bytes > fingerprint_bytes
    before = [f"{m} {PAD}" for m in numbered("before", 0, 3000)]
    if older_copy:
        older = logs / "app.log.1"  # logrotate renames it to app.log.2, its mtime kept
        write_lines(older, banner + [f"{m} {PAD}" for m in numbered("older", 0, 3000)])
        os.utime(older, (time.time() + 3600, time.time() + 3600))
    write_lines(app, banner + before)
    receiver.fail_status = 503
    conf = f"{app} {{\n  rotate 5\n  copytruncate\n  missingok\n}}\n"
    async with tailer(
        max_buffer_bytes=64 * 1024,
        read_chunk_bytes=16 * 1024,
        watch_mode="poll",
        poll_interval_secs=120.0,
        rescan_interval_secs=120.0,
    ) as sc:
        await wait_sample(sc, "tailer_retries_total", None, 1)
        paused_at = await wait_read_offset(sc, app, 60 * 1024)
        logrotate(conf, tmp_path)
        after = [f"{m} {PAD}" for m in numbered("after", 0, 3000)]
        assert len("".join(line + "\n" for line in banner + after)) > paused_at + 16 * 1024
        write_lines(app, banner + after)
        receiver.fail_status = None
        await receiver.wait_for(2 * len(banner) + 6000)
        await asyncio.sleep(0.3)
        assert sc.sample("tailer_rotations_total", {"kind": "truncated"}) == 1
        assert sc.sample("tailer_rotations_total", {"kind": "copy_found"}) == 1
    # The banner is in both contents: each of its lines arrives twice, every other line once.
    got = Counter(receiver.messages)
    lost = [m for m in before + after if m not in got]
    assert not lost, f"{len(lost)} lines lost, first: {lost[:3]}"
    assert got == Counter(banner + before + banner + after)


async def test_copytruncate_of_contents_with_the_same_head_is_seen_by_the_poller_while_reading_waits(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    """The same rotation while the sink is down and reading paused: the poller, not a read, sees the
    bytes before the read offset changed, and takes up the copy at once (logrotate may delete it)."""
    app = logs / "app.log"
    banner = [f"banner {i:02d} {'=' * 90}" for i in range(12)]
    before = [f"{m} {PAD}" for m in numbered("before", 0, 3000)]
    write_lines(app, banner + before)
    receiver.fail_status = 503
    conf = f"{app} {{\n  rotate 5\n  copytruncate\n  missingok\n}}\n"
    async with tailer(
        max_buffer_bytes=64 * 1024, read_chunk_bytes=16 * 1024, watch_mode="poll", poll_interval_secs=0.2
    ) as sc:
        await wait_sample(sc, "tailer_retries_total", None, 1)
        await wait_read_offset(sc, app, 60 * 1024)
        logrotate(conf, tmp_path)
        after = [f"{m} {PAD}" for m in numbered("after", 0, 3000)]
        write_lines(app, banner + after)
        await wait_sample(sc, "tailer_rotations_total", {"kind": "copy_found"}, 1)  # the sink still down
        receiver.fail_status = None
        await receiver.wait_for(2 * len(banner) + 6000)
        await asyncio.sleep(0.3)
        assert sc.sample("tailer_rotations_total", {"kind": "truncated"}) == 1
    assert Counter(receiver.messages) == Counter(banner + before + banner + after)


async def test_truncation_noticed_after_the_file_grew_back_past_the_old_offset(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    app = logs / "app.log"
    old = numbered("old", 0, 20)
    write_lines(app, old)
    with open(app, "a") as f:
        f.write("old partial")  # held for its newline when the truncation comes: sent, not lost
    # Polling only, and rarely: the truncation and the regrowth both happen between two looks.
    async with tailer(
        watch_mode="poll", poll_interval_secs=2.0, rescan_interval_secs=30.0, partial_line_flush_secs=60
    ) as sc:
        await receiver.wait_for(20)
        new = [f"{m} {PAD}" for m in numbered("new", 0, 50)]  # far longer than what was there
        write_lines(app, new, mode="w")
        await receiver.wait_for(71)
        await asyncio.sleep(0.2)
        assert sc.sample("tailer_rotations_total", {"kind": "truncated"}) == 1
    assert_exactly(receiver, [*old, "old partial", *new])


async def test_lines_held_at_a_truncation_without_a_copy_go_out_within_the_batch_limits(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    """Truncated in place with no copy while the sink is down: the whole lines read but not yet framed
    go out in batches of at most batch_max_lines, not as one batch a sink with a line limit rejects."""
    app = logs / "app.log"
    old = [f"{m} {PAD}" for m in numbered("old", 0, 2000)]  # one read (256 KiB) takes them all
    write_lines(app, old)
    receiver.fail_status = 503  # the reader stops framing once the batches in flight are full
    async with tailer(batch_max_lines=50, watch_mode="poll", poll_interval_secs=0.2) as sc:
        await wait_sample(sc, "tailer_retries_total", None, 1)
        await wait_read_offset(sc, app, app.stat().st_size)
        new = numbered("new", 0, 20)
        write_lines(app, new, mode="w")  # shorter than the offset read: a plain truncation, no copy
        await wait_sample(sc, "tailer_rotations_total", {"kind": "truncated"}, 1)
        receiver.fail_status = None
        await receiver.wait_for(len(old) + len(new))
        await asyncio.sleep(0.3)
        assert sc.sample("tailer_rotations_total", {"kind": "copy_found"}) in (None, 0)
    assert_exactly(receiver, old + new)
    assert max(receiver.batch_lines) <= 50, receiver.batch_lines


async def test_glob_does_not_match_rotated_siblings_and_restart_sends_nothing_twice(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    app = logs / "app.log"
    write_lines(app, numbered("a", 0, 100))
    conf = f"{app} {{\n  rotate 3\n  create\n}}\n"
    async with tailer():
        await receiver.wait_for(100)
        logrotate(conf, tmp_path)
        write_lines(app, numbered("b", 0, 100))
        await receiver.wait_for(200)
    async with tailer():  # a restart: everything is checkpointed, nothing is sent again
        write_lines(app, numbered("c", 0, 100))
        await receiver.wait_for(300)
        await asyncio.sleep(0.5)
    assert_exactly(receiver, numbered("a", 0, 100) + numbered("b", 0, 100) + numbered("c", 0, 100))


@pytest.mark.parametrize("written_after", [0, 20])
@pytest.mark.parametrize("read_before", [0, 100])
async def test_copytruncate_while_stopped_reads_the_rest_from_the_copy(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path, read_before: int, written_after: int
) -> None:
    app = logs / "app.log"
    app.touch()  # with read_before=0 the checkpoint knows an empty file: a head of nothing identifies nothing
    first = [f"{m} {PAD}" for m in numbered("first", 0, read_before)]
    write_lines(app, first)
    async with tailer() as sc:
        await wait_sample(sc, "tailer_checkpoint_writes_total", None, 1)
        await receiver.wait_for(read_before)
    more = [f"{m} {PAD}" for m in numbered("more", 0, 50)]  # after the last checkpoint, before the rotation
    write_lines(app, more)
    logrotate(f"{app} {{\n  rotate 5\n  copytruncate\n  missingok\n}}\n", tmp_path)
    after = numbered("after", 0, written_after)
    write_lines(app, after)
    async with tailer():
        await receiver.wait_for(read_before + 50 + written_after)
        await asyncio.sleep(0.5)
    assert_exactly(receiver, first + more + after)
