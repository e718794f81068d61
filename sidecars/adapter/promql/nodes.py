"""The syntax tree of a PromQL expression, as the parser builds it and the evaluator walks it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sidecars.adapter.promql.regex import AnchoredRegex


class ValueType(StrEnum):
    SCALAR = "scalar"
    VECTOR = "instant vector"
    MATRIX = "range vector"
    STRING = "string"


class MatchType(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    type: MatchType
    name: str
    value: str
    regex: AnchoredRegex | None = field(default=None, compare=False, hash=False)

    def matches(self, value: str) -> bool:
        t = self.type
        if t is MatchType.EQUAL:
            return value == self.value
        if t is MatchType.NOT_EQUAL:
            return value != self.value
        assert self.regex is not None
        found = self.regex.matches(value)
        return found if t is MatchType.REGEX else not found

    def __str__(self) -> str:
        return f"{self.name}{self.type.value}{_quote(self.value)}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Expr:
    """Base of every node; `pos` is the character offset where the node starts."""

    __slots__ = ()
    pos: int

    @property
    def type(self) -> ValueType:
        raise NotImplementedError


@dataclass(slots=True, eq=False)
class NumberLiteral(Expr):
    value: float
    pos: int = 0

    @property
    def type(self) -> ValueType:
        return ValueType.SCALAR


@dataclass(slots=True, eq=False)
class StringLiteral(Expr):
    value: str
    pos: int = 0

    @property
    def type(self) -> ValueType:
        return ValueType.STRING


@dataclass(slots=True, eq=False)
class VectorSelector(Expr):
    name: str | None
    matchers: tuple[Matcher, ...]
    offset_ms: int = 0
    at_ms: int | None = None  # `@ <timestamp>`
    at_edge: str | None = None  # `@ start()` / `@ end()`: both are the evaluation time for a rule
    pos: int = 0
    end: int = 0

    @property
    def type(self) -> ValueType:
        return ValueType.VECTOR


@dataclass(slots=True, eq=False)
class MatrixSelector(Expr):
    selector: VectorSelector
    range_ms: int
    pos: int = 0

    @property
    def type(self) -> ValueType:
        return ValueType.MATRIX


@dataclass(slots=True, eq=False)
class SubqueryExpr(Expr):
    expr: Expr
    range_ms: int
    step_ms: int  # 0: the default step
    offset_ms: int = 0
    at_ms: int | None = None
    at_edge: str | None = None
    pos: int = 0

    @property
    def type(self) -> ValueType:
        return ValueType.MATRIX


@dataclass(slots=True, eq=False)
class ParenExpr(Expr):
    expr: Expr
    pos: int = 0

    @property
    def type(self) -> ValueType:
        return self.expr.type


@dataclass(slots=True, eq=False)
class UnaryExpr(Expr):
    op: str  # "-" or "+"
    expr: Expr
    pos: int = 0

    @property
    def type(self) -> ValueType:
        return self.expr.type


class Card(StrEnum):
    ONE_TO_ONE = "one-to-one"
    MANY_TO_ONE = "many-to-one"
    ONE_TO_MANY = "one-to-many"
    MANY_TO_MANY = "many-to-many"


@dataclass(slots=True)
class VectorMatching:
    card: Card
    on: bool = False
    labels: tuple[str, ...] = ()
    include: tuple[str, ...] = ()


COMPARISON_OPS = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPS = frozenset({"and", "or", "unless"})
# Operators whose vector results lose the metric name; Prometheus 2.42 keeps it for `atan2`.
NAME_DROPPING_OPS = frozenset({"+", "-", "*", "/", "%", "^"})


@dataclass(slots=True, eq=False)
class BinaryExpr(Expr):
    op: str
    lhs: Expr
    rhs: Expr
    return_bool: bool = False
    matching: VectorMatching | None = None
    pos: int = 0

    @property
    def type(self) -> ValueType:
        if self.lhs.type is ValueType.SCALAR and self.rhs.type is ValueType.SCALAR:
            return ValueType.SCALAR
        return ValueType.VECTOR


@dataclass(slots=True, eq=False)
class Call(Expr):
    name: str
    args: list[Expr]
    return_type: ValueType
    pos: int = 0

    @property
    def type(self) -> ValueType:
        return self.return_type


@dataclass(slots=True, eq=False)
class AggregateExpr(Expr):
    op: str
    expr: Expr
    param: Expr | None = None
    grouping: tuple[str, ...] = ()
    without: bool = False
    pos: int = 0

    @property
    def type(self) -> ValueType:
        return ValueType.VECTOR


def children(node: Expr) -> list[Expr]:
    if isinstance(node, MatrixSelector):
        return [node.selector]
    if isinstance(node, SubqueryExpr | ParenExpr | UnaryExpr):
        return [node.expr]
    if isinstance(node, BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, AggregateExpr):
        return [node.expr] if node.param is None else [node.param, node.expr]
    return []


def walk(node: Expr) -> list[Expr]:
    """Every node of the tree, parents before children."""
    out: list[Expr] = []
    stack = [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(reversed(children(n)))
    return out
