"""Label-matcher regexes: RE2 itself (the `google-re2` binding), anchored as Prometheus anchors them.

Prometheus compiles a matcher's `v` with Go's `regexp.Compile("^(?:" + v + ")$")`, and Go's regexp is
RE2: the syntax (`\\pN`, `[[:alpha:]]`, `\\Q..\\E`, `(?i)` anywhere, no backreferences or lookaround) and
the linear matching time are RE2's, so no pattern and no label value can stall an evaluation. The C++
RE2 accepts two forms that Go's parser in Prometheus 2.42 rejects; they are rejected here the same way:
`\\C` (any byte) and `(?<name>...)` (Go only learnt it in 1.22).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import re2

# RE2's own error log goes to stderr in its own format; errors are reported through RegexError instead.
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False

# Results of `matches` for short values: a selector over many series sees few distinct values.
_MEMO_VALUES = 4096
_MEMO_VALUE_CHARS = 256


class RegexError(ValueError):
    pass


class RegexMatch(Protocol):
    def group(self, index: int | str) -> str | None: ...


class AnchoredRegex:
    """One compiled pattern; `match` gives the groups (label_replace), `matches` answers a matcher."""

    __slots__ = ("_memo", "_re", "groupindex", "groups", "pattern")

    def __init__(self, pattern: str) -> None:
        _reject_go_incompatible(pattern)
        try:
            # Prometheus parses the pattern alone first (`a)|(b` fails there), then compiles it wrapped
            # (an unterminated `\Q` swallows the wrapper's `)$` and fails there).
            re2.compile(pattern, _OPTIONS)
            self._re: Any = re2.compile(f"^(?:{pattern})$", _OPTIONS)
        except re2.error as exc:
            message = exc.args[0] if exc.args else exc
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            raise RegexError(f"error parsing regexp: {message}") from None
        self.pattern = pattern
        self.groups: int = self._re.groups
        self.groupindex: dict[str, int] = dict(self._re.groupindex)
        self._memo: dict[str, bool] = {}

    def match(self, value: str) -> RegexMatch | None:
        found: RegexMatch | None = self._re.search(value)
        return found

    def matches(self, value: str) -> bool:
        memo = self._memo
        known = memo.get(value)
        if known is not None:
            return known
        found = self._re.search(value) is not None
        if len(value) <= _MEMO_VALUE_CHARS:
            if len(memo) >= _MEMO_VALUES:
                memo.clear()
            memo[value] = found
        return found

    def __repr__(self) -> str:
        return f"AnchoredRegex({self.pattern!r})"


@functools.lru_cache(maxsize=1024)
def compile_anchored(pattern: str) -> AnchoredRegex:
    """Compile `pattern` with Prometheus' `^(?:pattern)$` semantics; raises RegexError as Prometheus would."""
    return AnchoredRegex(pattern)


def _reject_go_incompatible(p: str) -> None:
    """Raises for `\\C` and `(?<` outside a character class or a `\\Q...\\E` literal, in Go's words."""
    i, n = 0, len(p)
    in_class = False
    while i < n:
        c = p[i]
        if c == "\\":
            e = p[i + 1 : i + 2]
            if e == "Q" and not in_class:
                end = p.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            if e == "C":
                raise RegexError("error parsing regexp: invalid escape sequence: `\\C`")
            i += 2
            continue
        if in_class:
            if c == "[" and p.startswith("[:", i):
                end = p.find(":]", i + 2)
                if end > 0:
                    i = end + 2
                    continue
            if c == "]":
                in_class = False
            i += 1
            continue
        if c == "[":
            in_class = True
            i += 1
            # A `]` right after `[` or `[^` is a literal.
            if p.startswith("^", i):
                i += 1
            if p.startswith("]", i):
                i += 1
            continue
        if c == "(" and p.startswith("(?<", i):
            raise RegexError("error parsing regexp: invalid or unsupported Perl syntax: `(?<`")
        i += 1
