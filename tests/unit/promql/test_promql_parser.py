"""The parser: precedence and associativity as PromQL, modifiers, literals, and errors that point at the place."""

from __future__ import annotations

import math

import pytest

from sidecars.adapter.promql import (
    History,
    InstantVector,
    PromQLError,
    Scalar,
    evaluate,
    parse_expr,
    referenced_metric_names,
    required_history_ms,
)
from sidecars.adapter.promql.nodes import (
    AggregateExpr,
    BinaryExpr,
    Call,
    Card,
    MatchType,
    MatrixSelector,
    NumberLiteral,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    VectorSelector,
)


def scalar(text: str) -> float:
    value = evaluate(parse_expr(text), History(retention_ms=1000), 0)
    assert isinstance(value, Scalar)
    return value.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("2 ^ 3 ^ 2", 512.0),  # right-associative
        ("(2 ^ 3) ^ 2", 64.0),
        ("-2 ^ 2", -4.0),  # unary minus binds looser than ^
        ("2 ^ -1", 0.5),
        ("2 ^ -1 * 4", 2.0),
        ("-1 * -1", 1.0),
        ("10 - 4 - 3", 3.0),  # left-associative
        ("64 / 4 / 2", 8.0),
        ("7 % 4 * 2", 6.0),
        ("1 + 2 == bool 3", 1.0),  # comparisons bind looser than arithmetic
        ("1 < bool 2 + 0", 1.0),
        ("2 * 3 > bool 5", 1.0),
        ("0x1F + .5 + 5. + 1e2 + 2E-1", 31 + 0.5 + 5 + 100 + 0.2),
        ("-Inf", -math.inf),
        ("+inf", math.inf),
        ("1 / 0", math.inf),
        ("-1 / 0", -math.inf),
        ("5 % 0", math.nan),
        ("atan2(1, 1)" if False else "1 atan2 1", math.pi / 4),
        ("time()", 0.0),
        ("pi()", math.pi),
        ("# a comment\n 1 + # another\n 2", 3.0),
    ],
)
def test_scalar_arithmetic_follows_promql_precedence(text: str, expected: float) -> None:
    got = scalar(text)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


def test_set_operators_precedence_and_associativity() -> None:
    expr = parse_expr("a or b and c unless d")
    assert isinstance(expr, BinaryExpr) and expr.op == "or"
    rhs = expr.rhs
    assert isinstance(rhs, BinaryExpr) and rhs.op == "unless"
    assert isinstance(rhs.lhs, BinaryExpr) and rhs.lhs.op == "and"
    assert expr.matching is not None and expr.matching.card is Card.MANY_TO_MANY


def test_keywords_are_case_insensitive() -> None:
    expr = parse_expr("SUM BY (job) (rate(x[5m])) AND ON(job) y")
    assert isinstance(expr, BinaryExpr) and expr.op == "and"
    assert isinstance(expr.lhs, AggregateExpr) and expr.lhs.grouping == ("job",)
    assert expr.matching is not None and expr.matching.on and expr.matching.labels == ("job",)


def test_vector_matching_modifiers() -> None:
    expr = parse_expr("a / ignoring(code) group_left(version, team) b")
    assert isinstance(expr, BinaryExpr) and expr.matching is not None
    assert expr.matching.card is Card.MANY_TO_ONE
    assert not expr.matching.on and expr.matching.labels == ("code",)
    assert expr.matching.include == ("version", "team")
    expr = parse_expr("a * on(job) group_right b")
    assert isinstance(expr, BinaryExpr) and expr.matching is not None
    assert expr.matching.card is Card.ONE_TO_MANY and expr.matching.include == ()
    expr = parse_expr("a > bool on(x) b")
    assert isinstance(expr, BinaryExpr) and expr.return_bool


def test_aggregation_grouping_before_or_after_and_parameters() -> None:
    for text in ("sum by (a, b) (x)", "sum(x) by (a, b,)", "SUM(x) BY (a,b)"):
        expr = parse_expr(text)
        assert isinstance(expr, AggregateExpr) and expr.grouping == ("a", "b") and not expr.without
    expr = parse_expr("topk without (pod) (3, x)")
    assert isinstance(expr, AggregateExpr) and expr.without and isinstance(expr.param, NumberLiteral)
    expr = parse_expr('count_values("v", x)')
    assert isinstance(expr, AggregateExpr) and isinstance(expr.param, StringLiteral)
    expr = parse_expr("sum by () (x)")
    assert isinstance(expr, AggregateExpr) and expr.grouping == ()


