"""The rules file: health rules over the app's metrics, the built-in scrape check, the export section.

```yaml
scrape:                      # the built-in check "scrape": the last scrape failed or the target is down
  group: readiness           # default readiness; any group name
  for: 30s                   # how long scraping must fail before the check fails
  severity: fail
rules:
  - name: error-ratio
    expr: sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05
    for: 2m
    severity: fail           # fail: the group answers 503; warn: reported, still 200
    group: readiness         # liveness, readiness, or any name (served at /<group>z)
    no_data: ok              # when the rule's metrics are absent: ok, fail or warn
    keep_firing_for: 1m      # once failing, fail on this long after the condition stops holding
    recover: sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) < 0.01
                             # optional: once failing, fail on until this holds (hysteresis)
    description: More than 5% of requests fail.
export:                      # the `prometheus` output's re-export
  keep: ['http_.*']          # metric-name regexes (RE2, fully anchored); empty keeps all
  drop: ['http_requests_total{path="/healthz"}']     # series selectors
  rename: [{match: 'http_(.*)', replace: 'acme_web_\\1'}]
```

A rule is an alerting condition, as in Prometheus: a non-empty result means the condition holds
(a scalar result: a non-zero value). Every problem of a file is listed at once, each naming the rule
and the field; a file with problems is rejected as a whole and the last good set stays in force.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from structlog.typing import FilteringBoundLogger

from sidecars.adapter.promql import referenced_metric_names, required_history_ms
from sidecars.adapter.promql.errors import PromQLError
from sidecars.adapter.promql.lexer import parse_duration
from sidecars.adapter.promql.nodes import Expr, ValueType, VectorSelector
from sidecars.adapter.promql.parser import parse_expr
from sidecars.adapter.promql.regex import AnchoredRegex, RegexError, compile_anchored
from sidecars.core.watch import MountedFiles, mounted_file

SEVERITIES = ("fail", "warn")
NO_DATA = ("ok", "fail", "warn")
SCRAPE_CHECK = "scrape"
# A rule name is a path segment (/healthz/<name>) and a metric label value.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_GROUP = re.compile(r"[a-z][a-z0-9_-]{0,30}")
_RULE_KEYS = frozenset(
    {"name", "expr", "for", "severity", "group", "no_data", "description", "keep_firing_for", "recover"}
)
# Group names served at a kube-style short path: liveness -> /livez, readiness -> /readyz.
GROUP_PATHS = {"liveness": "livez", "readiness": "readyz", "startup": "startupz"}


def group_path(group: str) -> str:
    """The path segment serving a group: `/livez` for liveness, `/<group>z` for any other."""
    return GROUP_PATHS.get(group, group + "z")


class RulesError(ValueError):
    """A rules file that cannot be used; `problems` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems

    def render(self) -> str:
        return f"invalid rules in {self.source}:\n" + "\n".join(f"  - {p}" for p in self.problems)


@dataclass(frozen=True)
class Rule:
    name: str
    expr_text: str
    expr: Expr
    for_ms: int
    severity: str
    group: str
    no_data: str
    description: str
    # The metric names the expression reads (None: it may read any) and how far back it looks.
    metric_names: frozenset[str] | None
    history_ms: int
    range_ms: int  # the longest range window it reads (0: instant selectors only)
    # Hysteresis: a failing check leaves `firing` only once `recover` holds (when given), and then
    # stays failing (`recovering`) until that has lasted `keep_firing_for` (Prometheus 2.42's field).
    keep_firing_for_ms: int = 0
    recover_text: str = ""
    recover: Expr | None = None


@dataclass(frozen=True)
class ScrapeCheck:
    group: str = "readiness"
    for_ms: int = 0
    severity: str = "fail"


# `\1`..`\99`, `\g<1>`, `\g<name>` and `\\` in a rename template, as in Python's `re.sub`.
_TEMPLATE_REF = re.compile(r"\\(?:([0-9]{1,2})|g<([^>]*)>|(\\))")


@dataclass(frozen=True)
class Rename:
    """A family rename: `pattern` (fully anchored) and the template of the new name."""

    pattern: AnchoredRegex
    replace: str

    def apply(self, name: str) -> str | None:
        """The new name, or None when `pattern` does not match `name`."""
        match = self.pattern.match(name)
        if match is None:
            return None

        def group(ref: re.Match[str]) -> str:
            if ref.group(3):
                return "\\"
            index = ref.group(1) or ref.group(2)
            key: int | str = int(index) if index.isdigit() else index
            return match.group(key) or ""

        return _TEMPLATE_REF.sub(group, self.replace)


def _template_problem(template: str, pattern: AnchoredRegex) -> str | None:
    for ref in _TEMPLATE_REF.finditer(template):
        index = ref.group(1) or ref.group(2)
        if index is None:
            continue
        if index.isdigit() and int(index) > pattern.groups:
            return f"invalid group reference {index}"
        if not index.isdigit() and index not in pattern.groupindex:
            return f"unknown group name {index!r}"
    return None


