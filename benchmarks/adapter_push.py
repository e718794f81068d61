"""The cost of the push outputs per scraped series, and the probes' p99 while they push.

1. CPU and memory of turning one page into the requests that carry it, at 10k and 100k series:
   remote_write (selection, labels, protobuf, snappy) and otlp (selection, OTLP protobuf through
   opentelemetry-proto, start times). The peer is the parse of the same page (the work every scrape
   already does): the ratio says how much a push adds to a scrape. Memory is the peak traced
   allocation while one page's samples sit in the queue and are encoded.
2. `/healthz` latency of the adapter as a real process scraping a page of 10k (quick) or 100k series
   every 2 s from nginx, with no push output, then with remote_write, then with otlp, each pushing to
   nginx (a `return 204` location: a receiver that costs nothing). `wrk --latency` drives /healthz
   meanwhile; the ratio is p99 while pushing over p99 without.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path

from benchmarks.adapter_healthz import big_page, stop_group, wait_http, wrk
from benchmarks.adapter_parser import generated_page
from benchmarks.report import Report
from sidecars.adapter.exposition import parse
from sidecars.adapter.outputs.otlp import Encoder
from sidecars.adapter.outputs.push import Point, select_points
from sidecars.adapter.outputs.remote_write import RemoteWriteOutput
from sidecars.adapter.settings import AdapterSettings
from sidecars.adapter.state import State
from sidecars.testing import free_port
from tests.support import nginx as support_nginx

NGINX_SERVER = """
        root {dir}/www;
        client_max_body_size 64m;
        location = /healthz {{ default_type text/plain; return 200 "ok"; }}
        location = /metrics {{ default_type text/plain; }}
        location = /api/v1/write {{ return 204; }}
        location = /v1/metrics {{ return 200; }}
