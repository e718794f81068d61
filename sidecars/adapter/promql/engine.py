"""Instant evaluation of a parsed expression over a History, with Prometheus 2.42's semantics.

Internally a scalar is a float, a string a str, an instant vector a list of Sample and a range vector a
list of (labels, timestamps, values) windows. Range functions read array slices found by bisection.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence

from sidecars.adapter.promql import functions as fn
from sidecars.adapter.promql.errors import PromQLError
from sidecars.adapter.promql.history import History, Series, is_stale, stale_free
from sidecars.adapter.promql.lexer import is_label_name
from sidecars.adapter.promql.mathops import NAN, format_float, go_div, go_mod, go_pow
from sidecars.adapter.promql.nodes import (
    COMPARISON_OPS,
    NAME_DROPPING_OPS,
    AggregateExpr,
    BinaryExpr,
    Call,
    Card,
    Expr,
    MatchType,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    ValueType,
    VectorMatching,
    VectorSelector,
)
from sidecars.adapter.promql.regex import AnchoredRegex, RegexError, RegexMatch, compile_anchored
from sidecars.adapter.promql.values import InstantVector, Labels, Sample, Scalar, StringValue, Value

RangeSeries = tuple[Labels, Sequence[int], Sequence[float], Labels]  # labels, times, values, labels sans name
Vector = list[Sample]
Internal = float | str | Vector | list[RangeSeries]

DEFAULT_SUBQUERY_STEP_MS = 60_000
MAX_SUBQUERY_STEPS = 11_000  # the resolution limit Prometheus puts on range queries


def evaluate(expr: Expr, history: History, t_ms: int, *, default_step_ms: int = DEFAULT_SUBQUERY_STEP_MS) -> Value:
    """Evaluate `expr` at `t_ms` over `history`, as Prometheus' instant query (and rule evaluation) does."""
    if expr.type is ValueType.MATRIX:
        raise PromQLError("the expression gives a range vector; a rule needs an instant vector or a scalar", expr.pos)
    try:
        result = _Evaluator(history, default_step_ms).eval(expr, int(t_ms))
    except RecursionError:
        raise PromQLError("expression nests too deeply to evaluate") from None
    if isinstance(result, float):
        return Scalar(result)
    if isinstance(result, str):
        return StringValue(result)
    return InstantVector(result)  # type: ignore[arg-type]


def drop_name(labels: Labels) -> Labels:
    for k, _ in labels:
        if k == "__name__":
            return tuple(p for p in labels if p[0] != "__name__")
    return labels


def _check_unique(vector: Vector) -> Vector:
    if len({s.labels for s in vector}) != len(vector):
        raise PromQLError("vector cannot contain metrics with the same labelset")
    return vector


def _unwrap(expr: Expr) -> Expr:
    while isinstance(expr, ParenExpr):
        expr = expr.expr
    return expr


def absent_labels(expr: Expr) -> Labels:
    """Labels of `absent()`'s result: the equality matchers of a selector argument (Prometheus' rules)."""
    expr = _unwrap(expr)
    if isinstance(expr, MatrixSelector):
        expr = expr.selector
    if not isinstance(expr, VectorSelector):
        return ()
    out: dict[str, str] = {}
    empty: list[str] = []
    for m in expr.matchers:
        if m.name == "__name__":
            continue
        if m.type is MatchType.EQUAL and m.name not in out:
            out[m.name] = m.value  # an empty value holds the name (a later matcher on it only removes it)
        else:
            empty.append(m.name)
    for name in empty:
        out.pop(name, None)
    return tuple(sorted((k, v) for k, v in out.items() if v))


