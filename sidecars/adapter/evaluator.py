"""Turns scrapes into verdicts: keeps the history the rules need, evaluates them, applies `for:`,
`keep_firing_for:` and `recover:`.

After each scrape the evaluator computes one immutable `Verdict` that every endpoint serves until the
next one; a probe never waits for a scrape or an evaluation.

A rule's condition holds when its expression gives a non-empty vector (a scalar: a non-zero value),
as for a Prometheus alerting rule. It is *pending* until it has held for `for:`, then *firing*: a
firing `fail` rule fails its group, a firing `warn` rule is reported but does not. When the result is
empty and none of the metrics the rule reads is on the page, the rule has *no data* and `no_data:`
decides (ok, fail or warn; fail and warn also wait for `for:`).

Hysteresis: a firing check whose condition stops holding stays firing until its `recover:`
expression holds (when it has one); from then it is *recovering* (still failing, or warning) until
that has lasted `keep_firing_for:`, and only then ok. The condition holding again, or `recover`
ceasing to hold, sends it back to firing. Without `recover`, this is Prometheus 2.42's
`keep_firing_for`: ok -> pending -> firing -> recovering -> ok. Every change of state is reported
(`Verdict.changes`) with the value and the series that made the condition true, and a check whose
verdict flips too often within a window is named in `Verdict.flapping`.

When a scrape fails the target's series turn stale (Prometheus' staleness) and `up` becomes 0; the
built-in `scrape` check fails (after its own `for:`); rules that read only the synthetic series
(`up`, `scrape_duration_seconds`, `scrape_samples_scraped`) are evaluated, every other rule keeps
its last verdict, marked with the time of the last good scrape.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sidecars.adapter.exposition import SampleTuple
from sidecars.adapter.promql import Expr, History, InstantVector, PromQLError, Scalar, evaluate
from sidecars.adapter.rules import SCRAPE_CHECK, Rule, RuleSet

SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
MAX_REASON = 300
MAX_CHANGE_SERIES = 5  # series named in a state change's log line
DEFAULT_FLAP_WINDOW_MS = 600_000
DEFAULT_FLAP_CHANGES = 4


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """One check's state after an evaluation."""

    name: str
    group: str
    severity: str  # the severity in effect (a `no_data: warn` outcome is a warning)
    state: str  # ok, pending, firing, recovering, no_data
    failing: bool = False  # firing or recovering with severity fail: fails its group
    warning: bool = False  # firing or recovering with severity warn: reported, does not fail
    value: float | None = None
    reason: str | None = None
    description: str = ""
    since_ms: int | None = None  # when the check entered its state
    wait_ms: int = 0  # how long that state lasts at most: `for:` when pending, `keep_firing_for:` when recovering
    condition: str | None = None  # why the condition holds (pending) or what it waits for (recovering)

    @property
    def status(self) -> str:
        """pass, warn or fail, as application/health+json names them."""
        return "fail" if self.failing else "warn" if self.warning else "pass"


@dataclass(frozen=True, kw_only=True)
class StateChange:
    """A check moved from one state to another at `at_ms`."""

    check: str
    group: str
    old: str
    new: str
    at_ms: int
    value: float | None
    series: tuple[str, ...]  # the first series of the result that made the condition true
    reason: str | None


@dataclass(frozen=True)
class Verdict:
    """Every check at one evaluation time."""

    at_ms: int
    checks: tuple[CheckResult, ...]
    by_name: dict[str, CheckResult] = field(default_factory=dict, compare=False)
    changes: tuple[StateChange, ...] = ()
    flapping: tuple[tuple[str, int], ...] = ()  # (check, verdict flips within the window)

    def __post_init__(self) -> None:
        self.by_name.update({c.name: c for c in self.checks})

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(c.group for c in self.checks)


@dataclass
class _RuleState:
    active_since_ms: int | None = None  # since when the condition holds (pending -> firing)
    recover_since_ms: int | None = None  # since when the recovery holds (recovering -> ok)
    phase: str = "ok"  # ok, pending, firing, recovering
    since_ms: int | None = None  # when the check's shown state began
    last: CheckResult | None = None
    last_value: float | None = None
    flips: collections.deque[int] = field(default_factory=collections.deque)  # times the verdict flipped


