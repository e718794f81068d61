"""Our engine against promtool (Prometheus 2.42) on the same series, expressions and evaluation times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.promql import go_math_reference as go
from tests.unit.promql.promql_golden import Case, compare, ours, run_promtool, same

COUNTERS = [
    ('http_requests_total{job="api",code="200"}', "0+10x40"),
    ('http_requests_total{job="api",code="500"}', "0+1x12 2+1x14 0+3x13"),  # two resets
    ('http_requests_total{job="web",code="200"}', "100+5x40"),  # starts far from zero
    ('http_requests_total{job="web",code="500"}', "_x6 3 _ 7 9 _x3 12 15 _x10 1 2"),  # sparse, a reset
    ('slow_total{job="api"}', "0+1x3 _x30 4+2x6"),
]

GAUGES = [
    ('queue_depth{queue="a"}', "5 7 3 9 12 0 -2 4 4 4 8 15 15 15 1 2 3 NaN 4 5 Inf 6"),
    ('queue_depth{queue="b"}', "1.5+0.25x21"),
    ('queue_depth{queue="c"}', "10 10 10 10 10 10 10 10"),
    ('temperature{room="x"}', "20.5 21.25 19.75 -3 1e3 0.001 22 23 22 21 20"),
]

HISTOGRAM = [
    ('req_seconds_bucket{handler="a",le="0.1"}', "0+2x30"),
    ('req_seconds_bucket{handler="a",le="0.5"}', "0+5x30"),
    ('req_seconds_bucket{handler="a",le="1"}', "0+7x30"),
    ('req_seconds_bucket{handler="a",le="+Inf"}', "0+8x30"),
    ('req_seconds_bucket{handler="b",le="0.1"}', "0+0x30"),
    ('req_seconds_bucket{handler="b",le="0.5"}', "0+1x10 0+1x19"),
    ('req_seconds_bucket{handler="b",le="1"}', "0+4x10 0+4x19"),
    ('req_seconds_bucket{handler="b",le="+Inf"}', "0+4x10 0+4x19"),
    ('req_seconds_bucket{handler="c",le="0.5"}', "0+1x30"),  # no +Inf bucket: NaN
    ('req_seconds_bucket{handler="c",le="1"}', "0+2x30"),
    ('req_seconds_bucket{handler="d",le="-1"}', "0+1x30"),  # negative lowest bound
    ('req_seconds_bucket{handler="d",le="1"}', "0+2x30"),
    ('req_seconds_bucket{handler="d",le="+Inf"}', "0+3x30"),
    ('req_seconds_bucket{handler="e",le="0.5"}', "0+1x30"),  # the same bound spelled twice: coalesced
    ('req_seconds_bucket{handler="e",le="0.50"}', "0+2x30"),
    ('req_seconds_bucket{handler="e",le="+Inf"}', "0+4x30"),
    ('req_seconds_bucket{handler="f",le="1"}', "0+5x30"),  # counts going down across buckets: made monotonic
    ('req_seconds_bucket{handler="f",le="2"}', "0+4x30"),
    ('req_seconds_bucket{handler="f",le="+Inf"}', "0+6x30"),
    ('req_seconds_count{handler="a"}', "0+8x30"),
    ('req_seconds_sum{handler="a"}', "0+3.7x30"),
]

MATCHING = [
    ('errors_total{job="api",instance="1",code="500"}', "0+1x20"),
    ('errors_total{job="api",instance="2",code="500"}', "0+2x20"),
    ('errors_total{job="api",instance="2",code="503"}', "0+5x20"),
    ('requests_total{job="api",instance="1"}', "0+10x20"),
    ('requests_total{job="api",instance="2"}', "0+20x20"),
    ('requests_total{job="db",instance="3"}', "0+30x20"),
    ('build_info{job="api",version="1.2"}', "1x20"),
    ('build_info{job="db",version="7"}', "1x20"),
    ('up{job="api",instance="1"}', "1 1 1 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"),
    ('up{job="api",instance="2"}', "1x20"),
    ('up{job="db",instance="3"}', "0x20"),
    ('limit{job="api"}', "15x20"),
]

STALENESS = [
    ('gone{id="1"}', "1 2 3 stale"),  # ends with a staleness marker
    ('gone{id="2"}', "1 2 3"),  # just stops: visible for the lookback delta
    ('flappy{id="1"}', "1 stale 3 stale 5 6 stale _ 9"),
    ('late{id="1"}', "_x8 1 2"),
]

AGG = [
    ('mem_bytes{pod="a",ns="x",node="n1"}', "100 200 300 400"),
    ('mem_bytes{pod="b",ns="x",node="n1"}', "50 60 70 80"),
    ('mem_bytes{pod="c",ns="y",node="n2"}', "10 NaN 30 40"),
    # Values differ from pod c's where both are numbers: promtool loads series in random order, and ties in
    # topk/bottomk go to whichever series came first.
    ('mem_bytes{pod="d",ns="y",node="n2"}', "11 20 Inf 41"),
    ('mem_bytes{pod="e",ns="z",node="n3"}', "7 7 7 7"),
    ('cpu{pod="a",ns="x"}', "0.5 1 1.5 2"),
]

# Label values and patterns where RE2 (what Prometheus runs, through Go) and Python's `re` part ways:
# Unicode classes and case folding, `$` before a final newline, `.` and newlines, POSIX classes,
# `\Q..\E`, escapes Go rejects that C++ RE2 accepts (`\C`, `(?<name>`), repeat counts, nested
# repetition, and a pattern that breaks out of the `^(?:...)$` wrapper.
REGEX_VALUES = ["a", "aa", "ab", "x", "_", "1", "5", "\n", "a\n", "é", "αβ", "\u212a", "\u0663", ".*", "STRASSE", "☺"]
# fmt: off
REGEX_PATTERNS = [
    r"a**", r"a++", r"\C", r"(?<n>a)", r"(?P<n>a)", r"\1", r"\12", r"\8", r"\0", r"\Z", r"\z", r"\Q.*\E",
    r"[[:alpha:]]+", r"[[:^alpha:]]", r"\pN", r"\p{Greek}+", r"\PN", r"\pL", r"(?i)k", r".", r"[^a]", r"a$",
    r"(?m)a$", r"(?=a)", r"(?<=a)b", r"a{1001}", r"a{1000}", r"(a{500}){500}", r"\w", r"\d", r"x*?", r"(?U)a+",
    r"(?s).", r"\x{263a}", r"(?i)strasse", r")", r"a|*", r"x{2,1}", r"\e", r"[[:word:]]", r"\%", r"\_", r"(?i:A)a",
    r"a(?i)A", r"[]a]", r"[^]a]", r"\b", r"^a", r"a^", r"(?-s).", r"[a-]", r"[\d-z]", r"[[:foo:]]", r"(?P=n)",
    r"\pX", r"(?x)a b", r"\Qab", r"a{,5}", r"a{2}{3}", r"[[.a.]]", r"\u0041", r"a)|(b", r"[\C]", r"\Q\C\E",
    r"(a|b)*c?", r"/static/(\w+[-.]?)+\.js",
]
# fmt: on
REGEX_SERIES = [(f'm{{v={json.dumps(v)},i="{i}"}}', "1") for i, v in enumerate(REGEX_VALUES)]
REGEX_EXPRS = [f"m{{v=~{json.dumps(p)}}}" for p in REGEX_PATTERNS] + [
    'm{v!~"[[:alpha:]]+|\\\\pN"}',
    'label_replace(m, "d", "$1-${2}x$n", "v", "(\\\\pL)(\\\\pL)?")',
    'label_replace(m, "d", "<$first>", "v", "(?P<first>.)\\\\PL*")',
    'label_replace(m, "d", "$1", "v", "(")',
    'label_replace(m, "d", "$1", "v", "(?<x>a)")',
]

# Go's float64 division, math.Mod and math.Pow at their special cases (the engine's and the reference's).
FLOAT_OPERANDS = ["0", "-0", "1", "-1", "0.5", "-0.5", "2", "-3", "1e308", "-1e308", "5e-324", "Inf", "-Inf", "NaN"]
FLOAT_EXPRS = [f"({a}) {op} ({b})" for op in "/%^" for a in FLOAT_OPERANDS for b in FLOAT_OPERANDS]

CASES = [
    Case("regex_syntax", REGEX_SERIES, REGEX_EXPRS, ["0s"]),
    Case("float_special_cases", [("unused", "0")], FLOAT_EXPRS, ["0s"]),
    Case(
        "counter_rates",
        COUNTERS,
        [
            "rate(http_requests_total[5m])",
            "increase(http_requests_total[5m])",
            "rate(http_requests_total[1m])",
            "increase(http_requests_total[2m30s])",
            "irate(http_requests_total[5m])",
            "rate(http_requests_total[10m])",
            "resets(http_requests_total[10m])",
            "changes(http_requests_total[10m])",
            "sum by (job) (rate(http_requests_total[5m]))",
            'rate(slow_total{job="api"}[20m])',
            "increase(http_requests_total[5m] offset 3m)",
        ],
        ["0s", "1m", "3m", "5m", "5m7s", "7m30s", "12m", "13m", "15m20s", "26m", "27m", "33m", "40m", "44m"],
    ),
    Case(
        "counter_rates_15s",
        [('c_total{a="1"}', "3+7x30 0+7x30"), ('c_total{a="2"}', "0+0.1x60")],
        ["rate(c_total[1m])", "increase(c_total[45s])", "irate(c_total[1m])", "increase(c_total[3m])"],
        ["30s", "1m", "1m5s", "2m", "7m29s", "7m31s", "8m", "15m", "15m14s"],
        interval="15s",
    ),
    Case(
        # First/last samples just inside and just outside 1.1 average intervals from the range's edges.
        "extrapolation_thresholds",
        [('e_total{a="1"}', "_x20 100+1x10"), ('e_total{a="2"}', "_x20 1+1x10"), ('g{a="1"}', "_x20 5-1x10")],
        ["rate(e_total[1m])", "increase(e_total[1m])", "delta(g[1m])", "increase(e_total[10s])"],
        ["30s", "30s950ms", "31s", "31s050ms", "31s150ms", "31s250ms", "78s850ms", "78s950ms", "79s", "79s050ms"],
        interval="1s",
    ),
    Case(
        "gauge_functions",
        GAUGES,
        [
            "delta(queue_depth[5m])",
            "idelta(queue_depth[5m])",
            "deriv(queue_depth[5m])",
            "deriv(temperature[10m])",
            "predict_linear(queue_depth[5m], 3600)",
            "predict_linear(temperature[4m], 600)",
            "changes(queue_depth[10m])",
            "resets(queue_depth[10m])",
            "avg_over_time(queue_depth[5m])",
            "sum_over_time(queue_depth[5m])",
            "min_over_time(queue_depth[5m])",
            "max_over_time(queue_depth[5m])",
            "count_over_time(queue_depth[5m])",
            "last_over_time(queue_depth[5m])",
            "present_over_time(queue_depth[5m])",
            "quantile_over_time(0.9, queue_depth[5m])",
            "quantile_over_time(0.5, temperature[10m])",
            "stddev_over_time(queue_depth[5m])",
            "stdvar_over_time(temperature[10m])",
            "holt_winters(queue_depth[5m], 0.5, 0.3)",
            "holt_winters(temperature[10m], 0.1, 0.9)",
            "holt_winters(temperature[10m], 1, 0.5)",
        ],
        ["0s", "2m", "5m", "6m30s", "9m", "13m", "16m", "21m", "24m"],
    ),
    Case(
        "histogram_quantile",
        HISTOGRAM,
        [
            "histogram_quantile(0.9, rate(req_seconds_bucket[5m]))",
            "histogram_quantile(0.5, rate(req_seconds_bucket[5m]))",
            "histogram_quantile(0.99, sum by (le) (rate(req_seconds_bucket[5m])))",
            "histogram_quantile(0, rate(req_seconds_bucket[5m]))",
            "histogram_quantile(1, rate(req_seconds_bucket[5m]))",
            "histogram_quantile(1.5, rate(req_seconds_bucket[5m]))",
            "histogram_quantile(-0.5, rate(req_seconds_bucket[5m]))",
            "histogram_quantile(0.25, req_seconds_bucket)",
            "rate(req_seconds_sum[5m]) / rate(req_seconds_count[5m])",
        ],
        ["0s", "1m", "5m", "10m", "12m", "30m"],
    ),
    Case(
        "staleness_and_absent",
        STALENESS,
        [
            "gone",
            "flappy",
            "late",
            "count_over_time(flappy[5m])",
            "last_over_time(flappy[2m])",
            "absent(gone)",
            'absent(gone{id="1"})',
            'absent(nosuch{job="x", instance=~"y.*", env="prod"})',
            'absent(nosuch{job="x", job="y"})',
            'absent(nosuch{job="", job="x", env=""})',
            "absent(sum(nosuch))",
            'absent_over_time(gone{id="1"}[2m])',
            'absent_over_time(nosuch{a="b"}[5m])',
            "timestamp(gone)",
            "timestamp(late)",
            "gone offset 2m",
            "gone @ 120",
        ],
        ["0s", "2m", "3m", "3m30s", "4m", "5m", "7m59s", "8m", "8m1s", "9m", "10m"],
    ),
    Case(
        "vector_matching",
        MATCHING,
        [
            "rate(errors_total[5m]) / ignoring(code) group_left rate(requests_total[5m])",
            "sum by (job, instance) (rate(errors_total[5m])) / rate(requests_total[5m])",
            "sum by (job) (rate(errors_total[5m])) / on(job) sum by (job) (rate(requests_total[5m]))",
            "requests_total * on(job) group_left(version) build_info",
            "build_info * on(job) group_right(version) requests_total",
            "requests_total / on(instance) errors_total",
            "requests_total > on(job) group_left limit",
            "up == 0",
            "up == bool 0",
            "requests_total > 100",
            "requests_total > bool 100",
            "100 < requests_total",
            "100 < bool requests_total",
            "requests_total != 0 and up == 1",
            "requests_total and on(job) limit",
            "up == 0 or requests_total",
            "requests_total unless on(instance) (up == 0)",
            "requests_total unless up",
            "errors_total or ignoring(code) requests_total",
            "requests_total + errors_total",
        ],
        ["0s", "3m", "4m", "10m"],
    ),
    Case(
        "aggregations",
        AGG,
        [
            "sum(mem_bytes)",
            "sum by (ns) (mem_bytes)",
            "sum(mem_bytes) by (ns, node)",
            "sum without (pod) (mem_bytes)",
            "avg by (ns) (mem_bytes)",
            "min by (ns) (mem_bytes)",
            "max by (node) (mem_bytes)",
            "count without (pod, node) (mem_bytes)",
            "stddev(mem_bytes)",
            "stdvar by (ns) (mem_bytes)",
            "topk(2, mem_bytes)",
            "bottomk(2, mem_bytes)",
            "topk by (ns) (1, mem_bytes)",
            "quantile(0.5, mem_bytes)",
            "quantile by (ns) (0.9, mem_bytes)",
            'count_values("value", mem_bytes)',
            "group by (ns) (mem_bytes)",
            "sum(mem_bytes) / count(mem_bytes)",
            "sum by (ns) (mem_bytes) / on(ns) group_left sum by (ns) (cpu)",
            "avg(cpu) * 2 ^ 3 ^ 0.5",
        ],
        ["0s", "1m", "2m", "3m"],
    ),
    Case(
        "value_formatting",
        [
            ('v{i="1"}', "1e21 1e22 3"),
            ('v{i="2"}', "0.00000015 -0.5 3"),
            ('v{i="3"}', "123456789.125 1e-7 -Inf"),
            ('v{i="4"}', "0.30000000000000004 12345678901234567890 2.5e-300"),
        ],
        ['count_values("value", v)', 'count_values("value", v * 3)', "sum(v)", "avg(v)", "stddev(v)"],
        ["0s", "1m", "2m"],
    ),
    Case(
        "arithmetic_and_functions",
        [
            ('x{a="1"}', "-2.5 -1 0 1.5 2.5 3.49 7 10 -0.5"),
            ('y{a="1"}', "0 2 0 -3 4 0 1 2 NaN"),
            ('label_src{src="abc-123",other="q"}', "1x8"),
        ],
        [
            "x + y",
            "x - y",
            "x * y",
            "x / y",
            "x % y",
            "x ^ y",
            "-x",
            "+x",
            "-x ^ 2",
            "2 * -x",
            "1 - x - y",
            "2 ^ 3 ^ 2",
            "x / 0",
            "-x / 0",
            "0 / 0 + x",
            "x % 0",
            "abs(x)",
            "ceil(x)",
            "floor(x)",
            "round(x)",
            "round(x, 0.5)",
            "clamp(x, -1, 2)",
            "clamp_min(x, 0)",
            "clamp_max(x, 1)",
            "clamp(x, 2, 1)",
            "sgn(x)",
            "sqrt(x)",
            "exp(x)",
            "ln(x)",
            "scalar(x)",
            "scalar(x or y)",
            "vector(3) + x",
            "time()",
            "time() - timestamp(x)",
            "x offset 1m",
            "x @ 60",
            "x @ end()",
            "min_over_time(x[3m] @ 240)",
            'label_replace(label_src, "dst", "$1/$2", "src", "([a-z]+)-([0-9]+)")',
            'label_replace(label_src, "src", "", "src", ".*")',
            'label_replace(label_src, "dst", "${1}x$9", "src", "(.*)")',
            'label_replace(label_src, "dst", "no", "src", "nomatch")',
            'label_join(label_src, "joined", "-", "src", "other", "missing")',
            "max_over_time(rate(x[2m])[4m:1m])",
            "sum_over_time(x[5m:2m])",
            "x > bool 1 + 1",
            "1 + 2 * 3 - 4 / 2",
            "(1 + 2) * 3",
            "5 % 3 ^ 2",
            "x == bool x",
            '{__name__=~"x|y"}',
            'sum by (__name__) ({a="1"})',
            'abs({__name__=~"x|y"})',
            '{a="1", __name__!="x"}',
            'count({__name__=~".+"}) by (__name__)',
            "timestamp(x offset 1m)",
            "x offset -1m",
            "rate(x[3m] offset -2m)",
            "x @ start()",
            "timestamp(x @ 60)",
            "rate(x[2m] @ 240)",
            "scalar(nosuch)",
            "vector(time()) - 1",
            'absent(nosuch{job="x"} offset 5m)',
            "topk(1.9, x or y)",
            "bottomk(0, x)",
            "sum_over_time(x[5m:2m] offset 1m)",
            "max_over_time(x[2m:1m] @ 180)",
            "predict_linear(x[4m:30s], 60)",
            "year(vector(1700000000))",
            "day_of_week(vector(0))",
            "days_in_month(vector(1709251200))",
            "hour(vector(3700)) + minute(vector(3700)) + month(vector(1709251200)) + day_of_year(vector(1709251200))",
            "day_of_month()",
            "x atan2 y",
            "sgn(y) * ln(abs(y))",
            "x and x > 0 or y",
            # Zeros keep their sign, as in Go (promtool prints -0).
            "x * -0",
            "sgn(x * -0)",
            "ceil(x / 100)",
            "round(-0.2 + x * 0)",
        ],
        ["0s", "2m", "3m", "5m", "8m"],
    ),
    Case(
        # Range arguments in parentheses (any depth), and label_join with no source label at all.
        "parenthesized_ranges_and_label_join",
        [
            ('req_total{code="200",path="/a"}', "0+10x10 3+10x10"),
            ('req_total{code="500",path="/b"}', "0+1x20"),
            ('depth{q="a"}', "1 5 2 8 3 _ 4 stale 9 1 1 7"),
        ],
        [
            "rate((req_total[5m]))",
            "increase(((req_total[10m])))",
            "changes((depth[10m]))",
            "resets((req_total[15m]))",
            "stddev_over_time((depth[5m]))",
            "quantile_over_time(0.5, (depth[6m]))",
            "quantile_over_time((0.9), ((depth[6m])))",
            "last_over_time((depth[5m]))",
            'absent_over_time((nosuch{job="x"}[5m]))',
            "absent_over_time((depth[5m]))",
            "predict_linear((depth[6m]), 60)",
            "holt_winters((depth[6m]), 0.5, 0.5)",
            "max_over_time((rate(req_total[2m])[6m:1m]))",
            "(rate((req_total[5m])) * 5) * 60",
            'sum by (code) (rate((req_total{path=~"/.*"}[5m])))',
            'label_join(req_total, "code", "-")',
            'label_join(req_total, "new", ",")',
            'label_join(req_total, "new", ",", "path")',
            'label_join(req_total, "dst", "-", "")',
            'label_join(req_total, "dst", "-", "code", "1bad")',
        ],
        ["0s", "3m", "6m", "10m", "12m", "21m"],
    ),
]


@pytest.fixture(scope="module")
def promtool_results(tmp_path_factory: pytest.TempPathFactory) -> dict[int, object]:
    return run_promtool(CASES, Path(tmp_path_factory.mktemp("promtool")))  # type: ignore[return-value]


def _all_tests() -> list[tuple[Case, int, str, str]]:
    from tests.unit.promql.promql_golden import write_promtool_file

    write_promtool_file(CASES, Path("/dev/null"))  # assigns the ids
    return [(case, i, expr, time) for case in CASES for i, expr, time in case.tests]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_promtool(case: Case, promtool_results: dict[int, object]) -> None:
    failures = []
    for test_id, expr, time in case.tests:
        assert test_id in promtool_results, f"promtool gave no answer for {expr!r} at {time}"
        problem = compare(promtool_results[test_id], ours(case, expr, time))  # type: ignore[arg-type]
        if problem:
            failures.append(f"{expr} @ {time}: {problem}")
    assert not failures, f"{len(failures)} mismatches:\n" + "\n".join(failures)


REFERENCE = {"/": go.div, "%": go.mod, "^": go.pow_}


def test_the_go_float_reference_matches_promtool(promtool_results: dict[int, object]) -> None:
    """The property tests' reference for `/`, `%` and `^`, checked against Prometheus itself."""
    case = next(c for c in CASES if c.name == "float_special_cases")
    wrong = []
    for test_id, expr, _ in case.tests:
        a, op, b = expr.split(" ")
        expected = promtool_results[test_id]
        assert isinstance(expected, dict) and list(expected) == [()], (expr, expected)
        value = REFERENCE[op](float(a.strip("()")), float(b.strip("()")))
        if not same(expected[()], value):
            wrong.append(f"{expr}: promtool {expected[()]!r}, reference {value!r}")
    assert len(case.tests) == 3 * len(FLOAT_OPERANDS) ** 2
    assert not wrong, "\n".join(wrong)


def test_two_errors_agree_only_when_they_name_one_known_kind() -> None:
    regexp = "error: 1:3: parse error: error parsing regexp: invalid nested repetition operator: `**`"
    assert compare(regexp, "error: 1:6: error parsing regexp: bad repetition operator: **") is None
    smoothing = "error: invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000"
    assert compare(smoothing, "error: 1:1: invalid trend factor. Expected: 0 < tf < 1, got: 1.000000") is not None
    # An error no class names agrees with nothing, not even with itself: a new kind must be named first.
    assert compare("error: out of bounds", "error: out of bounds") is not None
    assert compare(regexp, {(): 1.0}) is not None
