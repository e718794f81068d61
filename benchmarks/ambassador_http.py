"""HTTP proxying: the ambassador next to nginx and HAProxy, all in front of the same upstream.

The upstream is nginx answering `return 200` on core 1, where `wrk` runs too; each proxy in turn is
pinned to core 0 (`taskset`) with one worker/thread and keep-alive connections to the upstream. For
each proxy: `wrk --latency` with 50 connections (throughput, p50/p99), then with 1 connection (a
moderate load: the p50 latency the proxy adds over talking to the upstream directly). Targets: req/s
at least 0.6x nginx's; added p50 under 0.3 ms. The ambassador runs twice: as installed (the compiled
request path) and with `http_engine: python`, the fallback where no compiler was at hand.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.report import Report
from sidecars.ambassador import engine
from sidecars.testing import free_port
from tests.support import nginx as support_nginx

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
PROXY_CORE = "0"
LOAD_CORE = "1"

# Server blocks for tests/support/nginx.py's config ({port}, {dir} filled in there).
UPSTREAM = """
        location = /hello {{ default_type text/plain; return 200 "hello world\\n"; }}
"""

NGINX_PROXY = """
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
"""
# keepalive_requests: nginx otherwise reconnects every 1000 requests; the others never do.
NGINX_PROXY_UPSTREAM = "upstream app {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 10000000; }}"

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4000
defaults
  mode {mode}
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  {http_opts}
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{upstream}
"""

AMBASSADOR_CONF = """
admin_host: 127.0.0.1
admin_port: {admin}
http_engine: {engine}
log_format: json
log_level: warning
listeners:
  - name: bench
    port: {port}
    mode: {mode}
    access_log: "off"
    cluster:
      endpoints: ["127.0.0.1:{upstream}"]
      health_check: {{kind: none}}
"""


