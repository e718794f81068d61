"""`python -m sidecars.adapter test FILE...`: unit tests for health rules, in promtool's format.

```yaml
rule_files: [rules.yaml]          # the adapter's rules files, relative to this file
evaluation_interval: 30s          # how often the checks are evaluated (default 1m)
tests:
  - name: backlog
    interval: 30s                 # the spacing of the input samples (default: evaluation_interval)
    input_series:
      - series: 'queue_depth{job="app"}'
        values: '0+100x20'        # promtool's expanding notation: _ for a gap, stale, a+bxn, axn
    promql_expr_test:             # promtool's own: an expression's samples at one time
      - expr: queue_depth > 1000
        eval_time: 6m
        exp_samples:
          - labels: 'queue_depth{job="app"}'
            value: 1200
    check_test:                   # the adapter's: the state of checks at one time
      - eval_time: 6m
        checks:
          - {name: queue, state: pending, value: 1200}   # ok, pending, failing, recovering, no_data
```

The checks are evaluated at every `evaluation_interval` from 0 (as promtool evaluates alerting rules),
so `for:` and the other state across evaluations unfold as in the running adapter; a check not listed
is not compared. A metric counts as on the page at a time when one of its series has a sample within
the five-minute lookback. Expression values are compared as promtool compares them (exactly, by
labels), and a mismatch prints `got:` in promtool's words, so `--promtool` (which writes the file
without what only the adapter knows) lets promtool check the same expressions:
`python -m sidecars.adapter test --promtool tests.yaml > p.yaml && promtool test rules p.yaml`.

Exit status: 0 when every test passes, 1 when one fails, 2 when a file cannot be used (each problem
named with its place). The last line says `N passed, M failed`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from sidecars.adapter.evaluator import CheckResult, Evaluator
from sidecars.adapter.promql import History, InstantVector, PromQLError, Scalar, evaluate, parse_expr
from sidecars.adapter.promql.history import is_stale
from sidecars.adapter.promql.lexer import parse_duration
from sidecars.adapter.promql.notation import NotationError, expand_values, parse_series
from sidecars.adapter.promql.values import Labels
from sidecars.adapter.rules import RulesError, RuleSet, load_rules

EXIT_PASSED, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
STATES = ("ok", "pending", "failing", "recovering", "no_data")
# What a file may ask for, so a typo in a duration cannot keep a CI job busy for hours.
MAX_STEPS = 100_000  # evaluations of the checks per test group
MAX_POINTS = 2_000_000  # input samples per test group
LOOKBACK_MS = 300_000
DEFAULT_INTERVAL_MS = 60_000
_TOP_KEYS = frozenset({"rule_files", "evaluation_interval", "tests"})
_GROUP_KEYS = frozenset({"name", "interval", "input_series", "promql_expr_test", "check_test"})


class TestFileError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


@dataclass
class ExprTest:
    expr: str
    eval_ms: int
    samples: list[tuple[Labels, float]]
    eval_text: str


@dataclass
class CheckExpectation:
    name: str
    state: str
    value: float | None


@dataclass
class CheckTest:
    eval_ms: int
    checks: list[CheckExpectation]
    eval_text: str


@dataclass
class TestGroup:
    name: str
    interval_ms: int
    series: list[tuple[str, Labels, list[float | None]]]
    expr_tests: list[ExprTest] = field(default_factory=list)
    check_tests: list[CheckTest] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class TestFile:
    path: Path
    rules: RuleSet
    eval_interval_ms: int
    groups: list[TestGroup]


@dataclass
class Result:
    passed: int = 0
    failures: list[str] = field(default_factory=list)


def _duration(value: object, where: str, problems: list[str], default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    ms = 0 if value in (0, "0") else parse_duration(str(value).strip()) if isinstance(value, str) else None
    if ms is None:
        problems.append(f"{where}: expected a duration such as 30s or 5m, got {value!r}")
        return 0
    return ms


def _labels(text: object, where: str, problems: list[str]) -> Labels | None:
    if not isinstance(text, str):
        problems.append(f"{where}: expected labels such as 'name{{a=\"b\"}}'")
        return None
    text = text.strip()
    try:
        if text.startswith("{"):
            if text == "{}":
                return ()
            _, labels = parse_series("__sentinel__" + text)
            return labels
        name, labels = parse_series(text)
    except NotationError as exc:
        problems.append(f"{where}: {exc}")
        return None
    return tuple(sorted((*labels, ("__name__", name))))


def _mapping(raw: Any, keys: frozenset[str], where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping")
        return {}
    for key in sorted(set(raw) - keys):
        problems.append(f"{where}: unknown field {key!r} (known: {', '.join(sorted(keys))})")
    return raw


def _list(raw: object, where: str, problems: list[str]) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"{where}: expected a list")
        return []
    return raw


def _group(raw: object, index: int, eval_interval_ms: int, problems: list[str]) -> TestGroup:
    where = f"tests[{index}]"
    raw = _mapping(raw, _GROUP_KEYS, where, problems)
    name = str(raw.get("name") or f"test {index + 1}")
    interval = _duration(raw.get("interval"), f"{where}.interval", problems, eval_interval_ms)
    if interval <= 0:
        problems.append(f"{where}.interval: must be positive")
        interval = eval_interval_ms
    group = TestGroup(name, interval, [], raw=raw)
    points = 0
    for i, item in enumerate(_list(raw.get("input_series"), f"{where}.input_series", problems)):
        at = f"{where}.input_series[{i}]"
        item = _mapping(item, frozenset({"series", "values"}), at, problems)
        try:
            metric, series_labels = parse_series(str(item.get("series", "")))
            values = expand_values(str(item.get("values", "")))
        except NotationError as exc:
            problems.append(f"{at}: {exc}")
            continue
        points += len(values)
        if points > MAX_POINTS:
            problems.append(f"{at}: more than {MAX_POINTS} input samples in one test")
            break
        group.series.append((metric, series_labels, values))
    for i, item in enumerate(_list(raw.get("promql_expr_test"), f"{where}.promql_expr_test", problems)):
        at = f"{where}.promql_expr_test[{i}]"
        item = _mapping(item, frozenset({"expr", "eval_time", "exp_samples"}), at, problems)
        expr = item.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            problems.append(f"{at}.expr: missing (a PromQL expression)")
            continue
        try:
            parse_expr(expr)
        except PromQLError as exc:
            problems.append(f"{at}.expr: {exc}")
            continue
        samples = []
        for j, sample in enumerate(_list(item.get("exp_samples"), f"{at}.exp_samples", problems)):
            sample = _mapping(sample, frozenset({"labels", "value"}), f"{at}.exp_samples[{j}]", problems)
            labels = _labels(sample.get("labels", "{}"), f"{at}.exp_samples[{j}].labels", problems)
            value = sample.get("value")
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{at}.exp_samples[{j}].value: expected a number, got {value!r}")
                continue
            if labels is not None:
                samples.append((labels, float(value)))
        eval_ms = _duration(item.get("eval_time", "0"), f"{at}.eval_time", problems)
        group.expr_tests.append(ExprTest(expr, eval_ms, samples, str(item.get("eval_time", "0"))))
    for i, item in enumerate(_list(raw.get("check_test"), f"{where}.check_test", problems)):
        at = f"{where}.check_test[{i}]"
        item = _mapping(item, frozenset({"eval_time", "checks"}), at, problems)
        eval_ms = _duration(item.get("eval_time", "0"), f"{at}.eval_time", problems)
        checks = []
        for j, check in enumerate(_list(item.get("checks"), f"{at}.checks", problems)):
            c = _mapping(check, frozenset({"name", "state", "value"}), f"{at}.checks[{j}]", problems)
            state, value = c.get("state"), c.get("value")
            if state not in STATES:
                problems.append(f"{at}.checks[{j}].state: one of {', '.join(STATES)}, got {state!r}")
                continue
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                problems.append(f"{at}.checks[{j}].value: expected a number, got {value!r}")
                continue
            checks.append(CheckExpectation(str(c.get("name")), str(state), None if value is None else float(value)))
        group.check_tests.append(CheckTest(eval_ms, checks, str(item.get("eval_time", "0"))))
    return group


def load_test_file(path: Path) -> TestFile:
    """Reads and validates a test file; raises TestFileError listing every problem."""
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TestFileError(source, [f"cannot be read: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise TestFileError(source, [f"not valid YAML: {exc}"]) from None
    problems: list[str] = []
    raw = _mapping(raw, _TOP_KEYS, "the file", problems)
    eval_interval = _duration(raw.get("evaluation_interval"), "evaluation_interval", problems, DEFAULT_INTERVAL_MS)
    if eval_interval <= 0:
        problems.append("evaluation_interval: must be positive")
        eval_interval = DEFAULT_INTERVAL_MS
    rules: list[RuleSet] = []
    for i, name in enumerate(_list(raw.get("rule_files"), "rule_files", problems)):
        try:
            rules.append(load_rules(path.parent / str(name)))
        except RulesError as exc:
            problems.extend(f"rule_files[{i}]: {exc.source}: {p}" for p in exc.problems)
    merged = RuleSet(source=source)
    if rules:
        merged = dataclasses.replace(rules[0], rules=tuple(r for rs in rules for r in rs.rules))
        names = [r.name for r in merged.rules]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"rule_files: the rule {dup!r} is defined more than once")
    groups = [_group(g, i, eval_interval, problems) for i, g in enumerate(_list(raw.get("tests"), "tests", problems))]
    known = {r.name for r in merged.rules}
    for i, group in enumerate(groups):
        for j, test in enumerate(group.check_tests):
            for check in test.checks:
                if check.name not in known:
                    problems.append(f"tests[{i}].check_test[{j}]: no rule named {check.name!r} in rule_files")
        last = max([t.eval_ms for t in group.check_tests], default=0)
        if last // eval_interval > MAX_STEPS:
            problems.append(f"tests[{i}]: eval_time {last // 1000} s needs more than {MAX_STEPS} evaluations")
    if problems:
        raise TestFileError(source, problems)
    return TestFile(path, merged, eval_interval, groups)


def build_history(group: TestGroup) -> History:
    history = History(retention_ms=10**15)
    for name, labels, values in group.series:
        # Explicit timestamps: the samples are stored as given, with no staleness of their own.
        for i, value in enumerate(values):
            if value is not None:
                history.append_scrape(i * group.interval_ms, [(name, labels, value, i * group.interval_ms)])
    return history


def present_at(history: History, t: int) -> frozenset[str]:
    """Metric names with a live sample within the lookback at `t`: what a page at `t` would have held."""
    names = set()
    for s in history.all_series():
        i = bisect_right(s.ts, t) - 1
        if i >= 0 and s.ts[i] >= t - LOOKBACK_MS and not is_stale(s.vs[i]):
            names.add(s.name)
    return frozenset(names)


def go_float(value: float) -> str:
    """strconv.FormatFloat(value, 'E', -1, 64), the way promtool prints values."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0E+00" if math.copysign(1, value) < 0 else "0E+00"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    power = exponent + len(digits) - 1
    return f"{'-' if sign else ''}{mantissa}E{'-' if power < 0 else '+'}{abs(power):02d}"


