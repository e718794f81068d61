"""Argument and return types of the supported functions (a subset of Prometheus 2.42's table)."""

from __future__ import annotations

from dataclasses import dataclass

from sidecars.adapter.promql.nodes import ValueType

S, V, M, STR = ValueType.SCALAR, ValueType.VECTOR, ValueType.MATRIX, ValueType.STRING


@dataclass(frozen=True, slots=True)
class Signature:
    args: tuple[ValueType, ...]
    returns: ValueType
    variadic: int = 0  # how many trailing arguments may be left out; -1: the last one repeats, zero or more times


def _sig(args: tuple[ValueType, ...], returns: ValueType = V, variadic: int = 0) -> Signature:
    return Signature(args, returns, variadic)


FUNCTIONS: dict[str, Signature] = {
    "abs": _sig((V,)),
    "absent": _sig((V,)),
    "absent_over_time": _sig((M,)),
    "avg_over_time": _sig((M,)),
    "ceil": _sig((V,)),
    "changes": _sig((M,)),
    "clamp": _sig((V, S, S)),
    "clamp_max": _sig((V, S)),
    "clamp_min": _sig((V, S)),
    "count_over_time": _sig((M,)),
    "delta": _sig((M,)),
    "deriv": _sig((M,)),
    "exp": _sig((V,)),
    "floor": _sig((V,)),
    "histogram_quantile": _sig((S, V)),
    "idelta": _sig((M,)),
    "increase": _sig((M,)),
    "irate": _sig((M,)),
    "label_replace": _sig((V, STR, STR, STR, STR)),
    "label_join": _sig((V, STR, STR, STR), variadic=-1),
    "last_over_time": _sig((M,)),
    "ln": _sig((V,)),
    "log10": _sig((V,)),
    "log2": _sig((V,)),
    "max_over_time": _sig((M,)),
    "min_over_time": _sig((M,)),
    "present_over_time": _sig((M,)),
    "predict_linear": _sig((M, S)),
    "quantile_over_time": _sig((S, M)),
    "holt_winters": _sig((M, S, S)),
    "rate": _sig((M,)),
    "resets": _sig((M,)),
    "round": _sig((V, S), variadic=1),
    "scalar": _sig((V,), S),
    "sgn": _sig((V,)),
    "sort": _sig((V,)),
    "sort_desc": _sig((V,)),
    "sqrt": _sig((V,)),
    "stddev_over_time": _sig((M,)),
    "stdvar_over_time": _sig((M,)),
    "sum_over_time": _sig((M,)),
    "time": _sig((), S),
    "timestamp": _sig((V,)),
    "vector": _sig((S,)),
    "minute": _sig((V,), variadic=1),
    "hour": _sig((V,), variadic=1),
    "day_of_week": _sig((V,), variadic=1),
    "day_of_month": _sig((V,), variadic=1),
    "day_of_year": _sig((V,), variadic=1),
    "days_in_month": _sig((V,), variadic=1),
    "month": _sig((V,), variadic=1),
    "year": _sig((V,), variadic=1),
    "acos": _sig((V,)),
    "acosh": _sig((V,)),
    "asin": _sig((V,)),
    "asinh": _sig((V,)),
    "atan": _sig((V,)),
    "atanh": _sig((V,)),
    "cos": _sig((V,)),
    "cosh": _sig((V,)),
    "sin": _sig((V,)),
    "sinh": _sig((V,)),
    "tan": _sig((V,)),
    "tanh": _sig((V,)),
    "deg": _sig((V,)),
    "rad": _sig((V,)),
    "pi": _sig((), S),
}

AGGREGATORS = frozenset(
    {"sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk", "count_values", "quantile"}
)
PARAMETERISED = {"topk": S, "bottomk": S, "quantile": S, "count_values": STR}
