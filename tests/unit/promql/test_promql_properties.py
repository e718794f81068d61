"""Property tests: the parser against a reference precedence renderer, Go's float arithmetic against a
reference written from Go's documentation, History against a naive model, and trimming to
`required_history_ms` against unbounded retention."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.adapter.promql import History, InstantVector, Scalar, evaluate, parse_expr, required_history_ms
from sidecars.adapter.promql.mathops import go_div, go_mod, go_pow
from tests.unit.promql import go_math_reference as go

# -- parser: render a random tree with the fewest parentheses PromQL needs, parse it back ------------------
PREC = {"+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "^": 6}


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Neg:
    operand: Tree


@dataclass(frozen=True)
class Bin:
    op: str
    lhs: Tree
    rhs: Tree


Tree = Num | Neg | Bin

trees = st.recursive(
    st.builds(Num, st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5, 7.0, 10.0])),
    lambda children: st.one_of(
        st.builds(Neg, children),
        st.builds(Bin, st.sampled_from(sorted(PREC)), children, children),
    ),
    max_leaves=12,
)


def render(tree: Tree) -> str:
    if isinstance(tree, Num):
        return repr(tree.value)
    if isinstance(tree, Neg):
        inner = render(tree.operand)
        # `-a ^ b` is `-(a ^ b)`: only a `^` may follow a unary minus without parentheses.
        if isinstance(tree.operand, Bin) and tree.operand.op != "^":
            inner = f"({inner})"
        return f"-{inner}"
    prec = PREC[tree.op]
    lhs, rhs = render(tree.lhs), render(tree.rhs)
    if isinstance(tree.lhs, Bin) and (PREC[tree.lhs.op] < prec or (PREC[tree.lhs.op] == prec and tree.op == "^")):
        lhs = f"({lhs})"
    if isinstance(tree.lhs, Neg) and tree.op == "^":
        lhs = f"({lhs})"
    if isinstance(tree.rhs, Bin) and (PREC[tree.rhs.op] < prec or (PREC[tree.rhs.op] == prec and tree.op != "^")):
        rhs = f"({rhs})"
    return f"{lhs} {tree.op} {rhs}"


def reference(tree: Tree) -> float:
    if isinstance(tree, Num):
        return tree.value
    if isinstance(tree, Neg):
        return -reference(tree.operand)
    a, b = reference(tree.lhs), reference(tree.rhs)
    ops = {
        "+": lambda: a + b,
        "-": lambda: a - b,
        "*": lambda: a * b,
        "/": lambda: go.div(a, b),
        "%": lambda: go.mod(a, b),
        "^": lambda: go.pow_(a, b),
    }
    return ops[tree.op]()


def same(a: float, b: float) -> bool:
    """Equal, NaN equal to NaN, and a zero only to a zero of the same sign (1/-0 is -Inf)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


@given(trees)
@settings(max_examples=300, deadline=None)
def test_parser_precedence_matches_reference(tree: Tree) -> None:
    text = render(tree)
    got = evaluate(parse_expr(text), History(retention_ms=1000), 0)
    assert isinstance(got, Scalar)
    expected = reference(tree)
    assert same(got.value, expected), f"{text}: {got.value} != {expected}"


# -- Go's float64 operations at and around their special cases ------------------------------------------
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan]
floats = st.one_of(
    st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True), st.integers(-60, 60).map(float)
)


@pytest.mark.parametrize(("ours", "reference"), [(go_div, go.div), (go_mod, go.mod), (go_pow, go.pow_)])
def test_special_cases_match_go(ours: object, reference: object) -> None:
    assert callable(ours) and callable(reference)
    wrong = [
        (x, y, ours(x, y), reference(x, y)) for x in SPECIAL for y in SPECIAL if not same(ours(x, y), reference(x, y))
    ]
    assert not wrong, wrong[:10]


@given(floats, floats)
@settings(max_examples=2000, deadline=None)
def test_float_operations_match_go(x: float, y: float) -> None:
    for ours, reference in ((go_div, go.div), (go_mod, go.mod), (go_pow, go.pow_)):
        assert same(ours(x, y), reference(x, y)), (ours.__name__, x, y, ours(x, y), reference(x, y))


# -- History against a naive model of Prometheus' storage ----------------------------------------------
SERIES = [("m", (("i", "0"),)), ("m", (("i", "1"),)), ("m", (("i", "2"),))]
LOOKBACK = 5000

scrapes = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=3000),  # time since the previous scrape
        st.one_of(st.none(), st.lists(st.sampled_from(range(len(SERIES))), unique=True)),  # None: failed
        st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=len(SERIES), max_size=len(SERIES)),
    ),
    min_size=1,
    max_size=25,
)


Plan = list[tuple[int, list[int] | None, list[float]]]


