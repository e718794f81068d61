"""The adapter in-process against a real app on 127.0.0.1: verdicts, failures, big pages, outputs."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from sidecars.adapter.plugin import Adapter
from sidecars.testing import ConformanceSuite, RunningSidecar, free_port, http_get, run_sidecar, start_process

from .conftest import MetricsApp

HEALTHY = """# TYPE queue_depth gauge
queue_depth 3
# TYPE http_requests_total counter
http_requests_total{code="200"} 100
http_requests_total{code="500"} 1
# TYPE go_goroutines gauge
go_goroutines 12
"""

RULES = """
rules:
  - name: queue
    expr: queue_depth > 100
    group: readiness
  - name: slow
    expr: queue_depth > 50
    severity: warn
    group: readiness
  - name: errors
    expr: http_requests_total{code="500"} > 10
    group: liveness
"""


@asynccontextmanager
async def adapter(app: MetricsApp, rules_file: Path | None, **settings: Any) -> AsyncIterator[RunningSidecar]:
    values: dict[str, Any] = {
        "target_url": app.url,
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "scrape_interval_secs": 0.1,
        "scrape_timeout_secs": 0.1,
        "rules_poll_secs": 0.1,
        **settings,
    }
    if rules_file is not None:
        values["rules_file"] = str(rules_file)
    async with run_sidecar(Adapter, **values) as sc:
        yield sc


def url(sc: RunningSidecar, path: str) -> str:
    return f"http://127.0.0.1:{sc.plugin.listen_port}{path}"


async def wait_for(predicate: Callable[[], bool], timeout_secs: float = 10.0) -> None:
    for _ in range(int(timeout_secs / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def scrapes_after(sc: RunningSidecar, count: int = 2) -> None:
    """Waits until `count` more scrapes have been evaluated."""
    start = sc.sample("adapter_scrapes_total") or 0
    await wait_for(lambda: (sc.sample("adapter_scrapes_total") or 0) >= start + count)


async def test_health_endpoints_and_formats(app: MetricsApp, rules_file: Path) -> None:
    app.page = HEALTHY.replace("queue_depth 3", "queue_depth 60")
    rules_file.write_text(RULES)
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 1)
        assert await http_get(url(sc, "/healthz")) == (200, "ok")
        status, body = await http_get(url(sc, "/healthz?verbose"))
        assert status == 200
        assert body.splitlines() == [
            "[+]scrape ok",
            "[+]queue ok",
            "[+]slow warn: queue_depth > 50 = 60",
            "[+]errors ok",
            "healthz check passed",
        ]
        status, body = await http_get(url(sc, "/livez?verbose"))
        assert (status, body.splitlines()) == (200, ["[+]errors ok", "livez check passed"])

        app.page = HEALTHY.replace("queue_depth 3", "queue_depth 500")
        await scrapes_after(sc)
        status, body = await http_get(url(sc, "/readyz?verbose"))
        assert status == 503
        assert "[-]queue failed: queue_depth > 100 = 500" in body.splitlines()
        assert body.endswith("readyz check failed\n")
        assert (await http_get(url(sc, "/livez")))[0] == 200  # liveness has its own checks
        status, body = await http_get(url(sc, "/readyz?verbose&exclude=queue&exclude=slow"))
        assert status == 200 and "[+]queue excluded: ok" in body and "[+]slow" in body
        assert (await http_get(url(sc, "/healthz/queue")))[0] == 503
        assert (await http_get(url(sc, "/healthz/errors")))[0] == 200
        assert (await http_get(url(sc, "/healthz/nope")))[0] == 404
        assert (await http_get(url(sc, "/nopez")))[0] == 404

        status, body = await http_get(url(sc, "/healthz"), headers={"Accept": "application/health+json"})
        doc = json.loads(body)
        assert status == 503 and doc["status"] == "fail"
        assert doc["checks"]["queue:readiness"][0]["status"] == "fail"
        assert doc["checks"]["queue:readiness"][0]["observedValue"] == 500
        assert doc["checks"]["slow:readiness"][0]["status"] == "warn"
        assert doc["checks"]["scrape:readiness"][0]["status"] == "pass"

        # Each check's state is a metric.
        assert sc.sample("adapter_check_failing", {"check": "queue", "group": "readiness", "severity": "fail"}) == 1
        assert sc.sample("adapter_check_state", {"check": "slow", "state": "firing"}) == 1
        assert (sc.sample("adapter_scrape_series") or 0) >= 1
        # Only the families the rules read were parsed.
        assert "go_goroutines" not in {s[0] for s in sc.plugin.state.last_good.result.samples}


async def test_failure_status_is_configurable_and_bodies_stay_small(app: MetricsApp, rules_file: Path) -> None:
    app.page = "".join(f"m{i} 1\n" for i in range(300))
    long_expr = " or ".join(f"m{i} > 0" for i in range(40))
    rules = "rules:\n" + "".join(f"  - {{name: rule-{i:03d}, expr: '{long_expr}'}}\n" for i in range(300))
    rules_file.write_text(rules)
    async with adapter(app, rules_file, failure_status=500) as sc:
        await scrapes_after(sc, 1)
        status, body = await http_get(url(sc, "/healthz?verbose"))
        assert status == 500
        assert len(body.encode()) < 10 * 1024 and "more checks not shown" in body
        status, body = await http_get(url(sc, "/healthz"), headers={"Accept": "application/health+json"})
        assert status == 500 and len(body.encode()) < 10 * 1024


async def test_for_duration_and_no_data(app: MetricsApp, rules_file: Path) -> None:
    app.page = HEALTHY
    rules_file.write_text(
        """