def _samples_text(samples: list[tuple[Labels, float]]) -> str:
    if not samples:
        return "nil"
    parts = []
    for labels, value in sorted(samples):
        # As Prometheus prints a label set: every pair in order, the name as `__name__`.
        pairs = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in labels)
        parts.append(f"{{{pairs}}} {go_float(value)}")
    return ", ".join(parts)


def _state(check: CheckResult) -> str:
    return "failing" if check.state == "firing" else check.state


def _same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def run_group(test_file: TestFile, group: TestGroup) -> Result:
    result = Result()
    history = build_history(group)
    for test in group.expr_tests:
        try:
            value = evaluate(parse_expr(test.expr), history, test.eval_ms)
        except PromQLError as exc:
            result.failures.append(f"    expr: {json.dumps(test.expr)}, time: {test.eval_text}, err: {exc}")
            continue
        got: list[tuple[Labels, float]] = []
        if isinstance(value, Scalar):
            got = [((), value.value)]
        elif isinstance(value, InstantVector):
            got = [(s.labels, s.value) for s in value.samples]
        # As promtool: the same label sets and exactly the same values (so NaN never matches).
        if sorted(got) == sorted(test.samples) and all(v == v for _, v in got):
            result.passed += 1
        else:
            result.failures.append(
                f"    expr: {json.dumps(test.expr)}, time: {test.eval_text},\n"
                f"        exp: {_samples_text(test.samples)}\n        got: {_samples_text(got)}"
            )
    if not group.check_tests:
        return result
    evaluator = Evaluator(test_file.rules)
    evaluator.history = history
    wanted = {t.eval_ms for t in group.check_tests}
    last = max(wanted)
    steps = sorted(set(range(0, last + 1, test_file.eval_interval_ms)) | wanted)
    verdicts: dict[int, dict[str, CheckResult]] = {}
    for t in steps:
        evaluator.present = present_at(history, t)
        checks = evaluator.evaluate_rules(t)
        if t in wanted:
            verdicts[t] = {c.name: c for c in checks}
    for check_test in group.check_tests:
        for want in check_test.checks:
            check = verdicts[check_test.eval_ms][want.name]
            state_ok = _state(check) == want.state
            value_ok = want.value is None or (check.value is not None and _same_value(check.value, want.value))
            if state_ok and value_ok:
                result.passed += 1
                continue
            exp = want.state + ("" if want.value is None else f" {go_float(want.value)}")
            shown = _state(check) + ("" if check.value is None else f" {go_float(check.value)}")
            reason = f" ({check.reason})" if check.reason else ""
            result.failures.append(
                f"    check: {json.dumps(want.name)}, time: {check_test.eval_text},\n"
                f"        exp: {exp}\n        got: {shown}{reason}"
            )
    return result


