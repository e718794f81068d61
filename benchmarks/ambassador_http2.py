"""HTTP/2 proxying: the ambassador next to HAProxy and nginx (`grpc_pass`), all in front of the same
h2c upstream, driven by `h2load`.

The upstream is nginx speaking h2c (`listen ... http2`, `return 200`) on core 1, where `h2load` runs
too; each proxy in turn is pinned to core 0 (`taskset`), one worker/thread, HTTP/2 on both sides
(HAProxy `proto h2` on the bind and the server; nginx `grpc_pass grpc://`, which speaks h2c to the
upstream for any request). For each proxy: `h2load` with 4 connections x 50 concurrent streams
(throughput), then 1 connection x 1 stream (the p50 latency the proxy adds over talking to the
upstream directly). Target: req/s at least 0.4x HAProxy's. Peak RSS of the ambassador afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.ambassador_http import LOAD_CORE, PROXY_CORE, core_busy, process
from benchmarks.report import Report
from sidecars.testing import free_port
from tests.support import nginx as support_nginx

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"

UPSTREAM = """
        location / {{ default_type text/plain; return 200 "hello world\\n"; }}
"""
# grpc_pass speaks HTTP/2 (h2c) upstream for whatever the request is: nginx's only HTTP/2 proxying.
NGINX_PROXY = """
        location / {{ grpc_pass grpc://app; }}
"""
NGINX_PROXY_UPSTREAM = "upstream app {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 10000000; }}"

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port} proto h2
  default_backend be
backend be
  server s1 127.0.0.1:{upstream} proto h2
"""

AMBASSADOR_CONF = """
admin_host: 127.0.0.1
admin_port: {admin}
log_format: json
log_level: warning
listeners:
  - name: bench
    port: {port}
    access_log: "off"
    cluster:
      endpoints: ["127.0.0.1:{upstream}"]
      protocol: http2
      health_check: {{kind: none}}
"""


@contextlib.contextmanager
def nginx(tmp: Path, name: str, server: str, port: int, core: str, *, http: str = "") -> Iterator[None]:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    support_nginx.write_config(d, server, port, http=http, listen="backlog=4096 http2", worker_connections=4096)
    with process(support_nginx.command(d), core, port, stderr=subprocess.DEVNULL):
        yield


@contextlib.contextmanager
def haproxy(tmp: Path, port: int, upstream: int, core: str) -> Iterator[None]:
    conf = tmp / "haproxy-h2.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, upstream=upstream))
    with process([HAPROXY, "-f", str(conf), "-db"], core, port, stderr=subprocess.DEVNULL):
        yield


@contextlib.contextmanager
def ambassador(tmp: Path, port: int, upstream: int, core: str) -> Iterator[int]:
    conf = tmp / "ambassador-h2.yaml"
    conf.write_text(AMBASSADOR_CONF.format(admin=free_port(), port=port, upstream=upstream))
    cmd = [sys.executable, "-m", "sidecars.ambassador", "--config", str(conf)]
    with process(cmd, core, port, stdout=subprocess.DEVNULL) as proc:
        yield proc.pid  # taskset execs the command: same pid


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def h2load(url: str, connections: int, streams: int, secs: int) -> dict[str, float]:
    before = core_busy()
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, H2LOAD, "-t1", f"-c{connections}", f"-m{streams}", f"-D{secs}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = core_busy()
    busy = {c: (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]) for c in after}
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50_ms": _median_request_ms(out),
        "errors": float(int(done.group(3)) + int(done.group(4))) if done else 1.0,
        "proxy_core_pct": 100 * busy.get(PROXY_CORE, float("nan")),
        "load_core_pct": 100 * busy.get(LOAD_CORE, float("nan")),
    }


def _median_request_ms(out: str) -> float:
    """h2load prints min/max/mean/sd of request times, no percentiles: at one stream the mean is close
    to the median, and it is what h2load gives for every proxy alike."""
    m = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run(quick: bool) -> Report:
    secs = 3 if quick else 10
    rounds = 1 if quick else 3
    light_secs = 2 if quick else 5
    report = Report("ambassador_http2", peer="haproxy, nginx")
    report.notes.append(
        f"proxies pinned to core {PROXY_CORE}, upstream h2c nginx and h2load on core {LOAD_CORE}; best of "
        f"{rounds} alternating rounds of h2load -c4 -m50 {secs:g}s for throughput, -c1 -m1 {light_secs:g}s "
        f"for added latency (h2load's mean request time); cpus={os.cpu_count()}"
    )
    report.notes.append("nginx: grpc_pass (h2c upstream); haproxy: proto h2 on both sides; sidecars: protocol http2")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        upstream = free_port()
        with nginx(tmp, "upstream", UPSTREAM, upstream, LOAD_CORE):
            direct = h2load(f"http://127.0.0.1:{upstream}/", 1, 1, light_secs)
            report.add("direct", light_p50_ms=direct["p50_ms"])
            proxies: dict[str, Callable[[int], contextlib.AbstractContextManager[object]]] = {
                "haproxy": lambda p: haproxy(tmp, p, upstream, PROXY_CORE),
                "nginx": lambda p: nginx(
                    tmp, "proxy", NGINX_PROXY, p, PROXY_CORE, http=NGINX_PROXY_UPSTREAM.format(upstream=upstream)
                ),
                "sidecars": lambda p: ambassador(tmp, p, upstream, PROXY_CORE),
            }
            ports = {name: free_port() for name in proxies}
            with contextlib.ExitStack() as stack:
                pids = {name: stack.enter_context(start(ports[name])) for name, start in proxies.items()}
                urls = {name: f"http://127.0.0.1:{port}/" for name, port in ports.items()}
                for url in urls.values():
                    h2load(url, 4, 50, 1)  # warm-up: upstream connections open, caches hot
                best: dict[str, dict[str, float]] = {}
                for _ in range(rounds):
                    for name, url in urls.items():
                        heavy = h2load(url, 4, 50, secs)
                        if name not in best or heavy["rps"] > best[name]["rps"]:
                            best[name] = heavy
                for name, url in urls.items():
                    light = h2load(url, 1, 1, light_secs)
                    heavy = best[name]
                    pid = pids[name]
                    if isinstance(pid, int):
                        report.add(name, peak_rss_mib=peak_rss_mib(pid))
                    report.add(
                        name,
                        rps=heavy["rps"],
                        errors=heavy["errors"] + light["errors"],
                        proxy_core_pct=heavy["proxy_core_pct"],
                        load_core_pct=heavy["load_core_pct"],
                        light_p50_ms=light["p50_ms"],
                        added_p50_ms=light["p50_ms"] - direct["p50_ms"],
                    )
    rows = report.rows
    report.ratio("rps vs haproxy (target >= 0.4)", rows["sidecars"]["rps"], rows["haproxy"]["rps"])
    report.ratio("rps vs nginx", rows["sidecars"]["rps"], rows["nginx"]["rps"])
    report.ratio("added p50 vs haproxy's", rows["sidecars"]["added_p50_ms"], rows["haproxy"]["added_p50_ms"])
    return report
