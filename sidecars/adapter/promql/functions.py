"""The functions, with Prometheus 2.42's arithmetic: range functions take one series' points in a window."""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sidecars.adapter.promql.mathops import NAN, go_div, go_max, go_min, go_round_half_up, kahan_inc

Points = Sequence[float]
Times = Sequence[int]


# -- range functions: (timestamps, values, range start, range end, range in ms) -> value or None ----------
def extrapolated_rate(
    ts: Times, vs: Points, range_start: int, range_end: int, range_ms: int, *, is_counter: bool, is_rate: bool
) -> float | None:
    """`rate`, `increase` and `delta` as Prometheus' extrapolatedRate computes them."""
    n = len(vs)
    if n < 2:
        return None
    first, last = vs[0], vs[-1]
    result = last - first
    if is_counter and list(vs) != sorted(vs):  # the sort check runs in C; resets are rare
        prev = first
        for v in vs[1:]:
            if v < prev:
                result += prev
            prev = v
    duration_to_start = (ts[0] - range_start) / 1000
    duration_to_end = (range_end - ts[-1]) / 1000
    sampled_interval = (ts[-1] - ts[0]) / 1000
    average_between = sampled_interval / (n - 1)
    if is_counter and result > 0 and first >= 0:
        # Counters cannot go below zero: never extrapolate further back than where it would be zero.
        duration_to_zero = sampled_interval * (first / result)
        if duration_to_zero < duration_to_start:
            duration_to_start = duration_to_zero
    threshold = average_between * 1.1
    interval = sampled_interval
    interval += duration_to_start if duration_to_start < threshold else average_between / 2
    interval += duration_to_end if duration_to_end < threshold else average_between / 2
    factor = interval / sampled_interval
    if is_rate:
        factor /= range_ms / 1000
    return result * factor


def _instant_value(ts: Times, vs: Points, *, is_rate: bool) -> float | None:
    if len(vs) < 2:
        return None
    last, prev = vs[-1], vs[-2]
    result = last if is_rate and last < prev else last - prev
    interval = ts[-1] - ts[-2]
    if interval == 0:
        return None
    if is_rate:
        result /= interval / 1000
    return result


def linear_regression(ts: Times, vs: Points, intercept_time: int) -> tuple[float, float]:
    n = 0.0
    sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = vs[0]
    const_y = True
    for i, (t, v) in enumerate(zip(ts, vs, strict=True)):
        if const_y and i > 0 and v != init_y:
            const_y = False
        n += 1.0
        x = (t - intercept_time) / 1e3
        sum_x, c_x = kahan_inc(x, sum_x, c_x)
        sum_y, c_y = kahan_inc(v, sum_y, c_y)
        sum_xy, c_xy = kahan_inc(x * v, sum_xy, c_xy)
        sum_x2, c_x2 = kahan_inc(x * x, sum_x2, c_x2)
    if const_y:
        if math.isinf(init_y):
            return NAN, NAN
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = cov_xy / var_x if var_x != 0 else (NAN if cov_xy == 0 else math.copysign(math.inf, cov_xy))
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


def quantile(q: float, values: list[float]) -> float:
    if not values:
        return NAN
    if q != q:
        return NAN
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=_nan_first)
    n = len(ordered)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _nan_first(v: float) -> tuple[int, float]:
    return (0, 0.0) if v != v else (1, v)


def _sum(vs: Points) -> float:
    total = c = 0.0
    for v in vs:
        total, c = kahan_inc(v, total, c)
    return total if math.isinf(total) else total + c


def _avg(vs: Points) -> float:
    mean = c = count = 0.0
    for v in vs:
        count += 1
        if math.isinf(mean):
            if math.isinf(v) and (mean > 0) == (v > 0):
                continue
            if not math.isinf(v) and v == v:
                continue
        mean, c = kahan_inc(v / count - mean / count, mean, c)
    return mean if math.isinf(mean) else mean + c