rules:
  - {name: queue, expr: queue_depth > 100, for: 1s}
  - {name: beat, expr: heartbeat_total < 1, no_data: fail, group: liveness}
  - {name: optional, expr: optional_metric > 1, no_data: ok}
"""
    )
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 1)
        status, body = await http_get(url(sc, "/livez?verbose"))
        assert status == 503 and "[-]beat failed: no data: heartbeat_total absent" in body
        assert "[+]optional ok" in (await http_get(url(sc, "/healthz?verbose")))[1]
        app.page = HEALTHY.replace("queue_depth 3", "queue_depth 500")
        await scrapes_after(sc)
        status, body = await http_get(url(sc, "/readyz?verbose"))
        # Pending fails nothing, and says so rather than `ok`.
        assert status == 200 and "[+]queue pending since " in body and "(for: 1s)" in body, body
        assert sc.plugin.state.verdict.by_name["queue"].state == "pending"
        await wait_for(lambda: sc.plugin.state.verdict.by_name["queue"].state == "firing", 5)
        assert (await http_get(url(sc, "/readyz")))[0] == 503


async def test_target_that_goes_away_and_returns(app: MetricsApp, rules_file: Path) -> None:
    app.page = HEALTHY.replace("queue_depth 3", "queue_depth 500")
    rules_file.write_text(RULES + "  - {name: down, expr: up == 0, group: liveness}\nscrape: {for: 0s}\n")
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 1)
        port = app.port
        await app.stop()
        await wait_for(lambda: (sc.sample("adapter_scrape_failures_total", {"reason": "refused"}) or 0) >= 2)
        status, body = await http_get(url(sc, "/healthz?verbose"))
        assert status == 503
        assert "[-]scrape failed: scrape failed: refused" in body
        assert "[-]down failed: up == 0 = 0" in body
        # The app's own rules keep their last verdict, saying so.
        assert "[-]queue failed: queue_depth > 100 = 500 (last scrape failed" in body
        assert len(sc.events("scrape failed")) == 1  # logged once per reason, not every interval
        app.page = HEALTHY
        await app.start(port)
        await wait_for(lambda: sc.plugin.state.verdict.by_name["scrape"].state == "ok")
        await scrapes_after(sc, 1)
        assert await http_get(url(sc, "/healthz")) == (200, "ok")


async def test_timeouts_and_http_errors_are_classified(app: MetricsApp, rules_file: Path) -> None:
    app.page = HEALTHY
    rules_file.write_text(RULES)
    async with adapter(app, rules_file) as sc:
        app.status = 500
        await wait_for(lambda: (sc.sample("adapter_scrape_failures_total", {"reason": "http_status"}) or 0) >= 1)
        app.status, app.delay_secs = 200, 0.5
        await wait_for(lambda: (sc.sample("adapter_scrape_failures_total", {"reason": "timeout"}) or 0) >= 1)
        assert "HTTP 500" in sc.events("scrape failed")[0]["detail"]


async def test_a_one_second_interval_alone_runs_with_a_one_second_timeout(app: MetricsApp) -> None:
    # As Prometheus' default timeout: `--scrape-interval-secs 1` alone starts (the 5 s default timeout
    # would exceed it), and the timeout in force is the interval's: a target answering after 2.5 s times
    # out, where the 5 s default would have waited for it.
    app.page = HEALTHY
    port = free_port()
    command = [sys.executable, "-m", "sidecars.adapter", "--scrape-interval-secs", "1"]
    settings = {"target_url": app.url, "listen_host": "127.0.0.1", "listen_port": port}
    async with start_process("adapter", settings, command=command) as proc:
        await proc.wait_http("/readyz", timeout_secs=30)
        await wait_for(lambda: app.requests >= 1, 30)
        app.delay_secs = 2.5

        async def timeouts() -> float:
            text = (await http_get(proc.admin_url + "/metrics"))[1]
            found = re.search(r'^adapter_scrape_failures_total\{reason="timeout"\} (\S+)$', text, re.M)
            return float(found.group(1)) if found else 0.0

        deadline = time.monotonic() + 60
        while await timeouts() < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await timeouts() >= 1
        status, body = await http_get(f"http://127.0.0.1:{port}/healthz?verbose")
        assert status == 503 and "[-]scrape failed: scrape failed: timeout" in body, body


async def test_malformed_page_is_a_parse_error_with_its_line(app: MetricsApp, rules_file: Path) -> None:
    app.page = HEALTHY
    rules_file.write_text(RULES)
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 1)
        app.page = HEALTHY + 'queue_depth{a="1" 7\n'
        await wait_for(lambda: (sc.sample("adapter_parse_errors_total") or 0) >= 1)
        status, body = await http_get(url(sc, "/healthz/scrape?verbose"))
        # The documented verdict: the scrape check fails and names the line; other rules keep theirs.
        assert status == 503 and "parse_error: line 8: invalid label set" in body
        assert (sc.sample("adapter_scrape_failures_total", {"reason": "parse_error"}) or 0) >= 1
        assert (await http_get(url(sc, "/healthz/queue")))[0] == 200


async def test_a_malformed_line_no_rule_reads_is_counted_not_failed(app: MetricsApp, rules_file: Path) -> None:
    # The documented difference from Prometheus: with the family filter on, lines of families no rule
    # reads are not parsed; the scrape stands and the unchecked lines are shown.
    app.page = HEALTHY + 'unread_family{a="1" 7\nunread_other 3\n'
    rules_file.write_text(RULES)
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 2)
        assert sc.plugin.state.verdict.by_name["scrape"].state == "ok"
        assert (sc.sample("adapter_parse_errors_total") or 0) == 0
        # go_goroutines, the two unread lines: sample lines of families no rule reads.
        assert sc.sample("adapter_scrape_unchecked_lines") == 3
    async with adapter(app, rules_file, outputs=["health", "json"]) as sc:
        # An output that needs every family has every line parsed: the same page now fails.
        await wait_for(lambda: (sc.sample("adapter_parse_errors_total") or 0) >= 1)
        assert sc.plugin.state.verdict.by_name["scrape"].state != "ok"


async def test_openmetrics_is_negotiated_and_gzip_accepted(app: MetricsApp, rules_file: Path) -> None:
    stamp = round(time.time() - 1, 3)
    app.page = f"# TYPE queue_depth gauge\nqueue_depth 500 {stamp}\n# EOF\n"
    app.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    rules_file.write_text(RULES)
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 1)
        assert app.accept[0].startswith("application/openmetrics-text")
        assert sc.plugin.state.last_good.openmetrics
        assert sc.plugin.state.last_good.result.samples[0][3] == round(stamp * 1000)  # seconds in OpenMetrics
        assert (await http_get(url(sc, "/readyz")))[0] == 503


async def test_a_30_mb_page_is_parsed_while_probes_keep_answering(app: MetricsApp, rules_file: Path) -> None:
    line = 'big_series_total{pod="app-7d9f8b6c5-x2k4j",path="/api/v1/items/{id}",method="GET",code="200",i="%d"} 1\n'
    body = "# TYPE big_series_total counter\n" + "".join(line % i for i in range(290_000)) + HEALTHY
    assert len(body) > 30_000_000
    app.page = body
    rules_file.write_text(RULES + "  - {name: big, expr: 'count(big_series_total) < 1', no_data: fail}\n")
    limits = {"max_series": 300_000, "max_body_bytes": 40_000_000}  # past the defaults, on purpose
    async with adapter(app, rules_file, scrape_interval_secs=5.0, scrape_timeout_secs=5.0, **limits) as sc:
        answered = 0
        async with aiohttp.ClientSession() as session:
            while (sc.sample("adapter_scrapes_total") or 0) < 2:
                async with session.get(url(sc, "/healthz"), timeout=aiohttp.ClientTimeout(total=2)) as r:
                    assert r.status in (200, 503)
                    answered += 1
                await asyncio.sleep(0.01)
        assert answered > 10
        assert sc.sample("adapter_scrape_bytes") == len(body)
        assert (sc.sample("adapter_scrape_series") or 0) >= 290_000
        assert await http_get(url(sc, "/healthz")) == (200, "ok")
        # Beyond the size limit: a clear failure, nothing crashes.
        sc.plugin.serving.scraper.max_body_bytes = 1_000_000
        await wait_for(lambda: (sc.sample("adapter_scrape_failures_total", {"reason": "too_large"}) or 0) >= 1, 15)


async def test_rules_reload_good_and_bad(app: MetricsApp, rules_file: Path) -> None:
    app.page = HEALTHY
    rules_file.write_text(RULES)
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 1)
        assert (await http_get(url(sc, "/readyz")))[0] == 200
        rules_file.write_text(RULES.replace("queue_depth > 100", "queue_depth > 1"))
        await wait_for(lambda: (sc.sample("adapter_rule_reloads_total", {"result": "ok"}) or 0) >= 1)
        await scrapes_after(sc)
        assert (await http_get(url(sc, "/readyz")))[0] == 503
        rules_file.write_text("rules: [{name: broken, expr: 'rate(x[5m]'}]\n")
        await wait_for(lambda: (sc.sample("adapter_rule_reloads_total", {"result": "rejected"}) or 0) >= 1)
        (event,) = sc.events("rules rejected; the last good rules stay in force")
        assert "rule 'broken'.expr" in event["problems"][0]
        await scrapes_after(sc)
        status, body = await http_get(url(sc, "/readyz?verbose"))
        assert status == 503 and "[-]queue failed" in body  # the last good set is still in force
        # The sidecar's own readiness shows the rejection without acting on it.
        status, body = await http_get(sc.admin_url + "/readyz?verbose")
        assert status == 200 and "[+]rules-reload warn: last reload rejected" in body


async def test_json_and_relabelled_prometheus_outputs(app: MetricsApp, rules_file: Path) -> None:
    app.page = (
        "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n"
        'http_requests_total{code="200",path="/api"} 100\n'
        'http_requests_total{code="200",path="/healthz"} 50\n'
        "# TYPE http_latency_seconds histogram\n"
        'http_latency_seconds_bucket{le="+Inf"} 3\nhttp_latency_seconds_sum 0.5\nhttp_latency_seconds_count 3\n'
        "# TYPE go_goroutines gauge\ngo_goroutines 12\nodd_value NaN\n"
    )
    rules_file.write_text(
        r"""
