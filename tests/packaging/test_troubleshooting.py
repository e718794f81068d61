"""docs/troubleshooting.md has a row for every failure reason, error type, log event and check the code emits.

The strings are read from the source with `ast`, where they are made, not from a list kept by hand:
a new reason, log event or check without its entry on the page fails this test.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "troubleshooting.md"
LABEL = re.compile(r"^[a-z][a-z0-9_]*$")  # reasons and types are metric label values
# Calls whose string arguments are failure reasons: the ambassador's refusals and failed tries
# (they become `x-ambassador-reason` and `ambassador_errors_total{reason}`), its stats, and the
# adapter's scrape failures (`adapter_scrape_failures_total{reason}`), the tailer's refused files.
REASON_CALLS = {
    "fail",
    "_fail",
    "_refuse",
    "bad_request",
    "try_failed",
    "_protocol_error",
    "response_aborted",
    "local_response",
    "ScrapeError",
    "RefusedError",
    "refuse",
}
STATS_CALLS = {"error", "retry"}  # on a `stats` object, not on a logger
LOG_LEVELS = {"warning", "error", "exception", "critical"}


def _strings(node: ast.AST) -> Iterator[str]:
    """String constants that `node` can evaluate to (through `a if c else b` and `x or "y"`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _strings(value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "panic mode " + (a if c else b)
        rights = list(_strings(node.right))
        yield from (left + right for left in _strings(node.left) for right in rights)


def _receiver(call: ast.Call) -> str:
    return ast.unparse(call.func.value) if isinstance(call.func, ast.Attribute) else ""


def _name(call: ast.Call) -> str:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else ""


def _positional(call: ast.Call, found: dict[str, set[str]], **where: int) -> None:
    """The strings of the arguments at the given positions (or passed by those names)."""
    keywords = {kw.arg: kw.value for kw in call.keywords}
    for kind, index in where.items():
        node = call.args[index] if index < len(call.args) else keywords.get(kind)
        if node is not None:
            found[kind].update(_strings(node))


def collect() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"reason": set(), "type": set(), "event": set(), "check": set()}
    for path in sorted((ROOT / "sidecars").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        limiters = {
            ast.unparse(target)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _name(node.value) == "LogLimiter"
            for target in node.targets
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name, receiver = _name(node), _receiver(node)
                if name in REASON_CALLS or (name in STATS_CALLS and receiver.endswith("stats")):
                    for arg in node.args:
                        found["reason"].update(_strings(arg))
                # `log = self.log.warning if c else self.log.info; log("...")` counts too.
                # A logger, or a core LogLimiter (`self._lines.warning(...)`) made in this file.
                is_log = (name in LOG_LEVELS and (receiver.endswith("log") or receiver in limiters)) or (
                    name == "log" and not receiver
                )
                if (is_log or name == "warn_limited") and node.args:
                    found["event"].update(_strings(node.args[0]))
                # The core's telemetry: `dropped(reason, n, event)` and `error(type, event)`.
                if name in {"dropped", "records_dropped"}:
                    _positional(node, found, reason=0, event=2)
                if name == "error" and receiver.endswith("telemetry"):
                    _positional(node, found, type=0, event=1)
                if name == "Check" and node.args:
                    found["check"].update(_strings(node.args[0]))
                for kw in node.keywords:
                    # `.labels(reason=...)` of the drop and error counters, and the reasons sinks return.
                    if kw.arg == "reason" and (name == "labels" or not receiver.endswith("log")):
                        found["reason"].update(_strings(kw.value))
                    if kw.arg == "type" and name == "labels":
                        found["type"].update(_strings(kw.value))
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                # A module's fixed vocabulary: REASONS = ("malformed", ...), SHARD_ERRORS = (...).
                if isinstance(node.value, ast.Tuple | ast.List) and any(
                    isinstance(t, ast.Name) and (t.id.endswith("REASONS") or t.id.endswith("_ERRORS")) for t in targets
                ):
                    for element in node.value.elts:
                        found["reason"].update(_strings(element))
                if node.value is not None and any(
                    (isinstance(t, ast.Name) and t.id == "reason")
                    or (isinstance(t, ast.Attribute) and t.attr == "failure")
                    for t in targets
                ):
                    found["reason"].update(_strings(node.value))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + list(node.args.defaults)
                for arg, default in zip(args, [*defaults, *node.args.kw_defaults], strict=True):
                    if arg.arg == "reason" and default is not None:
                        found["reason"].update(_strings(default))
    found["reason"] = {r for r in found["reason"] if LABEL.match(r)}
    found["type"] = {t for t in found["type"] if LABEL.match(t)}
    return found


def test_the_collector_finds_what_it_should() -> None:
    """A guard against a collector that silently finds nothing: known strings of each kind."""
    found = collect()
    assert {"no_healthy_upstream", "upstream_reset_mid_response", "header_too_large"} <= found["reason"]
    assert {"dead_letter_full", "deleted_file", "overlong_line", "invalid_utf8"} <= found["reason"]
    assert {"timeout", "too_large", "refused", "http_status"} <= found["reason"]
    assert {"malformed", "connection_lost"} <= found["reason"]  # the injector's and the shards' vocabularies
    assert {"startup", "task_crash"} <= found["type"]
    assert {"scrape failed", "sink failing: retrying", "endpoint unhealthy"} <= found["event"]
    assert {"ping", "shutdown", "sink", "first-scrape", "listeners"} <= found["check"]


def entries() -> set[str]:
    """What the page has a row for: the backticked names in the first cell of each table row."""
    first_cells = re.findall(r"^\|([^|\n]*)\|", PAGE.read_text(), re.M)
    return {name for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)}


@pytest.mark.parametrize("kind", ["reason", "type", "event", "check"])
def test_every_string_the_code_emits_has_an_entry(kind: str) -> None:
    rows = entries()
    missing = sorted(s for s in collect()[kind] if s not in rows)
    assert missing == [], f"docs/troubleshooting.md has no entry for these {kind}s: {missing}"