def feed(history: History, plan: Plan) -> dict[int, list[tuple[int, float | None]]]:
    """Append the plan to `history`; return the naive model: per series a list of (t, value or None=stale)."""
    model: dict[int, list[tuple[int, float | None]]] = {i: [] for i in range(len(SERIES))}
    previous: set[int] = set()
    t = 0
    for gap, present, vals in plan:
        t += gap
        if present is None:
            history.mark_stale(t)
            for i in previous:
                model[i].append((t, None))
            previous = set()
            continue
        history.append_scrape(t, [(*SERIES[i], vals[i], None) for i in present])
        for i in present:
            model[i].append((t, vals[i]))
        for i in previous - set(present):
            model[i].append((t, None))
        previous = set(present)
    return model


@given(scrapes, st.lists(st.integers(min_value=0, max_value=80_000), min_size=1, max_size=5))
@settings(max_examples=150, deadline=None)
def test_history_matches_naive_model(plan: Plan, times: list[int]) -> None:
    history = History(retention_ms=10**9, lookback_delta_ms=LOOKBACK)
    model = feed(history, plan)
    for t in times:
        got = evaluate(parse_expr("m"), history, t)
        assert isinstance(got, InstantVector)
        expected = {}
        for i, points in model.items():
            latest = [(ts, v) for ts, v in points if ts <= t]
            if latest and latest[-1][0] >= t - LOOKBACK and latest[-1][1] is not None:
                expected[SERIES[i][1][0][1]] = latest[-1][1]
        assert {s.label("i"): s.value for s in got.samples} == expected
        counted = evaluate(parse_expr("count_over_time(m[4s])"), history, t)
        assert isinstance(counted, InstantVector)
        expected_counts = {}
        for i, points in model.items():
            n = sum(1 for ts, v in points if t - 4000 <= ts <= t and v is not None)
            if n:
                expected_counts[SERIES[i][1][0][1]] = float(n)
        assert {s.label("i"): s.value for s in counted.samples} == expected_counts


RULES = [
    "m",
    "rate(m[3s])",
    "max_over_time(m[2s] offset 1s)",
    "deriv(m[5s]) > bool 0",
    "sum(increase(m[4s]))",
    "max_over_time(rate(m[2s])[6s:1s])",
    "absent_over_time(m[1500ms])",
]


@pytest.mark.parametrize("rule", RULES)
@given(plan=scrapes, after=st.integers(min_value=0, max_value=3000))
@settings(max_examples=80, deadline=None)
def test_retention_of_required_history_changes_no_result(rule: str, plan: Plan, after: int) -> None:
    expr = parse_expr(rule)
    trimmed = History(retention_ms=max(1, required_history_ms(expr, LOOKBACK)), lookback_delta_ms=LOOKBACK)
    full = History(retention_ms=10**9, lookback_delta_ms=LOOKBACK)
    feed(trimmed, plan)
    feed(full, plan)
    assert full.latest_ms is not None
    t = full.latest_ms + after
    a, b = evaluate(expr, trimmed, t), evaluate(expr, full, t)
    assert isinstance(a, InstantVector) and isinstance(b, InstantVector)
    da, db = a.by_labels(), b.by_labels()
    assert da.keys() == db.keys()
    for k in da:
        assert same(da[k], db[k]) or math.isclose(da[k], db[k], rel_tol=1e-12)


# -- robustness: any text either parses or raises PromQLError; any parsed rule evaluates or raises it -------
TOKENS = [
    "m",
    "n",
    "rate",
    "sum",
    "by",
    "without",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "5s",
    "1m",
    "offset",
    "@",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    ">",
    "<",
    "bool",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    '"x"',
    "'y'",
    "=",
    "=~",
    "!~",
    'i="0"',
    "1",
    "0.5",
    "NaN",
    "Inf",
    "topk",
    "quantile",
    "count_values",
    "histogram_quantile",
    "absent",
    "label_replace",
    "changes",
    "deriv",
    "vector",
    "scalar",
    "time()",
    "avg_over_time",
    "predict_linear",
    "clamp",
    "round",
    "start()",
    "end()",
    "le",
    "__name__",
    "#",
    "\n",
    "`z`",
    "0x1f",
    "1e3",
    ".5",
    "'\\n'",
    '"\\x4"',
]


@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14), st.sampled_from(["", " "]))
@settings(max_examples=1500, deadline=None)
def test_any_input_parses_or_fails_cleanly(tokens: list[str], sep: str) -> None:
    from sidecars.adapter.promql import PromQLError

    text = sep.join(tokens)
    try:
        expr = parse_expr(text)
    except PromQLError as exc:
        assert exc.position is None or 0 <= exc.position <= len(text)
        str(exc)
        return
    history = History(retention_ms=60_000)
    history.append_scrape(0, [("m", (("i", "0"),), 1.0, None), ("n", (("i", "0"), ("le", "1")), 2.0, None)])
    history.append_scrape(5000, [("m", (("i", "0"),), 3.0, None), ("m", (("i", "1"),), 0.5, None)])
    with contextlib.suppress(PromQLError):
        evaluate(expr, history, 6000)