export:
  keep: ['http_.*', 'odd_value']
  drop: ['http_requests_total{path="/healthz"}']
  rename: [{match: 'http_(.*)', replace: 'acme_web_\1'}]
"""
    )
    async with adapter(app, rules_file, outputs=["health", "json", "prometheus"]) as sc:
        await scrapes_after(sc, 1)
        status, body = await http_get(url(sc, "/metrics"))
        assert status == 200
        assert body.splitlines() == [
            "# HELP acme_web_requests_total Requests.",
            "# TYPE acme_web_requests_total counter",
            'acme_web_requests_total{code="200",path="/api"} 100',
            "# TYPE acme_web_latency_seconds histogram",
            'acme_web_latency_seconds_bucket{le="+Inf"} 3',
            "acme_web_latency_seconds_sum 0.5",
            "acme_web_latency_seconds_count 3",
            "odd_value NaN",
        ]
        status, body = await http_get(url(sc, "/metrics.json"))
        doc = json.loads(body)
        assert status == 200
        assert doc["families"]["http_latency_seconds"]["type"] == "histogram"
        assert len(doc["families"]["http_latency_seconds"]["samples"]) == 3
        assert doc["families"]["go_goroutines"]["samples"] == [{"name": "go_goroutines", "labels": {}, "value": 12}]
        assert doc["families"]["odd_value"]["samples"][0]["value"] == "NaN"


async def test_gzip_body_is_decompressed_and_counted_after_decompression(app: MetricsApp, rules_file: Path) -> None:
    app.page = HEALTHY
    rules_file.write_text(RULES)
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 1)
        assert "gzip" in app.accept_encoding[0]  # so the app compressed its answer
        assert sc.sample("adapter_scrape_bytes") == len(HEALTHY)
        assert (await http_get(url(sc, "/healthz")))[0] == 200


async def test_content_encodings_are_inflated_or_refused_with_a_reason(app: MetricsApp, rules_file: Path) -> None:
    import gzip

    rules_file.write_text(RULES + "scrape: {for: 0s}\n")
    # Two gzip members one after another (as a streaming server may write them) make one page.
    app.raw_body = gzip.compress(HEALTHY[:40].encode()) + gzip.compress(HEALTHY[40:].encode())
    app.headers = {"Content-Encoding": "gzip"}
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 1)
        assert sc.sample("adapter_scrape_bytes") == len(HEALTHY)
        assert await http_get(url(sc, "/healthz")) == (200, "ok")
        app.headers = {"Content-Encoding": "br"}
        await wait_for(
            lambda: "unsupported Content-Encoding 'br'" in (sc.plugin.state.verdict.by_name["scrape"].reason or "")
        )
        assert "decode_error: unsupported Content-Encoding 'br'" in (await http_get(url(sc, "/healthz?verbose")))[1]
        assert (sc.sample("adapter_scrape_failures_total", {"reason": "decode_error"}) or 0) >= 1
        app.headers = {"Content-Encoding": "gzip"}
        app.raw_body = gzip.compress(HEALTHY.encode())[:-8]
        await wait_for(lambda: "gzip stream truncated" in (sc.plugin.state.verdict.by_name["scrape"].reason or ""))
        assert (await http_get(url(sc, "/healthz")))[0] == 503


class TestAdapterConformance(ConformanceSuite):
    plugin = Adapter
    settings = {"listen_host": "127.0.0.1", "listen_port": 0, "target_url": "http://127.0.0.1:9/metrics"}


async def test_a_real_node_exporter_as_the_target(rules_file: Path, tmp_path: Path) -> None:
    import subprocess

    from sidecars.testing import free_port

    port = free_port()
    proc = subprocess.Popen(
        ["/usr/bin/prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = MetricsApp()
    target.port = port  # only its URL is used
    rules_file.write_text(
        """
