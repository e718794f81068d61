"""Turns scrapes into verdicts: keeps the history the rules need, evaluates them, applies `for:`.

After each scrape the evaluator computes one immutable `Verdict` that every endpoint serves until the
next one; a probe never waits for a scrape or an evaluation.

A rule's condition holds when its expression gives a non-empty vector (a scalar: a non-zero value),
as for a Prometheus alerting rule. It is *pending* until it has held for `for:`, then *firing*: a
firing `fail` rule fails its group, a firing `warn` rule is reported but does not. When the result is
empty and none of the metrics the rule reads is on the page, the rule has *no data* and `no_data:`
decides (ok, fail or warn; fail and warn also wait for `for:`).

When a scrape fails the target's series turn stale (Prometheus' staleness) and `up` becomes 0; the
built-in `scrape` check fails (after its own `for:`); rules that read only the synthetic series
(`up`, `scrape_duration_seconds`, `scrape_samples_scraped`) are evaluated, every other rule keeps
its last verdict, marked with the time of the last good scrape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sidecars.adapter.exposition import SampleTuple
from sidecars.adapter.promql import History, InstantVector, PromQLError, Scalar, evaluate
from sidecars.adapter.rules import SCRAPE_CHECK, Rule, RuleSet

SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
MAX_REASON = 300


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """One check's state after an evaluation."""

    name: str
    group: str
    severity: str  # the severity in effect (a `no_data: warn` outcome is a warning)
    state: str  # ok, pending, firing, no_data
    failing: bool = False  # firing with severity fail: fails its group
    warning: bool = False  # firing with severity warn: reported, does not fail
    value: float | None = None
    reason: str | None = None
    description: str = ""

    @property
    def status(self) -> str:
        """pass, warn or fail, as application/health+json names them."""
        return "fail" if self.failing else "warn" if self.warning else "pass"


@dataclass(frozen=True)
class Verdict:
    """Every check at one evaluation time."""

    at_ms: int
    checks: tuple[CheckResult, ...]
    by_name: dict[str, CheckResult] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_name.update({c.name: c for c in self.checks})

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(c.group for c in self.checks)


@dataclass
class _RuleState:
    active_since_ms: int | None = None
    last: CheckResult | None = None


@dataclass(frozen=True, kw_only=True)
class ScrapeReport:
    """What the scraper tells the evaluator about one scrape."""

    t_ms: int
    ok: bool
    samples: Sequence[SampleTuple] = ()
    duration_secs: float = 0.0
    reason: str | None = None  # why it failed
    samples_scraped: int | None = None  # samples parsed from the page (default: len(samples))


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6g}"


def _format_labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""


def _format_for(ms: int) -> str:
    secs = ms / 1000
    return f"{secs:g}s" if secs < 120 else f"{secs / 60:g}m"


