"""The real Prometheus server (2.42) scrapes a target whose metrics change over time; our engine, fed the
same pages with the scrape timestamps Prometheus recorded, must answer every query as Prometheus does.

The target numbers its pages (`scrape_seq`), so the samples of `scrape_seq` in Prometheus tell which page
each scrape got and when. After the last page the target answers 500: Prometheus marks every series stale,
and so must History.mark_stale(), or a scrape that holds only the synthetic `up` series (then `up` is
compared too). Prometheus adds `job` and `instance` to every series; the test adds them to the pages too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecars.adapter.promql import History, InstantVector, Scalar, evaluate, parse_expr, referenced_metric_names
from tests.support.prometheus import close, errors_disagree, query, query_ordered, run_prometheus, serve_pages

PAGES = 24  # about 24 s of scrapes at 1 s
INSTANCE_LABELS = (("instance", "{target}"), ("job", "app"))

EXPRESSIONS = [
    "app_requests_total",
    "rate(app_requests_total[5s])",
    "increase(app_requests_total[10s])",
    "rate(app_requests_total[1m])",
    "irate(app_requests_total[5s])",
    "resets(app_requests_total[30s])",
    "sum by (code) (rate(app_requests_total[10s]))",
    'rate(app_requests_total{code="500"}[10s]) / ignoring(code) rate(app_requests_total{code="200"}[10s])',
    "changes(app_queue_depth[10s])",
    "delta(app_queue_depth[10s])",
    "deriv(app_queue_depth[10s])",
    "predict_linear(app_queue_depth[10s], 60)",
    "avg_over_time(app_queue_depth[10s])",
    "max_over_time(app_queue_depth[1m])",
    "app_queue_depth > bool 5",
    "app_queue_depth > 5",
    "timestamp(app_queue_depth)",
    "histogram_quantile(0.9, rate(app_latency_seconds_bucket[10s]))",
    "histogram_quantile(0.5, sum by (le) (rate(app_latency_seconds_bucket[1m])))",
    "rate(app_latency_seconds_sum[10s]) / rate(app_latency_seconds_count[10s])",
    "app_temp_celsius",
    "absent(app_temp_celsius)",
    "count_over_time(app_temp_celsius[1m])",
    "absent_over_time(app_temp_celsius[3s])",
    "last_over_time(app_temp_celsius[1m])",
    "sum(app_queue_depth) + scalar(app_temp_celsius)",
    "topk(1, app_requests_total)",
    "app_requests_total offset 5s",
    "max_over_time(rate(app_requests_total[3s])[10s:2s])",
    'app_requests_total{code="500"} and on(job) app_temp_celsius',
    "app_temp_celsius or app_queue_depth",
    'app_requests_total unless on(code) app_requests_total{code=~"2.."}',
    "up",
    "count by (job) (up == 1)",
]

# Compared position by position. Prometheus' query API merges its storages and so reads series sorted by
# labels, where its rule evaluation (and promtool) read them in creation order, as the engine does: the
# cases avoid ties between samples whose places those two orders would decide differently.
ORDERED_EXPRESSIONS = [
    "sort(app_requests_total)",
    "sort_desc(app_requests_total)",
    "sort(app_latency_seconds_bucket)",
    "sort_desc(app_latency_seconds_bucket or vector(0 / 0))",
    "sort(vector(0 / 0) or app_requests_total)",
    "sort_desc(app_queue_depth + 0.25 or app_requests_total)",
    "topk(3, app_latency_seconds_bucket)",
    "bottomk(2, app_latency_seconds_bucket)",
    "topk(5, app_requests_total or vector(0 / 0))",
    "bottomk(3, vector(0 / 0) or app_requests_total)",
    "topk by (code) (1, app_requests_total)",
]


def page(n: int) -> str:
    """Page number `n`: counters with resets, a gauge, a histogram and a series that comes and goes."""
    req200 = 5.0
    req500 = 0.0
    buckets = [0.0, 0.0, 0.0, 0.0]
    for i in range(1, n + 1):
        req200 = 2.0 if i == 14 else req200 + (i % 4) + 1
        req500 = 0.0 if i == 20 else req500 + i % 2
        obs = i % 3
        for b, extra in enumerate((0, 2, 3, 4)):
            buckets[b] += obs + extra
    depth = (n * 7) % 11 - 2
    lines = [
        "# TYPE scrape_seq gauge",
        f"scrape_seq {n}",
        "# TYPE app_requests_total counter",
        f'app_requests_total{{code="200"}} {req200}',
        f'app_requests_total{{code="500"}} {req500}',
        "# TYPE app_queue_depth gauge",
        f"app_queue_depth {depth}",
        "# TYPE app_latency_seconds histogram",
    ]
    for le, count in zip(("0.1", "0.5", "1", "+Inf"), buckets, strict=True):
        lines.append(f'app_latency_seconds_bucket{{le="{le}"}} {count}')
    lines += [f"app_latency_seconds_sum {buckets[-1] * 0.37}", f"app_latency_seconds_count {buckets[-1]}"]
    if 6 <= n < 13:
        lines += ["# TYPE app_temp_celsius gauge", f"app_temp_celsius {n * 1.5}"]
    return "\n".join(lines) + "\n"


def ours(history: History, expr: str, t_ms: int) -> dict[Any, float] | str:
    try:
        value = evaluate(parse_expr(expr), history, t_ms)
    except Exception as exc:
        return f"error: {exc}"
    if isinstance(value, Scalar):
        return {(): value.value}
    assert isinstance(value, InstantVector)
    return {s.labels: s.value for s in value.samples}


def ours_ordered(history: History, expr: str, t_ms: int) -> list[tuple[Any, float]] | str:
    try:
        value = evaluate(parse_expr(expr), history, t_ms)
    except Exception as exc:
        return f"error: {exc}"
    assert isinstance(value, InstantVector)
    return [(s.labels, s.value) for s in value.samples]


def diff_ordered(theirs: list[tuple[Any, float]] | str, mine: list[tuple[Any, float]] | str) -> str | None:
    if isinstance(theirs, str) or isinstance(mine, str):
        return None if isinstance(theirs, str) and isinstance(mine, str) else f"Prometheus {theirs!r}; ours {mine!r}"
    same = len(theirs) == len(mine) and all(
        a[0] == b[0] and close(a[1], b[1]) for a, b in zip(theirs, mine, strict=True)
    )
    return None if same else f"\n  Prometheus {theirs}\n  ours       {mine}"


def referenced(expr: str) -> frozenset[str]:
    return referenced_metric_names(parse_expr(expr)) or frozenset()


def scraped_samples(text: str, instance: str) -> list[tuple[str, tuple[tuple[str, str], ...], float, None]]:
    extra = (("instance", instance), ("job", "app"))
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((*s.labels.items(), *extra)))
            out.append((s.name, labels, float(s.value), None))
    return out


async def test_engine_agrees_with_prometheus(tmp_path: Path) -> None:
    async with (
        serve_pages(page, PAGES) as (target, target_port),
        run_prometheus(tmp_path, target_port) as url,
        aiohttp.ClientSession() as session,
    ):
        # Wait for every page to be served, and for at least two failed scrapes after them.
        for _ in range(900):
            if target.served >= PAGES:
                break
            await asyncio.sleep(0.1)
        assert target.served >= PAGES, f"only {target.served} pages were scraped"
        await asyncio.sleep(2.5)

        instance = f"127.0.0.1:{target_port}"
        async with session.get(f"{url}/api/v1/query", params={"query": "time()"}) as resp:
            now_ms = int(float((await resp.json())["data"]["result"][1]) * 1000)
        # Which page each scrape got, and when: the samples of scrape_seq; failures: up == 0.
        seq = await range_samples(session, url, "scrape_seq[5m]", now_ms)
        ups = await range_samples(session, url, "up[5m]", now_ms)

        # Replay Prometheus' own timeline: a successful scrape (up == 1) got the page whose number
        # scrape_seq holds at that time; a failed one (a timeout, or the 500s at the end) stales everything.
        page_at = {t: int(v) for t, v in seq}
        scrape_times = {n: t for t, n in page_at.items()}
        assert len(scrape_times) >= 20, f"only {len(scrape_times)} pages were ingested"
        failures = [t for t, v in ups if v == 0]
        assert failures and failures[-1] > max(scrape_times.values()), "no failed scrape after the last page"

        # Two ways to record the failed scrapes: mark_stale(), or (as Prometheus itself does, and so that
        # `up` can be queried) a scrape holding only the synthetic `up` series, which stales all others.
        up = ("up", (("instance", instance), ("job", "app")))
        history = History(retention_ms=3_600_000)
        with_up = History(retention_ms=3_600_000)
        for t, v in ups:
            if v == 1:
                samples = scraped_samples(page(page_at[t]), instance)
                history.append_scrape(t, samples)
                with_up.append_scrape(t, [*samples, (*up, 1.0, None)])
            else:
                history.mark_stale(t)
                with_up.append_scrape(t, [(*up, 0.0, None)])
        failures = [t for t in failures if t > max(scrape_times.values())]

        times = sorted(scrape_times.values())
        eval_times = [
            times[3],
            times[5] + 400,
            times[9],
            times[12] + 1,
            times[13] + 700,
            times[15],
            times[19] + 999,
            times[-1],
            times[-1] + 500,
            failures[0],
            failures[0] + 300,
            failures[-1] + 100,
        ]
        mismatches = []
        compared = non_empty = 0
        for expr in EXPRESSIONS:
            for t in eval_times:
                theirs = await query(session, url, expr, t)
                compared += 1
                non_empty += bool(theirs) and not isinstance(theirs, str)
                for kind, h in (("mark_stale", history), ("up", with_up)):
                    if kind == "mark_stale" and "up" in referenced(expr):
                        continue
                    problem = diff(theirs, ours(h, expr, t))
                    if problem:
                        mismatches.append(f"[{kind}] {expr} @ {t} (scrapes {times[0]}..{times[-1]}): {problem}")
        for expr in ORDERED_EXPRESSIONS:
            for t in eval_times:
                ordered = await query_ordered(session, url, expr, t)
                compared += 1
                non_empty += bool(ordered) and not isinstance(ordered, str)
                problem = diff_ordered(ordered, ours_ordered(with_up, expr, t))
                if problem:
                    mismatches.append(f"[ordered] {expr} @ {t}: {problem}")
        assert compared == (len(EXPRESSIONS) + len(ORDERED_EXPRESSIONS)) * len(eval_times)
        assert non_empty >= compared * 0.6, f"only {non_empty} of {compared} queries gave samples"
        assert not mismatches, f"{len(mismatches)} of {compared} differ:\n" + "\n".join(mismatches)


async def range_samples(session: aiohttp.ClientSession, url: str, expr: str, t_ms: int) -> list[tuple[int, float]]:
    async with session.get(f"{url}/api/v1/query", params={"query": expr, "time": f"{t_ms / 1000:.3f}"}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    assert len(result) == 1, result
    return [(round(float(t) * 1000), float(v)) for t, v in result[0]["values"]]


def diff(theirs: dict[Any, float] | str, mine: dict[Any, float] | str) -> str | None:
    if isinstance(theirs, str) and isinstance(mine, str):
        return errors_disagree(theirs, mine)
    if isinstance(theirs, str) or isinstance(mine, str):
        return f"Prometheus: {theirs!r}; ours: {mine!r}"
    if set(theirs) != set(mine):
        return f"labels differ: Prometheus {sorted(theirs.items())}; ours {sorted(mine.items())}"
    bad = [f"{dict(k)}: Prometheus {theirs[k]!r}, ours {mine[k]!r}" for k in theirs if not close(theirs[k], mine[k])]
    return "; ".join(bad) or None


pytestmark = pytest.mark.timeout(120)
