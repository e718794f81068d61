"""Soak: a rotation storm with the real logrotate (every 0.7 s, rename+create, copytruncate, or the two
in turn) under a writer of 5k lines/s for 20 s, the tailer as a real process killed with `kill -9`
twice (the second time for long enough that rotations happen while no tailer runs), and the sink
down for 4 s in the middle.

The oracle is line by line: every sequence number found in the log files at the end (the current
file and every rotated one; rotation keeps them all) must have reached the receiver. Lines that
copytruncate itself destroys (written between its copy and its truncate) are in no file and cannot
be asked for. Duplicates may only come from the crashes: per kill, what was read but not yet
checkpointed, which the settings bound (the in-flight batches plus a checkpoint interval of acks),
in either rotation style. A copy read again from its start would pass that bound several times over.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sidecars.testing import free_port, http_get
from tests.integration.tailer.ndjson_receiver import NdjsonReceiver

pytestmark = pytest.mark.soak

WRITER = r"""
import os, sys, time
path, seconds, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
pad = "p" * 70
seq, tick, per_tick = 0, 0.01, max(int(rate * 0.01), 1)
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
end = time.monotonic() + seconds
next_at = time.monotonic()
while time.monotonic() < end:
    lines = "".join(f"seq {n:09d} {pad}\n" for n in range(seq, seq + per_tick))
    os.write(fd, lines.encode())
    seq += per_tick
    try:  # rename+create: reopen the new file, as an app told by logrotate's postrotate would
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except FileNotFoundError:
        pass
    next_at += tick
    time.sleep(max(next_at - time.monotonic(), 0))
print(seq)
"""

SEQ = re.compile(r"seq (\d{9}) ")
RATE = 5000  # lines per second
WRITE_SECS = 20.0
ROTATE_SECS = 0.7
BATCH_LINES = 500
IN_FLIGHT = 2
CHECKPOINT_SECS = 0.1
# Read but not checkpointed at a kill: the batches queued, the one being sent and the one being
# filled, plus what was acknowledged since the last checkpoint write (two intervals at the write
# rate: the write itself takes a moment under load).
REPLAYED_PER_KILL = (IN_FLIGHT + 2) * BATCH_LINES + int(RATE * 2 * CHECKPOINT_SECS)


def start_tailer(config: Path, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "sidecars.tailer", "--config", str(config)], stdout=f, stderr=f)


async def wait_ready(admin: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(400):
        assert proc.poll() is None, "tailer exited during start-up"
        with contextlib.suppress(Exception):
            if (await http_get(admin + "/readyz", timeout_secs=1))[0] == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("tailer not ready")


async def kill9_and_restart(
    tailer: subprocess.Popen[bytes], config: Path, out: Path, admin: str, down_secs: float
) -> subprocess.Popen[bytes]:
    tailer.send_signal(signal.SIGKILL)
    tailer.wait()
    await asyncio.sleep(down_secs)
    tailer = start_tailer(config, out)
    await wait_ready(admin, tailer)
    return tailer


async def rotate_forever(app: Path, tmp: Path, stop: asyncio.Event, styles: list[str], rotated: asyncio.Event) -> int:
    """Rotate every ROTATE_SECS in the given styles (in turn), whether the tailer runs or not."""
    n = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ROTATE_SECS)
        if stop.is_set():
            break
        conf = tmp / f"rotate-{n}.conf"
        conf.write_text(f"{app} {{\n  rotate 1000\n  {styles[n % len(styles)]}\n  missingok\n  nocompress\n}}\n")
        proc = await asyncio.create_subprocess_exec(
            "logrotate", "-f", "-s", str(tmp / "logrotate.state"), str(conf),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode == 0, err
        n += 1
        rotated.set()
    return n


async def lines_written(writer: asyncio.subprocess.Process) -> int:
    """The writer's count, or why there is none: how it ended and what it said."""
    out, err = await writer.communicate()
    code = writer.returncode
    if code == 0 and out.strip().isdigit():
        return int(out)
    if code is not None and code < 0:  # nothing in this test signals the writer before this point
        how = f"killed by {signal.Signals(-code).name} from outside the test"
    else:
        how = f"exit status {code}"
    raise AssertionError(
        f"the writer failed ({how}): stdout {out[-200:]!r}, stderr {err.decode(errors='replace')[-2000:]!r}"
    )


