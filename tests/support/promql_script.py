"""Runs PromQL test scripts in the format of Prometheus' own engine tests through our engine.

A script is a sequence of commands separated by blank lines (`#` starts a comment line):

    load 5m
      http_requests{job="api", instance="0"} 0+10x10
    eval instant at 50m sum by (job) (http_requests)
      {job="api"} 100
    eval_ordered instant at 50m sort_desc(http_requests)
      http_requests{job="api", instance="0"} 100
    eval_fail instant at 0m label_replace(up, "x", "", "y", "(")
    clear

`load` adds series sampled every interval from time 0 in promtool's expanding notation, `clear`
empties the storage, `eval` compares one instant query with the lines below it (a bare number for a
scalar), by labels; `eval_ordered` also by position, `eval_fail` expects an error. Values agree to a
relative 1e-6, as in Prometheus' harness. Run a directory of such files with
`python -m tests.support.promql_script FILE...`: it prints every disagreement and the count that agree.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sidecars.adapter.promql import History, InstantVector, PromQLError, Scalar, evaluate, parse_expr
from sidecars.adapter.promql.lexer import parse_duration
from sidecars.adapter.promql.values import Labels
from tests.unit.promql.promql_golden import expand_values

_LOAD = re.compile(r"^load\s+(\S+)$")
_EVAL = re.compile(r"^eval(?:_(fail|ordered))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
_SPACE = re.compile(r"\s+")
_EPSILON = 1e-6
_MIN_NORMAL = 2.2250738585072014e-308


@dataclass
class Outcome:
    line: int
    expr: str
    problem: str | None  # None: our engine agrees


def split_series(line: str) -> tuple[str, str]:
    """`metric{a="b, c"} 1 2` -> (`metric{a="b, c"}`, `1 2`): the braces end the descriptor, quotes respected."""
    brace = line.find("{")
    space = _SPACE.search(line)
    if brace < 0 or (space is not None and space.start() < brace):
        head, *rest = _SPACE.split(line, maxsplit=1)
        return head, rest[0].strip() if rest else ""
    i, quoted = brace + 1, False
    while i < len(line):
        c = line[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "}" and not quoted:
            return line[: i + 1], line[i + 1 :].strip()
        i += 1
    raise ValueError(f"unterminated series descriptor: {line!r}")


_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def descriptor_labels(text: str) -> tuple[str | None, Labels]:
    """The metric name and the other labels (empty values left out) of `name{a="b", ...}`."""
    name, brace, rest = text.partition("{")
    labels = []
    if brace:
        inner = rest.rstrip()[:-1]
        pos = 0
        while pos < len(inner):
            m = _LABEL_PAIR.match(inner, pos)
            if m is None:
                raise ValueError(f"bad series descriptor: {text!r}")
            value = json.loads(f'"{m.group(2)}"')
            if m.group(1) == "__name__":
                name = value
            elif value:
                labels.append((m.group(1), value))
            pos = m.end()
    return (name or None), tuple(sorted(labels))


def parse_number(text: str) -> float | None:
    try:
        return float(int(text, 0))
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def almost_equal(a: float, b: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    diff = abs(a - b)
    if a == 0 or b == 0 or diff < _MIN_NORMAL:
        return diff < _EPSILON * _MIN_NORMAL
    return diff / (abs(a) + abs(b)) < _EPSILON


def _full_labels(name: str | None, labels: Labels) -> Labels:
    return tuple(sorted((*labels, ("__name__", name)))) if name else labels


def compare(result: object, scalar: float | None, expected: list[tuple[Labels, float]], ordered: bool) -> str | None:
    if isinstance(result, Scalar):
        if scalar is None:
            return f"got the scalar {result.value!r}, expected a vector"
        return None if almost_equal(scalar, result.value) else f"scalar {result.value!r}, expected {scalar!r}"
    if not isinstance(result, InstantVector):
        return f"got {result!r}"
    if scalar is not None:
        return f"got a vector {result.samples}, expected the scalar {scalar!r}"
    wanted = {labels: (pos, value) for pos, (labels, value) in enumerate(expected)}
    seen = set()
    for pos, sample in enumerate(result.samples):
        if sample.labels not in wanted:
            return f"unexpected {dict(sample.labels)} {sample.value!r}"
        want_pos, want = wanted[sample.labels]
        if ordered and want_pos != pos:
            return f"{dict(sample.labels)} at position {pos + 1}, expected at {want_pos + 1}"
        if not almost_equal(want, sample.value):
            return f"{dict(sample.labels)}: {sample.value!r}, expected {want!r}"
        seen.add(sample.labels)
    missing = [dict(labels) for labels in wanted if labels not in seen]
    return f"missing {missing}" if missing else None


def run_script(text: str) -> list[Outcome]:
    lines = [("" if ln.strip().startswith("#") else ln.strip()) for ln in text.split("\n")]
    history = History(retention_ms=10**13)
    outcomes: list[Outcome] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if line.lower() == "clear":
            history = History(retention_ms=10**13)
            continue
        block: list[str] = []
        while i < len(lines) and lines[i]:
            block.append(lines[i])
            i += 1
        m = _LOAD.match(line)
        if m:
            step = parse_duration(m.group(1))
            assert step is not None, line
            # A series given twice in one load keeps its last definition, as in Prometheus' harness.
            loaded: dict[tuple[str, Labels], list[float | None]] = {}
            for row in block:
                desc, values = split_series(row)
                name, labels = descriptor_labels(desc)
                assert name is not None, row
                loaded[(name, labels)] = expand_values(values)
            for (name, labels), points in loaded.items():
                for n, v in enumerate(points):
                    if v is not None:
                        history.append_scrape(n * step, [(name, labels, v, n * step)])
            continue
        m = _EVAL.match(line)
        if not m:
            raise ValueError(f"line {i}: not a command: {line!r}")
        mode, at, expr = m.group(1), m.group(2) or "0s", m.group(3)
        t = parse_duration(at)
        assert t is not None, line
        scalar: float | None = None
        expected: list[tuple[Labels, float]] = []
        for row in block:
            number = parse_number(row)
            if number is not None:
                scalar = number
                break
            desc, value = split_series(row)
            name, labels = descriptor_labels(desc)
            values = expand_values(value)
            assert len(values) == 1 and values[0] is not None, row
            expected.append((_full_labels(name, labels), values[0]))
        try:
            result: object = evaluate(parse_expr(expr), history, t)
        except PromQLError as exc:
            problem = None if mode == "fail" else f"error: {exc}"
        except Exception as exc:  # a crash is a disagreement, reported with its kind
            problem = f"crash: {type(exc).__name__}: {exc}"
        else:
            if mode == "fail":
                problem = "expected an error, got a result"
            else:
                problem = compare(result, scalar, expected, ordered=mode == "ordered")
        outcomes.append(Outcome(i - len(block), expr, problem))
    return outcomes


def main(paths: Sequence[str]) -> int:
    total = agree = 0
    for path in paths:
        for outcome in run_script(Path(path).read_text()):
            total += 1
            if outcome.problem is None:
                agree += 1
            else:
                print(f"{path}:{outcome.line}: {outcome.expr}\n    {outcome.problem}")
    print(f"{agree} of {total} evaluations agree")
    return 0 if agree == total else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
