"""Tokens of PromQL: the lexer keeps positions so that every parse error can point at its place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecars.adapter.promql.errors import PromQLError

IDENT, NUMBER, DURATION, STRING, OP, EOF = "identifier", "number", "duration", "string", "op", "end of input"

_DURATION_UNITS_MS = {
    "y": 365 * 86_400_000,
    "w": 7 * 86_400_000,
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1000,
    "ms": 1,
}
# The units must come largest first and each at most once, as Prometheus' duration syntax demands.
_DURATION_RE = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DURATION_TOKEN_RE = re.compile(r"(?:\d+(?:ms|[smhdwy]))+")
_NUMBER_RE = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPERATORS = (
    "==",
    "!=",
    "=~",
    "!~",
    "<=",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "<",
    ">",
    "=",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "@",
)
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    pos: int
    value: float | int | str | None = None

    def describe(self) -> str:
        if self.kind == EOF:
            return "end of input"
        if self.kind == OP:
            return f'"{self.text}"'
        return f'{self.kind} "{self.text}"'


def is_label_name(name: str) -> bool:
    return _LABEL_NAME_RE.fullmatch(name) is not None


def parse_duration(text: str) -> int | None:
    """Milliseconds of a duration such as `1h30m`, or None when the text is not one."""
    m = _DURATION_RE.fullmatch(text)
    if m is None or not text:
        return None
    total = 0
    for amount, unit in zip(m.groups(), ("y", "w", "d", "h", "m", "s", "ms"), strict=True):
        if amount is not None:
            total += int(amount) * _DURATION_UNITS_MS[unit]
    return total


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    bracket_depth = 0
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == "#":  # a comment runs to the end of the line
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            i = _lex_number(text, i, tokens)
            continue
        if c in "\"'`":
            i = _lex_string(text, i, tokens)
            continue
        if c == ":" and bracket_depth > 0:
            tokens.append(Token(OP, ":", i))
            i += 1
            continue
        m = _IDENT_RE.match(text, i)
        if m is not None:
            tokens.append(Token(IDENT, m.group(), i))
            i = m.end()
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                if op == "[":
                    bracket_depth += 1
                elif op == "]":
                    bracket_depth = max(0, bracket_depth - 1)
                tokens.append(Token(OP, op, i))
                i += len(op)
                break
        else:
            if c == "!":
                raise PromQLError('unexpected character after "!": expected "=" or "~"', i, text)
            raise PromQLError(f"unexpected character: {c!r}", i, text)
    tokens.append(Token(EOF, "", n))
    return tokens


def _lex_number(text: str, i: int, tokens: list[Token]) -> int:
    m = _DURATION_TOKEN_RE.match(text, i)
    if m is not None and not _continues_word(text, m.end()):
        ms = parse_duration(m.group())
        if ms is None:
            raise PromQLError(f'bad duration syntax: "{m.group()}"', i, text)
        tokens.append(Token(DURATION, m.group(), i, ms))
        return m.end()
    m = _NUMBER_RE.match(text, i)
    assert m is not None
    if _continues_word(text, m.end()):
        end = m.end()
        while end < len(text) and (text[end].isalnum() or text[end] in "_."):
            end += 1
        raise PromQLError(f'bad number or duration syntax: "{text[i:end]}"', i, text)
    word = m.group()
    value = float(int(word, 16)) if word[:2].lower() == "0x" else float(word)
    tokens.append(Token(NUMBER, word, i, value))
    return m.end()


def _continues_word(text: str, i: int) -> bool:
    return i < len(text) and (text[i].isalnum() or text[i] in "_.")


def _lex_string(text: str, i: int, tokens: list[Token]) -> int:
    quote = text[i]
    j = i + 1
    n = len(text)
    if quote == "`":
        end = text.find("`", j)
        if end < 0:
            raise PromQLError("unterminated raw string", i, text)
        tokens.append(Token(STRING, text[i : end + 1], i, text[j:end]))
        return end + 1
    out: list[str] = []
    while True:
        if j >= n or text[j] == "\n":
            raise PromQLError("unterminated quoted string", i, text)
        c = text[j]
        if c == quote:
            break
        if c != "\\":
            out.append(c)
            j += 1
            continue
        j += 1
        if j >= n:
            raise PromQLError("unterminated quoted string", i, text)
        e = text[j]
        if e in _SIMPLE_ESCAPES and (e not in "'\"" or e == quote):
            out.append(_SIMPLE_ESCAPES[e])
            j += 1
        elif e in "xuU01234567":
            width = {"x": 2, "u": 4, "U": 8}.get(e, 3)
            start = j + 1 if e in "xuU" else j
            digits = text[start : start + width]
            base = 8 if e not in "xuU" else 16
            try:
                if len(digits) != width:
                    raise ValueError
                code = int(digits, base)
                if 0xD800 <= code <= 0xDFFF:
                    raise ValueError  # a surrogate is no character (Go: invalid syntax); UTF-8 cannot carry it
                out.append(chr(code))
            except ValueError:
                raise PromQLError("invalid escape sequence in string", j - 1, text) from None
            j = start + width
        else:
            raise PromQLError(f"unknown escape sequence {e!r} in string", j - 1, text)
    tokens.append(Token(STRING, text[i : j + 1], i, "".join(out)))
    return j + 1
