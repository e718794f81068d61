"""Unit tests of the tailer's pure parts: globs, records, multi-line, tracks, checkpoints, backoff,
framing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecars.tailer.checkpoint import CheckpointLockedError, CheckpointStore, Entry, Track
from sidecars.tailer.delivery import backoff_delay
from sidecars.tailer.discovery import Matcher, base_dir, compile_glob
from sidecars.tailer.files import default_max_open_files
from sidecars.tailer.follower import Counts, Follower, Options, _nth_newline
from sidecars.tailer.identity import Fingerprint
from sidecars.tailer.records import Grouper, decode_block, parse_json_fields, parse_time_ns, record_times
from sidecars.tailer.settings import TailerSettings


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/var/log/*.log", "/var/log/app.log", True),
        ("/var/log/*.log", "/var/log/app.log.1", False),  # a rotated sibling
        ("/var/log/*.log", "/var/log/sub/app.log", False),
        ("/var/log/**/*.log", "/var/log/app.log", True),
        ("/var/log/**/*.log", "/var/log/a/b/c/app.log", True),
        ("/var/log/**", "/var/log/a/b.txt", True),
        ("/var/log/app-?.log", "/var/log/app-1.log", True),
        ("/var/log/app-[0-9].log", "/var/log/app-x.log", False),
        ("/var/log/app-[!0-9].log", "/var/log/app-x.log", True),
    ],
)
def test_globs(pattern: str, path: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).match(path)) is matches


def test_matcher_excludes_and_base_dirs(tmp_path: Path) -> None:
    m = Matcher([f"{tmp_path}/**/*.log", f"{tmp_path}/a/*.log"], ["*.gz.log", f"{tmp_path}/skip/*"])
    assert m(f"{tmp_path}/x/app.log")
    assert not m(f"{tmp_path}/x/app.gz.log")
    assert not m(f"{tmp_path}/skip/app.log")
    assert base_dir(f"{tmp_path}/a/*.log") == f"{tmp_path}/a"
    (tmp_path / "a").mkdir()
    assert m.base_dirs() == [str(tmp_path)]  # the inner one is covered by the recursive watch
    assert m.recursive()
    with pytest.raises(ValueError, match="unclosed"):
        compile_glob("/var/log/[abc.log")


def test_decode_block_replaces_and_counts_invalid_utf8() -> None:
    assert decode_block(b"a\nb") == (["a", "b"], 0)
    assert decode_block(b"ok\n\xffbad\n\xc3\xa9") == (["ok", "\ufffdbad", "\u00e9"], 1)


def test_parse_json_fields() -> None:
    fields, bad = parse_json_fields(['{"a": 1}', "text", "{broken", "[1]"])
    assert fields == [{"a": 1}, {}, {}, {}] and bad == 1


def test_grouper_cuts_at_max_lines_and_reports_the_safe_offset() -> None:
    g = Grouper("pattern", r"START", max_lines=3, max_bytes=1000)
    lines = ["START a", " 1", " 2", " 3", "START b"]
    starts = [0, 10, 20, 30, 40]
    ends = [10, 20, 30, 40, 50]
    records, done = g.feed(lines, starts, ends)
    assert records == ["START a\n 1\n 2", " 3"]  # cut after 3 lines; the rest is a record of its own
    assert g.cut == 1
    assert done == 40 and g.pending_start == 40
    assert g.flush() == ("START b", 50)


def test_track_commits_only_the_acknowledged_prefix(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    entry = Entry("1:2", Fingerprint.of(b"head"), 0, "/x.log")
    store.put(entry)
    t = Track(store, entry)
    t.handed(1, 100)
    t.handed(2, 200)
    t.handed(3, 300)
    t.acked(2)  # out of order: batch 1 is still in flight
    assert entry.offset == 0
    t.acked(1)
    assert entry.offset == 200
    t.acked(3)
    assert entry.offset == 300 and t.idle
    t.handed(5, None)  # records with no boundary (a truncated line): later acks must wait for it
    t.handed(6, 350)
    t.acked(6)
    assert entry.offset == 300
    t.acked(5)
    assert entry.offset == 350
    t.dead = True
    t.handed(7, 400)
    t.acked(7)
    assert entry.offset == 350


def test_checkpoint_store_is_atomic_locked_and_rejects_corruption(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "cp")
    store.open()
    assert not store.existed
    store.put(Entry("1:2", Fingerprint.of(b"abc"), 42, "/var/log/app.log"))
    store.write(store.snapshot())
    assert not (tmp_path / "cp" / "checkpoints.tmp").exists()
    with pytest.raises(CheckpointLockedError, match="in use by another tailer"):
        CheckpointStore(tmp_path / "cp").open()
    store.close()
    again = CheckpointStore(tmp_path / "cp")
    again.open()
    assert again.existed and again.get("1:2") is not None and again.get("1:2").offset == 42  # type: ignore[union-attr]
    again.entries["1:2"].seen = 0
    assert again.gc(60, keep=set()) == 1
    again.close()
    (tmp_path / "cp" / "checkpoints.json").write_bytes(b"{not json")
    broken = CheckpointStore(tmp_path / "cp")
    broken.open()  # starts over (re-sending, never skipping) and says why
    assert broken.problem is not None and "unreadable" in broken.problem
    assert broken.existed and not broken.entries
    broken.close()
    assert list((tmp_path / "cp").glob("checkpoints.corrupt-*"))


async def test_checkpoint_flush_writes_once_after_open_then_only_what_changed(tmp_path: Path) -> None:
    directory = tmp_path / "cp"
    store = CheckpointStore(directory)
    store.open()
    path = directory / "checkpoints.json"
    assert await store.flush() and path.exists()  # the first flush marks a start that is not the first
    assert store.existed and not await store.flush()  # nothing changed: no write
    entry = Entry("1:2", Fingerprint.of(b"abc"), 42, "/var/log/app.log")
    store.put(entry)
    assert store.age_secs >= 0 and store.dirty
    assert await store.flush()
    assert store.age_secs == 0
    entry.fingerprint = Fingerprint.of(b"abcdef")  # extended in place, then marked
    store.changed()
    assert await store.flush()
    assert orjson.loads(path.read_bytes())["files"]["1:2"]["fp_len"] == 6

    for name in os.listdir(directory):
        os.unlink(directory / name)
    os.rmdir(directory)  # the next write cannot create its temporary file
    entry.offset = 50
    store.changed()
    with pytest.raises(OSError):
        await store.flush()
    assert store.dirty  # still to be written: nothing lost
    directory.mkdir()
    assert await store.flush()
    assert orjson.loads(path.read_bytes())["files"]["1:2"]["offset"] == 50
    store.flush_blocking()  # nothing changed since
    entry.offset = 60
    store.changed()
    store.flush_blocking()
    assert not store.dirty and orjson.loads(path.read_bytes())["files"]["1:2"]["offset"] == 60
    store.close()


def test_framing_options_are_the_settings_of_the_same_name() -> None:
    values = {
        "max_line_bytes": 1000,
        "read_chunk_bytes": 8192,
        "fingerprint_bytes": 64,
        "partial_line_flush_secs": 2.5,
        "parse_json": True,
        "json_timestamp_key": "ts",
        "multiline": "pattern",
        "multiline_start_pattern": "^START",
        "multiline_flush_secs": 3.0,
        "multiline_max_lines": 7,
        "multiline_max_bytes": 4096,
    }
    assert set(values) == {f.name for f in dataclasses.fields(Options)}, "a value for every option"
    assert dataclasses.asdict(Options.from_settings(TailerSettings(**values))) == values  # type: ignore[arg-type]


def test_fingerprint_compares_only_the_stored_length() -> None:
    short = Fingerprint.of(b"2024-05-01 hel")
    assert short.matches(b"2024-05-01 hello world, much longer now")
    assert not short.matches(b"2024")
    assert not short.matches(b"XXXX-05-01 hello")


def test_backoff_grows_is_jittered_and_honours_retry_after() -> None:
    delays = [backoff_delay(a, 0.5, 30) for a in range(12)]
    assert all(0.25 <= d <= 30 for d in delays)
    assert max(backoff_delay(8, 0.5, 30) for _ in range(50)) > 2
    assert backoff_delay(0, 0.5, 30, retry_after=7) >= 7
    assert backoff_delay(0, 0.5, 30, retry_after=10_000) == 300  # a floor, but capped


async def test_follower_frames_within_the_room_given(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    path.write_bytes(b"".join(b"line %03d\n" % i for i in range(100)) + b"partial")
    fd = os.open(path, os.O_RDONLY)
    store = CheckpointStore(tmp_path)
    entry = Entry("k", Fingerprint.of(b""), 0, str(path))
    f = Follower(
        path=str(path),
        fd=fd,
        st=os.fstat(fd),
        fingerprint=entry.fingerprint,
        track=Track(store, entry),
        offset=0,
        labels={},
        options=Options(),
        counts=Counts(),
    )
    try:
        assert await f.fill()
        first = f.frame(room_lines=10, room_bytes=10_000)
        assert first is not None and first.lines == [f"line {i:03d}" for i in range(10)] and first.end == 90
        second = f.frame(room_lines=1000, room_bytes=45)  # 45 bytes: 5 lines of 9
        assert second is not None and len(second.lines) == 5 and second.end == 135
        rest = f.frame(1000, 1_000_000)
        assert rest is not None and rest.lines[-1] == "line 099" and rest.end == 900
        assert f.frame(1000, 1_000_000) is None  # "partial" waits for its newline
        assert f.flush_partial(0.0, force=True) is not None
    finally:
        f.close()


async def test_reads_shorter_than_the_fingerprint_are_checked_against_the_whole_head(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    content = b"".join(b"line %05d\n" % i for i in range(2000))
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    opts = Options(fingerprint_bytes=16 * 1024, read_chunk_bytes=4096, max_line_bytes=4096)
    entry = Entry("k", Fingerprint.of(content[: 16 * 1024]), 0, str(path))
    f = Follower(
        path=str(path),
        fd=fd,
        st=os.fstat(fd),
        fingerprint=entry.fingerprint,
        track=Track(CheckpointStore(tmp_path), entry),
        offset=0,
        labels={},
        options=opts,
        counts=Counts(),
    )
    try:
        lines: list[str] = []
        while await f.fill() or f.has_unframed:
            while (chunk := f.frame(1000, 1_000_000)) is not None:
                lines += chunk.lines
        assert not f.replaced and lines == [f"line {i:05d}" for i in range(2000)]
    finally:
        f.close()


async def test_a_rewrite_with_the_same_head_is_caught_by_the_bytes_before_the_offset(tmp_path: Path) -> None:
    """Truncated and written again with the same head (a banner longer than the fingerprint): the head
    matches, the bytes just before the read offset do not, for the next read and for a look. Resumed
    at an offset (a restart), those bytes are taken from the file as it is."""
    path = tmp_path / "f.log"
    banner = b"=" * 2048 + b"\n"
    path.write_bytes(banner + b"".join(b"old %05d\n" % i for i in range(500)))
    fd = os.open(path, os.O_RDONLY)
    entry = Entry("k", Fingerprint.of(banner[:1024]), 0, str(path))
    args: dict[str, Any] = dict(
        path=str(path), fd=fd, fingerprint=entry.fingerprint, labels={}, options=Options(), counts=Counts()
    )
    f = Follower(st=os.fstat(fd), track=Track(CheckpointStore(tmp_path), entry), offset=0, **args)
    at = len(banner) + 100  # ten old lines past the banner
    resumed = Follower(st=os.fstat(fd), track=Track(CheckpointStore(tmp_path), entry), offset=at, **args)
    try:
        assert await f.fill() and f.tail_matches() and not f.replaced
        assert resumed.tail == path.read_bytes()[at - 64 : at]
        path.write_bytes(banner + b"".join(b"new %05d\n" % i for i in range(1000)))
        assert f.fingerprint.matches(banner) and not f.tail_matches()
        assert not await f.fill() and f.replaced
        assert not await resumed.fill() and resumed.replaced
    finally:
        os.close(fd)


async def test_partial_line_flush_leaves_whole_lines_to_framing(tmp_path: Path) -> None:
    """Whole lines still unframed when the partial-line timer expires (the reader's turn moved on to
    other files) are framed within the batch limits, not flushed with the partial line as one chunk."""
    path = tmp_path / "f.log"
    path.write_bytes(b"".join(b"line %04d\n" % i for i in range(1000)) + b"partial")
    fd = os.open(path, os.O_RDONLY)
    entry = Entry("k", Fingerprint.of(b""), 0, str(path))
    opts = Options(partial_line_flush_secs=1.0)
    f = Follower(
        path=str(path),
        fd=fd,
        st=os.fstat(fd),
        fingerprint=entry.fingerprint,
        track=Track(CheckpointStore(tmp_path), entry),
        offset=0,
        labels={},
        options=opts,
        counts=Counts(),
    )
    try:
        assert await f.fill() and f.at_eof
        first = f.frame(room_lines=100, room_bytes=1_000_000)
        assert first is not None and len(first.lines) == 100
        later = f.last_growth + 10
        assert f.flush_partial(later) is None
        framed = [first]
        while (chunk := f.frame(room_lines=100, room_bytes=1_000_000)) is not None:
            framed.append(chunk)
        assert [len(c.lines) for c in framed] == [100] * 10
        held = f.flush_partial(later)
        assert held is not None and held.lines == ["partial"]
    finally:
        f.close()


async def test_a_read_under_way_when_the_file_is_truncated_is_dropped(tmp_path: Path) -> None:
    """A big read runs in a thread; if the file is truncated and restarted at zero meanwhile, the
    bytes it brings back are the old content's, not the new content's first bytes."""
    path = tmp_path / "f.log"
    old = b"".join(b"old %06d\n" % i for i in range(20_000))  # far more than a direct read
    path.write_bytes(old)
    fd = os.open(path, os.O_RDONLY)
    store = CheckpointStore(tmp_path / "cp")
    entry = Entry("k", Fingerprint.of(old[:1024]), 0, str(path))
    f = Follower(
        path=str(path),
        fd=fd,
        st=os.fstat(fd),
        fingerprint=entry.fingerprint,
        track=Track(store, entry),
        offset=0,
        labels={},
        options=Options(),
        counts=Counts(),
    )
    read_done, release = threading.Event(), threading.Event()

    class HeldBack(ThreadPoolExecutor):
        """Runs the read at once, hands its result back only when released."""

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            def run() -> Any:
                result = fn(*args, **kwargs)
                read_done.set()
                release.wait(10)
                return result

            return super().submit(run)

    loop = asyncio.get_running_loop()
    loop.set_default_executor(HeldBack(max_workers=1))
    waiter = ThreadPoolExecutor(max_workers=1)  # not the default one: that one is held back
    try:
        reading = asyncio.ensure_future(f.fill())
        assert await loop.run_in_executor(waiter, read_done.wait, 10)
        new = b"".join(b"new %06d\n" % i for i in range(10))
        with open(path, "r+b") as w:  # what copytruncate does to the original, then the app writes
            w.truncate(0)
            w.write(new)
        new_entry = Entry("k", Fingerprint.of(new), 0, str(path))
        f.restart_at_zero(Track(store, new_entry), new_entry.fingerprint)
        release.set()
        await reading
        while await f.fill():
            pass
        chunk = f.frame(1000, 1_000_000)
        assert chunk is not None and chunk.lines == [f"new {i:06d}" for i in range(10)] and chunk.end == len(new)
    finally:
        release.set()
        waiter.shutdown()
        f.close()


@given(st.lists(st.integers(0, 300), min_size=1, max_size=200), st.data())
def test_nth_newline_finds_exactly_the_nth(lengths: list[int], data: st.DataObject) -> None:
    buf = b"".join(b"x" * n + b"\n" for n in lengths)
    nth = data.draw(st.integers(1, len(lengths)))
    expected = [i for i, c in enumerate(buf) if c == 10][nth - 1]
    assert _nth_newline(buf, 0, len(buf), len(lengths), nth) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", 1714564800 * 10**9),
        ("2024-05-01T14:00:00.25+02:00", 1714564800 * 10**9 + 250_000_000),
        ("2024-05-01 12:00:00", 1714564800 * 10**9),  # no zone: UTC
        (1714564800, 1714564800 * 10**9),
        (1714564800.5, 1714564800 * 10**9 + 500_000_000),
        (1714564800123, 1714564800123 * 10**6),
        (1714564800123456, 1714564800123456 * 10**3),
        (1714564800123456789, 1714564800123456789),
        ("yesterday", None),
        (True, None),
    ],
)
def test_parse_time_ns(value: object, expected: int | None) -> None:
    assert parse_time_ns(value) == expected


def test_record_times_fall_back_to_the_read_time() -> None:
    stamps, bad = record_times([{"ts": 1714564800}, {}, {"ts": "garbage"}], "ts", 7)
    assert stamps == [1714564800 * 10**9, 7, 7] and bad == 1


@pytest.mark.parametrize(("soft", "handles"), [(64, 8), (100, 36), (1024, 768), (4096, 3072)])
def test_file_handles_default_to_the_soft_nofile_limit_less_a_reserve(soft: int, handles: int) -> None:
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert default_max_open_files() == handles
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))
