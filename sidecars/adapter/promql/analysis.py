"""Static questions about an expression: which metrics it reads, and how much history it needs."""

from __future__ import annotations

from sidecars.adapter.promql.nodes import Expr, MatrixSelector, SubqueryExpr, VectorSelector, children, walk


def referenced_metric_names(expr: Expr) -> frozenset[str] | None:
    """Names of every metric the expression selects; None when a selector has no fixed metric name."""
    names: set[str] = set()
    for node in walk(expr):
        if isinstance(node, VectorSelector):
            if node.name is None:
                return None
            names.add(node.name)
    return frozenset(names)


def required_history_ms(expr: Expr, lookback_delta_ms: int = 300_000) -> int:
    """How far back from the evaluation time an evaluation reads samples (offsets and subqueries included).

    Selectors pinned with `@ <timestamp>` read around that fixed time; they are counted as reading at the
    evaluation time, since no bounded history could serve an arbitrary fixed time anyway.
    """
    return max(0, _reach(expr, lookback_delta_ms))


def _reach(node: Expr, lookback: int) -> int:
    if isinstance(node, VectorSelector):
        return node.offset_ms + lookback
    if isinstance(node, MatrixSelector):
        return node.selector.offset_ms + node.range_ms
    if isinstance(node, SubqueryExpr):
        # The inner expression is evaluated at steps reaching back `range` before the subquery's end.
        return node.offset_ms + node.range_ms + _reach(node.expr, lookback)
    return max((_reach(c, lookback) for c in children(node)), default=0)
