"""`python -m sidecars.adapter check --url URL --rules rules.yaml`: evaluate the rules once, now.

For writing rules against a live app before deploying. Scrapes the URL (twice, `--gap-secs` apart,
when a rule reads a range such as `rate(x[5m])`, since a rate needs two samples), evaluates every
rule, prints one row per check and exits 0 when healthy, 1 when a check fails, 2 when the rules file
is invalid. `for:` durations are not waited for: a condition that holds is shown as firing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from sidecars.adapter.evaluator import CheckResult, Evaluator, ScrapeReport, _format_value
from sidecars.adapter.exposition import family_names
from sidecars.adapter.rules import RulesError, RuleSet, load_rules
from sidecars.adapter.scraper import Scraper, new_session

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2


def table(checks: Sequence[CheckResult], width: int = 60) -> str:
    headers = ("CHECK", "GROUP", "SEVERITY", "STATE", "VALUE", "REASON")
    rows = [
        (
            c.name,
            c.group,
            c.severity,
            "FAILING" if c.failing else "WARNING" if c.warning else c.state,
            "-" if c.value is None else _format_value(c.value),
            (c.reason or "")[:width] + ("..." if c.reason and len(c.reason) > width else ""),
        )
        for c in checks
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


async def evaluate_once(url: str, rules: RuleSet, timeout_secs: float, gap_secs: float) -> list[CheckResult]:
    # `for:` is not waited for here: every rule is evaluated as if its duration had passed.
    immediate = dataclasses.replace(
        rules,
        rules=tuple(dataclasses.replace(r, for_ms=0) for r in rules.rules),
        scrape=dataclasses.replace(rules.scrape, for_ms=0),
    )
    evaluator = Evaluator(immediate)
    names = immediate.metric_names()
    families = None if names is None else family_names(names)
    rounds = 2 if immediate.range_ms > 0 else 1
    async with new_session() as session:
        scraper = Scraper(session, url, timeout_secs, 200_000_000)
        verdict = None
        for i in range(rounds):
            if i:
                await asyncio.sleep(gap_secs)
            scrape = await scraper.scrape(families, families)
            if scrape.result is not None:
                report = ScrapeReport(
                    t_ms=scrape.t_ms, ok=True, samples=scrape.rule_samples, duration_secs=scrape.duration_secs
                )
            else:
                report = ScrapeReport(
                    t_ms=scrape.t_ms, ok=False, duration_secs=scrape.duration_secs, reason=str(scrape.error)
                )
            verdict = evaluator.observe(report)
    assert verdict is not None
    return list(verdict.checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sidecars.adapter check",
        description="Scrape a live /metrics page, evaluate the rules once and print every check.",
    )
    parser.add_argument("--url", required=True, help="the app's metrics URL, e.g. http://127.0.0.1:8080/metrics")
    parser.add_argument("--rules", required=True, type=Path, help="the rules YAML file")
    parser.add_argument("--timeout-secs", type=float, default=10.0, help="timeout of each scrape (default 10)")
    parser.add_argument(
        "--gap-secs", type=float, default=2.0, help="time between the two scrapes rate() needs (default 2)"
    )
    args = parser.parse_args(argv)
    try:
        rules = load_rules(args.rules)
    except RulesError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE
    checks = asyncio.run(evaluate_once(args.url, rules, args.timeout_secs, args.gap_secs))
    print(table(checks))
    failing = [c.name for c in checks if c.failing]
    warnings = [c.name for c in checks if c.warning]
    if failing:
        print(f"\nunhealthy: {', '.join(failing)} failing", file=sys.stderr)
        return EXIT_UNHEALTHY
    print(f"\nhealthy{' (warnings: ' + ', '.join(warnings) + ')' if warnings else ''}", file=sys.stderr)
    return EXIT_HEALTHY