class _Evaluator:
    def __init__(self, history: History, default_step_ms: int) -> None:
        self.history = history
        self.lookback = history.lookback_delta_ms
        self.default_step_ms = default_step_ms

    # -- dispatch --------------------------------------------------------------------------------
    def eval(self, node: Expr, t: int) -> Internal:
        if isinstance(node, NumberLiteral):
            return node.value
        if isinstance(node, StringLiteral):
            return node.value
        if isinstance(node, ParenExpr):
            return self.eval(node.expr, t)
        if isinstance(node, VectorSelector):
            return [Sample(s.labels, v) for s, _, v in self.instant(node, t)]
        if isinstance(node, MatrixSelector | SubqueryExpr):
            return self.matrix(node, t)[0]
        if isinstance(node, UnaryExpr):
            return self.unary(node, t)
        if isinstance(node, BinaryExpr):
            return self.binary(node, t)
        if isinstance(node, Call):
            return self.call(node, t)
        if isinstance(node, AggregateExpr):
            return self.aggregate(node, t)
        raise PromQLError(f"unsupported expression {type(node).__name__}", node.pos)

    def vector(self, node: Expr, t: int) -> Vector:
        out = self.eval(node, t)
        assert isinstance(out, list)
        return out  # type: ignore[return-value]

    def scalar(self, node: Expr, t: int) -> float:
        out = self.eval(node, t)
        assert isinstance(out, float)
        return out

    def string(self, node: Expr, t: int) -> str:
        out = self.eval(node, t)
        assert isinstance(out, str)
        return out

    # -- selectors -------------------------------------------------------------------------------
    @staticmethod
    def ref_time(t: int, at_ms: int | None, offset_ms: int) -> int:
        # `@ start()` and `@ end()` are both the evaluation time of an instant query, so only a fixed `@` moves it.
        return (at_ms if at_ms is not None else t) - offset_ms

    def instant(self, node: VectorSelector, t: int) -> list[tuple[Series, int, float]]:
        """(series, sample time, value) of the latest non-stale sample within the lookback, per series."""
        ref = self.ref_time(t, node.at_ms, node.offset_ms)
        oldest = ref - self.lookback
        out = []
        for s in self.history.select(node.matchers):
            ts = s.ts
            i = bisect_right(ts, ref) - 1
            if i < 0:
                continue
            st = ts[i]
            if st < oldest:
                continue
            v = s.vs[i]
            if v != v and is_stale(v):
                continue
            out.append((s, st, v))
        return out

    def matrix(self, node: MatrixSelector | SubqueryExpr, t: int) -> tuple[list[RangeSeries], int, int]:
        """The windows of a range vector, with the range's end time and length."""
        if isinstance(node, SubqueryExpr):
            return self.subquery(node, t)
        sel = node.selector
        end = self.ref_time(t, sel.at_ms, sel.offset_ms)
        start = end - node.range_ms
        out: list[RangeSeries] = []
        for s in self.history.select(sel.matchers):
            ts = s.ts
            lo = bisect_left(ts, start)
            hi = bisect_right(ts, end, lo)
            if lo == hi:
                continue
            wts, wvs = stale_free(ts[lo:hi], s.vs[lo:hi], s.stale_count > 0)
            if wvs:
                out.append((s.labels, wts, wvs, s.unnamed))
        return out, end, node.range_ms

    def subquery(self, node: SubqueryExpr, t: int) -> tuple[list[RangeSeries], int, int]:
        end = self.ref_time(t, node.at_ms, node.offset_ms)
        step = node.step_ms or self.default_step_ms
        lower = end - node.range_ms
        start = step * int(lower / step)  # Go's integer division truncates toward zero
        if start < lower:
            start += step
        steps = (end - start) // step + 1 if end >= start else 0
        if steps > MAX_SUBQUERY_STEPS:
            # A rule runs on every scrape: refuse what would stall the event loop instead of running it.
            raise PromQLError(
                f"subquery would evaluate its expression {steps} times; at most {MAX_SUBQUERY_STEPS} are allowed "
                "(use a longer step)",
                node.pos,
            )
        series: dict[Labels, tuple[list[int], list[float]]] = {}
        for at in range(start, end + 1, step):
            value = self.eval(node.expr, at)
            assert isinstance(value, list)
            for sample in value:
                assert isinstance(sample, Sample)
                pts = series.get(sample.labels)
                if pts is None:
                    pts = series[sample.labels] = ([], [])
                pts[0].append(at)
                pts[1].append(sample.value)
        out: list[RangeSeries] = [(labels, pts[0], pts[1], drop_name(labels)) for labels, pts in series.items()]
        return out, end, node.range_ms

    # -- operators -------------------------------------------------------------------------------
    def unary(self, node: UnaryExpr, t: int) -> Internal:
        value = self.eval(node.expr, t)
        if node.op == "+":
            return value
        if isinstance(value, float):
            return -value
        assert isinstance(value, list)
        return _check_unique([Sample(drop_name(s.labels), -s.value) for s in value])  # type: ignore[union-attr]

    def binary(self, node: BinaryExpr, t: int) -> Internal:
        lhs = self.eval(node.lhs, t)
        rhs = self.eval(node.rhs, t)
        op = node.op
        if isinstance(lhs, float) and isinstance(rhs, float):
            return _scalar_binop(op, lhs, rhs)
        if isinstance(lhs, float) or isinstance(rhs, float):
            return self.vector_scalar(op, lhs, rhs, node.return_bool)  # type: ignore[arg-type]
        assert isinstance(lhs, list) and isinstance(rhs, list)
        matching = node.matching or VectorMatching(Card.ONE_TO_ONE)
        if op == "and":
            return self.vector_and(lhs, rhs, matching)  # type: ignore[arg-type]
        if op == "or":
            return self.vector_or(lhs, rhs, matching)  # type: ignore[arg-type]
        if op == "unless":
            return self.vector_unless(lhs, rhs, matching)  # type: ignore[arg-type]
        return _check_unique(self.vector_binop(op, lhs, rhs, matching, node.return_bool))  # type: ignore[arg-type]

    @staticmethod
    def vector_scalar(op: str, lhs: Vector | float, rhs: Vector | float, return_bool: bool) -> Vector:
        swap = isinstance(lhs, float)
        vec: Vector = rhs if swap else lhs  # type: ignore[assignment]
        scalar: float = lhs if swap else rhs  # type: ignore[assignment]
        comparison = op in COMPARISON_OPS
        drop = op in NAME_DROPPING_OPS or return_bool
        out: Vector = []
        for s in vec:
            lv, rv = (scalar, s.value) if swap else (s.value, scalar)
            value, keep = _elem_binop(op, lv, rv)
            if comparison and swap:
                value = rv
            if return_bool:
                value = 1.0 if keep else 0.0
                keep = True
            if keep:
                out.append(Sample(drop_name(s.labels) if drop else s.labels, value))
        return _check_unique(out) if drop else out

    @staticmethod
    def vector_binop(op: str, lhs: Vector, rhs: Vector, matching: VectorMatching, return_bool: bool) -> Vector:
        sig = _signature_fn(matching)
        if matching.card is Card.ONE_TO_MANY:
            lhs, rhs = rhs, lhs
        right: dict[Labels, Sample] = {}
        for rs in rhs:
            key = sig(rs.labels)
            dup = right.get(key)
            if dup is not None:
                side = "left" if matching.card is Card.ONE_TO_MANY else "right"
                raise PromQLError(
                    f"found duplicate series for the match group {_fmt_labels(key)} on the {side} hand-side of "
                    f"the operation: [{_fmt_labels(rs.labels)}, {_fmt_labels(dup.labels)}];many-to-many matching "
                    "not allowed: matching labels must be unique on one side"
                )
            right[key] = rs
        matched: dict[Labels, set[Labels] | None] = {}
        out: Vector = []
        drop = op in NAME_DROPPING_OPS
        for ls in lhs:
            key = sig(ls.labels)
            one = right.get(key)
            if one is None:
                continue
            vl, vr = ls.value, one.value
            if matching.card is Card.ONE_TO_MANY:
                vl, vr = vr, vl
            value, keep = _elem_binop(op, vl, vr)
            if return_bool:
                value = 1.0 if keep else 0.0
            elif not keep:
                continue
            metric = _result_metric(ls.labels, one.labels, drop, matching)
            if return_bool:
                metric = drop_name(metric)
            if matching.card is Card.ONE_TO_ONE:
                if key in matched:
                    raise PromQLError(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    )
                matched[key] = None
            else:
                inserted = matched.get(key)
                if inserted is None:
                    inserted = matched[key] = set()
                elif metric in inserted:
                    raise PromQLError("multiple matches for labels: grouping labels must ensure unique matches")
                inserted.add(metric)
            out.append(Sample(metric, value))
        return out

    @staticmethod
    def vector_and(lhs: Vector, rhs: Vector, matching: VectorMatching) -> Vector:
        if not lhs or not rhs:
            return []
        sig = _signature_fn(matching)
        right = {sig(s.labels) for s in rhs}
        return [s for s in lhs if sig(s.labels) in right]

    @staticmethod
    def vector_or(lhs: Vector, rhs: Vector, matching: VectorMatching) -> Vector:
        if not lhs:
            return list(rhs)
        if not rhs:
            return list(lhs)
        sig = _signature_fn(matching)
        left = {sig(s.labels) for s in lhs}
        return [*lhs, *(s for s in rhs if sig(s.labels) not in left)]

    @staticmethod
    def vector_unless(lhs: Vector, rhs: Vector, matching: VectorMatching) -> Vector:
        if not lhs or not rhs:
            return list(lhs)
        sig = _signature_fn(matching)
        right = {sig(s.labels) for s in rhs}
        return [s for s in lhs if sig(s.labels) not in right]

    # -- functions -------------------------------------------------------------------------------
    def call(self, node: Call, t: int) -> Internal:
        name = node.name
        args = node.args
        range_fn = fn.RANGE_FUNCTIONS.get(name)
        if range_fn is not None or name in ("predict_linear", "holt_winters", "absent_over_time"):
            return self.call_range(node, t)
        if name in fn.SIMPLE_FUNCTIONS:
            f = fn.SIMPLE_FUNCTIONS[name]
            return _check_unique([Sample(drop_name(s.labels), f(s.value)) for s in self.vector(args[0], t)])
        if name == "time":
            return t / 1000
        if name == "pi":
            return math.pi
        if name == "vector":
            return [Sample((), self.scalar(args[0], t))]
        if name == "scalar":
            vec = self.vector(args[0], t)
            return vec[0].value if len(vec) == 1 else NAN
        if name == "absent":
            return [] if self.vector(args[0], t) else [Sample(absent_labels(args[0]), 1.0)]
        if name == "timestamp":
            arg = _unwrap(args[0])
            if isinstance(arg, VectorSelector):
                pts = self.instant(arg, t)
                return _check_unique([Sample(drop_name(s.labels), st / 1000) for s, st, _ in pts])
            return _check_unique([Sample(drop_name(s.labels), t / 1000) for s in self.vector(arg, t)])
        if name in ("clamp", "clamp_min", "clamp_max"):
            vec = self.vector(args[0], t)
            if name == "clamp":
                lo, hi = self.scalar(args[1], t), self.scalar(args[2], t)
                if hi < lo:
                    return []
            elif name == "clamp_min":
                lo, hi = self.scalar(args[1], t), math.inf
            else:
                lo, hi = -math.inf, self.scalar(args[1], t)
            return _check_unique([Sample(drop_name(s.labels), fn.clamp(s.value, lo, hi)) for s in vec])
        if name == "round":
            vec = self.vector(args[0], t)
            nearest = self.scalar(args[1], t) if len(args) > 1 else 1.0
            return _check_unique([Sample(drop_name(s.labels), fn.round_to(s.value, nearest)) for s in vec])
        if name in fn.DATE_FUNCTIONS:
            f = fn.DATE_FUNCTIONS[name]
            vec = self.vector(args[0], t) if args else [Sample((), t / 1000)]
            return _check_unique([Sample(drop_name(s.labels), f(s.value)) for s in vec if s.value == s.value])
        if name in ("sort", "sort_desc"):
            return _go_sort(self.vector(args[0], t), descending=name == "sort_desc")
        if name == "histogram_quantile":
            return self.histogram_quantile(self.scalar(args[0], t), self.vector(args[1], t))
        if name == "label_replace":
            return self.label_replace(node, t)
        if name == "label_join":
            return self.label_join(node, t)
        raise PromQLError(f'function "{name}" is not supported', node.pos)

    def call_range(self, node: Call, t: int) -> Vector:
        name = node.name
        extra: list[float] = []
        if name == "quantile_over_time":
            extra.append(self.scalar(node.args[0], t))
            matrix_arg = node.args[1]
        else:
            matrix_arg = node.args[0]
        # `rate((x[5m]))`: Prometheus strips the parentheses around a range argument before the call.
        matrix_arg = _unwrap(matrix_arg)
        if not isinstance(matrix_arg, MatrixSelector | SubqueryExpr):
            raise PromQLError(f'the range argument of "{name}" is not a range vector', node.pos)
        windows, end, range_ms = self.matrix(matrix_arg, t)
        if name == "absent_over_time":
            return [] if windows else [Sample(absent_labels(matrix_arg), 1.0)]
        start = end - range_ms
        out: Vector = []
        if name == "predict_linear":
            duration = self.scalar(node.args[1], t)
            for _, ts, vs, unnamed in windows:
                value = fn.predict_linear(ts, vs, t, duration)
                if value is not None:
                    out.append(Sample(unnamed, value))
            return _check_unique(out)
        if name == "holt_winters":
            sf, tf = self.scalar(node.args[1], t), self.scalar(node.args[2], t)
            if not windows:
                return out  # Prometheus checks the factors per series, so no series means no error
            if not 0 < sf < 1:
                raise PromQLError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:f}", node.pos)
            if not 0 < tf < 1:
                raise PromQLError(f"invalid trend factor. Expected: 0 < tf < 1, got: {tf:f}", node.pos)
            for _, _, vs, unnamed in windows:
                value = fn.holt_winters(vs, sf, tf)
                if value is not None:
                    out.append(Sample(unnamed, value))
            return _check_unique(out)
        range_fn = fn.RANGE_FUNCTIONS[name]
        keep_name = name == "last_over_time"
        for labels, ts, vs, unnamed in windows:
            value = range_fn(ts, vs, start, end, range_ms, extra)
            if value is not None:
                out.append(Sample(labels if keep_name else unnamed, value))
        return _check_unique(out)

    @staticmethod
    def histogram_quantile(q: float, vec: Vector) -> Vector:
        # Grouped by the labels without `le`, and by metric name too (which the result drops), so that two
        # histograms differing only in name stay apart, as in Prometheus.
        groups: dict[tuple[Labels, str], list[tuple[float, float]]] = {}
        for s in vec:
            le = None
            name = ""
            for k, v in s.labels:
                if k == "le":
                    le = fn.parse_go_float(v)
                elif k == "__name__":
                    name = v
            if le is None:
                continue
            key = tuple(p for p in s.labels if p[0] != "le" and p[0] != "__name__")
            groups.setdefault((key, name), []).append((le, s.value))
        return _check_unique([Sample(key, fn.bucket_quantile(q, buckets)) for (key, _), buckets in groups.items()])

    def label_replace(self, node: Call, t: int) -> Vector:
        vec = self.vector(node.args[0], t)
        dst, repl, src, pattern = (self.string(a, t) for a in node.args[1:5])
        try:
            regex = compile_anchored(pattern)
        except RegexError:
            raise PromQLError(f"invalid regular expression in label_replace(): {pattern}", node.pos) from None
        if not is_label_name(dst):
            raise PromQLError(f"invalid destination label name in label_replace(): {dst}", node.pos)
        out: Vector = []
        for s in vec:
            src_val = dict(s.labels).get(src, "")
            m = regex.match(src_val)
            if m is None:
                out.append(s)
                continue
            res = _go_expand(repl, m, regex)
            labels = dict(s.labels)
            labels.pop(dst, None)
            if res:
                labels[dst] = res
            out.append(Sample(tuple(sorted(labels.items())), s.value))
        return _check_unique(out)

    def label_join(self, node: Call, t: int) -> Vector:
        vec = self.vector(node.args[0], t)
        dst, sep = self.string(node.args[1], t), self.string(node.args[2], t)
        srcs = [self.string(a, t) for a in node.args[3:]]
        for src in srcs:
            if not is_label_name(src):
                raise PromQLError(f"invalid source label name in label_join(): {src}", node.pos)
        if not is_label_name(dst):
            raise PromQLError(f"invalid destination label name in label_join(): {dst}", node.pos)
        out: Vector = []
        for s in vec:
            labels = dict(s.labels)
            joined = sep.join(labels.get(src, "") for src in srcs)
            labels.pop(dst, None)
            if joined:
                labels[dst] = joined
            out.append(Sample(tuple(sorted(labels.items())), s.value))
        return _check_unique(out)

    # -- aggregation -----------------------------------------------------------------------------
    def aggregate(self, node: AggregateExpr, t: int) -> Vector:
        op = node.op
        vec = self.vector(node.expr, t)
        param: float | str | None = None
        if node.param is not None:
            param = self.eval(node.param, t)  # type: ignore[assignment]
        grouping = frozenset(node.grouping)
        if node.without:
            drop = grouping | {"__name__"}

            def group_key(labels: Labels) -> Labels:
                return tuple(p for p in labels if p[0] not in drop)
        else:

            def group_key(labels: Labels) -> Labels:
                return tuple(p for p in labels if p[0] in grouping)

        if op in ("topk", "bottomk"):
            assert isinstance(param, float)
            return _top_bottom(op, param, vec, group_key)
        if op == "count_values":
            assert isinstance(param, str)
            if not is_label_name(param):
                raise PromQLError(f"invalid label name {param!r}", node.pos)
            counts: dict[Labels, float] = {}
            for s in vec:
                grouped = dict(group_key(s.labels))
                grouped[param] = format_float(s.value)
                labels = tuple(sorted(grouped.items()))
                counts[labels] = counts.get(labels, 0.0) + 1
            return [Sample(k, v) for k, v in counts.items()]
        groups: dict[Labels, list[float]] = {}
        for s in vec:
            groups.setdefault(group_key(s.labels), []).append(s.value)
        out: Vector = []
        for key, values in groups.items():
            out.append(Sample(key, _aggregate_values(op, values, param)))
        return out