def wait_port(port: int, timeout_secs: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def process(cmd: list[str], core: str, port: int, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["taskset", "-c", core, *cmd], **kwargs)  # type: ignore[call-overload]
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def nginx(tmp: Path, name: str, server: str, port: int, core: str, *, http: str = "") -> Iterator[None]:
    """The tests' nginx config (`server` its one server block, `http` added at the http level) on `core`."""
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    support_nginx.write_config(d, server, port, http=http, listen="backlog=4096", worker_connections=4096)
    with process(support_nginx.command(d), core, port, stderr=subprocess.DEVNULL):
        yield


@contextlib.contextmanager
def haproxy(tmp: Path, port: int, upstream: int, mode: str, core: str) -> Iterator[None]:
    conf = tmp / f"haproxy-{mode}.cfg"
    # tcp: kernel splicing where HAProxy finds it worthwhile, its fastest way to move bytes
    http_opts = "option http-keep-alive\n  http-reuse always" if mode == "http" else "option splice-auto"
    conf.write_text(HAPROXY_CONF.format(port=port, upstream=upstream, mode=mode, http_opts=http_opts))
    with process([HAPROXY, "-f", str(conf), "-db"], core, port, stderr=subprocess.DEVNULL):
        yield


@contextlib.contextmanager
def ambassador(tmp: Path, port: int, upstream: int, mode: str, core: str, http_engine: str = "auto") -> Iterator[int]:
    conf = tmp / f"ambassador-{mode}-{http_engine}.yaml"
    conf.write_text(
        AMBASSADOR_CONF.format(admin=free_port(), port=port, upstream=upstream, mode=mode, engine=http_engine)
    )
    cmd = [sys.executable, "-m", "sidecars.ambassador", "--config", str(conf)]
    with process(cmd, core, port, stdout=subprocess.DEVNULL) as proc:
        yield proc.pid  # taskset execs the command: same pid


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def core_busy() -> dict[str, tuple[int, int]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat."""
    cores = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(f) for f in fields]
            cores[name[3:]] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))  # idle and iowait are not busy
    return cores


def wrk(url: str, connections: int, secs: int) -> dict[str, float]:
    before = core_busy()
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, WRK, "-t1", f"-c{connections}", f"-d{secs}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = core_busy()
    busy = {c: (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]) for c in after}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": _latency(out, "50%"),
        "p99_ms": _latency(out, "99%"),
        "errors": float(errors.group(1)) if errors else (1.0 if socket_errors else 0.0),
        "proxy_core_pct": 100 * busy.get(PROXY_CORE, float("nan")),
        "load_core_pct": 100 * busy.get(LOAD_CORE, float("nan")),
    }


def _latency(out: str, pct: str) -> float:
    m = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run(quick: bool) -> Report:
    secs = 3 if quick else 10
    rounds = 1 if quick else 3
    light_secs = 2 if quick else 5
    report = Report("ambassador_http", peer="nginx, haproxy")
    report.notes.append(
        f"proxies pinned to core {PROXY_CORE}, upstream nginx and wrk on core {LOAD_CORE}; "
        f"best of {rounds} alternating rounds of wrk -c50 {secs:g}s for throughput, "
        f"-c1 {light_secs:g}s for added latency; cpus={os.cpu_count()}"
    )
    chosen = engine.select("auto")
    report.notes.append(
        f"sidecars: http request path {chosen.name} ({chosen.reason}); sidecars-python: the same source interpreted"
    )
    report.notes.append(
        "*_core_pct: how busy each core was in the counted round; a load core near 100% means wrk and the "
        "upstream, not the proxy, set the pace: that proxy's rps is a lower bound (and ratios against it high)"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        upstream = free_port()
        with nginx(tmp, "upstream", UPSTREAM, upstream, LOAD_CORE):
            direct = wrk(f"http://127.0.0.1:{upstream}/hello", 1, light_secs)
            report.add("direct", light_p50_ms=direct["p50_ms"])
            proxies: dict[str, Callable[[int], contextlib.AbstractContextManager[object]]] = {
                "nginx": lambda p: nginx(
                    tmp, "proxy", NGINX_PROXY, p, PROXY_CORE, http=NGINX_PROXY_UPSTREAM.format(upstream=upstream)
                ),
                "haproxy": lambda p: haproxy(tmp, p, upstream, "http", PROXY_CORE),
                "sidecars": lambda p: ambassador(tmp, p, upstream, "http", PROXY_CORE),
                # The same source interpreted: what runs where the compiled build is missing.
                "sidecars-python": lambda p: ambassador(tmp, p, upstream, "http", PROXY_CORE, "python"),
            }
            ports = {name: free_port() for name in proxies}
            with contextlib.ExitStack() as stack:
                pids = {name: stack.enter_context(start(ports[name])) for name, start in proxies.items()}
                urls = {name: f"http://127.0.0.1:{port}/hello" for name, port in ports.items()}
                for url in urls.values():
                    wrk(url, 50, 1)  # warm-up: connections pooled, caches hot
                # Rounds alternate between the proxies and the best round counts, so a burst of other
                # work on the machine does not land on one proxy's figures only.
                best: dict[str, dict[str, float]] = {}
                for _ in range(rounds):
                    for name, url in urls.items():
                        heavy = wrk(url, 50, secs)
                        if name not in best or heavy["rps"] > best[name]["rps"]:
                            best[name] = heavy
                for name, url in urls.items():
                    light = wrk(url, 1, light_secs)
                    heavy = best[name]
                    pid = pids[name]
                    if isinstance(pid, int):  # the ambassador's memory after all the load (one process)
                        report.add(name, rss_mib=rss_mib(pid))
                    report.add(
                        name,
                        rps=heavy["rps"],
                        p50_ms=heavy["p50_ms"],
                        p99_ms=heavy["p99_ms"],
                        errors=heavy["errors"] + light["errors"],
                        proxy_core_pct=heavy["proxy_core_pct"],
                        load_core_pct=heavy["load_core_pct"],
                        light_p50_ms=light["p50_ms"],
                        added_p50_ms=light["p50_ms"] - direct["p50_ms"],
                    )
    rows = report.rows
    report.ratio("rps vs nginx (target >= 0.6)", rows["sidecars"]["rps"], rows["nginx"]["rps"])
    report.ratio("rps vs haproxy", rows["sidecars"]["rps"], rows["haproxy"]["rps"])
    report.ratio("rps of sidecars-python vs nginx", rows["sidecars-python"]["rps"], rows["nginx"]["rps"])
    report.ratio("added p50 vs nginx's", rows["sidecars"]["added_p50_ms"], rows["nginx"]["added_p50_ms"])
    return report
