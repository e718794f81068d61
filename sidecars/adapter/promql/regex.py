"""Label-matcher regexes: RE2 syntax (what Prometheus accepts) compiled with Python's `re`, fully anchored.

The common RE2 forms that Python spells differently are rewritten: POSIX classes such as `[[:digit:]]`,
`\\z`, `\\Q...\\E` literals, and `$` (end of text in RE2, where Python's `$` also matches before a final
newline). Constructs RE2 rejects (backreferences, lookaround) are rejected here too.
"""

from __future__ import annotations

import functools
import re

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


class RegexError(ValueError):
    pass


@functools.lru_cache(maxsize=4096)
def compile_anchored(pattern: str) -> re.Pattern[str]:
    """Compile `pattern` so that `.fullmatch` gives Prometheus' `^(?:pattern)$` semantics."""
    translated = _translate(pattern)
    try:
        # RE2's \d, \w, \s and \b are ASCII-only; Python's are Unicode-aware unless told otherwise.
        return re.compile(f"(?:{translated})", re.ASCII)
    except re.error as exc:
        raise RegexError(f"error parsing regexp: {exc}") from None


def _translate(p: str) -> str:
    out: list[str] = []
    i, n = 0, len(p)
    in_class = False
    while i < n:
        c = p[i]
        if c == "\\":
            if i + 1 >= n:
                raise RegexError("error parsing regexp: trailing backslash at end of expression")
            e = p[i + 1]
            if e == "Q" and not in_class:
                end = p.find("\\E", i + 2)
                literal = p[i + 2 :] if end < 0 else p[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if e == "z":
                out.append(r"\Z")
            elif e.isdigit() and e != "0":
                raise RegexError(f"error parsing regexp: invalid escape sequence: `\\{e}`")
            else:
                out.append(c + e)
            i += 2
            continue
        if in_class:
            if c == "[" and p.startswith("[:", i):
                end = p.find(":]", i + 2)
                if end > 0:
                    name = p[i + 2 : end]
                    negate = name.startswith("^")
                    cls = _POSIX_CLASSES.get(name.lstrip("^"))
                    if cls is None:
                        raise RegexError(f"error parsing regexp: invalid character class range: `[:{name}:]`")
                    if negate:
                        raise RegexError("error parsing regexp: negated POSIX classes are not supported")
                    out.append(cls)
                    i = end + 2
                    continue
            if c == "[":
                out.append("\\[")
                i += 1
                continue
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A `]` right after `[` or `[^` is a literal in both syntaxes.
            if i < n and p[i] == "^":
                out.append("^")
                i += 1
            if i < n and p[i] == "]":
                out.append("\\]")
                i += 1
            continue
        if c == "$":
            out.append(r"\Z")
            i += 1
            continue
        if c == "(" and p.startswith("(?", i):
            if p.startswith("(?P<", i) or p.startswith("(?:", i):
                pass
            elif p.startswith("(?=", i) or p.startswith("(?!", i) or p.startswith("(?<", i):
                raise RegexError("error parsing regexp: invalid or unsupported Perl syntax: `(?" + p[i + 2] + "`")
            else:
                # Inline flags `(?i)` / `(?i:...)`: Python only accepts global flags at the start, RE2 anywhere.
                m = re.match(r"\(\?([imsU]*)(-[imsU]*)?([:)])", p[i:])
                if m is None:
                    raise RegexError("error parsing regexp: invalid or unsupported Perl syntax")
                flags = m.group(1).replace("U", "")
                neg = (m.group(2) or "").replace("U", "")
                if m.group(3) == ")":
                    # Scoped to the rest of the enclosing group: wrap what follows in a flag group.
                    rest, close = _group_rest(p, i + m.end())
                    out.append(f"(?{flags}{neg}:{_translate(rest)})" if flags or neg else f"(?:{_translate(rest)})")
                    i = close
                    continue
                out.append(f"(?{flags}{neg}:" if flags or neg else "(?:")
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _group_rest(p: str, start: int) -> tuple[str, int]:
    """The text from `start` to the end of the enclosing group, and the index of its `)` (or the end)."""
    depth = 0
    i = start
    in_class = False
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                return p[start:i], i
            depth -= 1
        i += 1
    return p[start:], len(p)