def _aggregate_values(op: str, values: list[float], param: float | str | None) -> float:
    if op == "sum":
        total = 0.0
        for v in values:
            total += v
        return total
    if op == "count":
        return float(len(values))
    if op == "group":
        return 1.0
    if op == "max":
        best = values[0]
        for v in values[1:]:
            if best < v or best != best:
                best = v
        return best
    if op == "min":
        best = values[0]
        for v in values[1:]:
            if best > v or best != best:
                best = v
        return best
    if op == "avg":
        mean = values[0]
        count = 1
        for v in values[1:]:
            count += 1
            if math.isinf(mean):
                if math.isinf(v) and (mean > 0) == (v > 0):
                    continue
                if not math.isinf(v) and v == v:
                    continue
            mean += v / count - mean / count
        return mean
    if op in ("stddev", "stdvar"):
        count, mean, acc = 1, values[0], 0.0
        for v in values[1:]:
            count += 1
            delta = v - mean
            mean += delta / count
            acc += delta * (v - mean)
        var = acc / count
        return math.sqrt(var) if op == "stddev" else var
    if op == "quantile":
        assert isinstance(param, float)
        return fn.quantile(param, values)
    raise PromQLError(f"unsupported aggregation {op}")


def _top_bottom(op: str, k_value: float, vec: Vector, group_key: Callable[[Labels], Labels]) -> Vector:
    """topk/bottomk with Prometheus' bounded heap, so that ties resolve to the same series as there."""
    if k_value != k_value or abs(k_value) >= 2**63:
        raise PromQLError(f"Scalar value {k_value} overflows int64")
    k = int(k_value)
    if k < 1:
        return []
    top = op == "topk"

    def less(a: float, b: float) -> bool:  # the heap's order: the element to evict first is on top
        if a != a:
            return True
        return a < b if top else a > b

    heaps: dict[Labels, list[Sample]] = {}
    for s in vec:
        key = group_key(s.labels)
        heap = heaps.get(key)
        if heap is None:
            heaps[key] = [s]
            continue
        v = s.value
        if len(heap) < k:
            heap.append(s)
            _heap_up(heap, len(heap) - 1, less)
        else:
            head = heap[0].value
            if (head < v if top else head > v) or (head != head and v == v):
                heap[0] = s
                if k > 1:
                    _heap_down(heap, 0, less)
    # Each group's heap comes out best first, the groups in the order they first appeared.
    return [s for heap in heaps.values() for s in _go_sort(heap, descending=top)]


