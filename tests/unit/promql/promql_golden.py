"""Golden tests against `promtool test rules`: the same series and expressions, Prometheus' own answers.

A case is input series in promtool's expanding notation plus expressions and evaluation times. The harness
writes one promtool test file for all cases, each test given an expectation that cannot match, so promtool
prints what Prometheus computed (`got: ...`, values in full precision) or the error it hit. Each test's
expression carries a `# case-N` comment so the answers map back unambiguously.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sidecars.adapter.promql import History, InstantVector, PromQLError, Scalar, evaluate, parse_expr
from sidecars.adapter.promql.history import STALE_NAN
from sidecars.adapter.promql.lexer import parse_duration
from sidecars.adapter.promql.nodes import VectorSelector
from tests.support.prometheus import errors_disagree

PROMTOOL = "/usr/bin/promtool"

Result = dict[tuple[tuple[str, str], ...], float] | str  # samples by labels, or an error message


@dataclass
class Case:
    name: str
    series: list[tuple[str, str]]
    exprs: list[str]
    times: list[str]
    interval: str = "1m"
    tests: list[tuple[int, str, str]] = field(default_factory=list)  # (id, expr, time) once registered


def expand_values(text: str) -> list[float | None]:
    """promtool's expanding notation: `a+bxn`, `a-bxn`, `_`, `_xn`, `stale`, plain numbers."""
    out: list[float | None] = []
    for item in text.split():
        if item == "_":
            out.append(None)
            continue
        if item == "stale":
            out.append(STALE_NAN)
            continue
        m = re.fullmatch(r"_x(\d+)", item)
        if m:
            out.extend([None] * int(m.group(1)))
            continue
        m = re.fullmatch(r"([-+]?[0-9.eE]+|[-+]?Inf|NaN)([-+][0-9.eE]+)x(\d+)", item)
        if m:
            value, step = float(m.group(1)), float(m.group(2))
            for _ in range(int(m.group(3)) + 1):
                out.append(value)
                value += step
            continue
        m = re.fullmatch(r"([-+]?[0-9.eE]+|[-+]?Inf|NaN)x(\d+)", item)
        if m:
            out.extend([float(m.group(1))] * (int(m.group(2)) + 1))
            continue
        out.append(float(item))
    return out


def series_labels(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    node = parse_expr(text)
    assert isinstance(node, VectorSelector) and node.name is not None
    labels = tuple(sorted((m.name, m.value) for m in node.matchers if m.name != "__name__"))
    return node.name, labels


def build_history(case: Case) -> History:
    interval_ms = parse_duration(case.interval)
    assert interval_ms
    history = History(retention_ms=10**12)
    for text, values in case.series:
        name, labels = series_labels(text)
        for i, value in enumerate(expand_values(values)):
            if value is not None:
                history.append_scrape(i * interval_ms, [(name, labels, value, i * interval_ms)])
    return history


def ours(case: Case, expr: str, time: str) -> Result:
    t = parse_duration(time)
    assert t is not None
    try:
        value = evaluate(parse_expr(expr), build_history(case), t)
    except PromQLError as exc:
        return f"error: {exc}"
    if isinstance(value, Scalar):
        return {(): value.value}
    assert isinstance(value, InstantVector)
    labels = [s.labels for s in value.samples]
    if len(set(labels)) != len(labels):
        return "error: duplicate labels in our result"
    return {s.labels: s.value for s in value.samples}


def write_promtool_file(cases: list[Case], path: Path) -> None:
    groups = []
    next_id = 0
    for case in cases:
        tests = []
        case.tests = []
        for expr in case.exprs:
            for time in case.times:
                case.tests.append((next_id, expr, time))
                tests.append(
                    {
                        "expr": f"{expr} # case-{next_id}",
                        "eval_time": time,
                        "exp_samples": [{"labels": '{__sentinel__="never"}', "value": 0}],
                    }
                )
                next_id += 1
        groups.append(
            {
                "interval": case.interval,
                "input_series": [{"series": s, "values": v} for s, v in case.series],
                "promql_expr_test": tests,
            }
        )
    # JSON is YAML: quoting every string keeps `#` and braces intact.
    path.write_text(json.dumps({"evaluation_interval": "1m", "tests": groups}, indent=1))


_CASE_RE = re.compile(r'expr: "(?:[^"\\]|\\.)*# case-(\d+)", time: [^,]+,(?: err: (.*))?$')
_SAMPLE_RE = re.compile(r'(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\}) (\S+?)(?:,|$)')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def run_promtool(cases: list[Case], workdir: Path) -> dict[int, Result]:
    path = workdir / "golden_test.yml"
    write_promtool_file(cases, path)
    proc = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    results: dict[int, Result] = {}
    current: int | None = None
    for line in lines:
        line = line.strip()
        m = _CASE_RE.match(line)
        if m:
            current = int(m.group(1))
            if m.group(2) is not None:
                results[current] = f"error: {m.group(2)}"
                current = None
            continue
        if current is not None and line.startswith("got: "):
            results[current] = parse_got(line[len("got: ") :])
            current = None
    return results


def parse_got(text: str) -> Result:
    if text == "nil":
        return {}
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for m in _SAMPLE_RE.finditer(text):
        labels = tuple(sorted((k, json.loads(f'"{v}"')) for k, v in _LABEL_RE.findall(m.group(1))))
        out[labels] = float(m.group(2))
    return out


def same(a: float, b: float, rel: float = 1e-9) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == 0 and b == 0:
        return math.copysign(1.0, a) == math.copysign(1.0, b)  # promtool prints -0: 1/-0 is -Inf
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b)) or abs(a - b) < 1e-300


def compare(expected: Result, got: Result) -> str | None:
    """None when our result matches promtool's; else what differs."""
    if isinstance(expected, str) and isinstance(got, str):
        return errors_disagree(expected, got)  # the wording differs; the kind of failure must not
    if isinstance(expected, str) or isinstance(got, str):
        return f"promtool: {expected!r}\nours:     {got!r}"
    if set(expected) != set(got):
        return f"label sets differ\npromtool: {sorted(expected.items())}\nours:     {sorted(got.items())}"
    bad = [(k, expected[k], got[k]) for k in expected if not same(expected[k], got[k])]
    if bad:
        return "values differ: " + "; ".join(f"{dict(k)} promtool={e!r} ours={g!r}" for k, e, g in bad)
    return None