def _stdvar(vs: Points) -> float:
    count = mean = c_mean = aux = c_aux = 0.0
    for v in vs:
        count += 1
        delta = v - (mean + c_mean)
        mean, c_mean = kahan_inc(delta / count, mean, c_mean)
        aux, c_aux = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def _max(vs: Points) -> float:
    total = sum(vs)
    if total == total:  # no NaN: the builtin agrees with Go's loop and runs in C
        return max(vs)
    best = vs[0]
    for v in vs:
        if v > best or best != best:
            best = v
    return best


def _min(vs: Points) -> float:
    total = sum(vs)
    if total == total:
        return min(vs)
    best = vs[0]
    for v in vs:
        if v < best or best != best:
            best = v
    return best


def _changes(vs: Points) -> float:
    changes = 0
    prev = vs[0]
    for cur in vs[1:]:
        if cur != prev and not (cur != cur and prev != prev):
            changes += 1
        prev = cur
    return float(changes)


def _resets(vs: Points) -> float:
    resets = 0
    prev = vs[0]
    for cur in vs[1:]:
        if cur < prev:
            resets += 1
        prev = cur
    return float(resets)


RangeFn = Callable[[Times, Points, int, int, int, list[float]], float | None]

RANGE_FUNCTIONS: dict[str, RangeFn] = {
    "rate": lambda ts, vs, s, e, r, a: extrapolated_rate(ts, vs, s, e, r, is_counter=True, is_rate=True),
    "increase": lambda ts, vs, s, e, r, a: extrapolated_rate(ts, vs, s, e, r, is_counter=True, is_rate=False),
    "delta": lambda ts, vs, s, e, r, a: extrapolated_rate(ts, vs, s, e, r, is_counter=False, is_rate=False),
    "irate": lambda ts, vs, s, e, r, a: _instant_value(ts, vs, is_rate=True),
    "idelta": lambda ts, vs, s, e, r, a: _instant_value(ts, vs, is_rate=False),
    "deriv": lambda ts, vs, s, e, r, a: linear_regression(ts, vs, ts[0])[0] if len(vs) >= 2 else None,
    "changes": lambda ts, vs, s, e, r, a: _changes(vs),
    "resets": lambda ts, vs, s, e, r, a: _resets(vs),
    "avg_over_time": lambda ts, vs, s, e, r, a: _avg(vs),
    "sum_over_time": lambda ts, vs, s, e, r, a: _sum(vs),
    "count_over_time": lambda ts, vs, s, e, r, a: float(len(vs)),
    "min_over_time": lambda ts, vs, s, e, r, a: _min(vs),
    "max_over_time": lambda ts, vs, s, e, r, a: _max(vs),
    "last_over_time": lambda ts, vs, s, e, r, a: vs[-1],
    "present_over_time": lambda ts, vs, s, e, r, a: 1.0,
    "stdvar_over_time": lambda ts, vs, s, e, r, a: _stdvar(vs),
    "stddev_over_time": lambda ts, vs, s, e, r, a: math.sqrt(_stdvar(vs)),
    "quantile_over_time": lambda ts, vs, s, e, r, a: quantile(a[0], list(vs)),
}


def holt_winters(vs: Points, sf: float, tf: float) -> float | None:
    """Double exponential smoothing of one window, step for step as Prometheus computes it."""
    n = len(vs)
    if n < 2:
        return None
    s0, s1 = 0.0, vs[0]
    b = vs[1] - vs[0]
    for i in range(1, n):
        x = sf * vs[i]
        if i - 1 != 0:
            b = tf * (s1 - s0) + (1 - tf) * b
        y = (1 - sf) * (s1 + b)
        s0, s1 = s1, x + y
    return s1


def predict_linear(ts: Times, vs: Points, eval_ts: int, duration_s: float) -> float | None:
    if len(vs) < 2:
        return None
    slope, intercept = linear_regression(ts, vs, eval_ts)
    return slope * duration_s + intercept


# -- instant-vector functions applied value by value (all drop the metric name) -------------------------
def _sgn(v: float) -> float:
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    return v  # zero or NaN stay as they are


def _safe(fn: Callable[[float], float]) -> Callable[[float], float]:
    def wrapped(v: float) -> float:
        try:
            return fn(v)
        except (ValueError, OverflowError):
            return _go_special(fn, v)

    return wrapped


