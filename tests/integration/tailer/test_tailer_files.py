"""Files coming and going: new files, polling mode, deleted files (read to the end, or dropped past the
limits), one watcher per process, a thousand files in nested directories, SIGTERM as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from sidecars.core.config import ConfigError, load, redacted
from sidecars.tailer.plugin import Tailer
from sidecars.tailer.settings import TailerSettings
from sidecars.tailer.sinks.http_ndjson import HttpNdjsonSettings
from sidecars.testing import ConformanceSuite, http_get, start_process
from tests.integration.tailer.conftest import (
    FAST,
    TailerFactory,
    assert_exactly,
    deleted_fds,
    numbered,
    wait_sample,
    write_lines,
)
from tests.integration.tailer.ndjson_receiver import NdjsonReceiver

_CONFORMANCE_DIR = tempfile.mkdtemp(prefix="tailer-conformance-")


class TestTailerConformance(ConformanceSuite):
    plugin = Tailer
    command = [sys.executable, "-m", "sidecars.tailer"]
    settings = {
        "include": [f"{_CONFORMANCE_DIR}/logs/*.log"],
        "checkpoint_dir": f"{_CONFORMANCE_DIR}/checkpoints",
        "sink": "stdout",
    }


@pytest.mark.parametrize("mode", ["inotify", "poll"])
async def test_new_files_and_directories_are_picked_up(
    tailer: TailerFactory, receiver: NdjsonReceiver, tmp_path: Path, mode: str
) -> None:
    root = tmp_path / "deep"
    async with tailer(include=[f"{root}/**/*.log"], watch_mode=mode):  # the base directory is missing at start
        root.mkdir()
        write_lines(root / "a.log", ["a1"])
        await receiver.wait_for(1)
        (root / "x" / "y").mkdir(parents=True)
        write_lines(root / "x" / "y" / "b.log", ["b1", "b2"])
        write_lines(root / "x" / "y" / "b.log.1", ["not matched"])
        write_lines(root / "a.log", ["a2"])
        await receiver.wait_for(4)
        await asyncio.sleep(0.6)
    assert sorted(receiver.messages) == ["a1", "a2", "b1", "b2"]


async def test_file_deleted_while_being_read_is_read_to_its_end_then_closed(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    app = logs / "app.log"
    lines = [f"{m} {'d' * 100}" for m in numbered("d", 0, 20000)]
    write_lines(app, lines)
    async with tailer(max_buffer_bytes=256 * 1024) as sc:
        await wait_sample(sc, "tailer_lines_read_total", None, 1)
        app.unlink()
        await receiver.wait_for(20000)
        await wait_sample(sc, "tailer_rotations_total", {"kind": "deleted"}, 1)
        for _ in range(100):
            if not deleted_fds(logs):
                break
            await asyncio.sleep(0.05)
        assert not deleted_fds(logs), "a deleted file is still held open"
    assert_exactly(receiver, lines)


async def test_deleted_unread_file_is_dropped_past_its_limit_while_the_sink_is_down(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    app = logs / "app.log"
    write_lines(app, [f"{m} {'d' * 200}" for m in numbered("d", 0, 5000)])
    receiver.fail_status = 503
    async with tailer(max_buffer_bytes=64 * 1024, deleted_max_secs=0.5) as sc:
        await wait_sample(sc, "tailer_retries_total", None, 1)
        app.unlink()
        await wait_sample(sc, "tailer_dropped_bytes_total", {"reason": "deleted_file"}, 100_000)
        assert sc.events("deleted file closed before it was read to its end: its rest is lost")
        assert not deleted_fds(logs), "the deleted file still pins its disk space"


async def test_one_watcher_a_thousand_files_in_nested_directories_bounded_fds_and_cpu(
    receiver: NdjsonReceiver, tmp_path: Path
) -> None:
    root = tmp_path / "pods"
    files = []
    for i in range(1000):
        d = root / f"ns{i % 10}" / f"pod{i % 100}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"c{i}.log"
        write_lines(f, [f"f{i} {n}" for n in range(5)])
        files.append(f)
    settings: dict[str, Any] = {
        **FAST,
        "include": [f"{root}/**/*.log"],
        "checkpoint_dir": str(tmp_path / "cp"),
        "sink": "http",
        "sink_config": {"url": receiver.url},
        "poll_interval_secs": 1.0,
        "close_inactive_secs": 2.0,
        "batch_wait_secs": 0.2,
    }
    async with start_process("tailer", settings, command=[sys.executable, "-m", "sidecars.tailer"]) as p:
        await p.wait_http("/readyz", timeout_secs=60)
        await receiver.wait_for(5000, timeout_secs=60)
        pid = p.proc.pid
        fds = os.listdir(f"/proc/{pid}/fd")
        links = []
        for fd in fds:
            with contextlib.suppress(FileNotFoundError):  # closed meanwhile (close_inactive_secs)
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        assert sum("inotify" in x for x in links) == 1, "one watcher per process"
        assert len(fds) <= 1000 + 60
        rss_kib = int(next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
                      .split()[1])  # fmt: skip
        assert rss_kib < 200 * 1024, "memory grows with the number of files"
        for i in range(0, 1000, 10):  # a tenth of them grow
            write_lines(files[i], [f"f{i} more"])
        await receiver.wait_for(5100, timeout_secs=30)
        # Idle: files closed after close_inactive_secs, CPU spent only on cheap polls.
        for _ in range(200):
            if len(os.listdir(f"/proc/{pid}/fd")) < 60:
                break
            await asyncio.sleep(0.1)
        assert len(os.listdir(f"/proc/{pid}/fd")) < 60
        cpu0 = _cpu_secs(pid)
        await asyncio.sleep(3.0)
        assert _cpu_secs(pid) - cpu0 < 0.5 * 3.0, "idle CPU with 1000 known files"
        write_lines(files[500], ["after idle"])  # a closed file that changes is reopened
        await receiver.wait_for(5101, timeout_secs=30)
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait_exit(20) == 0
    assert len(set(receiver.messages)) == 5101 == len(receiver.messages)


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_sigterm_reads_to_the_end_delivers_persists_and_exits_0(receiver: NdjsonReceiver, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    lines = numbered("t", 0, 50000)
    settings: dict[str, Any] = {
        **FAST,
        "include": [f"{logs}/*.log"],
        "checkpoint_dir": str(tmp_path / "cp"),
        "sink": "http",
        "sink_config": {"url": receiver.url},
        "batch_wait_secs": 5.0,  # only the drain sends the last batch this early
    }
    async with start_process("tailer", settings, command=[sys.executable, "-m", "sidecars.tailer"]) as p:
        await p.wait_http("/readyz")
        write_lines(app, lines)
        p.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert await p.wait_exit(20) == 0
        assert time.monotonic() - started < FAST["shutdown_timeout_secs"]
    assert_exactly(receiver, lines)
    doc = orjson.loads((tmp_path / "cp" / "checkpoints.json").read_bytes())
    assert [e["offset"] for e in doc["files"].values()] == [app.stat().st_size]


def test_config_errors_name_the_sink_field() -> None:
    with pytest.raises(ValueError, match=r"sink_config\.url"):
        TailerSettings(sink="http", sink_config={"url": "ftp://nowhere"})
    with pytest.raises(ValidationError) as missing:
        TailerSettings(sink="http", sink_config={})
    assert [(e["loc"], e["msg"]) for e in missing.value.errors()] == [(("sink_config", "url"), "Field required")]
    with pytest.raises(ValueError, match="unknown sink 'kafka'"):
        TailerSettings(sink="kafka")
    with pytest.raises(ValueError, match="must be an absolute path"):
        TailerSettings(include=["logs/*.log"])
    with pytest.raises(ValueError, match="multiline_start_pattern"):
        TailerSettings(multiline="pattern")


def test_sink_config_errors_give_the_line_of_the_key_inside_sink_config(tmp_path: Path) -> None:
    path = tmp_path / "tailer.yaml"
    path.write_text(
        "include:\n"
        "  - /var/log/app/*.log\n"
        "sink: http\n"
        "batch_wait_secs: -1\n"
        "sink_config:\n"
        "  url: http://127.0.0.1:9/ingest\n"
        "  timeout_secs: 0\n"
        "  bearer_tokn: tk-secret-1\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(TailerSettings, config_file=path, environ={})
    problems = sorted(str(p) for p in caught.value.problems)
    assert problems == [
        f"{path}:4 batch_wait_secs: Input should be greater than or equal to 0 (got -1)",  # reported with the others
        f"{path}:7 sink_config.timeout_secs: Input should be greater than 0",
        f"{path}:8 sink_config.bearer_tokn: unknown key 'bearer_tokn' (did you mean 'bearer_token'?)",
    ]
    assert "tk-secret-1" not in caught.value.render()


def test_sink_config_is_validated_once_with_the_settings() -> None:
    settings = TailerSettings(sink="http", sink_config={"url": "http://127.0.0.1:9/ingest", "timeout_secs": "2.5"})
    sink = settings.sink_settings()
    assert sink is settings.sink_settings()  # kept, not validated again
    assert isinstance(sink, HttpNdjsonSettings) and sink.timeout_secs == 2.5
    assert settings.sink_config == {"url": "http://127.0.0.1:9/ingest", "timeout_secs": "2.5"}  # as given
    assert redacted(settings)["sink_config"] == {"url": "http://127.0.0.1:9/ingest", "timeout_secs": "2.5"}


async def test_without_inotify_it_falls_back_to_polling(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watchfiles

    def no_inotify(*_: object, **__: object) -> object:
        # What the kernel answers once fs.inotify.max_user_instances (per user, node-wide) is spent.
        raise OSError(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(watchfiles, "awatch", no_inotify)
    write_lines(logs / "app.log", ["before"])
    async with tailer() as sc:
        await receiver.wait_for(1)
        write_lines(logs / "app.log", ["grown"])
        write_lines(logs / "later.log", ["new file"])
        await receiver.wait_for(3)
        assert sc.events("change notification unavailable: polling only")
        assert sc.sample("sidecar_errors_total", {"type": "watch"}) == 1
    assert sorted(receiver.messages) == ["before", "grown", "new file"]


async def test_admin_files_page_shows_each_file_and_its_lag(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    app = logs / "app.log"
    write_lines(app, numbered("l", 0, 100))
    receiver.fail_status = 503
    async with tailer() as sc:
        await wait_sample(sc, "tailer_retries_total", None, 1)
        status, body = await http_get(sc.admin_url + "/files")
        assert status == 200
        (entry,) = orjson.loads(body)["files"]
        size = app.stat().st_size
        assert entry["path"] == str(app) and entry["state"] == "live"
        assert entry["read_offset"] == size and entry["acknowledged_offset"] == 0
        assert entry["bytes_behind"] == size
        receiver.fail_status = None
        await receiver.wait_for(100)


async def test_more_files_than_the_open_file_limit_are_read_in_turn_and_none_lost(
    receiver: NdjsonReceiver, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    files = [logs / f"f{i:03d}.log" for i in range(200)]
    expected = []
    for i, f in enumerate(files):
        lines = [f"f{i} {n}" for n in range(50)]
        write_lines(f, lines)
        expected += lines
    settings: dict[str, Any] = {
        **FAST,
        "include": [f"{logs}/*.log"],
        "checkpoint_dir": str(tmp_path / "cp"),
        "sink": "http",
        "sink_config": {"url": receiver.url},
        "rotate_wait_secs": 0.2,
    }
    # 64 descriptors for everything: the files alone are three times that.
    command = ["prlimit", "--nofile=64:64", sys.executable, "-m", "sidecars.tailer"]
    async with start_process("tailer", settings, command=command) as p:
        await p.wait_http("/readyz")
        status, body = await http_get(p.admin_url + "/readyz?verbose")
        assert status == 200 and "[+]files warn: " in body and "wait for a file handle" in body, body
        await receiver.wait_for(len(expected), timeout_secs=60)
        # Then every file grows again, and a tenth are renamed away and recreated meanwhile: those
        # whose handle was closed in between are found again by inode, their last lines included.
        for i, f in enumerate(files):
            more = [f"f{i} more {n}" for n in range(5)]
            write_lines(f, more)
            expected += more
            if i % 10 == 0:
                os.rename(f, f.with_name(f.name + ".1"))
                fresh = [f"f{i} fresh {n}" for n in range(3)]
                write_lines(f, fresh)
                expected += fresh
        await receiver.wait_for(len(expected), timeout_secs=60)
        _, metrics = await http_get(p.admin_url + "/metrics")
        assert 'sidecar_errors_total{type="open"}' not in metrics, "an open failed at the limit"
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait_exit(20) == 0
        out = p.read_output()
        # Found again by inode (at once, or once a handle was free), not by luck.
        assert "reading on a file renamed while its handle was closed" in out or "now that a handle is free" in out
    assert_exactly(receiver, expected)


async def test_files_renamed_away_while_waiting_for_their_first_handle_lose_nothing(
    receiver: NdjsonReceiver, tmp_path: Path
) -> None:
    """With the sink down no handle is freed (nothing is acknowledged), so most files wait for their
    very first handle; each is then rotated (rename+create). The old contents, under names the include
    glob does not match, are still read once handles free up, from their start."""
    logs = tmp_path / "logs"
    logs.mkdir()
    files = [logs / f"w{i:02d}.log" for i in range(40)]
    expected: list[str] = []
    for i, f in enumerate(files):
        lines = numbered(f"w{i} old", 0, 20)
        write_lines(f, lines)
        expected += lines
    settings: dict[str, Any] = {
        **FAST,
        "include": [f"{logs}/*.log"],
        "checkpoint_dir": str(tmp_path / "cp"),
        "sink": "http",
        "sink_config": {"url": receiver.url},
    }
    receiver.fail_status = 503
    # The soft limit of 64 leaves 8 handles for files (the rest is the reserve): 32 files wait.
    command = ["prlimit", "--nofile=64:64", sys.executable, "-m", "sidecars.tailer"]
    async with start_process("tailer", settings, command=command) as p:
        await p.wait_http("/readyz")
        for _ in range(400):
            _, metrics = await http_get(p.admin_url + "/metrics")
            if "\ntailer_files_waiting 32.0" in metrics:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("32 files never waited for a handle")
        for i, f in enumerate(files):
            os.rename(f, f.with_name(f.name + ".1"))
            fresh = numbered(f"w{i} new", 0, 5)
            write_lines(f, fresh)
            expected += fresh
        receiver.fail_status = None
        await receiver.wait_for(len(expected), timeout_secs=60)
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait_exit(20) == 0
    assert_exactly(receiver, expected)
