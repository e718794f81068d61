"""A real syslog-ng receiver for the syslog sink's tests: RFC 5424 over TCP (or TLS), octet-counted.

It writes every message it parsed as one JSON object (via `format-json`) with the fields it
recognised, so the test checks what a real receiver understood, not the bytes we sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

SYSLOG_NG = "/usr/sbin/syslog-ng"

_TEMPLATE = (
    "$(format-json host=${HOST} program=${PROGRAM} pid=${PID} msgid=${MSGID} sdata=${SDATA} "
    "message=${MESSAGE} facility=${FACILITY} severity=${LEVEL} isodate=${ISODATE} --key .SDATA.*)\\n"
)


class SyslogNg:
    def __init__(self, workdir: Path, port: int, tls: tuple[Path, Path] | None = None) -> None:
        self.dir = workdir
        self.port = port
        self.out = workdir / "received.ndjson"
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        tls = ""
        if self.tls:
            cert, key = self.tls
            tls = f' tls(cert-file("{cert}") key-file("{key}") peer-verify(optional-untrusted))'
        transport = "tls" if self.tls else "tcp"
        return f"""@version: 3.38
options {{ flush-lines(0); keep-hostname(yes); chain-hostnames(no); use-dns(no); stats-freq(0);
          frac-digits(6); log-msg-size(1048576); }};
source s_in {{ syslog(ip("127.0.0.1") port({self.port}) transport("{transport}"){tls}); }};
destination d_out {{ file("{self.out}" template("{_TEMPLATE}")); }};
log {{ source(s_in); destination(d_out); }};
"""

    def start(self) -> None:
        conf = self.dir / "syslog-ng.conf"
        conf.write_text(self.config())
        d = self.dir
        self.proc = subprocess.Popen(
            [SYSLOG_NG, "-F", "-f", str(conf), "-R", str(d / "persist"), "-p", str(d / "pid"), "-c", str(d / "ctl")],
            stdout=open(d / "syslog-ng.log", "ab"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"syslog-ng exited: {(d / 'syslog-ng.log').read_text()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            time.sleep(0.05)
        raise RuntimeError("syslog-ng did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def messages(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        # Only whole lines: syslog-ng may be half-way through writing the last one.
        complete = self.out.read_bytes().rpartition(b"\n")[0]
        return [orjson.loads(line) for line in complete.splitlines() if line]

    async def wait_for(self, count: int, timeout_secs: float = 20.0) -> list[dict[str, Any]]:
        """The parsed messages once at least `count` arrived (or what arrived by the deadline)."""
        deadline = time.monotonic() + timeout_secs
        while True:
            got = self.messages()
            if len(got) >= count or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def running(workdir: Path, port: int, tls: tuple[Path, Path] | None = None) -> Iterator[SyslogNg]:
    os.makedirs(workdir, exist_ok=True)
    sng = SyslogNg(workdir, port, tls)
    sng.start()
    try:
        yield sng
    finally:
        sng.stop()
