"""Hysteresis: `keep_firing_for:` and `recover:`, the states they add, the changes and flapping reported."""

from __future__ import annotations

import pytest

from sidecars.adapter.evaluator import Evaluator, ScrapeReport, Verdict
from sidecars.adapter.rules import RulesError, parse_rules

RULES = """
rules:
  - name: kept
    expr: queue_depth > 1000
    for: 20s
    keep_firing_for: 30s
  - name: band
    expr: queue_depth > 1000
    recover: queue_depth < 200
  - name: both
    expr: queue_depth > 1000
    recover: queue_depth < 200
    keep_firing_for: 20s
    severity: warn
"""


def observe(ev: Evaluator, t_s: int, depth: float) -> Verdict:
    return ev.observe(ScrapeReport(t_ms=t_s * 1000, ok=True, samples=[("queue_depth", (("job", "app"),), depth, None)]))


def run(ev: Evaluator, steps: list[tuple[int, float]], name: str) -> list[tuple[str, bool]]:
    out = []
    for t, depth in steps:
        check = observe(ev, t, depth).by_name[name]
        out.append((check.state, check.failing or check.warning))
    return out


def test_keep_firing_for_keeps_a_firing_check_failing_then_lets_it_go() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    steps = [(0, 5000), (10, 5000), (20, 5000), (30, 10), (40, 10), (50, 5000), (60, 10), (70, 10), (80, 10), (90, 10)]
    assert run(ev, steps, "kept") == [
        ("pending", False),
        ("pending", False),
        ("firing", True),  # held 20 s
        ("recovering", True),  # keep_firing_for counts from here
        ("recovering", True),
        ("firing", True),  # the condition again: back to firing, the clock stops
        ("recovering", True),  # counted afresh from 60
        ("recovering", True),
        ("recovering", True),  # 80 - 60 = 20 < 30
        ("ok", False),  # 90 - 60 = 30
    ]


def test_a_pending_check_goes_back_to_ok_at_once_as_in_prometheus() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    assert run(ev, [(0, 5000), (10, 10)], "kept") == [("pending", False), ("ok", False)]


def test_recover_holds_a_failing_check_in_its_band_until_the_recovery_expression_holds() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    states = run(ev, [(0, 5000), (10, 500), (20, 900), (30, 150), (40, 500)], "band")
    assert states == [("firing", True), ("firing", True), ("firing", True), ("ok", False), ("ok", False)]
    ev2 = Evaluator(parse_rules(RULES, "x"))
    observe(ev2, 0, 5000)
    band = observe(ev2, 10, 500).by_name["band"]
    assert band.reason == "the condition no longer holds; failing until queue_depth < 200"
    assert band.value == 5000  # the value that made it fail


def test_recover_and_keep_firing_for_together_need_the_recovery_for_the_whole_duration() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    steps = [(0, 5000), (10, 150), (20, 500), (30, 150), (40, 150), (50, 150)]
    assert run(ev, steps, "both") == [
        ("firing", True),
        ("recovering", True),
        ("firing", True),  # out of the recovery band: firing again, though the condition does not hold
        ("recovering", True),
        ("recovering", True),
        ("ok", False),  # recovered for 20 s
    ]
    warned = observe(Evaluator(parse_rules(RULES, "x")), 0, 5000).by_name["both"]
    assert (warned.warning, warned.failing) == (True, False)  # severity warn: warns, never fails


def test_state_changes_say_old_and_new_state_value_and_series() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    first = observe(ev, 0, 5000)
    kept = [c for c in first.changes if c.check == "kept"]
    assert len(kept) == 1
    change = kept[0]
    assert (change.old, change.new, change.value, change.series, change.group) == (
        "ok",
        "pending",
        5000,
        ('{__name__="queue_depth",job="app"}',),
        "readiness",
    )
    assert [c for c in observe(ev, 10, 5000).changes if c.check == "kept"] == []  # no change, nothing said
    assert [(c.old, c.new) for c in observe(ev, 20, 5000).changes if c.check == "kept"] == [("pending", "firing")]
    assert first.by_name["kept"].since_ms == 0
    assert observe(ev, 30, 10).by_name["kept"].since_ms == 30_000


def test_a_check_that_flips_often_is_named_as_flapping_and_forgotten_after_the_window() -> None:
    ev = Evaluator(parse_rules(RULES, "x"), flap_window_ms=60_000, flap_changes=4)
    t = 0
    for depth in (5000, 10, 5000, 10):
        verdict = observe(ev, t, depth)
        t += 10
    assert dict(verdict.flapping) == {"band": 4}
    # `both` flips too, but its keep_firing_for absorbs the short dips: it is not flapping
    assert "both" not in dict(verdict.flapping)
    assert observe(ev, 100, 10).flapping == ()


def test_the_new_fields_are_validated_with_the_rest() -> None:
    text = """
rules:
  - name: a
    expr: x > 1
    keep_firing_for: soon
    recover: 'x <'
  - name: b
    expr: x > 1
    recover: x[5m]
"""
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "f.yaml")
    problems = "\n".join(caught.value.problems)
    assert "rule 'a'.keep_firing_for: expected a duration such as 30s or 5m, got 'soon'" in problems
    assert "rule 'a'.recover:" in problems
    assert "rule 'b'.recover: must give an instant vector or a scalar, not a range vector" in problems


def test_the_recover_expression_reads_its_own_metrics() -> None:
    rules = parse_rules("rules: [{name: a, expr: errors > 10, recover: 'rate(ok_total[10m]) > 1'}]", "f")
    assert rules.metric_names() == frozenset({"errors", "ok_total"})
    assert rules.rules[0].history_ms == 600_000  # the recover window, longer than the lookback of `errors`
