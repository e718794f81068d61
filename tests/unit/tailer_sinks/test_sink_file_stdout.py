"""The file and stdout sinks: exact bytes on disk and on the standard streams."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path

import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry

from sidecars.tailer.sinks import Batch, RetryableError, Stream, load_sink

File = load_sink("file")
Stdout = load_sink("stdout")


def batch(path: str, lines: list[str], t0: int = 1_700_000_000_000_000_000) -> Batch:
    stamps = list(range(t0, t0 + len(lines)))
    return Batch([Stream(path, {"pod": "web-0", "path": path}, lines, stamps)])


def make_file_sink(**config: object):  # type: ignore[no-untyped-def]
    return File(File.Settings(**config), structlog.get_logger(), CollectorRegistry())


async def test_file_appends_exact_ndjson(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "dir" / "out.ndjson"
    sink = make_file_sink(path=out)
    await sink.open()
    await sink.send(batch("/l/a.log", ['first "line"', "ünï\ttab"]))
    await sink.send(batch("/l/b.log", ["", "last"], t0=1_700_000_001_000_000_000))
    await sink.close()
    la, lb = b'"labels":{"pod":"web-0","path":"/l/a.log"}}\n', b'"labels":{"pod":"web-0","path":"/l/b.log"}}\n'
    expected = (
        b'{"timestamp":"2023-11-14T22:13:20.000000000Z","message":"first \\"line\\"",' + la
        + b'{"timestamp":"2023-11-14T22:13:20.000000001Z","message":"\xc3\xbcn\xc3\xaf\\ttab",' + la
        + b'{"timestamp":"2023-11-14T22:13:21.000000000Z","message":"",' + lb
        + b'{"timestamp":"2023-11-14T22:13:21.000000001Z","message":"last",' + lb
    )  # fmt: skip
    assert out.read_bytes() == expected
    # Reopening appends, never truncates.
    sink = make_file_sink(path=out, format="raw")
    await sink.open()
    await sink.send(batch("/l/a.log", ["raw one", "raw two"]))
    await sink.close()
    assert out.read_bytes() == expected + b"raw one\nraw two\n"


async def test_file_rotates_by_size_and_keeps_n(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    sink = make_file_sink(path=out, format="raw", rotate_max_bytes=25, rotate_keep_files=2)
    await sink.open()
    for i in range(6):
        await sink.send(batch("/l/a.log", [f"batch-{i}-a", f"batch-{i}-b"]))  # 22 bytes per batch
    await sink.close()
    assert out.read_text() == "batch-5-a\nbatch-5-b\n"
    assert (tmp_path / "out.log.1").read_text() == "batch-4-a\nbatch-4-b\n"
    assert (tmp_path / "out.log.2").read_text() == "batch-3-a\nbatch-3-b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log", "out.log.1", "out.log.2"]


async def test_file_write_error_is_retryable() -> None:
    # /dev/full answers every write with ENOSPC: the batch is not on disk, so it must be sent again.
    sink = make_file_sink(path=Path("/dev/full"), fsync=False)
    await sink.open()
    with pytest.raises(RetryableError, match="No space left"):
        await sink.send(batch("/l/a.log", ["x"]))
    await sink.close()


async def test_stdout_json_and_raw(capfd: pytest.CaptureFixture[str]) -> None:
    sink = Stdout(Stdout.Settings(), structlog.get_logger(), CollectorRegistry())
    await sink.send(batch("/l/a.log", ["hello", "wörld"]))
    out, _ = capfd.readouterr()
    docs = [orjson.loads(line) for line in out.splitlines()]
    assert [d["message"] for d in docs] == ["hello", "wörld"]
    assert docs[0]["labels"] == {"pod": "web-0", "path": "/l/a.log"}
    raw = Stdout(Stdout.Settings(format="raw", stream="stderr"), structlog.get_logger(), CollectorRegistry())
    await raw.send(batch("/l/a.log", ["plain line", "second"]))
    out, err = capfd.readouterr()
    assert out == "" and err == "plain line\nsecond\n"


async def test_stdout_big_batch_never_interleaves_with_other_writers() -> None:
    # A pipe takes 64 KiB at a time: a 4 MB batch needs many writes, and the tailer's own log
    # writes to the same stdout meanwhile; no line of either may be cut by the other.
    r, w = os.pipe()
    saved = os.dup(1)
    chunks: list[bytes] = []
    stop = threading.Event()

    def drain() -> None:
        while data := os.read(r, 1 << 16):
            chunks.append(data)

    def other_writer() -> None:
        n = 0
        while not stop.is_set() and n < 100_000:
            os.write(1, b'{"event": "own log line %d"}\n' % n)
            n += 1

    lines = [f"{i:07d}" + "x" * 100 for i in range(40_000)]
    sink = Stdout(Stdout.Settings(format="raw"), structlog.get_logger(), CollectorRegistry())
    loop = asyncio.get_running_loop()
    try:
        os.dup2(w, 1)
        os.close(w)
        reader = loop.run_in_executor(None, drain)
        writer = threading.Thread(target=other_writer)
        writer.start()
        await sink.send(batch("/l/a.log", lines))
        stop.set()
        writer.join()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    await reader
    os.close(r)
    out = b"".join(chunks).decode().splitlines()
    ours = [x for x in out if not x.startswith('{"event"')]
    theirs = [x for x in out if x.startswith('{"event"')]
    assert ours == lines
    assert theirs and all(re.fullmatch(r'\{"event": "own log line \d+"\}', x) for x in theirs)