def _go_sort(vec: Vector, descending: bool) -> Vector:
    """The order Prometheus' sort, sort_desc, topk and bottomk give: by value, NaN last.

    Go's sort.Sort sorts up to 12 elements by insertion, which keeps equal values in input order but
    reverses NaNs (its order calls any NaN smaller): done literally here, so small results match in every
    position. Longer ones go through Go's pattern-defeating quicksort, which is not stable; for those equal
    values keep their input order here, and may stand in another order in Prometheus.
    """
    if len(vec) > 12:
        if descending:
            return sorted(vec, key=lambda s: (s.value != s.value, -s.value if s.value == s.value else 0.0))
        return sorted(vec, key=lambda s: (s.value != s.value, s.value if s.value == s.value else 0.0))
    out = list(vec)
    for i in range(1, len(out)):
        j = i
        while j > 0:
            a, b = out[j].value, out[j - 1].value  # does a go before b?
            if not (b != b or (b < a if descending else b > a)):
                break
            out[j], out[j - 1] = out[j - 1], out[j]
            j -= 1
    return out


def _heap_up(h: list[Sample], j: int, less: Callable[[float, float], bool]) -> None:
    while j > 0:
        i = (j - 1) // 2
        if not less(h[j].value, h[i].value):
            break
        h[i], h[j] = h[j], h[i]
        j = i


