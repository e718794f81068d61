"""Records: huge lines, invalid UTF-8 and binary garbage, multi-line stack traces, JSON lines, labels,
a partial last line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.tailer.conftest import TailerFactory, wait_sample, write_lines
from tests.integration.tailer.ndjson_receiver import NdjsonReceiver


async def test_a_10_mb_line_is_truncated_and_counted_without_stalling_the_file(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    app = logs / "app.log"
    with open(app, "wb") as f:
        f.write(b"before\n" + b"z" * (10 * 1024 * 1024) + b"\nafter\n")
    async with tailer(max_line_bytes=64 * 1024) as sc:
        await receiver.wait_for(3)
        await wait_sample(sc, "tailer_records_altered_total", {"reason": "truncated"}, 1)
        skipped = sc.sample("tailer_dropped_bytes_total", {"reason": "overlong_line"})
        assert skipped == 10 * 1024 * 1024 - 64 * 1024
        assert sc.events("over-long lines truncated")
        write_lines(app, ["later"])
        await receiver.wait_for(4)
    msgs = receiver.messages
    assert msgs[0] == "before" and msgs[2:] == ["after", "later"]
    assert msgs[1] == "z" * 64 * 1024


async def test_invalid_utf8_and_binary_garbage_survive_and_are_counted(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    app = logs / "app.log"
    with open(app, "wb") as f:
        f.write(b"ok 1\nbad \xff\xfe here\n\x00\x01\x02\x80\x81binary\nok 2\n")
    async with tailer() as sc:
        await receiver.wait_for(4)
        await wait_sample(sc, "tailer_records_altered_total", {"reason": "invalid_utf8"}, 2)
        assert sc.events("invalid UTF-8 replaced")
    assert receiver.messages == ["ok 1", "bad \ufffd\ufffd here", "\x00\x01\x02\ufffd\ufffdbinary", "ok 2"]


JAVA = """2024-05-01 12:00:00 ERROR request failed
java.lang.IllegalStateException: boom
\tat com.acme.Service.call(Service.java:42)
\tat com.acme.Main.main(Main.java:7)
Caused by: java.io.IOException: disk
\tat com.acme.Disk.read(Disk.java:3)
\t... 2 more
2024-05-01 12:00:01 INFO next request""".splitlines()

PYTHON = """2024-05-01 12:00:00 ERROR handler crashed
Traceback (most recent call last):
  File "app.py", line 3, in <module>
    main()
ValueError: bad value
2024-05-01 12:00:01 INFO recovered""".splitlines()


@pytest.mark.parametrize(
    ("preset", "lines", "records"),
    [
        ("java", JAVA, ["\n".join(JAVA[:7]), JAVA[7]]),
        ("python", PYTHON, ["\n".join(PYTHON[:5]), PYTHON[5]]),
    ],
)
async def test_multiline_presets_group_stack_traces_and_flush_the_last_record(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, preset: str, lines: list[str], records: list[str]
) -> None:
    write_lines(logs / "app.log", lines)
    async with tailer(multiline=preset, multiline_flush_secs=0.3):
        await receiver.wait_for(len(records))  # the last record comes by the flush timeout
    assert receiver.messages == records


async def test_multiline_pattern_record_is_flushed_at_shutdown(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    write_lines(logs / "app.log", ["[1] start", "  more", "[2] second", "  tail of second"])
    async with tailer(multiline="pattern", multiline_start_pattern=r"\[\d+\]", multiline_flush_secs=60):
        await receiver.wait_for(1)
    assert receiver.messages == ["[1] start\n  more", "[2] second\n  tail of second"]


async def test_json_lines_are_parsed_and_labels_added(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAME", "web-7f9c")
    monkeypatch.setenv("POD_NAMESPACE", "shop")
    write_lines(logs / "app.log", ['{"level": "warn", "msg": "slow", "ms": 812}', "plain text", "{not json"])
    async with tailer(parse_json=True, labels={"team": "payments"}) as sc:
        await receiver.wait_for(3)
        await wait_sample(sc, "tailer_records_altered_total", {"reason": "json_invalid"}, 1)
    first, second, third = receiver.docs
    assert first["level"] == "warn" and first["ms"] == 812
    assert second["message"] == "plain text" and third["message"] == "{not json"
    assert first["labels"] == {
        "pod": "web-7f9c",
        "namespace": "shop",
        "team": "payments",
        "path": str(logs / "app.log"),
    }


async def test_partial_last_line_waits_for_its_newline_then_flushes_when_idle(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    app = logs / "app.log"
    with open(app, "w") as f:
        f.write("complete\nhalf a li")
    async with tailer(partial_line_flush_secs=30):
        await receiver.wait_for(1)
        with open(app, "a") as f:
            f.write("ne\n")  # completed before the idle timeout: one whole line
        await receiver.wait_for(2)
        with open(app, "a") as f:
            f.write("no newline ever")
        await asyncio.sleep(0.3)
        assert len(receiver.docs) == 2  # held, not sent half
    # At shutdown the held line is sent whole, once.
    assert receiver.messages == ["complete", "half a line", "no newline ever"]


async def test_json_timestamp_key_gives_records_their_own_time(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    write_lines(logs / "app.log", ['{"ts": "2024-05-01T12:00:00.5Z", "msg": "then"}', '{"msg": "now"}'])
    async with tailer(parse_json=True, json_timestamp_key="ts"):
        await receiver.wait_for(2)
    then, now = receiver.docs
    assert then["timestamp"] == "2024-05-01T12:00:00.500000000Z"
    assert now["timestamp"] > "2025"  # no field: the time it was read


async def test_overlong_line_inside_multiline_keeps_record_order(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    with open(logs / "app.log", "w") as f:
        f.write("[1] first\n  cont\n[2] " + "L" * 5000 + "\n[3] third\n")
    async with tailer(multiline="pattern", multiline_start_pattern=r"\[\d\]", max_line_bytes=1024):
        await receiver.wait_for(3)
    assert receiver.messages == ["[1] first\n  cont", "[2] " + "L" * 1020, "[3] third"]