def where(missing: list[int], logs: Path) -> str:
    """The lost lines as runs of sequence numbers, each with the file and byte offset it starts at."""
    runs: list[list[int]] = []
    for n in missing:
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    found: dict[int, str] = {}
    firsts = {first for first, _ in runs[:10]}
    for f in logs.iterdir():
        data = f.read_text()
        for m in SEQ.finditer(data):
            if int(m[1]) in firsts:
                found[int(m[1])] = f"{f.name}@{m.start()}"
    shown = ", ".join(f"{a}..{b} ({found.get(a, '?')})" for a, b in runs[:10])
    return f"{len(runs)} runs: {shown}{' ...' if len(runs) > 10 else ''}"


@pytest.mark.parametrize("style", ["create", "copytruncate", "both"])
async def test_soak_rotation_kill9_and_sink_outage_lose_nothing(tmp_path: Path, style: str) -> None:
    styles = ["create", "copytruncate"] if style == "both" else [style]
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.touch()
    receiver = NdjsonReceiver()
    await receiver.start()
    admin_port = free_port()
    config = tmp_path / "tailer.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "admin_host": "127.0.0.1",
                "admin_port": admin_port,
                "log_format": "json",
                "include": [f"{logs}/*.log"],
                "checkpoint_dir": str(tmp_path / "cp"),
                "sink": "http",
                "sink_config": {"url": receiver.url},
                "batch_max_lines": BATCH_LINES,
                "batch_wait_secs": 0.2,
                "max_in_flight_batches": IN_FLIGHT,
                "max_buffer_bytes": 8 * 1024 * 1024,  # the in-flight batches bound reading, not this
                "poll_interval_secs": 0.25,
                "rescan_interval_secs": 1.0,
                "rotate_wait_secs": 2.0,
                "checkpoint_interval_secs": CHECKPOINT_SECS,
                "retry_initial_secs": 0.1,
                "retry_max_secs": 1.0,
                "shutdown_timeout_secs": 15.0,
            }
        )
    )
    admin = f"http://127.0.0.1:{admin_port}"
    out = tmp_path / "tailer.out"
    tailer = start_tailer(config, out)
    writer: asyncio.subprocess.Process | None = None
    try:
        await wait_ready(admin, tailer)
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            str(app),
            str(WRITE_SECS),
            str(RATE),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stop_rotating = asyncio.Event()
        rotated = asyncio.Event()
        rotations = asyncio.ensure_future(rotate_forever(app, tmp_path, stop_rotating, styles, rotated))
        t0 = time.monotonic()

        async def at(secs: float) -> None:
            await asyncio.sleep(max(t0 + secs - time.monotonic(), 0))

        async def just_rotated() -> None:
            """Right after a rotation: its copy is younger than the last checkpoint write, the hard case."""
            rotated.clear()
            await rotated.wait()

        kills = 0
        await at(4)
        await just_rotated()
        tailer = await kill9_and_restart(tailer, config, out, admin, 0.5)  # no drain, no last checkpoint
        kills += 1
        await at(7)
        await receiver.down()  # the log store goes away
        await at(11)
        await receiver.up()
        await at(15)
        await just_rotated()
        # Down for longer than the rotation period: rotations happen while no tailer runs.
        tailer = await kill9_and_restart(tailer, config, out, admin, 2.5)
        kills += 1
        written = await lines_written(writer)
        stop_rotating.set()
        n_rotations = await rotations
        assert n_rotations >= WRITE_SECS / ROTATE_SECS / 2

        # The oracle: every line present in any file now.
        in_files: set[int] = set()
        for f in logs.iterdir():
            in_files.update(int(m) for m in SEQ.findall(f.read_text()))
        # copytruncate itself loses what is written between its copy and its truncation (more on a busy
        # machine); this only checks the run still holds most of what was written.
        assert len(in_files) > written * 0.9, "the files themselves lost more than copytruncate can"

        def received() -> Counter[int]:
            return Counter(int(m[4:13]) for m in receiver.messages)

        for _ in range(600):
            if in_files <= received().keys():
                break
            await asyncio.sleep(0.1)
        tailer.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(tailer.wait, 30) == 0
        got = received()
        missing = sorted(in_files - got.keys())
        assert not missing, f"{len(missing)} lines lost: {where(missing, logs)} (log: {out})"
        assert got.keys() <= set(range(written)), "received lines nobody wrote"
        duplicates = sum(n - 1 for n in got.values())
        bound = kills * REPLAYED_PER_KILL
        print(
            f"{style}: written={written} in files={len(in_files)} received={len(got)} rotations={n_rotations} "
            f"duplicates={duplicates} ({100 * duplicates / len(got):.1f}%, bound {bound})"
        )
        assert duplicates <= bound, f"{duplicates} duplicates for {kills} crashes (bound {bound}; log: {out})"
    finally:
        if tailer.poll() is None:
            tailer.kill()
            tailer.wait()
        if writer is not None and writer.returncode is None:
            writer.kill()
            await writer.wait()
        await receiver.stop()