def _heap_down(h: list[Sample], i: int, less: Callable[[float, float], bool]) -> None:
    n = len(h)
    while True:
        j = 2 * i + 1
        if j >= n:
            break
        if j + 1 < n and less(h[j + 1].value, h[j].value):
            j += 1
        if not less(h[j].value, h[i].value):
            break
        h[i], h[j] = h[j], h[i]
        i = j


def _signature_fn(matching: VectorMatching) -> Callable[[Labels], Labels]:
    names = frozenset(matching.labels)
    if matching.on:
        return lambda labels: tuple(p for p in labels if p[0] in names)
    excluded = names | {"__name__"}
    return lambda labels: tuple(p for p in labels if p[0] not in excluded)


def _result_metric(lhs: Labels, rhs: Labels, drop: bool, matching: VectorMatching) -> Labels:
    labels = dict(lhs)
    if drop:
        labels.pop("__name__", None)
    if matching.card is Card.ONE_TO_ONE:
        names = set(matching.labels)
        if matching.on:
            labels = {k: v for k, v in labels.items() if k in names}
        else:
            for name in names:
                labels.pop(name, None)
    if matching.include:
        one_side = dict(rhs)
        for name in matching.include:
            value = one_side.get(name, "")
            if value:
                labels[name] = value
            else:
                labels.pop(name, None)
    return tuple(sorted(labels.items()))


