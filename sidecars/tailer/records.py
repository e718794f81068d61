"""From complete lines (bytes) to records: decoding, JSON fields, multi-line grouping.

The fast path decodes a whole block of lines at once and splits the text; only a block with
invalid UTF-8 is decoded line by line (replacing and counting). Multi-line grouping keeps the
record being built per file and reports where the last complete record ends, so a checkpoint never
lands inside a record.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


def decode_block(block: bytes) -> tuple[list[str], int]:
    """Lines of `block` (newline-separated, no trailing newline) and how many had invalid UTF-8."""
    try:
        return block.decode("utf-8").split("\n"), 0
    except UnicodeDecodeError:
        pass
    lines: list[str] = []
    bad = 0
    for raw in block.split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", "replace"))
            bad += 1
    return lines, bad


def parse_json_fields(lines: list[str]) -> tuple[list[dict[str, Any]], int]:
    """Parsed fields per line ({} for a line that is not a JSON object) and how many looked like JSON but were not."""
    out: list[dict[str, Any]] = []
    bad = 0
    loads = orjson.loads
    for line in lines:
        if line.startswith("{"):
            try:
                value = loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                out.append({})
                continue
            out.append(value if isinstance(value, dict) else {})
        else:
            out.append({})
    return out, bad


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_ns(value: object) -> int | None:
    """A record's own time: RFC 3339 text (no zone: UTC), or Unix time in s, ms, µs or ns by magnitude."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        v = abs(value)
        if v >= 1e17:
            return int(value)
        if v >= 1e14:
            return int(value * 1_000)
        if v >= 1e11:
            return int(value * 1_000_000)
        return int(value * 1_000_000_000)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        delta = dt - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    return None


def record_times(fields: list[dict[str, Any]], key: str, read_ns: int) -> tuple[list[int], int]:
    """Each record's time from `key` (the read time where missing or unparsable), and how many were bad."""
    out: list[int] = []
    bad = 0
    for f in fields:
        value = f.get(key)
        ts = parse_time_ns(value) if value is not None else None
        if ts is None:
            bad += value is not None
            ts = read_ns
        out.append(ts)
    return out, bad


# ---------------------------------------------------------------------------------------- multi-line

# Java: "\tat com.x.Y.z(Y.java:1)", "\t... 12 more", "Caused by: ...", "Suppressed: ...", and the
# exception's own header line ("java.lang.IllegalStateException: boom") after the log line announcing it.
_JAVA_CONT = re.compile(
    r"\s|Caused by:|Suppressed:|\.\.\. \d+ (?:more|common frames omitted)"
    r"|(?:[a-zA-Z_$][\w$]*\.)+[\w$]*(?:Exception|Error|Throwable)\b"
)
_PY_START = "Traceback (most recent call last):"
_PY_CHAINED = re.compile(
    r"(?:During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:)\Z"
)


class _Continuation:
    """Decides whether a line continues the record being built (stateful for Python tracebacks)."""

    def __init__(self, kind: str, start_pattern: str | None) -> None:
        self.kind = kind
        self._start = re.compile(start_pattern) if start_pattern else None
        self._in_traceback = False
        self._expect_exception_line = False

    def __call__(self, line: str) -> bool:
        if self.kind == "pattern":
            assert self._start is not None
            return self._start.match(line) is None
        if self.kind == "java":
            return bool(line) and _JAVA_CONT.match(line) is not None
        return self._python(line)

    def _python(self, line: str) -> bool:
        if line.startswith(_PY_START):
            self._in_traceback = True
            return True  # a traceback continues the log line that announced it
        if not self._in_traceback:
            return False
        if line[:1] in (" ", "\t"):
            self._expect_exception_line = True
            return True
        if _PY_CHAINED.match(line) or line == "":
            return True
        if self._expect_exception_line:
            # "ValueError: bad" closes the traceback (unless a chained one follows).
            self._expect_exception_line = False
            self._in_traceback = False
            return True
        self._in_traceback = False
        return False


@dataclass(slots=True)
class _Pending:
    lines: list[str] = field(default_factory=list)
    nbytes: int = 0
    start: int = 0  # file offset of the record's first byte
    end: int = 0  # file offset just past its last line
    since: float = 0.0


class Grouper:
    """Multi-line records of one file.

    `feed` takes lines with the offset just past each one and returns the completed records and
    the offset just past the last of them (the checkpoint may not move beyond it: the record being
    built is not complete).
    """

    def __init__(self, kind: str, start_pattern: str | None, max_lines: int, max_bytes: int) -> None:
        self._cont: Callable[[str], bool] = _Continuation(kind, start_pattern)
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._p: _Pending | None = None
        self.cut = 0  # records cut because they reached max_lines or max_bytes

    @property
    def pending_since(self) -> float | None:
        return self._p.since if self._p is not None else None

    @property
    def pending_start(self) -> int | None:
        return self._p.start if self._p is not None else None

    def feed(self, lines: list[str], starts: list[int], ends: list[int]) -> tuple[list[str], int | None]:
        out: list[str] = []
        done_end: int | None = None
        now = time.monotonic()
        for line, start, end in zip(lines, starts, ends, strict=True):
            p = self._p
            if p is not None and self._cont(line):
                if len(p.lines) >= self.max_lines or p.nbytes + len(line) > self.max_bytes:
                    self.cut += 1
                    out.append("\n".join(p.lines))
                    done_end = p.end
                    self._p = _Pending([line], len(line), start, end, now)
                else:
                    p.lines.append(line)
                    p.nbytes += len(line) + 1
                    p.end = end
                    p.since = now
                continue
            if p is not None:
                out.append("\n".join(p.lines))
                done_end = p.end
            if p is None:
                self._cont(line)  # let a stateful matcher see the first line too
            self._p = _Pending([line], len(line), start, end, now)
        return out, done_end

    def flush(self) -> tuple[str, int] | None:
        """The record being built, complete now (flush timeout, end of file at shutdown)."""
        p, self._p = self._p, None
        if p is None:
            return None
        return "\n".join(p.lines), p.end
