"""`GET /explain/<check>`: why a check is in its state, from the history its last verdict was made of.

The rule's expression (and its `recover` expression) evaluated again at the time of the last
verdict: the result vector with its labels and values, and every selector of the expression with
how many series it matched there, so a rule without data names the selector that matched nothing.
The evaluation holds the evaluator's lock (one at a time, never during a scrape's evaluation) and
runs in a worker thread, so the probes on the same listener do not wait for it. The answer is
bounded: at most `MAX_SERIES` series per result, label values and texts cut.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from typing import Any

from sidecars.adapter.evaluator import CheckResult, Evaluator
from sidecars.adapter.promql import InstantVector, PromQLError, Scalar, evaluate
from sidecars.adapter.promql.history import History, is_stale
from sidecars.adapter.promql.nodes import Expr, MatchType, MatrixSelector, VectorSelector, walk
from sidecars.adapter.rules import SCRAPE_CHECK, Rule

MAX_SERIES = 100  # of a result vector
MAX_SELECTORS = 50
MAX_TEXT = 200  # characters of a label value or a selector
MAX_LABELS = 30  # per series shown


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def _number(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def selector_text(selector: VectorSelector) -> str:
    matchers = [
        str(m) for m in selector.matchers if not (m.name == "__name__" and m.type is MatchType.EQUAL and selector.name)
    ]
    inner = "{" + ",".join(matchers) + "}" if matchers or not selector.name else ""
    return _cut((selector.name or "") + inner)


def _matched(history: History, node: VectorSelector | MatrixSelector, t: int) -> tuple[int, int]:
    """(series known by these matchers, series with a sample where the evaluation at `t` reads)."""
    selector = node.selector if isinstance(node, MatrixSelector) else node
    ref = (selector.at_ms if selector.at_ms is not None else t) - selector.offset_ms
    start = ref - (node.range_ms if isinstance(node, MatrixSelector) else history.lookback_delta_ms)
    known = history.select(selector.matchers)
    matched = 0
    for series in known:
        lo = bisect_left(series.ts, start)
        hi = bisect_right(series.ts, ref, lo)
        if isinstance(node, VectorSelector):
            # The instant selector takes the latest sample, and a staleness marker hides the series.
            if hi > lo and not is_stale(series.vs[hi - 1]):
                matched += 1
        elif any(not is_stale(v) for v in series.vs[lo:hi]):
            matched += 1
    return len(known), matched


def _selectors(expr: Expr, history: History, t: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    inside_range = {id(n.selector) for n in walk(expr) if isinstance(n, MatrixSelector)}
    for node in walk(expr):
        if not isinstance(node, VectorSelector | MatrixSelector) or id(node) in inside_range:
            continue
        selector = node.selector if isinstance(node, MatrixSelector) else node
        text = selector_text(selector)
        if isinstance(node, MatrixSelector):
            text += f"[{node.range_ms // 1000}s]"
        if selector.offset_ms:
            text += f" offset {selector.offset_ms // 1000}s"
        known, matched = _matched(history, node, t)
        out.append({"selector": text, "series_known": known, "series_matched": matched})
        if len(out) >= MAX_SELECTORS:
            break
    return out


def _result(expr: Expr, history: History, t: int) -> dict[str, Any]:
    try:
        value = evaluate(expr, history, t)
    except PromQLError as exc:
        return {"type": "error", "error": _cut(str(exc))}
    if isinstance(value, Scalar):
        return {"type": "scalar", "value": _number(value.value)}
    if isinstance(value, InstantVector):
        shown = [
            {"labels": {_cut(k): _cut(v) for k, v in s.labels[:MAX_LABELS]}, "value": _number(s.value)}
            for s in value.samples[:MAX_SERIES]
        ]
        return {"type": "vector", "series_total": len(value.samples), "series": shown}
    return {"type": "string", "value": _cut(value.value)}


def _expression(expr: Expr, text: str, history: History, t: int) -> dict[str, Any]:
    selectors = _selectors(expr, history, t)
    return {
        "expr": text,
        "result": _result(expr, history, t),
        "selectors": selectors,
        "matched_nothing": [s["selector"] for s in selectors if s["series_matched"] == 0],
    }


def _check(check: CheckResult | None) -> dict[str, Any]:
    if check is None:
        return {}
    out: dict[str, Any] = {"state": check.state, "failing": check.failing, "warning": check.warning}
    if check.since_ms is not None:
        out["since"] = _iso(check.since_ms)
    if check.reason:
        out["reason"] = check.reason
    return out


def explain(evaluator: Evaluator, name: str) -> dict[str, Any] | None:
    """What `/explain/<name>` answers; None when no check has that name."""
    with evaluator.lock:
        verdict = evaluator.verdict
        check = verdict.by_name.get(name) if verdict is not None else None
        if name == SCRAPE_CHECK:
            spec = evaluator.rules.scrape
            doc: dict[str, Any] = {"check": name, "group": spec.group, "severity": spec.severity, **_check(check)}
            if verdict is not None:
                doc["evaluated_at"] = _iso(verdict.at_ms)
            return doc
        rule: Rule | None = next((r for r in evaluator.rules.rules if r.name == name), None)
        if rule is None:
            return None
        doc = {"check": name, "group": rule.group, "severity": rule.severity, **_check(check)}
        doc["for"] = f"{rule.for_ms / 1000:g}s"
        doc["keep_firing_for"] = f"{rule.keep_firing_for_ms / 1000:g}s"
        if verdict is None:
            doc["note"] = "no evaluation yet: the first scrape has not finished"
            return doc
        t = verdict.at_ms
        doc["evaluated_at"] = _iso(t)
        doc["evaluated_at_ms"] = t
        doc["condition"] = _expression(rule.expr, rule.expr_text, evaluator.history, t)
        if rule.recover is not None:
            doc["recover"] = _expression(rule.recover, rule.recover_text, evaluator.history, t)
        return doc
