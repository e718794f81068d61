"""Checkpoints move only after the sink acknowledged; restarts resume there; identity is not fooled by
a reused inode; sink outages pause reading; permanent errors follow the counted policy."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

from sidecars.testing import RunningSidecar, http_get
from tests.integration.tailer.conftest import TailerFactory, assert_exactly, numbered, wait_sample, write_lines
from tests.integration.tailer.ndjson_receiver import NdjsonReceiver


def checkpoints(tmp_path: Path) -> dict[str, dict[str, object]]:
    doc = orjson.loads((tmp_path / "checkpoints" / "checkpoints.json").read_bytes())
    files: dict[str, dict[str, object]] = doc["files"]
    return files


def offset_of(tmp_path: Path, path: Path) -> int | None:
    st = path.stat()
    entry = checkpoints(tmp_path).get(f"{st.st_dev}:{st.st_ino}")
    return None if entry is None else int(entry["offset"])  # type: ignore[call-overload]


async def test_offsets_move_only_after_the_sink_acknowledged(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    app = logs / "app.log"
    lines = numbered("line", 0, 200)
    write_lines(app, lines)
    receiver.fail_status = 503
    async with tailer(shutdown_timeout_secs=1.5) as sc:
        await wait_sample(sc, "tailer_lines_read_total", None, 200)
        await wait_sample(sc, "tailer_retries_total", None, 3)
        await asyncio.sleep(0.3)  # several checkpoint intervals
        assert offset_of(tmp_path, app) == 0  # read, not delivered: the checkpoint has not moved
    assert offset_of(tmp_path, app) == 0  # nor at a shutdown that could not deliver
    receiver.fail_status = None
    async with tailer():
        await receiver.wait_for(200)
        for _ in range(100):
            if offset_of(tmp_path, app) == app.stat().st_size:
                break
            await asyncio.sleep(0.05)
        assert offset_of(tmp_path, app) == app.stat().st_size
    assert_exactly(receiver, lines)


async def test_reused_inode_is_read_from_the_start(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    app = logs / "app.log"
    write_lines(app, numbered("old", 0, 50))
    async with tailer():
        await receiver.wait_for(50)
    old_key = f"{app.stat().st_dev}:{app.stat().st_ino}"
    app.unlink()
    write_lines(app, numbered("new", 0, 30))
    st = app.stat()
    new_key = f"{st.st_dev}:{st.st_ino}"
    if new_key != old_key:
        # The filesystem gave another inode; make the checkpoint claim this one, as reuse would.
        path = tmp_path / "checkpoints" / "checkpoints.json"
        doc = orjson.loads(path.read_bytes())
        doc["files"][new_key] = doc["files"].pop(old_key)
        path.write_bytes(orjson.dumps(doc))
    async with tailer():
        await receiver.wait_for(80)
        await asyncio.sleep(0.3)
    assert_exactly(receiver, numbered("old", 0, 50) + numbered("new", 0, 30))


async def test_file_renamed_while_stopped_is_finished_after_restart(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    app = logs / "app.log"
    first = numbered("first", 0, 100)
    write_lines(app, first)
    async with tailer():
        await receiver.wait_for(100)
    more = numbered("more", 0, 100)
    write_lines(app, more)  # written after the stop, then rotated away before the next start
    os.rename(app, logs / "app.log.1")
    fresh = numbered("fresh", 0, 10)
    write_lines(app, fresh)
    async with tailer():
        await receiver.wait_for(210)
        await asyncio.sleep(0.3)
    assert_exactly(receiver, first + more + fresh)


async def test_sink_outage_pauses_reading_and_memory_stays_bounded(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    app = logs / "app.log"
    lines = [f"{m} {'y' * 200}" for m in numbered("l", 0, 5000)]  # ~1.1 MB
    write_lines(app, lines)
    receiver.fail_status = 503
    async with tailer(max_buffer_bytes=128 * 1024, batch_max_bytes=32 * 1024) as sc:
        await wait_sample(sc, "tailer_retries_total", None, 5)
        await asyncio.sleep(0.5)
        read = sc.sample("tailer_bytes_read_total") or 0
        # Reading stopped near the buffer bound: the file, not memory, holds the rest.
        assert read < 128 * 1024 + 2 * 256 * 1024
        assert (sc.sample("tailer_bytes_behind") or 0) >= app.stat().st_size - read
        receiver.fail_status = None
        await receiver.wait_for(5000)
    assert_exactly(receiver, lines)


async def test_readiness_fails_while_the_sink_keeps_failing(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    write_lines(logs / "app.log", ["one"])
    receiver.fail_status = 503
    async with tailer(unhealthy_after_secs=0.3) as sc:
        for _ in range(100):
            status, body = await http_get(sc.admin_url + "/readyz?verbose")
            if status == 503:
                break
            await asyncio.sleep(0.05)
        assert status == 503 and "[-]sink" in body, body
        status, _ = await http_get(sc.admin_url + "/livez")
        assert status == 200  # liveness never depends on the sink
        receiver.fail_status = None
        await receiver.wait_for(1)
        status, body = await http_get(sc.admin_url + "/readyz?verbose")
        assert status == 200, body


async def test_permanent_error_goes_to_the_dead_letter_file_and_is_counted(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    app = logs / "app.log"
    write_lines(app, numbered("refused", 0, 10))
    receiver.fail_status = 400
    async with tailer() as sc:
        await wait_sample(sc, "tailer_dead_lettered_records_total", None, 10)
        receiver.fail_status = None
        write_lines(app, numbered("taken", 0, 5))
        await receiver.wait_for(5)
        assert sc.events("sink refused a batch for good: dead-lettered")
    dead = b"".join(p.read_bytes() for p in (tmp_path / "checkpoints" / "dead-letter").glob("*.ndjson"))
    assert [orjson.loads(x)["line"] for x in dead.splitlines()] == numbered("refused", 0, 10)
    assert receiver.messages == numbered("taken", 0, 5)


async def test_dead_letter_files_stop_at_their_cap_and_the_rest_is_counted_dropped(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    # A receiver that refuses everything: the dead-letter files must not fill the volume.
    cap = 8 * 1024
    total = 400
    write_lines(logs / "app.log", numbered("refused", 0, total))
    receiver.fail_status = 400
    async with tailer(dead_letter_max_bytes=cap, batch_max_lines=20) as sc:
        await wait_until_accounted(sc, total)
        dead_lettered = sc.sample("tailer_dead_lettered_records_total") or 0
        dropped = sc.sample("tailer_dropped_records_total", {"reason": "dead_letter_full"}) or 0
        assert sc.sample("sidecar_events_dropped_total", {"reason": "dead_letter_full"}) == dropped
        assert sc.events("sink refused a batch, dead-letter full: dropped")
    files = list((tmp_path / "checkpoints" / "dead-letter").glob("*.ndjson"))
    written = sum(f.stat().st_size for f in files)
    assert 0 < written <= cap
    assert dead_lettered + dropped == total and dropped > 0
    lines = b"".join(f.read_bytes() for f in files).splitlines()
    assert len(lines) == dead_lettered  # whole batches only: nothing half-written at the cap


async def wait_until_accounted(sc: RunningSidecar, total: int) -> None:
    for _ in range(600):
        dead = sc.sample("tailer_dead_lettered_records_total") or 0
        dropped = sc.sample("tailer_dropped_records_total", {"reason": "dead_letter_full"}) or 0
        if dead + dropped >= total:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not every record was dead-lettered or dropped: {dead} + {dropped} of {total}")


def test_the_default_dead_letter_cap_fits_the_state_volume_the_injector_gives() -> None:
    from sidecars.injector.catalog import TAILER
    from sidecars.tailer.settings import TailerSettings

    assert TAILER.state is not None and TAILER.state.size.endswith("Mi")
    volume = int(TAILER.state.size.removesuffix("Mi")) * 2**20
    settings = TailerSettings()
    assert settings.dead_letter_dir is None  # so it defaults into <checkpoint_dir>/dead-letter, on that volume
    assert settings.checkpoint_dir == Path(TAILER.state.path)
    assert settings.dead_letter_max_bytes <= volume // 2  # room left for the checkpoints and their rewrites


async def test_permanent_error_with_drop_policy_is_counted(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    write_lines(logs / "app.log", numbered("refused", 0, 7))
    receiver.fail_status = 422
    async with tailer(on_permanent_error="drop") as sc:
        await wait_sample(sc, "tailer_dropped_records_total", {"reason": "permanent"}, 7)
        assert sc.sample("sidecar_events_dropped_total", {"reason": "permanent"}) == 7


async def test_many_dropped_batches_are_counted_each_and_logged_once(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    write_lines(logs / "app.log", numbered("refused", 0, 200))
    receiver.fail_status = 422
    async with tailer(on_permanent_error="drop", batch_max_lines=10) as sc:
        await wait_sample(sc, "tailer_dropped_records_total", {"reason": "permanent"}, 200)
        assert sc.sample("sidecar_events_dropped_total", {"reason": "permanent"}) == 200
    (line,) = sc.events("sink refused a batch for good: dropped")  # not one per batch: one a minute
    assert line["reason"] == "permanent" and line["cause"] == "http_422" and line["log_level"] == "error"


async def test_retryable_errors_are_retried_until_delivered(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    write_lines(logs / "app.log", numbered("l", 0, 50))
    receiver.fail_status = 429
    receiver.retry_after = "0"
    async with tailer() as sc:
        await wait_sample(sc, "tailer_retries_total", None, 3)
        await receiver.down()  # then connections refused for a while
        await asyncio.sleep(0.3)
        receiver.fail_status = None
        await receiver.up()
        await receiver.wait_for(50)
    assert_exactly(receiver, numbered("l", 0, 50))


async def test_start_at_end_applies_only_to_files_found_on_the_very_first_start(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    write_lines(logs / "old.log", numbered("history", 0, 20))
    async with tailer(start_at="end"):
        write_lines(logs / "old.log", numbered("live", 0, 3))
        write_lines(logs / "new.log", numbered("new", 0, 2))  # appeared later: read from its start
        await receiver.wait_for(5)
    write_lines(logs / "old.log", numbered("while-down", 0, 4))  # not the first start any more
    async with tailer(start_at="end"):
        await receiver.wait_for(9)
        await asyncio.sleep(0.3)
    assert sorted(receiver.messages) == sorted(
        numbered("live", 0, 3) + numbered("new", 0, 2) + numbered("while-down", 0, 4)
    )


async def test_checkpoints_are_written_per_interval_not_per_batch(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path
) -> None:
    write_lines(logs / "app.log", numbered("l", 0, 20000))
    async with tailer(batch_max_lines=100, checkpoint_interval_secs=1.0) as sc:
        await receiver.wait_for(20000)
        batches = receiver.requests
        writes = sc.sample("tailer_checkpoint_writes_total") or 0
    assert batches >= 200
    assert 1 <= writes < batches / 4, f"{writes} checkpoint writes for {batches} batches"


async def test_concurrent_sends_acknowledged_out_of_order_commit_only_the_acked_prefix(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    """At no moment does the checkpoint on disk pass a line the receiver has not acknowledged."""
    app = logs / "app.log"
    lines = numbered("c", 0, 20000)
    size = len(lines[0]) + 1
    write_lines(app, lines)
    key = f"{app.stat().st_dev}:{app.stat().st_ino}"
    receiver.jitter_secs = 0.08  # concurrent sends answered out of order
    receiver.fail_every = 3  # and a third of the requests fail: their batches are sent again later
    violations: list[str] = []
    offsets: list[int] = []

    async def sample() -> None:
        path = tmp_path / "checkpoints" / "checkpoints.json"
        while True:
            try:
                entry = orjson.loads(path.read_bytes())["files"].get(key)
            except (OSError, orjson.JSONDecodeError):
                entry = None
            # Read after the checkpoint: the receiver records a line before answering, so every line
            # the tailer could have committed by then is in this set.
            acked = set(receiver.messages)
            if entry is not None:
                offset = int(entry["offset"])
                offsets.append(offset)
                unacked = [m for m in lines[: offset // size] if m not in acked]
                if unacked:
                    violations.append(f"checkpoint at {offset} passes {len(unacked)} unacked lines: {unacked[:2]}")
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        # Checkpoints often, so that many of them fall while batches are still out of order.
        async with tailer(
            batch_max_lines=100, send_concurrency=4, max_in_flight_batches=8, checkpoint_interval_secs=0.1
        ):
            await receiver.wait_for(20000)
            for _ in range(100):
                if offset_of(tmp_path, app) == app.stat().st_size:
                    break
                await asyncio.sleep(0.05)
    finally:
        sampler.cancel()
    assert not violations, violations[:3]
    moments = {o for o in offsets if 0 < o < app.stat().st_size}
    assert len(moments) >= 2, f"too few checkpoints observed in between to say anything: {sorted(moments)}"
    assert receiver.requests >= 2 * receiver.fail_every  # some batches failed and were sent again
    assert_exactly(receiver, lines)
    assert offset_of(tmp_path, app) == app.stat().st_size


async def test_two_rotations_while_stopped_lose_no_file(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    app = logs / "app.log"
    older = logs / "older.log.1"  # a rotated file of another app, from before: never read
    write_lines(older, ["ancient"])
    os.utime(older, (1_000_000_000, 1_000_000_000))
    write_lines(app, numbered("one", 0, 50))
    async with tailer():
        await receiver.wait_for(50)
    write_lines(app, numbered("one-late", 0, 5))  # the first file got more after the stop
    os.rename(app, logs / "app.log.1")
    write_lines(app, numbered("two", 0, 20))  # a file created and rotated while stopped
    os.rename(logs / "app.log.1", logs / "app.log.2")
    os.rename(app, logs / "app.log.1")
    write_lines(app, numbered("three", 0, 10))
    async with tailer() as sc:
        await receiver.wait_for(85)
        await asyncio.sleep(0.5)
        assert len(sc.events("reading a file rotated while stopped")) == 2
    assert_exactly(
        receiver,
        numbered("one", 0, 50) + numbered("one-late", 0, 5) + numbered("two", 0, 20) + numbered("three", 0, 10),
    )


async def test_corrupt_checkpoint_file_is_set_aside_and_files_are_sent_again(
    tailer: TailerFactory, receiver: NdjsonReceiver, logs: Path, tmp_path: Path
) -> None:
    write_lines(logs / "app.log", numbered("l", 0, 10))
    async with tailer():
        await receiver.wait_for(10)
    (tmp_path / "checkpoints" / "checkpoints.json").write_bytes(b'{"version": 1, "fil')  # torn by a bad disk
    async with tailer(start_at="end") as sc:  # even so, nothing is skipped
        await receiver.wait_for(20)
        assert any("unreadable" in str(e["event"]) and e.get("log_level") == "error" for e in sc.logs)
    assert sorted(receiver.messages) == sorted(numbered("l", 0, 10) * 2)
    assert list((tmp_path / "checkpoints").glob("checkpoints.corrupt-*"))
