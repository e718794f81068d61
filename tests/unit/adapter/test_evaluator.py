"""Verdicts over time: `for:` (pending -> firing), no data, warn severity, scrape failures."""

from __future__ import annotations

from sidecars.adapter.evaluator import Evaluator, ScrapeReport
from sidecars.adapter.rules import parse_rules

RULES = """
scrape: {for: 20s}
rules:
  - name: queue
    expr: queue_depth > 100
    for: 30s
  - name: stalled
    expr: changes(heartbeat_total[1m]) == 0
    group: liveness
    no_data: fail
  - name: slow
    expr: latency_seconds > 1
    severity: warn
  - name: down
    expr: up == 0
    group: liveness
"""


def page(queue: float, heartbeat: float | None = None, latency: float = 0.1) -> ScrapeReport:
    samples = [("queue_depth", (), queue, None), ("latency_seconds", (), latency, None)]
    if heartbeat is not None:
        samples.append(("heartbeat_total", (), heartbeat, None))
    return samples  # type: ignore[return-value]


def observe(ev: Evaluator, t_s: int, samples: object = None, ok: bool = True) -> dict[str, tuple[str, bool]]:
    report = ScrapeReport(
        t_ms=t_s * 1000,
        ok=ok,
        samples=samples if ok else (),  # type: ignore[arg-type]
        duration_secs=0.01,
        reason=None if ok else "refused: nothing listens",
    )
    verdict = ev.observe(report)
    return {c.name: (c.state, c.failing) for c in verdict.checks}


def test_for_goes_pending_then_firing_and_resets_when_the_condition_clears() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    hb = 0.0
    states = []
    for t, depth in [(0, 10), (10, 500), (20, 500), (39, 500), (40, 500), (50, 10), (60, 500)]:
        hb += 1
        states.append(observe(ev, t, page(depth, hb))["queue"])
    assert states == [
        ("ok", False),
        ("pending", False),
        ("pending", False),
        ("pending", False),
        ("firing", True),  # held for 30 s: 10 -> 40
        ("ok", False),
        ("pending", False),  # the clock starts again
    ]


def test_no_data_follows_the_rule_and_a_stalled_heartbeat_fails() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    got = observe(ev, 0, page(1))
    assert got["stalled"] == ("no_data", True)  # no_data: fail, heartbeat_total absent
    verdict = ev.verdict
    assert verdict is not None and "absent" in (verdict.by_name["stalled"].reason or "")
    observe(ev, 10, page(1, 1))
    assert observe(ev, 20, page(1, 2))["stalled"] == ("ok", False)
    assert observe(ev, 30, page(1, 2))["stalled"] == ("ok", False)  # changed within the last minute
    assert observe(ev, 85, page(1, 2))["stalled"] == ("firing", True)  # no change for 65 s


def test_no_data_ok_is_healthy() -> None:
    ev = Evaluator(parse_rules("rules: [{name: q, expr: missing_metric > 1}]", "x"))
    assert observe(ev, 0, page(1))["q"] == ("no_data", False)


def test_warn_severity_is_reported_but_does_not_fail() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    observe(ev, 0, page(1, 1, latency=5))
    slow = ev.verdict.by_name["slow"]  # type: ignore[union-attr]
    assert (slow.state, slow.failing, slow.warning, slow.status) == ("firing", False, True, "warn")
    assert slow.value == 5 and "latency_seconds > 1 = 5" in (slow.reason or "")


def test_a_failed_scrape_keeps_last_verdicts_sets_up_to_zero_and_fails_scrape_after_its_for() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    observe(ev, 0, page(500, 1))
    observe(ev, 31, page(500, 2))
    assert ev.verdict.by_name["queue"].failing  # type: ignore[union-attr]
    got = observe(ev, 40, ok=False)
    assert got["scrape"] == ("pending", False)  # scrape: for 20s
    assert got["down"] == ("firing", True)  # `up == 0` reads only synthetic series: evaluated
    assert got["queue"] == ("firing", True)  # kept from the last good scrape
    assert "last scrape failed" in (ev.verdict.by_name["queue"].reason or "")  # type: ignore[union-attr]
    got = observe(ev, 61, ok=False)
    assert got["scrape"] == ("firing", True)
    assert "refused" in (ev.verdict.by_name["scrape"].reason or "")  # type: ignore[union-attr]
    got = observe(ev, 70, page(1, 3))
    assert got["scrape"] == ("ok", False) and got["down"] == ("ok", False) and got["queue"] == ("ok", False)


def test_reload_keeps_for_state_of_unchanged_rules() -> None:
    ev = Evaluator(parse_rules(RULES, "x"))
    observe(ev, 0, page(500, 1))
    ev.set_rules(parse_rules(RULES.replace("latency_seconds > 1", "latency_seconds > 2"), "x"))
    assert observe(ev, 30, page(500, 2))["queue"] == ("firing", True)
    ev.set_rules(parse_rules(RULES.replace("queue_depth > 100", "queue_depth > 99"), "x"))
    assert observe(ev, 40, page(500, 3))["queue"] == ("pending", False)  # changed rule: clock restarts
