"""What the scrape loop publishes and the listener serves: replaced whole, never mutated in place."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecars.adapter.evaluator import Evaluator, Verdict
from sidecars.adapter.rules import RuleSet
from sidecars.adapter.scraper import Scrape


@dataclass
class State:
    rules: RuleSet = field(default_factory=RuleSet)
    verdict: Verdict | None = None
    last_scrape: Scrape | None = None
    last_good: Scrape | None = None
    evaluator: Evaluator | None = None  # for /explain, which evaluates again under its lock
