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

import os
import tempfile
from pathlib import Path

from benchmarks.harness import (
    LOAD_CORE,
    PROXY_CORE,
    Durations,
    Start,
    ambassador,
    bench_listener,
    compare_proxies,
    h2load,
    haproxy,
    nginx,
    nginx_upstream,
)
from benchmarks.report import Report
from sidecars.testing import free_port

UPSTREAM = """
        location / {{ default_type text/plain; return 200 "hello world\\n"; }}
"""
# grpc_pass speaks HTTP/2 (h2c) upstream for whatever the request is: nginx's only HTTP/2 proxying.
NGINX_PROXY = """
        location / {{ grpc_pass grpc://app; }}
"""
H2C = "backlog=4096 http2"


def run(quick: bool) -> Report:
    durations = Durations.of(quick)
    report = Report("ambassador_http2", peer="haproxy, nginx")
    report.notes.append(
        f"proxies pinned to core {PROXY_CORE}, upstream h2c nginx and h2load on core {LOAD_CORE}; best of "
        f"{durations.rounds} alternating rounds of h2load -c4 -m50 {durations.secs:g}s for throughput, "
        f"-c1 -m1 {durations.light_secs:g}s for added latency (h2load's mean request time); cpus={os.cpu_count()}"
    )
    report.notes.append("nginx: grpc_pass (h2c upstream); haproxy: proto h2 on both sides; sidecars: protocol http2")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        upstream = free_port()
        h2 = "      protocol: http2\n"
        proxies: dict[str, Start] = {
            "haproxy": lambda p: haproxy(
                tmp / "haproxy-h2.cfg", p, upstream, PROXY_CORE, bind=" proto h2", server=" proto h2"
            ),
            "nginx": lambda p: nginx(
                tmp, "proxy", NGINX_PROXY, p, PROXY_CORE, http=nginx_upstream(upstream), listen=H2C
            ),
            "sidecars": lambda p: ambassador(
                tmp / "ambassador-h2.yaml", p, PROXY_CORE, bench_listener(p, upstream, cluster=h2)
            ),
        }
        with nginx(tmp, "upstream", UPSTREAM, upstream, LOAD_CORE, listen=H2C):
            compare_proxies(
                report,
                upstream,
                "/",
                proxies,
                heavy=lambda url, secs: h2load(url, 4, 50, secs),
                light=lambda url, secs: h2load(url, 1, 1, secs),
                durations=durations,
                heavy_figures=("rps",),
                memory="peak_rss_mib",
            )
    report.compare("rps vs haproxy (target >= 0.4)", "rps", "haproxy")
    report.compare("rps vs nginx", "rps", "nginx")
    report.compare("added p50 vs haproxy's", "added_p50_ms", "haproxy")
    return report