@dataclass(frozen=True)
class ExportConfig:
    keep: tuple[AnchoredRegex, ...] = ()
    drop: tuple[VectorSelector, ...] = ()
    rename: tuple[Rename, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    scrape: ScrapeCheck = field(default_factory=ScrapeCheck)
    export: ExportConfig = field(default_factory=ExportConfig)
    source: str = "(none)"

    @property
    def groups(self) -> frozenset[str]:
        return frozenset({r.group for r in self.rules} | {self.scrape.group})

    @property
    def history_ms(self) -> int:
        return max((r.history_ms for r in self.rules), default=0)

    @property
    def range_ms(self) -> int:
        return max((r.range_ms for r in self.rules), default=0)

    def metric_names(self) -> frozenset[str] | None:
        """Every metric name the rules read; None when one of them may read any."""
        names: set[str] = set()
        for rule in self.rules:
            if rule.metric_names is None:
                return None
            names |= rule.metric_names
        return frozenset(names)


def _duration(value: object, where: str, problems: list[str]) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        problems.append(f"{where}: expected a duration such as 30s or 5m, got {value!r}")
        return 0
    if isinstance(value, int | float):
        if value < 0:
            problems.append(f"{where}: must not be negative")
            return 0
        return round(value * 1000)
    ms = parse_duration(str(value).strip())
    if ms is None:
        problems.append(f"{where}: expected a duration such as 30s or 5m, got {value!r}")
        return 0
    return ms


def _choice(value: object, choices: tuple[str, ...], default: str, where: str, problems: list[str]) -> str:
    if value is None:
        return default
    if value not in choices:
        problems.append(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
        return default
    return str(value)


def _group(value: object, default: str, where: str, problems: list[str]) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not _GROUP.fullmatch(value) or value == "health":
        problems.append(
            f"{where}: a group is a lowercase name such as liveness or readiness (not 'health'), got {value!r}"
        )
        return default
    return value


def _expr_problem(where: str, text: str, exc: PromQLError) -> str:
    caret = ""
    if exc.position is not None and "\n" not in text:
        caret = f"\n      {text}\n      {' ' * exc.position}^"
    return f"{where}: {exc}{caret}"


def _condition(raw: object, where: str, problems: list[str]) -> Expr | None:
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{where}: missing (a PromQL expression)")
        return None
    try:
        expr = parse_expr(raw)
    except PromQLError as exc:
        problems.append(_expr_problem(where, raw, exc))
        return None
    if expr.type not in (ValueType.VECTOR, ValueType.SCALAR):
        problems.append(f"{where}: must give an instant vector or a scalar, not a {expr.type.value}")
        return None
    return expr


def _union_names(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


def _rule(raw: object, index: int, problems: list[str]) -> Rule | None:
    where = f"rules[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping with name and expr")
        return None
    name = raw.get("name")
    if isinstance(name, str) and name:
        where = f"rule {name!r}"
    before = len(problems)
    for key in sorted(set(raw) - _RULE_KEYS):
        problems.append(f"{where}: unknown field {key!r} (known: {', '.join(sorted(_RULE_KEYS))})")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(f"{where}.name: letters, digits, '_', '.', '-' (at most 63), got {name!r}")
    elif name == SCRAPE_CHECK:
        problems.append(f"{where}.name: 'scrape' is the built-in scrape check")
    text = raw.get("expr")
    expr = _condition(text, f"{where}.expr", problems)
    recover_text = raw.get("recover")
    recover = None if recover_text is None else _condition(recover_text, f"{where}.recover", problems)
    keep_firing_for_ms = _duration(raw.get("keep_firing_for"), f"{where}.keep_firing_for", problems)
    for_ms = _duration(raw.get("for"), f"{where}.for", problems)
    severity = _choice(raw.get("severity"), SEVERITIES, "fail", f"{where}.severity", problems)
    no_data = _choice(raw.get("no_data"), NO_DATA, "ok", f"{where}.no_data", problems)
    group = _group(raw.get("group"), "readiness", f"{where}.group", problems)
    description = raw.get("description") or ""
    if not isinstance(description, str):
        problems.append(f"{where}.description: expected text")
    if len(problems) > before or expr is None or not isinstance(name, str):
        return None
    names = referenced_metric_names(expr)
    history_ms = required_history_ms(expr)
    range_ms = required_history_ms(expr, lookback_delta_ms=0)
    if recover is not None:
        names = _union_names(names, referenced_metric_names(recover))
        history_ms = max(history_ms, required_history_ms(recover))
        range_ms = max(range_ms, required_history_ms(recover, lookback_delta_ms=0))

    return Rule(
        name=name,
        expr_text=text.strip() if isinstance(text, str) else "",
        expr=expr,
        for_ms=for_ms,
        severity=severity,
        group=group,
        no_data=no_data,
        description=str(description),
        metric_names=names,
        history_ms=history_ms,
        range_ms=range_ms,
        keep_firing_for_ms=keep_firing_for_ms,
        recover_text=recover_text.strip() if isinstance(recover_text, str) else "",
        recover=recover,
    )


def _scrape(raw: object, problems: list[str]) -> ScrapeCheck:
    if raw is None:
        return ScrapeCheck()
    if not isinstance(raw, dict):
        problems.append("scrape: expected a mapping (group, for, severity)")
        return ScrapeCheck()
    for key in sorted(set(raw) - {"group", "for", "severity"}):
        problems.append(f"scrape: unknown field {key!r} (known: for, group, severity)")
    return ScrapeCheck(
        group=_group(raw.get("group"), "readiness", "scrape.group", problems),
        for_ms=_duration(raw.get("for"), "scrape.for", problems),
        severity=_choice(raw.get("severity"), SEVERITIES, "fail", "scrape.severity", problems),
    )


def _regex(value: object, where: str, problems: list[str]) -> AnchoredRegex | None:
    if not isinstance(value, str):
        problems.append(f"{where}: expected a regular expression")
        return None
    try:
        return compile_anchored(value)
    except RegexError as exc:
        problems.append(f"{where}: invalid regular expression: {exc}")
        return None


def _export(raw: object, problems: list[str]) -> ExportConfig:
    if raw is None:
        return ExportConfig()
    if not isinstance(raw, dict):
        problems.append("export: expected a mapping (keep, drop, rename)")
        return ExportConfig()
    for key in sorted(set(raw) - {"keep", "drop", "rename"}):
        problems.append(f"export: unknown field {key!r} (known: drop, keep, rename)")
    keep = [_regex(v, f"export.keep[{i}]", problems) for i, v in enumerate(raw.get("keep") or [])]
    drop: list[VectorSelector] = []
    for i, text in enumerate(raw.get("drop") or []):
        where = f"export.drop[{i}]"
        try:
            selector = parse_expr(str(text))
        except PromQLError as exc:
            problems.append(_expr_problem(where, str(text), exc))
            continue
        if not isinstance(selector, VectorSelector):
            problems.append(f'{where}: expected a series selector such as name{{label="value"}}')
            continue
        drop.append(selector)
    renames: list[Rename] = []
    for i, item in enumerate(raw.get("rename") or []):
        where = f"export.rename[{i}]"
        if not isinstance(item, dict) or set(item) != {"match", "replace"}:
            problems.append(f"{where}: expected {{match: REGEX, replace: TEMPLATE}}")
            continue
        pattern = _regex(item["match"], f"{where}.match", problems)
        if pattern is not None:
            problem = _template_problem(str(item["replace"]), pattern)
            if problem is not None:
                problems.append(f"{where}.replace: {problem}")
                continue
            renames.append(Rename(pattern, str(item["replace"])))
    return ExportConfig(keep=tuple(p for p in keep if p is not None), drop=tuple(drop), rename=tuple(renames))


def parse_rules(text: str, source: str) -> RuleSet:
    """Parses and validates a rules file; raises RulesError listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(source, [f"not valid YAML: {exc}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RulesError(source, ["expected a mapping with rules, scrape and export"])
    problems: list[str] = []
    for key in sorted(set(raw) - {"rules", "scrape", "export"}):
        problems.append(f"unknown top-level field {key!r} (known: export, rules, scrape)")
    raw_rules = raw.get("rules") or []
    if not isinstance(raw_rules, list):
        problems.append("rules: expected a list of rules")
        raw_rules = []
    rules = [_rule(item, i, problems) for i, item in enumerate(raw_rules)]
    names = [r.name for r in rules if r is not None]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"rule {name!r}: the name is used more than once")
    scrape = _scrape(raw.get("scrape"), problems)
    export = _export(raw.get("export"), problems)
    if problems:
        raise RulesError(source, problems)
    return RuleSet(rules=tuple(r for r in rules if r is not None), scrape=scrape, export=export, source=source)


def load_rules(path: Path) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), [f"cannot be read: {exc}"]) from None
    return parse_rules(text, str(path))


def rules_watcher(
    path: Path,
    *,
    poll_secs: float,
    log: FilteringBoundLogger,
    on_rules: Callable[[RuleSet], None],
    on_error: Callable[[Exception], None],
) -> MountedFiles[RuleSet]:
    """The rules file as the core's mounted-file watcher keeps it: inotify (the ConfigMap `..data`
    swap included) plus a modification-time poll; a file that fails validation goes to `on_error`
    (a RulesError listing its problems, or the watcher's own error for an unreadable file) and the
    last good set stays in force."""

    def parse(data: bytes) -> RuleSet:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RulesError(str(path), [f"cannot be read: {exc}"]) from None
        return parse_rules(text, str(path))

    return mounted_file(path, parse, poll_secs=poll_secs, log=log, on_change=on_rules, on_error=on_error)