def test_selectors_matchers_and_modifiers() -> None:
    expr = parse_expr('http_requests_total{job="api", code=~"5..", path!="/health", method!~"GET|HEAD",}')
    assert isinstance(expr, VectorSelector) and expr.name == "http_requests_total"
    kinds = [(m.name, m.type) for m in expr.matchers]
    assert kinds == [
        ("__name__", MatchType.EQUAL),
        ("job", MatchType.EQUAL),
        ("code", MatchType.REGEX),
        ("path", MatchType.NOT_EQUAL),
        ("method", MatchType.NOT_REGEX),
    ]
    expr = parse_expr('{__name__="up", job="x"}')
    assert isinstance(expr, VectorSelector) and expr.name == "up"
    expr = parse_expr("x[1h30m] offset -5m @ 100.5")
    assert isinstance(expr, MatrixSelector) and expr.range_ms == 5_400_000
    assert expr.selector.offset_ms == -300_000 and expr.selector.at_ms == 100_500
    expr = parse_expr("rate(x[5m])[30m:1m] offset 1m")
    assert isinstance(expr, SubqueryExpr)
    assert (expr.range_ms, expr.step_ms, expr.offset_ms) == (1_800_000, 60_000, 60_000)
    expr = parse_expr("max_over_time(x[10m:])")
    assert isinstance(expr, Call) and isinstance(expr.args[0], SubqueryExpr) and expr.args[0].step_ms == 0
    expr = parse_expr("x @ end()")
    assert isinstance(expr, VectorSelector) and expr.at_edge == "end"
    expr = parse_expr("job:requests:rate5m")
    assert isinstance(expr, VectorSelector) and expr.name == "job:requests:rate5m"
    expr = parse_expr("-x offset 5m")
    assert isinstance(expr, UnaryExpr) and isinstance(expr.expr, VectorSelector) and expr.expr.offset_ms == 300_000


def test_string_literals_and_escapes() -> None:
    expr = parse_expr(r'x{a="q\"uo\\te\n\x41\u00e9", b=' + "'single\\'s'" + ", c=`raw\\n`}")
    assert isinstance(expr, VectorSelector)
    values = {m.name: m.value for m in expr.matchers}
    assert values["a"] == 'q"uo\\te\nAé'
    assert values["b"] == "single's"
    assert values["c"] == "raw\\n"


