"""Go's float64 `/`, `math.Mod` and `math.Pow`, written from the Go documentation's special-case tables
and IEEE 754, without any code of the engine: the reference the PromQL tests compare the engine with.

Python's float operators raise where IEEE 754 and Go return an infinity or a NaN; everything else
(rounding of finite results) is the same IEEE double arithmetic, so the general cases use Python's.
"""

from __future__ import annotations

import math

INF = math.inf
NAN = math.nan


def _negative(x: float) -> bool:
    """The sign bit, so that -0.0 counts as negative (IEEE: the sign of a zero matters in division)."""
    return math.copysign(1.0, x) < 0


def _signed_inf(negative: bool) -> float:
    return -INF if negative else INF


def div(x: float, y: float) -> float:
    """IEEE 754 division (Go's `/` on float64): x/±0 is ±Inf by the XOR of the signs, 0/0 and NaN/0 NaN."""
    if y == 0:
        if math.isnan(x) or x == 0:
            return NAN
        return _signed_inf(_negative(x) != _negative(y))
    return x / y


def mod(x: float, y: float) -> float:
    """Go's math.Mod: the remainder of x/y truncated toward zero, with the sign of x.

    Mod(±Inf, y) = NaN; Mod(NaN, y) = NaN; Mod(x, 0) = NaN; Mod(x, ±Inf) = x; Mod(x, NaN) = NaN.
    """
    if math.isinf(x) or math.isnan(x) or math.isnan(y) or y == 0:
        return NAN
    if math.isinf(y):
        return x
    # Exact for doubles: the remainder is representable and C's fmod computes it without rounding.
    return math.fmod(x, y)


def _odd_integer(y: float) -> bool:
    return math.isfinite(y) and y == math.floor(y) and abs(y) < 2**53 and int(y) % 2 == 1


def pow_(x: float, y: float) -> float:
    """Go's math.Pow, case by case in the order of its documentation."""
    if y == 0:
        return 1.0  # Pow(x, ±0) = 1 for any x
    if x == 1:
        return 1.0  # Pow(1, y) = 1 for any y
    if y == 1:
        return x  # Pow(x, 1) = x for any x
    if math.isnan(x) or math.isnan(y):
        return NAN
    if x == 0:
        if y < 0:
            if _odd_integer(-y):
                return _signed_inf(_negative(x))  # Pow(±0, y) = ±Inf for y an odd integer < 0
            return INF  # Pow(±0, -Inf) = +Inf; Pow(±0, y) = +Inf for finite y < 0, not an odd integer
        if _odd_integer(y):
            return x  # Pow(±0, y) = ±0 for y an odd integer > 0
        return 0.0  # Pow(±0, +Inf) = +0; Pow(±0, y) = +0 for finite y > 0, not an odd integer
    if math.isinf(y):
        if x == -1:
            return 1.0  # Pow(-1, ±Inf) = 1
        if (abs(x) > 1) == (y > 0):
            return INF  # Pow(x, +Inf) = +Inf for |x| > 1; Pow(x, -Inf) = +Inf for |x| < 1
        return 0.0  # Pow(x, -Inf) = +0 for |x| > 1; Pow(x, +Inf) = +0 for |x| < 1
    if math.isinf(x):
        if x > 0:
            return INF if y > 0 else 0.0  # Pow(+Inf, y) = +Inf for y > 0, +0 for y < 0
        return pow_(-0.0, -y)  # Pow(-Inf, y) = Pow(-0, -y)
    if x < 0 and y != math.floor(y):
        return NAN  # Pow(x, y) = NaN for finite x < 0 and finite non-integer y
    try:
        return math.pow(x, y)
    except OverflowError:
        # The exact result is beyond the largest double: an infinity with the sign of the exact result.
        return _signed_inf(x < 0 and _odd_integer(y))
