"""A recursive-descent parser for PromQL with Prometheus' precedence, associativity and type checks."""

from __future__ import annotations

from sidecars.adapter.promql.errors import PromQLError
from sidecars.adapter.promql.lexer import DURATION, EOF, IDENT, NUMBER, OP, STRING, Token, is_label_name, tokenize
from sidecars.adapter.promql.nodes import (
    COMPARISON_OPS,
    SET_OPS,
    AggregateExpr,
    BinaryExpr,
    Call,
    Card,
    Expr,
    Matcher,
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
from sidecars.adapter.promql.regex import RegexError, compile_anchored
from sidecars.adapter.promql.signatures import AGGREGATORS, FUNCTIONS, PARAMETERISED

# Binary operators from loosest to tightest; `^` alone is right-associative.
_PRECEDENCE = {
    "or": 1,
    "and": 2,
    "unless": 2,
    "==": 3,
    "!=": 3,
    "<=": 3,
    "<": 3,
    ">=": 3,
    ">": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
    "atan2": 5,
    "^": 6,
}
_UNARY_OPERAND_PRECEDENCE = 6  # `-a^b` is `-(a^b)`, `-a*b` is `(-a)*b`
_KEYWORDS = frozenset(
    {"and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)


def parse_expr(text: str) -> Expr:
    """Parse a PromQL expression, raising PromQLError with the position of the first problem."""
    try:
        return _Parser(text).parse()
    except RecursionError:
        raise PromQLError("expression nests too deeply", 0, text) from None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # -- token helpers ---------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != EOF:
            self.i += 1
        return tok

    def error(self, message: str, pos: int) -> PromQLError:
        return PromQLError(message, pos, self.text)

    def unexpected(self, tok: Token, context: str, expected: str | None = None) -> PromQLError:
        msg = f"unexpected {tok.describe()} in {context}"
        if expected:
            msg += f", expected {expected}"
        return self.error(msg, tok.pos)

    def expect_op(self, op: str, context: str, expected: str | None = None) -> Token:
        tok = self.next()
        if tok.kind != OP or tok.text != op:
            raise self.unexpected(tok, context, expected or f'"{op}"')
        return tok

    @staticmethod
    def is_op(tok: Token, op: str) -> bool:
        return tok.kind == OP and tok.text == op

    @staticmethod
    def keyword(tok: Token) -> str | None:
        return tok.text.lower() if tok.kind == IDENT else None

    # -- grammar ---------------------------------------------------------------------------------
    def parse(self) -> Expr:
        if self.peek().kind == EOF:
            raise self.error("no expression found in input", 0)
        expr = self.parse_binary(1)
        tok = self.peek()
        if tok.kind != EOF:
            raise self.unexpected(tok, "expression", "end of input or an operator")
        return expr

    def binary_op(self, tok: Token) -> str | None:
        if tok.kind == OP and tok.text in _PRECEDENCE:
            return tok.text
        kw = self.keyword(tok)
        if kw in ("and", "or", "unless", "atan2"):
            return kw
        return None

    def parse_binary(self, min_prec: int) -> Expr:
        lhs = self.parse_unary()
        while True:
            tok = self.peek()
            op = self.binary_op(tok)
            if op is None or _PRECEDENCE[op] < min_prec:
                return lhs
            self.next()
            return_bool, matching = self.parse_bin_modifiers(op)
            prec = _PRECEDENCE[op]
            rhs = self.parse_binary(prec if op == "^" else prec + 1)
            lhs = self.make_binary(op, lhs, rhs, return_bool, matching, tok.pos)

    def parse_bin_modifiers(self, op: str) -> tuple[bool, VectorMatching | None]:
        return_bool = False
        if self.keyword(self.peek()) == "bool":
            tok = self.next()
            if op not in COMPARISON_OPS:
                raise self.error("bool modifier can only be used on comparison operators", tok.pos)
            return_bool = True
        card = Card.MANY_TO_MANY if op in SET_OPS else Card.ONE_TO_ONE
        matching: VectorMatching | None = None
        kw = self.keyword(self.peek())
        if kw in ("on", "ignoring"):
            self.next()
            labels = self.parse_label_list("vector matching")
            matching = VectorMatching(card, on=(kw == "on"), labels=labels)
            kw = self.keyword(self.peek())
            if kw in ("group_left", "group_right"):
                tok = self.next()
                if op in SET_OPS:
                    raise self.error(f'no grouping allowed for "{op}" operation', tok.pos)
                include: tuple[str, ...] = ()
                if self.is_op(self.peek(), "("):
                    include = self.parse_label_list("grouping")
                for name in include:
                    if matching.on and name in matching.labels:
                        raise self.error(f'label "{name}" must not occur in ON and GROUP clause at once', tok.pos)
                matching.card = Card.MANY_TO_ONE if kw == "group_left" else Card.ONE_TO_MANY
                matching.include = include
        elif kw in ("group_left", "group_right"):
            raise self.unexpected(self.peek(), "binary expression", '"on" or "ignoring" before the group modifier')
        if matching is None:
            matching = VectorMatching(card)
        return return_bool, matching

    def parse_label_list(self, context: str) -> tuple[str, ...]:
        self.expect_op("(", context, '"("')
        labels: list[str] = []
        while True:
            tok = self.next()
            if self.is_op(tok, ")"):
                return tuple(labels)
            if tok.kind != IDENT:
                raise self.unexpected(tok, context, "label name" if not labels else '"," or ")"')
            if not is_label_name(tok.text):
                raise self.error(f'invalid label name "{tok.text}"', tok.pos)
            labels.append(tok.text)
            sep = self.next()
            if self.is_op(sep, ")"):
                return tuple(labels)
            if not self.is_op(sep, ","):
                raise self.unexpected(sep, context, '"," or ")"')

    def parse_unary(self) -> Expr:
        tok = self.peek()
        if tok.kind == OP and tok.text in ("+", "-"):
            self.next()
            operand = self.parse_binary(_UNARY_OPERAND_PRECEDENCE)
            if operand.type not in (ValueType.SCALAR, ValueType.VECTOR):
                raise self.error(
                    "unary expression only allowed on expressions of type scalar or instant vector", tok.pos
                )
            if isinstance(operand, NumberLiteral):
                return NumberLiteral(-operand.value if tok.text == "-" else operand.value, tok.pos)
            return UnaryExpr(tok.text, operand, tok.pos)
        return self.parse_postfix(self.parse_primary())

    def parse_primary(self) -> Expr:
        tok = self.next()
        if tok.kind == NUMBER:
            assert isinstance(tok.value, float)
            return NumberLiteral(tok.value, tok.pos)
        if tok.kind == STRING:
            assert isinstance(tok.value, str)
            return StringLiteral(tok.value, tok.pos)
        if self.is_op(tok, "("):
            inner = self.parse_binary(1)
            self.expect_op(")", "parenthesized expression", '")"')
            return ParenExpr(inner, tok.pos)
        if self.is_op(tok, "{"):
            self.i -= 1  # the selector parser reads the braces itself
            return self.parse_selector(None, tok.pos)
        if tok.kind == IDENT:
            kw = tok.text.lower()
            nxt = self.peek()
            if kw in AGGREGATORS and (self.is_op(nxt, "(") or self.keyword(nxt) in ("by", "without")):
                return self.parse_aggregation(kw, tok.pos)
            if kw in ("inf", "nan"):
                return NumberLiteral(float(kw), tok.pos)
            if self.is_op(nxt, "("):
                return self.parse_call(tok)
            if kw in _KEYWORDS:
                raise self.unexpected(tok, "expression")
            return self.parse_selector(tok.text, tok.pos)
        if tok.kind == DURATION:
            raise self.unexpected(tok, "expression", "a number (durations only go in ranges and offsets)")
        raise self.unexpected(tok, "expression")

    def parse_postfix(self, expr: Expr) -> Expr:
        while True:
            tok = self.peek()
            if self.is_op(tok, "["):
                expr = self.parse_range(expr)
            elif self.keyword(tok) == "offset":
                self.next()
                negative = False
                if self.is_op(self.peek(), "-"):
                    self.next()
                    negative = True
                dur = self.next()
                if dur.kind != DURATION:
                    raise self.unexpected(dur, "offset", "duration")
                assert isinstance(dur.value, int)
                self.set_offset(expr, -dur.value if negative else dur.value, tok.pos)
            elif self.is_op(tok, "@"):
                self.next()
                self.set_at(expr, tok.pos)
            else:
                return expr

    def parse_range(self, expr: Expr) -> Expr:
        open_tok = self.next()
        dur = self.next()
        if dur.kind != DURATION:
            raise self.unexpected(dur, "range", "duration")
        assert isinstance(dur.value, int)
        tok = self.next()
        if self.is_op(tok, "]"):
            if not isinstance(expr, VectorSelector):
                raise self.error("ranges only allowed for vector selectors", open_tok.pos)
            if expr.offset_ms or expr.at_ms is not None or expr.at_edge is not None:
                raise self.error("no offset or @ modifiers allowed before range", open_tok.pos)
            if dur.value == 0:
                raise self.error("range must be greater than 0", dur.pos)
            return MatrixSelector(expr, dur.value, expr.pos)
        if not self.is_op(tok, ":"):
            raise self.unexpected(tok, "range", '"]" or ":"')
        step = 0
        tok = self.next()
        if tok.kind == DURATION:
            assert isinstance(tok.value, int)
            step = tok.value
            tok = self.next()
        if not self.is_op(tok, "]"):
            raise self.unexpected(tok, "subquery", '"]"')
        if expr.type is not ValueType.VECTOR:
            raise self.error(f"subquery is only allowed on instant vector, got {expr.type.value}", open_tok.pos)
        return SubqueryExpr(expr, dur.value, step, pos=expr.pos)

    def _modifiable(self, expr: Expr, what: str, pos: int) -> VectorSelector | SubqueryExpr:
        target: Expr = expr.selector if isinstance(expr, MatrixSelector) else expr
        if not isinstance(target, VectorSelector | SubqueryExpr):
            raise self.error(
                f"{what} modifier must be preceded by an instant vector selector or range vector selector "
                "or a subquery",
                pos,
            )
        return target

    def set_offset(self, expr: Expr, offset_ms: int, pos: int) -> None:
        target = self._modifiable(expr, "offset", pos)
        if target.offset_ms:
            raise self.error("offset may not be set multiple times", pos)
        target.offset_ms = offset_ms

    def set_at(self, expr: Expr, pos: int) -> None:
        target = self._modifiable(expr, "@", pos)
        if target.at_ms is not None or target.at_edge is not None:
            raise self.error("@ <timestamp> may not be set multiple times", pos)
        tok = self.next()
        sign = 1.0
        if tok.kind == OP and tok.text in ("+", "-"):
            sign = -1.0 if tok.text == "-" else 1.0
            tok = self.next()
        if tok.kind == NUMBER:
            assert isinstance(tok.value, float)
            seconds = sign * tok.value
            if seconds != seconds or seconds in (float("inf"), float("-inf")):
                raise self.error("timestamp out of bounds for @ modifier", tok.pos)
            target.at_ms = round(seconds * 1000)
            return
        kw = self.keyword(tok)
        if kw in ("start", "end") and sign > 0:
            self.expect_op("(", "@ modifier")
            self.expect_op(")", "@ modifier")
            target.at_edge = kw
            return
        raise self.unexpected(tok, "@ modifier", "timestamp, start() or end()")

    def parse_selector(self, name: str | None, pos: int) -> VectorSelector:
        matchers: list[Matcher] = []
        end = self.peek().pos
        if self.is_op(self.peek(), "{"):
            self.next()
            matchers = self.parse_matchers()
            end = self.tokens[self.i - 1].pos + 1
        else:
            end = pos + len(name or "")
        name_matchers = [m for m in matchers if m.name == "__name__"]
        if name is not None:
            if name_matchers:
                raise self.error(f'metric name must not be set twice: "{name}" or "{name_matchers[0].value}"', pos)
            matchers.insert(0, Matcher(MatchType.EQUAL, "__name__", name))
        else:
            for m in name_matchers:
                if m.type is MatchType.EQUAL:
                    name = m.value
                    break
        if not any(not m.matches("") for m in matchers):
            raise self.error("vector selector must contain at least one non-empty matcher", pos)
        return VectorSelector(name, tuple(matchers), pos=pos, end=end)

    def parse_matchers(self) -> list[Matcher]:
        matchers: list[Matcher] = []
        while True:
            tok = self.next()
            if self.is_op(tok, "}"):
                return matchers
            if tok.kind != IDENT:
                raise self.unexpected(tok, "label matching", "label name" if not matchers else '"," or "}"')
            if not is_label_name(tok.text):
                raise self.error(f'invalid label name "{tok.text}"', tok.pos)
            op_tok = self.next()
            if op_tok.kind != OP or op_tok.text not in ("=", "!=", "=~", "!~"):
                raise self.unexpected(op_tok, "label matching", "label matching operator")
            val = self.next()
            if val.kind != STRING:
                raise self.unexpected(val, "label matching", "string")
            assert isinstance(val.value, str)
            mtype = MatchType(op_tok.text)
            regex = None
            if mtype in (MatchType.REGEX, MatchType.NOT_REGEX):
                try:
                    regex = compile_anchored(val.value)
                except RegexError as exc:
                    raise self.error(str(exc), val.pos) from None
            matchers.append(Matcher(mtype, tok.text, val.value, regex))
            sep = self.next()
            if self.is_op(sep, "}"):
                return matchers
            if not self.is_op(sep, ","):
                raise self.unexpected(sep, "label matching", '"," or "}"')

    def parse_call(self, name_tok: Token) -> Call:
        name = name_tok.text
        sig = FUNCTIONS.get(name)
        if sig is None:
            raise self.error(f'unknown function with name "{name}"', name_tok.pos)
        self.next()  # "("
        args: list[Expr] = []
        while True:
            if self.is_op(self.peek(), ")"):
                self.next()
                break
            args.append(self.parse_binary(1))
            sep = self.next()
            if self.is_op(sep, ")"):
                break
            if not self.is_op(sep, ","):
                raise self.unexpected(sep, "function call", '"," or ")"')
        n, want = len(args), len(sig.args)
        if sig.variadic == 0 and n != want:
            raise self.error(f'expected {want} argument(s) in call to "{name}", got {n}', name_tok.pos)
        if sig.variadic > 0 and not want - sig.variadic <= n <= want:
            least, most = want - sig.variadic, want
            if n < least:
                raise self.error(f'expected at least {least} argument(s) in call to "{name}", got {n}', name_tok.pos)
            raise self.error(f'expected at most {most} argument(s) in call to "{name}", got {n}', name_tok.pos)
        if sig.variadic < 0 and n < want - 1:
            # The repeated last argument may also be left out: `label_join(v, "dst", ",")` is valid.
            raise self.error(f'expected at least {want - 1} argument(s) in call to "{name}", got {n}', name_tok.pos)
        for idx, arg in enumerate(args):
            expected = sig.args[min(idx, want - 1)]
            self.check_type(arg, expected, f'call to function "{name}"')
        return Call(name, args, sig.returns, name_tok.pos)

    def check_type(self, expr: Expr, expected: ValueType, context: str) -> None:
        got = expr.type
        if got is not expected:
            raise self.error(f"expected type {expected.value} in {context}, got {got.value}", expr.pos)

    def parse_aggregation(self, op: str, pos: int) -> AggregateExpr:
        grouping: tuple[str, ...] = ()
        without = False
        have_grouping = False
        kw = self.keyword(self.peek())
        if kw in ("by", "without"):
            self.next()
            grouping = self.parse_label_list("grouping")
            without = kw == "without"
            have_grouping = True
        self.expect_op("(", "aggregation", '"("')
        args: list[Expr] = []
        while True:
            if self.is_op(self.peek(), ")") and not args:
                raise self.unexpected(self.peek(), "aggregation", "expression")
            args.append(self.parse_binary(1))
            sep = self.next()
            if self.is_op(sep, ")"):
                break
            if not self.is_op(sep, ","):
                raise self.unexpected(sep, "aggregation", '"," or ")"')
            if self.is_op(self.peek(), ")"):
                self.next()
                break
        kw = self.keyword(self.peek())
        if kw in ("by", "without"):
            tok = self.next()
            if have_grouping:
                raise self.unexpected(tok, "aggregation", "end of the aggregation (grouping given twice)")
            grouping = self.parse_label_list("grouping")
            without = kw == "without"
        want = 2 if op in PARAMETERISED else 1
        if len(args) != want:
            raise self.error(
                f"wrong number of arguments for aggregate expression provided, expected {want}, got {len(args)}", pos
            )
        param = args[0] if want == 2 else None
        body = args[-1]
        self.check_type(body, ValueType.VECTOR, "aggregation expression")
        if param is not None:
            self.check_type(param, PARAMETERISED[op], "aggregation parameter")
        return AggregateExpr(op, body, param, grouping, without, pos)

    def make_binary(
        self, op: str, lhs: Expr, rhs: Expr, return_bool: bool, matching: VectorMatching | None, pos: int
    ) -> BinaryExpr:
        lt, rt = lhs.type, rhs.type
        for side, t in ((lhs, lt), (rhs, rt)):
            if t not in (ValueType.SCALAR, ValueType.VECTOR):
                raise self.error("binary expression must contain only scalar and instant vector types", side.pos)
        if op in COMPARISON_OPS and not return_bool and lt is ValueType.SCALAR and rt is ValueType.SCALAR:
            raise self.error("comparisons between scalars must use BOOL modifier", pos)
        if op in SET_OPS and (lt is ValueType.SCALAR or rt is ValueType.SCALAR):
            raise self.error(f'set operator "{op}" not allowed in binary scalar expression', pos)
        if (lt is not ValueType.VECTOR or rt is not ValueType.VECTOR) and matching is not None:
            if matching.labels or matching.on or matching.card in (Card.MANY_TO_ONE, Card.ONE_TO_MANY):
                raise self.error("vector matching only allowed between instant vectors", pos)
            matching = None
        return BinaryExpr(op, lhs, rhs, return_bool, matching, pos)
