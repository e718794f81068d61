"""A seeded random differential test: random counters and gauges (gaps, resets, staleness markers), random
ranges and evaluation times off the sample grid, all checked against promtool in one run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.unit.promql.promql_golden import Case, compare, ours, run_promtool

SEED = 20_240_242
RANGE_FUNCTIONS = [
    "rate",
    "increase",
    "irate",
    "delta",
    "idelta",
    "deriv",
    "changes",
    "resets",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "stddev_over_time",
]


def random_counter(rng: random.Random, n: int) -> str:
    value = rng.choice([0, 0, 3, 250])
    items = []
    for _ in range(n):
        r = rng.random()
        if r < 0.1:
            items.append("_")
            continue
        if r < 0.15:
            value = rng.randint(0, 3)  # a reset
        else:
            value += rng.choice([0, 1, 2, 5, 17])
        items.append(str(value))
    return " ".join(items)


def random_gauge(rng: random.Random, n: int) -> str:
    items = []
    for _ in range(n):
        r = rng.random()
        if r < 0.08:
            items.append("_")
        elif r < 0.12:
            items.append("stale")
        else:
            items.append(f"{rng.randint(-4000, 4000) / 100}")
    return " ".join(items)


def seconds(ms: int) -> str:
    return f"{ms // 1000}s{ms % 1000}ms" if ms % 1000 else f"{ms // 1000}s"


def build_cases() -> list[Case]:
    rng = random.Random(SEED)
    cases = []
    for k in range(30):
        interval_s = rng.choice([5, 10, 15, 30, 60])
        n = rng.randint(4, 40)
        series = [
            (f'c_total{{k="{k}",s="1"}}', random_counter(rng, n)),
            (f'c_total{{k="{k}",s="2"}}', random_counter(rng, n)),
            (f'g{{k="{k}"}}', random_gauge(rng, n)),
        ]
        exprs = []
        for _ in range(8):
            func = rng.choice(RANGE_FUNCTIONS)
            metric = "c_total" if func in ("rate", "increase", "irate", "resets") else rng.choice(["c_total", "g"])
            window = interval_s * 1000 * rng.choice([1, 2, 3, 4, 6, 10]) + rng.choice([0, 0, 500, 2500])
            exprs.append(f"{func}({metric}[{seconds(window)}])")
        exprs.append(f"sum by (k) (rate(c_total[{seconds(interval_s * 4000)}]))")
        exprs.append("g")
        span_ms = (n * interval_s + 400) * 1000
        times = sorted({seconds(rng.randrange(0, span_ms, 250)) for _ in range(6)})
        cases.append(Case(f"random-{k}", series, exprs, times, interval=f"{interval_s}s"))
    return cases


CASES = build_cases()


@pytest.fixture(scope="module")
def promtool_results(tmp_path_factory: pytest.TempPathFactory) -> dict[int, object]:
    return run_promtool(CASES, Path(tmp_path_factory.mktemp("promtool-random")))  # type: ignore[return-value]


def test_random_series_match_promtool(promtool_results: dict[int, object]) -> None:
    failures = []
    checked = 0
    for case in CASES:
        for test_id, expr, time in case.tests:
            assert test_id in promtool_results, f"promtool gave no answer for {expr!r} at {time}"
            problem = compare(promtool_results[test_id], ours(case, expr, time))  # type: ignore[arg-type]
            checked += 1
            if problem:
                failures.append(f"[{case.name}] {expr} @ {time}: {problem}")
    assert checked >= 1500
    assert not failures, f"{len(failures)} of {checked} mismatches:\n" + "\n".join(failures[:30])