"""
RULES = "rules:\n  - {name: queue, expr: queue_depth > 1000}\n"


def _encode_all(output: RemoteWriteOutput, points: list[Point]) -> int:
    return sum(len(output.encode(points[i : i + output.batch_max])) for i in range(0, len(points), output.batch_max))


def _measure(report: Report, series: int, rounds: int) -> None:
    page = generated_page(series)
    result = parse(page)
    settings = AdapterSettings(
        outputs=["remote_write"], push_url="http://127.0.0.1:9/api/v1/write", push_labels=["pod=web-0"]
    )
    output = RemoteWriteOutput(State(), settings)
    selection = output.selection
    best_parse = best_push = float("inf")
    size = 0
    for _ in range(rounds):
        started = time.process_time()
        parse(page)
        best_parse = min(best_parse, time.process_time() - started)
        started = time.process_time()
        points = select_points(result, 1_700_000_000_000, selection)
        size = _encode_all(output, points)
        best_push = min(best_push, time.process_time() - started)
    tracemalloc.start()
    points = select_points(result, 1_700_000_000_000, selection)
    _encode_all(RemoteWriteOutput(State(), settings), points)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    best_otlp, otlp_size = float("inf"), 0
    for _ in range(rounds):
        encoder = Encoder(selection.labels)
        started = time.process_time()
        points = select_points(result, 1_700_000_000_000, selection)
        otlp_size = _encode_otlp(encoder, points, output.batch_max)
        best_otlp = min(best_otlp, time.process_time() - started)
    tracemalloc.start()
    points = select_points(result, 1_700_000_000_000, selection)
    _encode_otlp(Encoder(selection.labels), points, output.batch_max)
    _, otlp_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(result.samples)
    report.add(
        f"otlp {series // 1000}k",
        us_per_series=best_otlp / n * 1e6,
        bytes_per_series=otlp_peak / n,
        wire_bytes_per_series=otlp_size / n,
    )
    report.ratio(f"otlp CPU per series / parse CPU per series ({series // 1000}k)", best_otlp, best_parse)
    report.add(f"parse {series // 1000}k", us_per_series=best_parse / n * 1e6)
    report.add(
        f"remote_write {series // 1000}k",
        us_per_series=best_push / n * 1e6,
        bytes_per_series=peak / n,
        wire_bytes_per_series=size / n,
    )
    report.ratio(f"remote_write CPU per series / parse CPU per series ({series // 1000}k)", best_push, best_parse)


def _encode_otlp(encoder: Encoder, points: list[Point], batch: int) -> int:
    return sum(len(encoder.encode(points[i : i + batch])[0]) for i in range(0, len(points), batch))


def _metric(text: str, name: str) -> float:
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([\d.e+-]+)$", text, re.M)
    return sum(float(v) for v in found)


def _probes_while_pushing(report: Report, quick: bool, only: frozenset[str] | None = None) -> None:
    """`only`: the rows to run (by label), all when None."""
    secs, series = (3, 10_000) if quick else (15, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "www").mkdir()
        page = big_page(series)
        (root / "www" / "metrics").write_text(page)
        for path in [root, root / "www", root / "www" / "metrics"]:
            os.chmod(path, 0o755)
        port = free_port()
        support_nginx.write_config(root, NGINX_SERVER, port)
        (root / "rules.yaml").write_text(RULES)
        nginx = subprocess.Popen(support_nginx.command(root), start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            for label, outputs, receiver in (
                ("no push", "health", None),
                # Like for like: every family parsed, as a push output needs, nothing pushed (the json
                # output encodes only when asked, and nobody asks).
                ("no push, every family parsed", "health,json", None),
                ("remote_write", "health,remote_write", f"http://127.0.0.1:{port}/api/v1/write"),
                ("otlp", "health,otlp", f"http://127.0.0.1:{port}/v1/metrics"),
            ):
                if only is not None and label not in only:
                    continue
                listen, admin = free_port(), free_port()
                lag_file = root / f"lag-{listen}.json"
                command = [
                    sys.executable, "-m", "benchmarks._looplag",
                    "--target-url", f"http://127.0.0.1:{port}/metrics",
                    "--rules-file", str(root / "rules.yaml"),
                    "--listen-host", "127.0.0.1", "--listen-port", str(listen),
                    "--admin-host", "127.0.0.1", "--admin-port", str(admin),
                    "--scrape-interval-secs", "2", "--scrape-timeout-secs", "2",
                    "--outputs", outputs, "--log-format", "json",
                    "--max-series", str(series + 1000), "--max-body-bytes", str(2 * len(page)),
                    "--push-queue-max-samples", str(4 * series),
                ]  # fmt: skip
                if receiver is not None:
                    command += ["--push-url", receiver]
                env = {**os.environ, "LOOP_LAG_OUT": str(lag_file)}
                adapter = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True, env=env)
                try:
                    wait_http(f"http://127.0.0.1:{admin}/readyz", 120)
                    time.sleep(2.5)  # a scrape and its push under way
                    adapter.send_signal(signal.SIGUSR1)  # the loop lag from here on
                    ours = wrk(f"http://127.0.0.1:{listen}/healthz", secs, 4)
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
                        metrics = response.read().decode()
                finally:
                    stop_group(adapter)
                if lag_file.exists():
                    ours.update(json.loads(lag_file.read_text()))
                ours["pushed_samples"] = _metric(metrics, "adapter_push_samples_total")
                ours["push_failures"] = _metric(metrics, "adapter_push_failures_total")
                report.add(f"probe {label}", **ours)
        finally:
            stop_group(nginx)
    base = report.rows.get("probe no push", {}).get("p99_ms", 0.0)
    like = report.rows.get("probe no push, every family parsed", {}).get("p99_ms", 0.0)
    for label in ("remote_write", "otlp"):
        p99 = report.rows.get(f"probe {label}", {}).get("p99_ms", 0.0)
        report.ratio(f"probe p99 pushing {label} / not pushing", p99, base)
        report.ratio(f"probe p99 pushing {label} / every family parsed, not pushing", p99, like)
    report.notes.append(f"probes: {series} series scraped every 2 s, pushed to nginx; wrk -c4 -d{secs}s")


def run(quick: bool) -> Report:
    report = Report("adapter_push", peer="parse; probes: no push output")
    for series in (10_000, 100_000):
        _measure(report, series, 1 if quick else 5)
    _probes_while_pushing(report, quick)
    report.notes.append("CPU: process time, best of the rounds; memory: tracemalloc peak while one page is encoded")
    return report
