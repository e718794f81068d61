"""Tailer vs syslog-ng: the same file of log lines to the same HTTP NDJSON receiver, same batch size.

Each subject runs alone (the machine has two cores), reading a file written beforehand from its
beginning to its end and POSTing batches of BATCH_LINES NDJSON documents (timestamp, message, path)
to one receiver that counts lines. Figures per subject: lines per second (first to last batch
received), lines per CPU-second (user + system time of the whole process, every thread, start-up
included) and peak RSS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from aiohttp import web

from benchmarks.harness import peak_rss_mib, stop
from benchmarks.report import Report
from sidecars.testing import free_port

BATCH_LINES = 1000
LINE_PAD = "GET /api/v1/orders/12345 200 0.004 user=alice trace=4bf92f3577b34da6a3ce929d0e0e4736"


class CountingReceiver:
    """An aiohttp NDJSON receiver in a thread of its own: counts lines, notes first/last arrival."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lines = 0
        self.first: float | None = None
        self.last = 0.0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> CountingReceiver:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.lines, self.first, self.last = 0, None, 0.0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.lines += body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
        self.last = now
        return web.Response(text="ok")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(cmd: list[str], receiver: CountingReceiver, lines: int, timeout_secs: float) -> dict[str, float]:
    receiver.reset()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_secs
        while receiver.lines < lines:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd[0]}: {receiver.lines} of {lines} lines within {timeout_secs} s")
            time.sleep(0.01)
        cpu = _cpu_secs(proc.pid)
        rss = peak_rss_mib(proc.pid)
    finally:
        stop(proc, 20)
    assert receiver.first is not None
    wall = max(receiver.last - receiver.first, 1e-3)
    return {"lines_per_sec": lines / wall, "lines_per_cpu_sec": lines / cpu, "cpu_secs": cpu, "peak_rss_mib": rss}


WRITER = r"""
import os, sys, time
path, seconds, rate, pad = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
per_tick, seq, next_at = rate // 100, 0, time.monotonic()
end = next_at + seconds
while next_at < end:
    os.write(fd, "".join(f"2024-05-01T12:00:00.000Z INFO {n:09d} {pad}\n" for n in range(seq, seq + per_tick)).encode())
    seq += per_tick
    next_at += 0.01
    time.sleep(max(next_at - time.monotonic(), 0))
print(seq)
"""


def _measure_live(
    cmd: list[str], receiver: CountingReceiver, log: Path, seconds: float, rate: int, ready: float
) -> dict[str, float]:
    """CPU per line while following a file written at a steady `rate` (start-up excluded)."""
    log.unlink(missing_ok=True)
    log.touch()
    receiver.reset()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(ready)  # started and idle: only what following costs is measured
        cpu0 = _cpu_secs(proc.pid)
        out = subprocess.run(
            [sys.executable, "-c", WRITER, str(log), str(seconds), str(rate), LINE_PAD],
            capture_output=True, check=True, text=True,
        )  # fmt: skip
        written = int(out.stdout)
        deadline = time.monotonic() + 60
        while receiver.lines < written and time.monotonic() < deadline:
            time.sleep(0.01)
        if receiver.lines < written:
            raise TimeoutError(f"{cmd[0]}: {receiver.lines} of {written} lines")
        cpu = _cpu_secs(proc.pid) - cpu0
    finally:
        stop(proc, 20)
    return {"live_lines_per_cpu_sec": written / max(cpu, 1e-3), "live_cpu_share": cpu / seconds}


def _syslog_ng_cmd(tmp: Path, log: Path, url: str) -> list[str]:
    conf = tmp / "syslog-ng.conf"
    conf.write_text(
        f"""@version: 3.38
options {{ stats-freq(0); log-msg-size(262144); threaded(yes); }};
source s_file {{
  file("{log}" flags(no-parse) follow-freq(0.2) log-iw-size(20000) log-fetch-limit(1000));
}};
destination d_http {{
  http(url("{url}") method("POST") workers(1)
       batch-lines({BATCH_LINES}) batch-bytes(4194304) batch-timeout(200)
       headers("Content-Type: application/x-ndjson")
       body("$(format-json timestamp=${{ISODATE}} message=${{MESSAGE}} path=${{FILE_NAME}})")
       delimiter("\\n"));
}};
log {{ source(s_file); destination(d_http); flags(flow-control); }};
"""
    )
    state = tmp / "syslog-ng-state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    return [
        "syslog-ng", "-F", "--no-caps", "-f", str(conf), "-R", str(state / "persist"),
        "-c", str(state / "ctl"), "-p", str(state / "pid"),
    ]  # fmt: skip


def _tailer_cmd(tmp: Path, log: Path, url: str) -> list[str]:
    cp = tmp / "tailer-checkpoints"
    shutil.rmtree(cp, ignore_errors=True)
    config = tmp / "tailer.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "admin_host": "127.0.0.1",
                "admin_port": free_port(),
                "log_format": "json",
                "include": [str(log)],
                "checkpoint_dir": str(cp),
                "sink": "http",
                "sink_config": {"url": url},
                "batch_max_lines": BATCH_LINES,
                "batch_max_bytes": 4 * 1024 * 1024,
                "batch_wait_secs": 0.2,
            }
        )
    )
    return [sys.executable, "-m", "sidecars.tailer", "--config", str(config)]


def run(quick: bool) -> Report:
    lines = 200_000 if quick else 2_000_000
    report = Report("tailer: file -> HTTP NDJSON", "syslog-ng")
    with tempfile.TemporaryDirectory(prefix="bench-tailer-") as d, CountingReceiver() as receiver:
        tmp = Path(d)
        log = tmp / "app.log"
        with open(log, "w") as f:
            chunk = 10_000
            for start in range(0, lines, chunk):
                f.write(
                    "".join(f"2024-05-01T12:00:00.000Z INFO {n:09d} {LINE_PAD}\n" for n in range(start, start + chunk))
                )
        url = f"http://127.0.0.1:{receiver.port}/ingest"
        timeout = 60.0 if quick else 300.0
        results: dict[str, list[dict[str, float]]] = {"syslog-ng": [], "sidecars": []}
        for _ in range(1 if quick else 2):  # alternate, keep each subject's best run
            results["syslog-ng"].append(_measure(_syslog_ng_cmd(tmp, log, url), receiver, lines, timeout))
            results["sidecars"].append(_measure(_tailer_cmd(tmp, log, url), receiver, lines, timeout))
        for subject, runs in results.items():
            best = max(runs, key=lambda r: r["lines_per_cpu_sec"])
            report.add(subject, **best)
        # Following a live file: a writer at a steady rate, CPU counted from after start-up.
        rate, seconds = (20_000, 3.0) if quick else (50_000, 10.0)
        live = tmp / "live.log"
        report.add("syslog-ng", **_measure_live(_syslog_ng_cmd(tmp, live, url), receiver, live, seconds, rate, 1.0))
        report.add("sidecars", **_measure_live(_tailer_cmd(tmp, live, url), receiver, live, seconds, rate, 2.0))
        for figure in ("lines_per_sec", "lines_per_cpu_sec", "live_lines_per_cpu_sec"):
            report.compare(figure, figure, "syslog-ng")
        report.compare("peak_rss (lower is better)", "peak_rss_mib", "syslog-ng")
        report.notes.append(
            f"{lines:,} lines of {log.stat().st_size // lines} bytes read from the start of one file; "
            f"batches of {BATCH_LINES} lines; CPU includes start-up"
        )
        report.notes.append(f"live: {rate:,} lines/s written for {seconds:.0f} s into a followed file")
    return report