def _elem_binop(op: str, lhs: float, rhs: float) -> tuple[float, bool]:
    if op == "+":
        return lhs + rhs, True
    if op == "-":
        return lhs - rhs, True
    if op == "*":
        return lhs * rhs, True
    if op == "/":
        return go_div(lhs, rhs), True
    if op == "%":
        return go_mod(lhs, rhs), True
    if op == "^":
        return go_pow(lhs, rhs), True
    if op == "atan2":
        return math.atan2(lhs, rhs), True
    if op == "==":
        return lhs, lhs == rhs
    if op == "!=":
        return lhs, lhs != rhs
    if op == ">":
        return lhs, lhs > rhs
    if op == "<":
        return lhs, lhs < rhs
    if op == ">=":
        return lhs, lhs >= rhs
    if op == "<=":
        return lhs, lhs <= rhs
    raise PromQLError(f"operator {op!r} not allowed for vector operations")


def _scalar_binop(op: str, lhs: float, rhs: float) -> float:
    value, keep = _elem_binop(op, lhs, rhs)
    if op in COMPARISON_OPS:
        return 1.0 if keep else 0.0
    return value


def _fmt_labels(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


_EXPAND_NAME = re.compile(r"\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+)")


def _go_expand(template: str, match: RegexMatch, regex: AnchoredRegex) -> str:
    """Go's Regexp.ExpandString: `$1`, `${1}`, `$name`, `${name}`, `$$`; unknown groups expand to ""."""
    out: list[str] = []
    i = 0
    n = len(template)
    groups = regex.groupindex
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        m = _EXPAND_NAME.match(template, i)
        if m is None:
            out.append("$")
            continue
        name = m.group(1) or m.group(2)
        i = m.end()
        value: str | None = None
        if name.isdigit():
            num = int(name)
            if num <= regex.groups:
                value = match.group(num)
        elif name in groups:
            value = match.group(name)
        out.append(value or "")
    return "".join(out)


__all__ = ["absent_labels", "drop_name", "evaluate"]
