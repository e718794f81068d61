"""promtool's notation for test series: `name{a="b"}` descriptors and expanding values (`0+10x5 _ stale`).

`a+bxn` is a followed by n steps of b (n + 1 values), `a-bxn` steps down, `axn` repeats a n + 1 times,
`_` is a missing sample, `_xn` n of them, `stale` a staleness marker; plain numbers, `Inf`, `NaN`.
"""

from __future__ import annotations

import re

from sidecars.adapter.promql.errors import PromQLError
from sidecars.adapter.promql.history import STALE_NAN
from sidecars.adapter.promql.nodes import MatchType, VectorSelector
from sidecars.adapter.promql.parser import parse_expr
from sidecars.adapter.promql.values import Labels

MAX_POINTS = 1_000_000  # per series: `0+1x999999999` would otherwise take the memory of the machine
_NUMBER = r"[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|inf|NaN|nan)"
_STEP = re.compile(rf"({_NUMBER})([-+])((?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))x([0-9]{{1,9}})")
_REPEAT = re.compile(rf"({_NUMBER})x([0-9]{{1,9}})")
_GAPS = re.compile(r"_x([0-9]{1,9})")
_PLAIN = re.compile(_NUMBER)


class NotationError(ValueError):
    pass


def expand_values(text: str) -> list[float | None]:
    """The values of `text`, one per interval; None where a sample is missing."""
    out: list[float | None] = []
    for item in text.split():
        if item == "_":
            out.append(None)
        elif item == "stale":
            out.append(STALE_NAN)
        elif m := _GAPS.fullmatch(item):
            out.extend([None] * int(m.group(1)))
        elif m := _STEP.fullmatch(item):
            value, step = float(m.group(1)), float(m.group(3)) * (1 if m.group(2) == "+" else -1)
            n = int(m.group(4))
            if len(out) + n + 1 > MAX_POINTS:
                raise NotationError(f"more than {MAX_POINTS} values")
            for _ in range(n + 1):
                out.append(value)
                value += step
        elif m := _REPEAT.fullmatch(item):
            n = int(m.group(2))
            if len(out) + n + 1 > MAX_POINTS:
                raise NotationError(f"more than {MAX_POINTS} values")
            out.extend([float(m.group(1))] * (n + 1))
        elif _PLAIN.fullmatch(item):
            out.append(float(item))
        else:
            raise NotationError(f"{item!r} is not a value (a number, a+bxn, axn, _, _xn or stale)")
        if len(out) > MAX_POINTS:
            raise NotationError(f"more than {MAX_POINTS} values")
    return out


def parse_series(text: str) -> tuple[str, Labels]:
    """The metric name and the other labels (sorted, empty values left out) of `name{a="b", ...}`."""
    try:
        node = parse_expr(text)
    except PromQLError as exc:
        raise NotationError(f"not a series: {exc}") from None
    if not isinstance(node, VectorSelector) or any(m.type is not MatchType.EQUAL for m in node.matchers):
        raise NotationError(f'not a series: {text!r} (expected name{{label="value", ...}})')
    if node.name is None:
        raise NotationError(f"a series needs a metric name: {text!r}")
    labels = {m.name: m.value for m in node.matchers if m.name != "__name__" and m.value}
    return node.name, tuple(sorted(labels.items()))
