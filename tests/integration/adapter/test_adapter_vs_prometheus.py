"""The adapter's own path (its exposition parser, its synthetic `up`, its evaluator) against the real
Prometheus server scraping the same target.

The target serves numbered pages (counters with resets, a histogram, a gauge, a series that comes and
goes) and fails after the last one. Prometheus' `scrape_seq` and `up` samples say which page each of
its scrapes got and when; the same pages, parsed by `sidecars.adapter.exposition`, are fed to the
adapter's `Evaluator` at those times, and every rule's expression must give what Prometheus' query
API gives at each scrape time (its `job`/`instance` labels aside), and every check's state must
follow: firing exactly when Prometheus returns samples.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from sidecars.adapter.evaluator import Evaluator, ScrapeReport
from sidecars.adapter.exposition import parse
from sidecars.adapter.promql import InstantVector, Scalar, evaluate
from sidecars.adapter.rules import parse_rules
from tests.support.prometheus import close, query, run_prometheus, serve_pages

PAGES = 20

RULES = """
rules:
  - {name: error-ratio, expr: 'sum(rate(app_requests_total{code="500"}[5s])) / sum(rate(app_requests_total[5s])) > 0.1'}
  - {name: requests, expr: 'sum by (code) (increase(app_requests_total[10s]))'}
  - {name: latency, expr: 'histogram_quantile(0.9, sum by (le) (rate(app_latency_seconds_bucket[10s]))) > 0.2'}
  - {name: queue, expr: 'max(app_queue_depth) > 3'}
  - {name: queue-growing, expr: 'deriv(app_queue_depth[6s]) > 0'}
  - {name: stalled, expr: 'changes(app_heartbeat_total[4s]) == 0'}
  - {name: temp, expr: 'max_over_time(app_temp_celsius[5s]) > 10'}
  - {name: missing-temp, expr: 'absent(app_temp_celsius)'}
  - {name: down, expr: 'up == 0'}
"""


def page(n: int) -> str:
    req200, req500 = 5.0, 0.0
    buckets = [0.0, 0.0, 0.0, 0.0]
    heartbeat = 0
    for i in range(1, n + 1):
        req200 = 2.0 if i == 11 else req200 + (i % 4) + 1  # a counter reset
        req500 = req500 + (i % 3 == 0) * 2
        for b, extra in enumerate((0, 1, 3, 4)):
            buckets[b] += i % 3 + extra
        heartbeat += 0 if 8 <= i <= 12 else 1  # stalls for a while
    lines = [
        "# TYPE scrape_seq gauge",
        f"scrape_seq {n}",
        "# HELP app_requests_total Requests.",
        "# TYPE app_requests_total counter",
        f'app_requests_total{{code="200",path="/"}} {req200}',
        f'app_requests_total{{path="/",code="500"}} {req500}',
        "# TYPE app_queue_depth gauge",
        f"app_queue_depth {(n * 7) % 11 - 2}",
        "# TYPE app_heartbeat_total counter",
        f"app_heartbeat_total {heartbeat}",
        "# TYPE app_latency_seconds histogram",
    ]
    for le, count in zip(("0.1", "0.25", "1", "+Inf"), buckets, strict=True):
        lines.append(f'app_latency_seconds_bucket{{le="{le}"}} {count}')
    lines += [f"app_latency_seconds_sum {buckets[-1] * 0.21}", f"app_latency_seconds_count {buckets[-1]}"]
    if 5 <= n < 11:
        lines += ["# TYPE app_temp_celsius gauge", f"app_temp_celsius {n * 1.5}"]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(150)
async def test_rules_over_parsed_pages_agree_with_prometheus(tmp_path: Path) -> None:
    rules = parse_rules(RULES, "rules.yaml")
    async with (
        serve_pages(page, PAGES) as (target, port),
        run_prometheus(tmp_path, port) as url,
        aiohttp.ClientSession() as s,
    ):
        for _ in range(600):
            if target.served >= PAGES:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # two failed scrapes after the last page
        async with s.get(f"{url}/api/v1/query", params={"query": "time()"}) as resp:
            now_ms = int(float((await resp.json())["data"]["result"][1]) * 1000)
        timeline: dict[str, list[tuple[int, float]]] = {}
        for expr in ("scrape_seq[5m]", "up[5m]"):
            async with s.get(f"{url}/api/v1/query", params={"query": expr, "time": f"{now_ms / 1000:.3f}"}) as r:
                (series,) = (await r.json())["data"]["result"]
            timeline[expr] = [(round(float(t) * 1000), float(v)) for t, v in series["values"]]
        page_at = {t: int(v) for t, v in timeline["scrape_seq[5m]"]}
        assert len(page_at) >= PAGES - 2, f"Prometheus ingested only {len(page_at)} pages"

        evaluator = Evaluator(rules)
        mismatches: list[str] = []
        compared = firing = 0
        for t, up in timeline["up[5m]"]:
            ok = up == 1
            samples = parse(page(page_at[t])).samples if ok else []
            report = ScrapeReport(
                t_ms=t, ok=ok, samples=samples, duration_secs=0.001, reason=None if ok else "HTTP 500"
            )
            verdict = evaluator.observe(report)
            for rule in rules.rules:
                theirs = await query(s, url, rule.expr_text, t, drop=frozenset({"job", "instance"}))
                assert not isinstance(theirs, str), (rule.expr_text, theirs)
                value = evaluate(rule.expr, evaluator.history, t)
                if isinstance(value, Scalar):
                    mine = {(): value.value}
                else:
                    assert isinstance(value, InstantVector)
                    mine = {sample.labels: sample.value for sample in value.samples}
                compared += 1
                if set(theirs) != set(mine) or any(not close(theirs[k], mine[k]) for k in theirs):
                    mismatches.append(f"{rule.name} @ {t} ({'page ' + str(page_at[t]) if ok else 'failed'}): "
                                      f"Prometheus {sorted(theirs.items())}, ours {sorted(mine.items())}")  # fmt: skip
                    continue
                check = verdict.by_name[rule.name]
                kept = not ok and rule.name != "down"  # the documented rule: the last verdict is kept
                if not kept and (check.state == "firing") != bool(theirs):
                    mismatches.append(f"{rule.name} @ {t}: state {check.state} but Prometheus gave {theirs}")
                firing += check.state == "firing"
        assert compared >= len(rules.rules) * PAGES
        assert firing >= compared // 10, "too few conditions held to mean much"
        assert not mismatches, f"{len(mismatches)} of {compared} differ:\n" + "\n".join(mismatches)