class Evaluator:
    """Holds the history, the rules and their `for:` state; `observe()` gives the next verdict."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.history = History(retention_ms=max(rules.history_ms, 1))
        self.states: dict[str, _RuleState] = {}
        self.scrape_state = _RuleState()
        self.present: frozenset[str] = frozenset()  # metric names of the last good page
        self.last_good_ms: int | None = None
        self.verdict: Verdict | None = None
        self.errors: dict[str, str] = {}  # check -> last evaluation error, for the log
        self._pending: RuleSet | None = None

    def set_rules(self, rules: RuleSet) -> None:
        """New rules, applied at the next `observe()` (which may be running in a worker thread).

        A rule whose name and expression did not change keeps its `for:` state.
        """
        self._pending = rules

    def _apply_pending(self) -> None:
        rules, self._pending = self._pending, None
        if rules is None:
            return
        old = {r.name: r for r in self.rules.rules}
        self.states = {
            r.name: self.states[r.name]
            for r in rules.rules
            if r.name in self.states and r.name in old and old[r.name].expr_text == r.expr_text
        }
        self.rules = rules
        self.history.set_retention_ms(max(rules.history_ms, 1))

    def observe(self, report: ScrapeReport) -> Verdict:
        """Stores the scrape and evaluates every check; safe to run in a worker thread."""
        self._apply_pending()
        t = report.t_ms
        synthetic: list[SampleTuple] = [
            ("up", (), 1.0 if report.ok else 0.0, None),
            ("scrape_duration_seconds", (), report.duration_secs, None),
            ("scrape_samples_scraped", (), float(self._scraped(report)), None),
        ]
        if report.ok:
            self.history.append_scrape(t, [*report.samples, *synthetic])
            self.present = frozenset(s[0] for s in report.samples)
            self.last_good_ms = t
        else:
            # Every series of the last page turns stale; only the synthetic ones have a new sample.
            self.history.append_scrape(t, synthetic)
        checks = [self._scrape_check(report), *self.evaluate_rules(t, report.ok)]
        self.verdict = Verdict(at_ms=t, checks=tuple(checks))
        return self.verdict

    def evaluate_rules(self, t: int, scrape_ok: bool = True) -> list[CheckResult]:
        """Every rule at `t` over the history as it stands, stepping their `for:` states.

        `observe()` calls it after storing a scrape; `adapter test` after loading its input series.
        """
        checks = []
        for rule in self.rules.rules:
            state = self.states.setdefault(rule.name, _RuleState())
            reads_page = rule.metric_names is None or not rule.metric_names <= SYNTHETIC
            if not scrape_ok and reads_page and state.last is not None:
                checks.append(self._kept(state.last))
                continue
            state.last = self._evaluate(rule, state, t)
            checks.append(state.last)
        return checks

    @staticmethod
    def _scraped(report: ScrapeReport) -> int:
        if not report.ok:
            return 0
        return len(report.samples) if report.samples_scraped is None else report.samples_scraped

    def _kept(self, last: CheckResult) -> CheckResult:
        since = f"last scrape failed; verdict of the scrape at {self.last_good_ms} ms"
        reason = f"{last.reason} ({since})" if last.reason else since
        return dataclasses.replace(last, reason=reason[:MAX_REASON])

    def _scrape_check(self, report: ScrapeReport) -> CheckResult:
        spec = self.rules.scrape
        check = CheckResult(
            name=SCRAPE_CHECK,
            group=spec.group,
            severity=spec.severity,
            state="firing",
            value=1.0 if report.ok else 0.0,
            reason=None if report.ok else f"scrape failed: {report.reason}",
            description="The target's /metrics page was fetched and parsed.",
        )
        return self._apply_for(check, spec.for_ms, self.scrape_state, report.t_ms, active=not report.ok)

    def _evaluate(self, rule: Rule, state: _RuleState, t: int) -> CheckResult:
        severity = rule.severity
        value: float | None = None
        try:
            result = evaluate(rule.expr, self.history, t)
        except PromQLError as exc:
            self.errors[rule.name] = str(exc)
            check = self._firing(rule, severity, value=None, reason=f"evaluation error: {exc}")
            return self._apply_for(check, rule.for_ms, state, t, active=True)
        self.errors.pop(rule.name, None)
        if isinstance(result, InstantVector):
            samples = result.samples
            active = bool(samples)
            if active:
                first = samples[0]
                value = first.value
                more = f" and {len(samples) - 1} more series" if len(samples) > 1 else ""
                labels = [(k, v) for k, v in first.labels if k != "__name__"]
                reason = f"{rule.expr_text} = {_format_value(value)}{_format_labels(labels)}{more}"
            else:
                reason = None
        elif isinstance(result, Scalar):
            value = result.value
            active = value != 0 and not math.isnan(value)
            reason = f"{rule.expr_text} = {_format_value(value)}" if active else None
        else:
            active, reason = True, "the expression gave a string, not a vector or a scalar"
        if not active and self._no_data(rule):
            if rule.no_data == "ok":
                state.active_since_ms = None
                return CheckResult(
                    name=rule.name,
                    group=rule.group,
                    severity=severity,
                    state="no_data",
                    reason="no data (counted as ok)",
                    description=rule.description,
                )
            severity = "warn" if rule.no_data == "warn" else "fail"
            names = ", ".join(sorted(rule.metric_names or ())) or "any series"
            check = self._firing(rule, severity, value=None, reason=f"no data: {names} absent from the target's page")
            return self._apply_for(dataclasses.replace(check, state="no_data"), rule.for_ms, state, t, active=True)
        check = self._firing(rule, severity, value=value, reason=reason)
        return self._apply_for(check, rule.for_ms, state, t, active=active)

    @staticmethod
    def _firing(rule: Rule, severity: str, *, value: float | None, reason: str | None) -> CheckResult:
        """`rule`'s result once its condition has held for its `for:`."""
        return CheckResult(
            name=rule.name,
            group=rule.group,
            severity=severity,
            state="firing",
            value=value,
            reason=reason,
            description=rule.description,
        )

    def _no_data(self, rule: Rule) -> bool:
        if rule.metric_names is None:
            return not self.present
        names = rule.metric_names - SYNTHETIC
        return bool(names) and not (names & self.present)

    @staticmethod
    def _apply_for(held_check: CheckResult, for_ms: int, state: _RuleState, t: int, *, active: bool) -> CheckResult:
        """Prometheus' alert states: inactive -> pending (held for less than `for`) -> firing.

        `held_check` is the outcome once the condition has held for `for_ms` (its state `firing` or
        `no_data`, its reason why the condition holds); inactive and pending are made from it.
        """
        if not active:
            state.active_since_ms = None
            return dataclasses.replace(held_check, state="ok", reason=None)
        if state.active_since_ms is None:
            state.active_since_ms = t
        held = t - state.active_since_ms
        if held < for_ms:
            pending = f"pending for {_format_for(held)} of {_format_for(for_ms)}: {held_check.reason}"
            return dataclasses.replace(held_check, state="pending", reason=pending[:MAX_REASON])
        firing = held_check.severity == "fail"
        text = (held_check.reason or "condition holds")[:MAX_REASON]
        return dataclasses.replace(held_check, failing=firing, warning=not firing, reason=text)
