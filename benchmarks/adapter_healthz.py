"""`/healthz` latency of the adapter under load while it scrapes a 30 MB page, next to nginx.

nginx (the peer) serves both the app's 30 MB /metrics page and a static /healthz: the floor of what
any HTTP server answers on this machine. The adapter runs as a real process (`python -m
sidecars.adapter`) scraping that page every 2 s, and `wrk --latency` drives its /healthz, then the
static one of nginx, with the same connections and duration. Two adapter runs: rules reading three
families (the parse filter skips the rest of the page, the realistic case) and the json output
enabled, which needs every family parsed (the worst case: ~290k series parsed in a worker thread on
each scrape). Target: adapter p99 under 5 ms in both.
"""

from __future__ import annotations

import re

from benchmarks.harness import metrics_page, probe_adapter, wrk_probe
from benchmarks.report import Report

RULES = """
rules:
  - {name: errors, expr: 'sum(rate(http_requests_total{code=~"5.."}[1m])) > 10'}
  - {name: queue, expr: queue_depth > 1000}
  - {name: heartbeat, expr: 'changes(heartbeat_total[1m]) == 0', group: liveness, severity: warn}
"""

# The one server block of tests/support/nginx.py's config ({dir} filled in there).
NGINX_SERVER = """
        root {dir}/www;
        location = /healthz {{ default_type text/plain; return 200 "ok"; }}
        location = /metrics {{ default_type text/plain; }}
"""


def big_page(series: int) -> str:
    line = 'app_series_total{pod="app-7d9f8b6c5-x2k4j",path="/api/v1/items/{id}",method="GET",code="200",i="%d"} 1\n'
    head = "# TYPE app_series_total counter\n"
    tail = 'http_requests_total{code="200"} 100\nqueue_depth 3\nheartbeat_total 17\n'
    return head + "".join(line % i for i in range(series)) + tail


def run(quick: bool) -> Report:
    report = Report(name="adapter_healthz", peer="nginx static /healthz")
    secs, series = (3, 50_000) if quick else (15, 290_000)
    connections = 4
    page = big_page(series)
    with metrics_page(NGINX_SERVER, page, series, RULES) as served:
        for label, outputs in (("filtered", "health"), ("full", "health,json")):
            ours, metrics = probe_adapter("sidecars.adapter", served, outputs, secs=secs, connections=connections)
            scrapes = re.search(r"^adapter_scrapes_total ([\d.e+]+)$", metrics, re.M)
            duration = re.search(r"^adapter_scrape_duration_seconds_sum ([\d.e+-]+)$", metrics, re.M)
            ours["scrapes"] = float(scrapes.group(1)) if scrapes else 0.0
            if scrapes and duration and float(scrapes.group(1)):
                ours["scrape_ms"] = 1000 * float(duration.group(1)) / float(scrapes.group(1))
            report.add(f"adapter {label}", **ours)
        theirs = wrk_probe(f"http://127.0.0.1:{served.port}/healthz", secs, connections)
        report.add("nginx", **theirs)
    for label in ("filtered", "full"):
        ours = report.rows[f"adapter {label}"]
        report.ratio(f"p99 adapter ({label}) / nginx", ours.get("p99_ms", 0.0), theirs.get("p99_ms", 0.0))
        report.notes.append(
            f"adapter {label}: p99 {ours.get('p99_ms', float('nan')):.2f} ms "
            f"({'meets' if ours.get('p99_ms', 99) < 5 else 'misses'} the 5 ms target)"
        )
    report.notes.append(
        f"page {len(page) / 1e6:.1f} MB, {series} series, scraped every 2 s; wrk -c{connections} -d{secs}s"
    )
    return report