@dataclass(frozen=True)
class _Outcome:
    """One evaluation of a rule's condition, before the state machine."""

    active: bool
    check: CheckResult  # the outcome when active and held long enough
    series: tuple[str, ...] = ()


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

    def __init__(
        self,
        rules: RuleSet,
        *,
        flap_window_ms: int = DEFAULT_FLAP_WINDOW_MS,
        flap_changes: int = DEFAULT_FLAP_CHANGES,
    ) -> None:
        self.rules = rules
        self.flap_window_ms = flap_window_ms
        self.flap_changes = flap_changes
        # One evaluation at a time: `observe()` runs in a worker thread, `/explain` reads the history.
        self.lock = threading.Lock()
        self.history = History(retention_ms=max(rules.history_ms, 1))
        self.states: dict[str, _RuleState] = {}
        self.scrape_state = _RuleState()
        self.present: frozenset[str] = frozenset()  # metric names of the last good page
        self.last_good_ms: int | None = None
        self.verdict: Verdict | None = None
        self.errors: dict[str, str] = {}  # check -> last evaluation error, for the log
        self.changes: list[StateChange] = []  # of the last evaluation
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
        with self.lock:
            return self._observe(report)

    def _observe(self, report: ScrapeReport) -> Verdict:
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
        rule_checks = self.evaluate_rules(t, report.ok)
        checks = [self._scrape_check(report), *rule_checks]
        flapping = []
        for check in checks:
            state = self.scrape_state if check.name == SCRAPE_CHECK else self.states.get(check.name)
            if state is not None and self._flips(state, t) >= self.flap_changes:
                flapping.append((check.name, len(state.flips)))
        self.verdict = Verdict(at_ms=t, checks=tuple(checks), changes=tuple(self.changes), flapping=tuple(flapping))
        return self.verdict

    def evaluate_rules(self, t: int, scrape_ok: bool = True) -> list[CheckResult]:
        """Every rule at `t` over the history as it stands, stepping their states.

        `observe()` calls it after storing a scrape; `adapter test` after loading its input series.
        """
        self.changes = []
        checks = []
        for rule in self.rules.rules:
            state = self.states.setdefault(rule.name, _RuleState())
            reads_page = rule.metric_names is None or not rule.metric_names <= SYNTHETIC
            if not scrape_ok and reads_page and state.last is not None:
                checks.append(self._kept(state.last))
                continue
            outcome = self._evaluate(rule, state, t)
            state.last = self._step(outcome, state, t, rule=rule)
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
        outcome = _Outcome(active=not report.ok, check=check)
        self.scrape_state.last = self._step(outcome, self.scrape_state, report.t_ms, for_ms=spec.for_ms)
        return self.scrape_state.last

    def _holds(self, expr: Expr, t: int) -> tuple[bool, float | None, tuple[str, ...], str | None]:
        """Whether an alerting condition holds at `t`: its value, the series that make it true, and why."""
        result = evaluate(expr, self.history, t)
        if isinstance(result, InstantVector):
            samples = result.samples
            if not samples:
                return False, None, (), None
            first = samples[0]
            more = f" and {len(samples) - 1} more series" if len(samples) > 1 else ""
            labels = [(k, v) for k, v in first.labels if k != "__name__"]
            series = tuple(_format_labels(s.labels) or "{}" for s in samples[:MAX_CHANGE_SERIES])
            return True, first.value, series, f"{_format_value(first.value)}{_format_labels(labels)}{more}"
        if isinstance(result, Scalar):
            value = result.value
            return value != 0 and not math.isnan(value), value, (), _format_value(value)
        return True, None, (), "the expression gave a string, not a vector or a scalar"

    def _evaluate(self, rule: Rule, state: _RuleState, t: int) -> _Outcome:
        severity = rule.severity
        try:
            active, value, series, shown = self._holds(rule.expr, t)
        except PromQLError as exc:
            self.errors[rule.name] = str(exc)
            check = self._firing(rule, severity, value=None, reason=f"evaluation error: {exc}")
            return _Outcome(active=True, check=check)
        self.errors.pop(rule.name, None)
        reason = f"{rule.expr_text} = {shown}" if active and value is not None else shown if active else None
        if not active and self._no_data(rule):
            if rule.no_data == "ok":
                check = CheckResult(
                    name=rule.name,
                    group=rule.group,
                    severity=severity,
                    state="no_data",
                    reason="no data (counted as ok)",
                    description=rule.description,
                )
                return _Outcome(active=False, check=check)
            severity = "warn" if rule.no_data == "warn" else "fail"
            names = ", ".join(sorted(rule.metric_names or ())) or "any series"
            check = self._firing(rule, severity, value=None, reason=f"no data: {names} absent from the target's page")
            return _Outcome(active=True, check=dataclasses.replace(check, state="no_data"))
        return _Outcome(active=active, check=self._firing(rule, severity, value=value, reason=reason), series=series)

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

    def _recovered(self, rule: Rule | None, t: int) -> tuple[bool, str | None]:
        """Whether a firing check whose condition stopped holding may recover, and what it waits for."""
        if rule is None or rule.recover is None:
            return True, None
        try:
            holds, _, _, shown = self._holds(rule.recover, t)
        except PromQLError as exc:
            return False, f"recover: evaluation error: {exc}"
        if holds:
            return True, f"recover holds: {rule.recover_text} = {shown}"
        return False, f"the condition no longer holds; failing until {rule.recover_text}"

    def _step(
        self, outcome: _Outcome, state: _RuleState, t: int, *, rule: Rule | None = None, for_ms: int | None = None
    ) -> CheckResult:
        """The state machine: ok -> pending (held for less than `for`) -> firing -> recovering -> ok.

        As Prometheus 2.42 steps an alert, for the rule as a whole: pending becomes firing once the
        condition has held for `for`; a firing check whose condition stops holding keeps firing for
        `keep_firing_for` (here: `recovering`), counted from the first evaluation it did not hold,
        and a pending one goes back to ok at once. `recover`, when given, must hold for the check to
        leave firing, and for the whole of `keep_firing_for`.
        """
        held = outcome.check
        hold_ms = rule.for_ms if rule is not None else for_ms or 0
        keep_ms = rule.keep_firing_for_ms if rule is not None else 0
        old_shown = state.last.state if state.last is not None else "ok"
        condition = (held.reason or "condition holds")[:MAX_REASON]
        if outcome.active:
            state.recover_since_ms = None
            if state.phase in ("ok",) or state.active_since_ms is None:
                state.active_since_ms = t
            if state.phase in ("firing", "recovering") or t - state.active_since_ms >= hold_ms:
                state.phase = "firing"
            else:
                state.phase = "pending"
        elif state.phase in ("firing", "recovering"):
            # No data counted as ok is a recovery too: `recover` could not hold over absent series.
            recovered, waits = (True, held.reason) if held.state == "no_data" else self._recovered(rule, t)
            if not recovered:
                state.phase, state.recover_since_ms = "firing", None
                condition = (waits or condition)[:MAX_REASON]
            else:
                if state.recover_since_ms is None:
                    state.recover_since_ms = t
                if t - state.recover_since_ms < keep_ms:
                    state.phase = "recovering"
                    condition = (waits or "the condition no longer holds")[:MAX_REASON]
                else:
                    state.phase = "ok"
        else:
            state.phase = "ok"
        if state.phase == "ok":
            state.active_since_ms = state.recover_since_ms = None

        if state.phase == "ok":
            check = held if held.state == "no_data" and not outcome.active else dataclasses.replace(held, reason=None)
            check = dataclasses.replace(check, state="no_data" if held.state == "no_data" else "ok")
        elif state.phase == "pending":
            waited = t - (state.active_since_ms or t)
            pending = f"pending for {_format_for(waited)} of {_format_for(hold_ms)}: {condition}"
            check = dataclasses.replace(
                held, state="pending", reason=pending[:MAX_REASON], wait_ms=hold_ms, condition=condition
            )
        else:
            fails = held.severity == "fail"
            if outcome.active:
                state.last_value = held.value
                check = dataclasses.replace(held, failing=fails, warning=not fails, reason=condition)
            else:
                # Kept failing by the hysteresis: the value that made it fail is the one shown.
                recovering = state.phase == "recovering"
                waited = t - (state.recover_since_ms or t)
                text = f"recovering for {_format_for(waited)} of {_format_for(keep_ms)}: {condition}"
                check = dataclasses.replace(
                    held,
                    state="recovering" if recovering else "firing",
                    failing=fails,
                    warning=not fails,
                    value=state.last_value,
                    reason=(text if recovering else condition)[:MAX_REASON],
                    wait_ms=keep_ms if recovering else 0,
                    condition=condition,
                )
        changed = check.state != old_shown
        if changed or state.since_ms is None:
            state.since_ms = t
        check = dataclasses.replace(check, since_ms=state.since_ms)
        if changed:
            self._changed(state, check, old_shown, t, outcome.series)
        return check

    def _flips(self, state: _RuleState, t: int) -> int:
        """How often the check's verdict flipped within the window ending at `t`."""
        flips = state.flips
        while flips and flips[0] <= t - self.flap_window_ms:
            flips.popleft()
        return len(flips)

    def _changed(self, state: _RuleState, check: CheckResult, old: str, t: int, series: tuple[str, ...]) -> None:
        bad = check.failing or check.warning
        was_bad = state.last is not None and (state.last.failing or state.last.warning)
        if bad != was_bad:
            state.flips.append(t)
            self._flips(state, t)
        self.changes.append(
            StateChange(
                check=check.name,
                group=check.group,
                old=old,
                new=check.state,
                at_ms=t,
                value=check.value,
                series=series,
                reason=check.reason,
            )
        )
