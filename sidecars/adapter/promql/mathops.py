"""Float arithmetic with Go's semantics (what Prometheus computes): no exceptions, IEEE results instead."""

from __future__ import annotations

import math

INF = math.inf
NAN = math.nan


def go_div(x: float, y: float) -> float:
    try:
        return x / y
    except ZeroDivisionError:
        if x == 0 or x != x:
            return NAN
        return math.copysign(INF, x) * math.copysign(1.0, y)


def go_mod(x: float, y: float) -> float:
    try:
        return math.fmod(x, y)
    except ValueError:
        return NAN


def _odd_integer(y: float) -> bool:
    return math.isfinite(y) and y == math.floor(y) and math.fmod(y, 2.0) != 0


def go_pow(x: float, y: float) -> float:
    try:
        return math.pow(x, y)
    except OverflowError:
        return -INF if x < 0 and _odd_integer(y) else INF
    except ValueError:
        if x == 0 and y < 0:
            return -INF if math.copysign(1.0, x) < 0 and _odd_integer(y) else INF
        return NAN


def go_max(x: float, y: float) -> float:
    if x != x or y != y:
        return NAN
    return x if x > y else y


def go_min(x: float, y: float) -> float:
    if x != x or y != y:
        return NAN
    return x if x < y else y


def go_round_half_up(v: float, to_nearest: float = 1.0) -> float:
    inverse = go_div(1.0, to_nearest)
    x = v * inverse + 0.5
    return go_div(float(math.floor(x)) if math.isfinite(x) else x, inverse)


def kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    t = total + inc
    if abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


def format_float(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): the shortest digits that round-trip, never an exponent."""
    if v != v:
        return "NaN"
    if v in (INF, -INF):
        return "+Inf" if v > 0 else "-Inf"
    text = repr(v)
    if "e" not in text and "E" not in text:
        return text[:-2] if text.endswith(".0") else text
    from decimal import Decimal

    out = format(Decimal(text), "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return out
