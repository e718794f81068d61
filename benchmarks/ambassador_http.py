"""HTTP proxying: the ambassador next to nginx and HAProxy, all in front of the same upstream.

The upstream is nginx answering `return 200` on core 1, where `wrk` runs too; each proxy in turn is
pinned to core 0 (`taskset`) with one worker/thread and keep-alive connections to the upstream. For
each proxy: `wrk --latency` with 50 connections (throughput, p50/p99), then with 1 connection (a
moderate load: the p50 latency the proxy adds over talking to the upstream directly). Targets: req/s
at least 0.6x nginx's; added p50 under 0.3 ms. The ambassador runs twice: as installed (the compiled
request path) and with `http_engine: python`, the fallback where no compiler was at hand.
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
    haproxy,
    nginx,
    nginx_upstream,
    wrk,
)
from benchmarks.report import Report
from sidecars.ambassador import engine
from sidecars.testing import free_port

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


def run(quick: bool) -> Report:
    durations = Durations.of(quick)
    report = Report("ambassador_http", peer="nginx, haproxy")
    report.notes.append(
        f"proxies pinned to core {PROXY_CORE}, upstream nginx and wrk on core {LOAD_CORE}; "
        f"best of {durations.rounds} alternating rounds of wrk -c50 {durations.secs:g}s for throughput, "
        f"-c1 {durations.light_secs:g}s for added latency; cpus={os.cpu_count()}"
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

        def sidecars(http_engine: str) -> Start:
            conf = tmp / f"ambassador-http-{http_engine}.yaml"
            settings = f"http_engine: {http_engine}\n"
            return lambda p: ambassador(conf, p, PROXY_CORE, bench_listener(p, upstream), settings=settings)

        proxies: dict[str, Start] = {
            "nginx": lambda p: nginx(tmp, "proxy", NGINX_PROXY, p, PROXY_CORE, http=nginx_upstream(upstream)),
            "haproxy": lambda p: haproxy(tmp / "haproxy-http.cfg", p, upstream, PROXY_CORE),
            "sidecars": sidecars("auto"),
            # The same source interpreted: what runs where the compiled build is missing.
            "sidecars-python": sidecars("python"),
        }
        with nginx(tmp, "upstream", UPSTREAM, upstream, LOAD_CORE):
            compare_proxies(
                report,
                upstream,
                "/hello",
                proxies,
                heavy=lambda url, secs: wrk(url, 50, secs),
                light=lambda url, secs: wrk(url, 1, secs),
                durations=durations,
                heavy_figures=("rps", "p50_ms", "p99_ms"),
            )
    report.compare("rps vs nginx (target >= 0.6)", "rps", "nginx")
    report.compare("rps vs haproxy", "rps", "haproxy")
    report.compare("rps of sidecars-python vs nginx", "rps", "nginx", subject="sidecars-python")
    report.compare("added p50 vs nginx's", "added_p50_ms", "nginx")
    return report