rules:
  - {name: cpus, expr: 'count(count by (cpu) (node_cpu_seconds_total)) < 1', no_data: fail}
  - {name: load, expr: 'node_load1 >= 0', severity: warn}
  - {name: busy, expr: 'sum(rate(node_cpu_seconds_total{mode!="idle"}[1m])) > 1000'}
"""
    )
    try:
        async with adapter(target, rules_file, outputs=["health", "json"], scrape_interval_secs=0.5,
                           scrape_timeout_secs=0.5) as sc:  # fmt: skip
            await wait_for(lambda: sc.plugin.state.last_good is not None, 20)
            await scrapes_after(sc)
            status, body = await http_get(url(sc, "/healthz?verbose"))
            assert status == 200, body
            assert "[+]cpus ok" in body and "[+]busy ok" in body
            assert "[+]load warn: node_load1 >= 0 = " in body
            status, body = await http_get(url(sc, "/metrics.json"))
            families = json.loads(body)["families"]
            assert families["node_cpu_seconds_total"]["type"] == "counter"
            assert len(families) > 50
    finally:
        proc.terminate()
        proc.wait(10)


async def test_evaluation_errors_fail_the_check_are_counted_and_logged_once(app: MetricsApp, rules_file: Path) -> None:
    app.page = 'a{x="1"} 1\na{x="2"} 1\nb{y="1"} 1\n'
    rules_file.write_text("rules: [{name: join, expr: 'a * on() b'}]\n")
    async with adapter(app, rules_file) as sc:
        await scrapes_after(sc, 3)
        status, body = await http_get(url(sc, "/healthz?verbose"))
        assert status == 503 and "[-]join failed: evaluation error: " in body
        assert (sc.sample("adapter_rule_evaluation_errors_total", {"check": "join"}) or 0) >= 3
        assert len(sc.events("rule evaluation failed")) == 1