def promtool_file(test_file: TestFile) -> str:
    """The file for `promtool test rules`: the input series and expression tests, nothing adapter-only."""
    groups = []
    for group in test_file.groups:
        raw = {k: v for k, v in group.raw.items() if k in ("name", "interval", "input_series", "promql_expr_test")}
        groups.append(raw)
    doc = {"rule_files": [], "evaluation_interval": f"{test_file.eval_interval_ms}ms", "tests": groups}
    # JSON is YAML, and quoting every string keeps braces and `#` intact for promtool's parser.
    return json.dumps(doc, indent=1) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sidecars.adapter test",
        description="Run unit tests of health rules: input series in promtool's notation, expected "
        "expression values (promql_expr_test) and check states (check_test).",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="test files (YAML)")
    parser.add_argument(
        "--promtool", action="store_true", help="print the file for `promtool test rules` instead of running it"
    )
    args = parser.parse_args(argv)
    invalid = False
    passed = failed = 0
    for path in args.files:
        try:
            test_file = load_test_file(path)
        except TestFileError as exc:
            print(f"Unit Testing:  {path}\n  INVALID:", file=sys.stderr)
            for problem in exc.problems:
                print(f"    - {problem}", file=sys.stderr)
            invalid = True
            continue
        if args.promtool:
            sys.stdout.write(promtool_file(test_file))
            continue
        print(f"Unit Testing:  {path}")
        failures: list[str] = []
        for group in test_file.groups:
            result = run_group(test_file, group)
            passed += result.passed
            failed += len(result.failures)
            if result.failures:
                failures.append(f"  FAILED {group.name}:")
                failures.extend(result.failures)
        print("\n".join(failures) if failures else "  SUCCESS")
    if args.promtool:
        return EXIT_INVALID if invalid else EXIT_PASSED
    print(f"\n{passed} passed, {failed} failed")
    return EXIT_INVALID if invalid else EXIT_FAILED if failed else EXIT_PASSED
