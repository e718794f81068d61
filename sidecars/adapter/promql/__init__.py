"""A PromQL engine for health rules: Prometheus 2.42's syntax and semantics over an in-memory history.

expr = parse_expr('rate(http_requests_total{code=~"5.."}[5m]) > 0.1')
history = History(retention_ms=required_history_ms(expr))
history.append_scrape(t_ms, [("http_requests_total", (("code", "500"),), 17.0, None), ...])
result = evaluate(expr, history, t_ms)   # Scalar | InstantVector | StringValue
"""

from sidecars.adapter.promql.analysis import referenced_metric_names, required_history_ms
from sidecars.adapter.promql.engine import evaluate
from sidecars.adapter.promql.errors import PromQLError
from sidecars.adapter.promql.history import History
from sidecars.adapter.promql.nodes import Expr
from sidecars.adapter.promql.parser import parse_expr
from sidecars.adapter.promql.values import InstantVector, Sample, Scalar, StringValue, Value

__all__ = [
    "Expr",
    "History",
    "InstantVector",
    "PromQLError",
    "Sample",
    "Scalar",
    "StringValue",
    "Value",
    "evaluate",
    "parse_expr",
    "referenced_metric_names",
    "required_history_ms",
]
