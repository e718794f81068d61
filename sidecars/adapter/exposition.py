"""A fast parser for the Prometheus text format 0.0.4 and OpenMetrics 1.0.

It yields samples the way Prometheus ingests them: `(name, labels, value, ts_ms)` where `labels` is a
sorted tuple of `(name, value)` pairs without `__name__` and `ts_ms` is an int in milliseconds or
None. Histograms and summaries arrive as their `_bucket`/`_sum`/`_count`/quantile series.

Speed comes from doing little per line. The page is cut into blocks of lines (about 256 KiB) and
each block split once. A line with labels is split on `"` up to its `}`: the odd parts are the
label values, the even parts joined give the line's skeleton (`name{a=",b="`), which is validated
by one regex the first time it is seen and remembered with its sorted label names. A line without
labels is split at its first space. Values go straight to `float()`, and nothing but the tuple is
built per sample. Anything unusual (escapes, timestamps, exemplars, odd spacing) takes a slower,
general path. With a family filter (`families=`) lines are not even split: those of the wanted
names are found with `str.find`, which runs at memory speed, and only they are parsed.

Errors are `ParseError(line, message)` with 1-based line numbers. Duplicate series (same name and
labels twice in one page) keep the first sample, as Prometheus does, and are counted.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

Labels = tuple[tuple[str, str], ...]
SampleTuple = tuple[str, Labels, float, int | None]
# A label block's parsed form: sorted label names, their order in the text (None: already sorted)
# and the start of the series key used to spot duplicates.
Schema = tuple[str, tuple[str, ...], Callable[[list[str]], tuple[str, ...]] | None, str]
# The text of a line up to `}` -> its name, labels and series key (see `parse`'s label_cache).
LabelCache = dict[str, tuple[str, Labels, str]]
# Series key -> token of the last parse that saw it (see `parse_pieces`' series_seen).
SeriesSeen = dict[str, object]

TEXT_CONTENT_TYPE: Final = "text/plain; version=0.0.4"
OPENMETRICS_CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0"

TEXT_TYPES: Final = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
OPENMETRICS_TYPES: Final = frozenset(
    {"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"}
)
# Sample-name suffixes that belong to a family; a filter on a family keeps all of them.
FAMILY_SUFFIXES: Final = ("_bucket", "_sum", "_count", "_total", "_created", "_info", "_gcount", "_gsum")

# Every pattern here is linear in what it reads, whatever the input: the quantifiers are possessive
# (`*+` never gives back what it took), so a failed match costs the characters read and no more. With
# plain `*`, two adjacent blank runs made a label block followed by 200 000 blanks cost 200 000^2 steps.
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*+")
# One `name="value"` pair of a label block and the blanks around it, matched where it starts.
_PAIR = re.compile(r'[ \t]*+([a-zA-Z_][a-zA-Z0-9_]*+)[ \t]*+=[ \t]*+"([^"\\\n]*+(?:\\.[^"\\\n]*+)*+)"[ \t]*+')
_BLANKS = re.compile(r"[ \t]*+")
# A line up to `}` with the label values cut out: `name{a=",b="` (an optional comma at the end).
_SKELETON_LINE = re.compile(
    r'([a-zA-Z_:][a-zA-Z0-9_:]*+)[ \t]*+\{[ \t]*+(?:[a-zA-Z_][a-zA-Z0-9_]*+[ \t]*+=[ \t]*+"[ \t]*+'
    r'(?:,[ \t]*+[a-zA-Z_][a-zA-Z0-9_]*+[ \t]*+=[ \t]*+"[ \t]*+)*+(?:,[ \t]*+)?)?'
)
_SKELETON_NAMES = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=")
_ESCAPES = re.compile(r'\\[\\n"]')
_ESCAPE_MAP: Final = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}


SLICE_CHARS: Final = 256 * 1024


# Validation results that depend only on the text validated, kept for the life of the process (a
# target's label-name structures repeat on every scrape): metric names known to be valid, and line
# skeletons (a line up to `}` with the values cut out) -> name, sorted label names, order, key prefix.
# Both are bounded whatever the pages hold: in entries, in characters (a target inventing new long
# names on every scrape starts them afresh), and per entry (a longer text is validated every time).
MEMO_LIMIT: Final = 100_000
MEMO_CHARS: Final = 8 * 1024 * 1024
MEMO_KEY_CHARS: Final = 1024
_VALID_NAMES: set[str] = set()
_SCHEMAS: dict[str, Schema] = {}
_memo_chars = 0


def reset_memos() -> None:
    """Forgets validated names and skeletons (bounded memory; benchmarks of a first parse)."""
    global _memo_chars
    _VALID_NAMES.clear()
    _SCHEMAS.clear()
    _memo_chars = 0


def _memo_admits(text: str) -> bool:
    """Whether `text` may be remembered; makes room first when a bound would be passed."""
    global _memo_chars
    if len(text) > MEMO_KEY_CHARS:
        return False
    if _memo_chars + len(text) > MEMO_CHARS or len(_SCHEMAS) >= MEMO_LIMIT or len(_VALID_NAMES) >= MEMO_LIMIT:
        reset_memos()
    _memo_chars += len(text)
    return True


class ParseError(ValueError):
    """A page that cannot be parsed; `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class SeriesLimitError(ValueError):
    """A page holding more series (of the families parsed) than the caller allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} series")
        self.limit = limit


@dataclass
class ParseResult:
    """The samples of one page, in page order, plus what the comment lines said about families."""

    samples: list[SampleTuple]
    types: dict[str, str] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    # Sample lines the family filter skipped without parsing them: a malformed one of those fails no
    # scrape, unlike in Prometheus, which parses every line.
    unchecked_lines: int = 0


def family_names(names: Iterable[str]) -> frozenset[str]:
    """Every sample name of the families `names` belong to (`x` -> `x`, `x_bucket`, `x_sum`, ...)."""
    out: set[str] = set()
    for name in names:
        base = name
        for suffix in FAMILY_SUFFIXES:
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                break
        out.add(name)
        out.add(base)
        out.update(base + s for s in FAMILY_SUFFIXES)
    return frozenset(out)


def _unescape(match: re.Match[str]) -> str:
    return _ESCAPE_MAP[match.group(0)]


def _value(token: str, lineno: int) -> float:
    # float() also takes "1_000" and surrounding space; the Go parser does not.
    if "_" in token:
        raise ParseError(lineno, f"invalid value {token!r}")
    try:
        return float(token)
    except ValueError:
        raise ParseError(lineno, f"invalid value {token!r}") from None


def _timestamp(token: str, lineno: int, openmetrics: bool) -> int:
    try:
        if openmetrics:
            if "_" in token:
                raise ValueError
            seconds = float(token)
            if seconds != seconds or seconds in (float("inf"), float("-inf")):
                raise ValueError
            return round(seconds * 1000)
        return int(token)
    except ValueError:
        raise ParseError(lineno, f"invalid timestamp {token!r}") from None


class _Parser:
    """One parse; holds the per-page state so the line loop reads only locals."""

    def __init__(
        self, openmetrics: bool, label_cache: LabelCache | None, series_seen: SeriesSeen | None = None
    ) -> None:
        self.openmetrics = openmetrics
        self.cache = label_cache
        self.result = ParseResult(samples=[])
        self.valid_names = _VALID_NAMES
        self.seen: set[str] = set()
        # With `series_seen` (kept from one scrape to the next) duplicates are spotted by stamping
        # each series with this parse's token: no set rebuilt, and regrown, on every scrape.
        self.series_seen = series_seen
        self.token = object()
        self.schemas = _SCHEMAS

    def schema(self, skeleton: str, lineno: int) -> Schema:
        """Validates a line's text outside the quoted label values and learns its name and labels.

        `skeleton` is `name{a="",b="` up to the closing brace with the values cut out; pages repeat a
        few skeletons over and over, so each is validated once.
        """
        match = _SKELETON_LINE.fullmatch(skeleton)
        if match is None:
            raise ParseError(lineno, f"invalid label set in {skeleton[:80]!r}")
        name = match.group(1)
        self.learn_name(name)
        names: list[str] = _SKELETON_NAMES.findall(skeleton, match.end(1))
        if "__name__" in names:
            raise ParseError(lineno, "__name__ as a label is not supported")
        sorted_names = tuple(sorted(names))
        if len(set(sorted_names)) != len(names):
            raise ParseError(lineno, f"duplicate label name in {names}")
        series_key = name + "\0" + ",".join(sorted_names) + "\0" if names else name
        reorder = None  # most pages write label names sorted already
        if sorted_names != tuple(names):
            reorder = operator.itemgetter(*sorted(range(len(names)), key=names.__getitem__))
        schema = (name, sorted_names, reorder, series_key)
        if _memo_admits(skeleton):
            self.schemas[skeleton] = schema
        return schema

    def learn_name(self, name: str) -> None:
        """Remembers a name found valid (called once per new name, off the per-line path)."""
        if _memo_admits(name):
            self.valid_names.add(name)

    def name(self, name: str, lineno: int) -> str:
        if name not in self.valid_names:
            if not _METRIC_NAME.fullmatch(name):
                raise ParseError(lineno, f"invalid metric name {name!r}")
            self.learn_name(name)
        return name

    def labels(self, line: str, start: int, lineno: int) -> tuple[Labels, int]:
        """Parses the `{...}` block at `start`; returns the labels and the index after `}`.

        A scan, pair by pair: each character is read once (see the patterns above).
        """
        pairs: list[tuple[str, str]] = []
        pos = start + 1
        while (pair := _PAIR.match(line, pos)) is not None:
            pairs.append((pair.group(1), pair.group(2)))
            pos = pair.end()
            if not line.startswith(",", pos):
                break
            pos += 1
        blanks = _BLANKS.match(line, pos)  # always matches, maybe empty
        if blanks is not None:
            pos = blanks.end()
        if not line.startswith("}", pos):
            raise ParseError(lineno, f"invalid label set in {line[start : start + 80]!r}")
        end = pos + 1
        if len(pairs) > 1:
            pairs.sort()
            for i in range(1, len(pairs)):
                if pairs[i][0] == pairs[i - 1][0]:
                    raise ParseError(lineno, f"duplicate label name {pairs[i][0]!r}")
        if "\\" in line[start:end]:
            pairs = [(k, _ESCAPES.sub(_unescape, v) if "\\" in v else v) for k, v in pairs]
        if any(k == "__name__" for k, _ in pairs):
            raise ParseError(lineno, "__name__ as a label is not supported")
        return tuple(pairs), end

    def rest(self, rest: str, lineno: int) -> tuple[float, int | None]:
        """Parses `value [timestamp] [# exemplar]` after the name and labels."""
        if self.openmetrics:
            hash_at = rest.find("#")
            if hash_at >= 0:
                exemplar = rest[hash_at + 1 :].strip()
                if not exemplar.startswith("{"):
                    raise ParseError(lineno, "invalid exemplar")
                self.labels(exemplar, 0, lineno)
                rest = rest[:hash_at]
        elif rest and rest[0] not in " \t":
            raise ParseError(lineno, "expected whitespace before the value")
        tokens = rest.split()
        if len(tokens) == 1:
            return _value(tokens[0], lineno), None
        if len(tokens) == 2:
            return _value(tokens[0], lineno), _timestamp(tokens[1], lineno, self.openmetrics)
        if not tokens:
            raise ParseError(lineno, "missing value")
        raise ParseError(lineno, f"unexpected text after the timestamp: {tokens[2]!r}")

    def duplicate(self, key: str) -> bool:
        """Whether series `key` was already in this page; marks it as seen."""
        stamps = self.series_seen
        if stamps is None:
            if key in self.seen:
                return True
            self.seen.add(key)
            return False
        if stamps.get(key) is self.token:
            return True
        stamps[key] = self.token
        return False

    def comment(self, line: str, lineno: int) -> None:
        """Any comment line (the loop in `_parse_lines` takes the common HELP and TYPE shapes itself)."""
        parts = line[1:].split(None, 2)
        if self.openmetrics and parts == ["EOF"]:
            return  # the end marker; `parse_pieces` checks that it is the last line
        if len(parts) < 2 or parts[0] not in ("HELP", "TYPE", "UNIT"):
            if self.openmetrics and line.strip() != "#" and parts and parts[0] not in ("HELP", "TYPE", "UNIT"):
                raise ParseError(lineno, "comments other than HELP, TYPE, UNIT and EOF are not OpenMetrics")
            return
        kind, name = parts[0], self.name(parts[1], lineno)
        text = parts[2].strip() if len(parts) > 2 else ""
        if kind == "TYPE":
            kinds = OPENMETRICS_TYPES if self.openmetrics else TEXT_TYPES
            if text not in kinds:
                raise ParseError(lineno, f"unknown metric type {text!r} for {name}")
            if name in self.result.types:
                raise ParseError(lineno, f"second TYPE line for {name}")
            self.result.types[name] = text
        elif kind == "HELP":
            if "\\" in text:
                text = text.replace("\\\\", "\0").replace("\\n", "\n").replace("\0", "\\")
            self.result.help.setdefault(name, text)

    def sample(self, line: str, lineno: int) -> None:
        labels: Labels
        brace = line.find("{")
        if brace < 0:
            tokens = line.split()
            if len(tokens) == 2:
                # The fast path: `name value`.
                name, labels, value, ts = self.name(tokens[0], lineno), (), _value(tokens[1], lineno), None
            else:
                space = min((i for i in (line.find(" "), line.find("\t")) if i >= 0), default=len(line))
                name, labels = self.name(line[:space], lineno), ()
                value, ts = self.rest(line[space:], lineno)
        else:
            name = self.name(line[:brace].rstrip(" \t"), lineno)
            labels, end = self.labels(line, brace, lineno)
            value, ts = self.rest(line[end:], lineno)
        key = name + "\0" + ",".join(k for k, _ in labels) + "\0" + "\0".join(v for _, v in labels) if labels else name
        if self.duplicate(key):
            self.result.duplicates += 1
            return
        self.result.samples.append((name, labels, value, ts))


def parse(
    text: str,
    *,
    openmetrics: bool = False,
    families: Collection[str] | None = None,
    label_cache: LabelCache | None = None,
) -> ParseResult:
    """Parses a whole page.

    `families`: only samples whose names are in this set are returned (pass `family_names(...)` to
    keep whole families); other lines are skipped without being parsed or validated.
    `label_cache`: maps the text of a line up to `}` to its parsed name and labels; pass the same
    dict for successive scrapes of one target (most series repeat) and it saves the label parsing,
    as Prometheus' scrape cache does. The caller bounds its size.
    """
    pieces = (text[i : i + SLICE_CHARS] for i in range(0, len(text), SLICE_CHARS))
    return parse_pieces(pieces, openmetrics=openmetrics, families=families, label_cache=label_cache)


def parse_pieces(
    pieces: Iterable[str],
    *,
    openmetrics: bool = False,
    families: Collection[str] | None = None,
    label_cache: LabelCache | None = None,
    series_seen: SeriesSeen | None = None,
    max_series: int | None = None,
) -> ParseResult:
    """Parses a page given as consecutive pieces of text (cut anywhere), one block of lines at a time.

    `max_series`: past this many samples kept the parse stops with SeriesLimitError, checked after
    each block, so at most one block's worth of samples beyond the limit is ever built.

    No single step touches more than a piece or so: a C call over a whole 30 MB page (a `split`, a
    `find`, a `decode`) would hold the GIL for tens of milliseconds, and a parse in a worker thread
    must leave the event loop room to answer probes. For the same reason a scraper passes
    `series_seen`, a dict it keeps between scrapes (and bounds), instead of a set of every series
    being built, and resized, on each parse.
    """
    parser = _Parser(openmetrics, label_cache, series_seen)
    wanted = None if families is None else families if isinstance(families, set | frozenset) else set(families)
    lineno, last = 1, ""
    # The pieces of a line not ended yet, joined once its end arrives: a line of many pieces (one
    # huge line, no newline for megabytes) is copied once, not once per piece.
    carry: list[str] = []
    for piece in pieces:
        cut = piece.rfind("\n")
        if cut < 0:
            carry.append(piece)
            continue
        block = "".join([*carry, piece[:cut]]) if carry else piece[:cut]
        carry = [piece[cut + 1 :]] if cut + 1 < len(piece) else []
        lineno = _parse_block(parser, block, wanted, lineno)
        last = block
        if max_series is not None and len(parser.result.samples) > max_series:
            raise SeriesLimitError(max_series)
    if carry:
        rest = "".join(carry)
        lineno = _parse_block(parser, rest, wanted, lineno)
        last = rest
    if max_series is not None and len(parser.result.samples) > max_series:
        raise SeriesLimitError(max_series)
    if openmetrics and not _ends_with_eof(last):
        raise ParseError(lineno - 1, "OpenMetrics page does not end with '# EOF'")
    return parser.result


def _parse_block(parser: _Parser, block: str, wanted: Collection[str] | None, lineno: int) -> int:
    """Parses complete lines; returns the number of the line after them."""
    if wanted is not None and "\n " not in block and "\n\t" not in block and block[:1] not in (" ", "\t"):
        count = block.count("\n") + 1
        parsed = _parse_filtered(parser, block, wanted, lineno)
        # Comment and blank lines are left out of the count, as the line loop below parses those.
        comments = block.count("\n#") + (block[:1] == "#")
        blanks = block.count("\n\n") + (block[:1] == "\n") + (block[-1:] == "\n") + (not block)
        parser.result.unchecked_lines += count - parsed - comments - blanks
        return lineno + count
    lines = block.split("\n")
    _parse_lines(parser, lines, wanted, lineno)
    return lineno + len(lines)


def _ends_with_eof(text: str) -> bool:
    body = text.rstrip("\n")
    return body.endswith("# EOF") and (len(body) == 5 or body[-6] == "\n")


def _parse_lines(parser: _Parser, lines: list[str], wanted: Collection[str] | None, first_lineno: int = 1) -> None:
    """The hot loop: common lines are handled inline, anything unusual goes to `parser.sample`."""
    comment, slow, learn = parser.comment, parser.sample, parser.learn_name
    valid_names, schemas, seen = parser.valid_names, parser.schemas, parser.seen
    samples = parser.result.samples
    append, seen_add = samples.append, seen.add
    stamps, token = parser.series_seen, parser.token
    helps, types = parser.result.help, parser.result.types
    kinds = OPENMETRICS_TYPES if parser.openmetrics else TEXT_TYPES
    cache = parser.cache
    labels: Labels
    values: Sequence[str]
    for lineno, line in enumerate(lines, first_lineno):
        if not line:
            continue
        first = line[0]
        if first == "#":
            # Inline for the common shapes, `# HELP name text` and `# TYPE name kind` with a valid
            # name; `comment` handles the rest (odd spacing, UNIT, EOF) and reports errors.
            if line.startswith("# HELP "):
                space = line.find(" ", 7)
                name = line[7:space] if space > 0 else line[7:]
                if name not in valid_names and _METRIC_NAME.fullmatch(name):
                    learn(name)
                if name in valid_names:
                    if name not in helps:
                        text = line[space + 1 :].strip() if space > 0 else ""
                        if "\\" in text:
                            text = text.replace("\\\\", "\0").replace("\\n", "\n").replace("\0", "\\")
                        helps[name] = text
                    continue
            elif line.startswith("# TYPE "):
                space = line.find(" ", 7)
                name, kind = line[7:space], line[space + 1 :]
                if space > 7 and kind in kinds and name not in types:
                    if name not in valid_names and _METRIC_NAME.fullmatch(name):
                        learn(name)
                    if name in valid_names:
                        types[name] = kind
                        continue
            comment(line, lineno)
            continue
        # Trailing whitespace needs no care: float() takes it and the slow path strips it.
        if first in " \t\r":
            line = line.strip()
            if not line:
                continue
            if line[0] == "#":
                comment(line, lineno)
                continue
        if wanted is not None:
            brace = line.find("{")
            cut = brace if brace >= 0 else len(line)
            space = line.find(" ", 0, cut)
            if space >= 0:
                cut = space
            tab = line.find("\t", 0, cut)
            if tab >= 0:
                cut = tab
            if line[:cut] not in wanted:
                parser.result.unchecked_lines += 1
                continue
        close = line.find("}")
        if close < 0:
            # No label block: `name value`; a stray `{` makes the name invalid -> slow path.
            space = line.find(" ")
            name = line[:space]
            if space < 0:
                slow(line, lineno)
                continue
            if name not in valid_names:
                if _METRIC_NAME.fullmatch(name) is None:
                    slow(line, lineno)
                    continue
                learn(name)
            labels, series_key = (), name
            value_token = line[space:]
        else:
            # Everything up to `}` split on quotes: even parts are the skeleton, odd ones the values.
            head = line[:close]
            cached = cache.get(head) if cache is not None else None
            if cached is None:
                if "\\" in head or head.count('"') & 1:
                    slow(line, lineno)
                    continue
                parts = head.split('"')
                skeleton = '"'.join(parts[0::2])
                schema = schemas.get(skeleton)
                if schema is None:
                    try:
                        schema = parser.schema(skeleton, lineno)
                    except ParseError:
                        slow(line, lineno)  # the slow path gives the precise error, or accepts the line
                        continue
                name, names, order, series_key = schema
                values = parts[1::2]
                if order is not None:
                    values = order(values)
                labels = tuple(zip(names, values, strict=False))
                series_key = series_key + "\0".join(values)
                if cache is not None:
                    cache[head] = (name, labels, series_key)
            else:
                name, labels, series_key = cached
            value_token = line[close + 1 :]
            if value_token[:1] not in (" ", "\t"):
                slow(line, lineno)
                continue
        # float() takes the surrounding whitespace; a timestamp or anything else fails it and goes
        # to the slow path, which also rejects what float() would wrongly accept ("1_0").
        try:
            if "_" in value_token:
                raise ValueError
            value = float(value_token)
        except ValueError:
            slow(line, lineno)
            continue
        # Series identity for duplicates: the name, the label names, the values in sorted order.
        if stamps is None:
            if series_key in seen:
                parser.result.duplicates += 1
                continue
            seen_add(series_key)
        else:
            if stamps.get(series_key) is token:
                parser.result.duplicates += 1
                continue
            stamps[series_key] = token
        append((name, labels, value, None))


def _family_base(name: str) -> str:
    for suffix in FAMILY_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _parse_filtered(parser: _Parser, text: str, names: Collection[str], first_lineno: int = 1) -> int:
    """Finds the lines of the wanted names with `str.find` and parses only those; returns their number.

    One search per family base (`x` finds `x_bucket`, `x_sum`, ...); a base that extends another is
    already found by the shorter one. Each hit's full name is then checked against `names`.
    """
    wanted = names if isinstance(names, (set, frozenset)) else frozenset(names)
    bases = sorted({_family_base(n) for n in wanted})
    searches = [b for i, b in enumerate(bases) if not any(b.startswith(o) for o in bases[:i])]
    starts: list[int] = []
    find = text.find
    for base in searches:
        if text.startswith(base):
            starts.append(0)
        needle = "\n" + base
        at = find(needle)
        while at >= 0:
            starts.append(at + 1)
            at = find(needle, at + 1)
    starts.sort()
    lines = []
    for start in starts:
        end = find("\n", start)
        lines.append(text[start:] if end < 0 else text[start:end])
    try:
        _parse_lines(parser, lines, wanted)
    except ParseError as exc:
        lineno = text.count("\n", 0, starts[exc.line - 1]) + first_lineno
        raise ParseError(lineno, exc.message) from None
    return len(lines)
