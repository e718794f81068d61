"""`sidecars demo`: the README's first command starts everything, every printed URL answers, Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.patterns import wait_until

SIDECARS = Path(sys.executable).with_name("sidecars")


def get(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if re.search(rf"^PPid:\s+{pid}$", status, re.M):
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose only once reaped; the launcher waits for each child.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_demo_starts_everything_answers_and_stops_cleanly_on_ctrl_c() -> None:
    proc = subprocess.Popen([str(SIDECARS), "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner.append(line)
            if line.strip().startswith("process output:"):
                break
        text = "".join(banner)
        if "sidecars demo is running" not in text:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"no banner:\n{text}\n{err}")
        found = re.findall(r"curl (-X POST )?'?(http://[^\s']+)", text)
        gets = [url for post, url in found if not post]
        (toggle,) = [url for post, url in found if post]
        healthz = next(u for u in gets if "healthz" in u)
        children = children_of(proc.pid)
        assert len(children) == 7  # two upstreams, receiver, tailer, ambassador, adapter, app

        for url in gets:
            status, body = get(url)
            assert status == 200, (url, body)
        status, body = get(gets[0])  # the app, through the ambassador to an upstream
        assert json.loads(body)["upstream_status"] == 200
        wait_until(lambda: '"seq"' in get(next(u for u in gets if "/lines" in u))[1], "forwarded log lines")

        get(toggle, method="POST")
        wait_until(lambda: get(healthz)[0] == 503, "the adapter to report the bad metrics")
        get(toggle.replace("bad=1", "bad=0"), method="POST")
        wait_until(lambda: get(healthz)[0] == 200, "the adapter to report healthy again")

        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert not [pid for pid in children if alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