def test_regex_matchers_are_fully_anchored_re2() -> None:
    history = History(retention_ms=60_000)
    names = ["api", "api-2", "xapi", "a\nb", "123", "db", "\u0663"]  # the last: ARABIC-INDIC DIGIT THREE
    history.append_scrape(1000, [("m", (("job", n),), float(i), None) for i, n in enumerate(names)])

    def jobs(text: str) -> set[str]:
        value = evaluate(parse_expr(text), history, 1000)
        assert isinstance(value, InstantVector)
        return {s.label("job") for s in value.samples}

    assert jobs('m{job=~"api"}') == {"api"}
    assert jobs('m{job=~"api.*"}') == {"api", "api-2"}
    assert jobs('m{job!~"api.*"}') == {"xapi", "a\nb", "123", "db", "\u0663"}
    assert jobs('m{job=~"\\\\d+"}') == {"123"}  # \\d is ASCII-only in RE2
    assert jobs('m{job=~"[[:digit:]]+"}') == {"123"}
    assert jobs('m{job=~"a.b"}') == set()  # `.` does not match a newline, as in RE2 by default
    assert jobs('m{job=~"(?i)API"}') == {"api"}
    assert jobs('m{job=~"db$"}') == {"db"}
    assert jobs('m{job=~"\\\\Qapi-2\\\\E"}') == {"api-2"}
    assert jobs('m{job=~"db|123"}') == {"db", "123"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sum by (job", '1:12: unexpected end of input in grouping, expected "," or ")"'),
        ("sum by (job,)) (x)", '1:14: unexpected ")" in aggregation, expected "("'),
        ("sum(x) by (3)", '1:12: unexpected number "3" in grouping, expected label name'),
        ('foo{job="a" code="b"}', '1:13: unexpected identifier "code" in label matching, expected "," or "}"'),
        ("foo{job=}", '1:9: unexpected "}" in label matching, expected string'),
        ('foo{job~"x"}', "1:8: unexpected character: '~'"),
        ("rate(foo)", '1:6: expected type range vector in call to function "rate", got instant vector'),
        ("rate(foo[5m], 1)", '1:1: expected 1 argument(s) in call to "rate", got 2'),
        ("round()", '1:1: expected at least 1 argument(s) in call to "round", got 0'),
        ("nosuch(foo)", '1:1: unknown function with name "nosuch"'),
        ("1 > 2", "1:3: comparisons between scalars must use BOOL modifier"),
        ("foo + bool bar", "1:7: bool modifier can only be used on comparison operators"),
        ("foo[5m] + 1", "1:1: binary expression must contain only scalar and instant vector types"),
        ("foo and 1", '1:5: set operator "and" not allowed in binary scalar expression'),
        ("foo and on(x) group_left bar", '1:15: no grouping allowed for "and" operation'),
        ("1 + on(x) foo", "1:3: vector matching only allowed between instant vectors"),
        ("{}", "1:1: vector selector must contain at least one non-empty matcher"),
        ('{job=~".*"}', "1:1: vector selector must contain at least one non-empty matcher"),
        ('foo{__name__="bar"}', '1:1: metric name must not be set twice: "foo" or "bar"'),
        ("foo[5]", '1:5: unexpected number "5" in range, expected duration'),
        ("foo[5m", '1:7: unexpected end of input in range, expected "]" or ":"'),
        ("sum(foo)[5m]", "1:9: ranges only allowed for vector selectors"),
        ("foo offset 5m offset 1m", "1:15: offset may not be set multiple times"),
        (
            "sum(foo) offset 5m",
            "1:10: offset modifier must be preceded by an instant vector selector or range vector "
            "selector or a subquery",
        ),
        (
            "foo * 5m",
            '1:7: unexpected duration "5m" in expression, expected a number (durations only go in ranges and offsets)',
        ),
        ('foo{a=~"("}', "1:8: error parsing regexp: missing ): ("),
        ('"unterminated', "1:1: unterminated quoted string"),
        ("", "1:1: no expression found in input"),
        ("sum(x, y)", "1:1: wrong number of arguments for aggregate expression provided, expected 1, got 2"),
        ("topk(x)", "1:1: wrong number of arguments for aggregate expression provided, expected 2, got 1"),
        ('topk("3", x)', "1:6: expected type scalar in aggregation parameter, got string"),
        ("sum(rate(x[5m])[5m:])", "1:5: expected type instant vector in aggregation expression, got range vector"),
        ("-foo[5m]", "1:1: unary expression only allowed on expressions of type scalar or instant vector"),
        ("foo\n  + )", '2:5: unexpected ")" in expression'),
        ("1.2.3", '1:1: bad number or duration syntax: "1.2.3"'),
        ("foo[5m30]", '1:5: bad number or duration syntax: "5m30"'),
        ("foo[30s1m]", '1:5: bad duration syntax: "30s1m"'),
    ],
)
def test_errors_carry_position_and_expectation(text: str, message: str) -> None:
    with pytest.raises(PromQLError) as info:
        parse_expr(text)
    assert str(info.value) == message
    line, col = message.split(":")[:2]
    assert info.value.position is not None
    prefix = text[: info.value.position]
    assert (prefix.count("\n") + 1, info.value.position - prefix.rfind("\n")) == (int(line), int(col))


def test_error_attributes() -> None:
    with pytest.raises(PromQLError) as info:
        parse_expr("sum(rate(x[5m]) by (job)")
    err = info.value
    assert err.position == 16 and err.message == 'unexpected identifier "by" in aggregation, expected "," or ")"'


def test_referenced_metric_names() -> None:
    assert referenced_metric_names(parse_expr("rate(a[5m]) / on(x) group_left b + sum(c)")) == frozenset(
        {"a", "b", "c"}
    )
    assert referenced_metric_names(parse_expr('{__name__="a", job="x"} > 1')) == frozenset({"a"})
    assert referenced_metric_names(parse_expr("time() > bool 5")) == frozenset()
    assert referenced_metric_names(parse_expr('{job="x"}')) is None
    assert referenced_metric_names(parse_expr('a or {__name__=~"b|c"}')) is None


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("up", 300_000),
        ("rate(x[5m])", 300_000),
        ("rate(x[1m])", 60_000),
        ("rate(x[1m] offset 10m)", 660_000),
        ("x offset 1h", 3_900_000),
        ("max_over_time(rate(x[1m])[10m:30s])", 660_000),
        ("avg_over_time(x[2m:] offset 1m)", 60_000 + 120_000 + 300_000),
        ("time()", 0),
        ("rate(x[1m]) / y", 300_000),
        ("x offset -10m", 0),
    ],
)
def test_required_history(text: str, expected_ms: int) -> None:
    assert required_history_ms(parse_expr(text)) == expected_ms


def test_required_history_uses_the_lookback_given() -> None:
    assert required_history_ms(parse_expr("up"), lookback_delta_ms=60_000) == 60_000


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(PromQLError, match="nests too deeply"):
        parse_expr("(" * 5000 + "1" + ")" * 5000)
    expr = parse_expr("(" * 150 + "1" + ")" * 150)
    assert scalar("(" * 150 + "1" + ")" * 150) == 1.0 and expr is not None