def _go_special(fn: Callable[[float], float], v: float) -> float:
    # Go returns IEEE results where Python raises: +Inf on overflow, -Inf for log(0), NaN elsewhere.
    if fn in (math.exp, math.cosh, math.sinh):
        if v != v:
            return NAN
        if fn is math.sinh:
            return math.copysign(math.inf, v)
        return math.inf
    if fn in (math.log, math.log2, math.log10) and v == 0:
        return -math.inf
    if fn is math.atanh and abs(v) == 1:
        return math.copysign(math.inf, v)
    if fn in (math.floor, math.ceil):
        return v
    return NAN


# Python's floor and ceil return ints, which have no -0; Go's keep the sign (Ceil(-0.5) is -0).
def _floor(v: float) -> float:
    return math.copysign(float(math.floor(v)), v) if math.isfinite(v) else v


def _ceil(v: float) -> float:
    return math.copysign(float(math.ceil(v)), v) if math.isfinite(v) else v


SIMPLE_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "ceil": _ceil,
    "floor": _floor,
    "exp": _safe(math.exp),
    "sqrt": _safe(math.sqrt),
    "ln": _safe(math.log),
    "log2": _safe(math.log2),
    "log10": _safe(math.log10),
    "sgn": _sgn,
    "acos": _safe(math.acos),
    "acosh": _safe(math.acosh),
    "asin": _safe(math.asin),
    "asinh": _safe(math.asinh),
    "atan": _safe(math.atan),
    "atanh": _safe(math.atanh),
    "cos": _safe(math.cos),
    "cosh": _safe(math.cosh),
    "sin": _safe(math.sin),
    "sinh": _safe(math.sinh),
    "tan": _safe(math.tan),
    "tanh": _safe(math.tanh),
    "deg": lambda v: v * 180 / math.pi,
    "rad": lambda v: v * math.pi / 180,
}


def clamp(v: float, lo: float, hi: float) -> float:
    return go_max(lo, go_min(hi, v))


def round_to(v: float, to_nearest: float) -> float:
    return go_round_half_up(v, to_nearest)


def _date(v: float) -> datetime:
    return datetime.fromtimestamp(int(v), UTC)


DATE_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "minute": lambda v: float(_date(v).minute),
    "hour": lambda v: float(_date(v).hour),
    "day_of_week": lambda v: float((_date(v).weekday() + 1) % 7),
    "day_of_month": lambda v: float(_date(v).day),
    "day_of_year": lambda v: float(_date(v).timetuple().tm_yday),
    "month": lambda v: float(_date(v).month),
    "year": lambda v: float(_date(v).year),
    "days_in_month": lambda v: float(calendar.monthrange(_date(v).year, _date(v).month)[1]),
}


# -- histogram_quantile over classic buckets -------------------------------------------------------------
def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """`buckets` holds (upper bound, cumulative count) pairs of one histogram, in any order."""
    if q != q:
        return NAN
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets, key=lambda b: b[0])
    if not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return NAN
    # Coalesce buckets with the same upper bound, then force the counts to be monotonic.
    merged: list[list[float]] = []
    for bound, count in buckets:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    highest = -math.inf
    for bucket in merged:
        if bucket[1] > highest:
            highest = bucket[1]
        elif bucket[1] < highest:
            bucket[1] = highest
    if len(merged) < 2:
        return NAN
    observations = merged[-1][1]
    if observations == 0:
        return NAN
    rank = q * observations
    # The first bucket (among all but the last) whose count reaches the rank.
    lo, hi = 0, len(merged) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if merged[mid][1] >= rank:
            hi = mid
        else:
            lo = mid + 1
    b = lo
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    bucket_start = 0.0
    bucket_end = merged[b][0]
    count = merged[b][1]
    if b > 0:
        bucket_start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return bucket_start + (bucket_end - bucket_start) * go_div(rank, count)


def parse_go_float(text: str) -> float | None:
    """strconv.ParseFloat for the `le` label: None where Go would fail."""
    if not text or "_" in text or text.strip() != text:
        return None
    try:
        return float(text)
    except ValueError:
        try:
            return float.fromhex(text) if "0x" in text.lower() and "p" in text.lower() else None
        except ValueError:
            return None
