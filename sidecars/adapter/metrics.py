"""The adapter's own series (`adapter_*`), on the sidecar's registry; labels stay bounded."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FAILURE_REASONS = (
    "refused", "timeout", "http_status", "too_large", "too_many_series", "parse_error", "decode_error", "error",
)  # fmt: skip
CHECK_STATES = ("ok", "pending", "firing", "recovering", "no_data")


class AdapterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.scrape_duration = Histogram(
            "adapter_scrape_duration_seconds",
            "Time of one scrape of the target: request, body, decompression and parsing.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.scrapes = Counter("adapter_scrapes", "Scrapes attempted.", registry=registry)
        self.scrape_failures = Counter(
            "adapter_scrape_failures", "Failed scrapes by reason.", ["reason"], registry=registry
        )
        for reason in FAILURE_REASONS:
            self.scrape_failures.labels(reason=reason)
        self.parse_errors = Counter(
            "adapter_parse_errors", "Pages rejected by the exposition parser.", registry=registry
        )
        self.duplicate_series = Counter(
            "adapter_duplicate_series", "Series repeated within one page (the first sample is kept).", registry=registry
        )
        self.series = Gauge("adapter_scrape_series", "Series kept from the last successful scrape.", registry=registry)
        self.unchecked_lines = Gauge(
            "adapter_scrape_unchecked_lines",
            "Lines of the last page skipped unparsed by the rules' family filter: a malformed one fails no scrape.",
            registry=registry,
        )
        self.page_bytes = Gauge("adapter_scrape_bytes", "Size of the last page (decompressed).", registry=registry)
        self.check_state = Gauge(
            "adapter_check_state", "1 for the state each check is in.", ["check", "state"], registry=registry
        )
        self.state_changes = Counter(
            "adapter_check_state_changes",
            "Changes of a check's state, by the state it left and the one it entered.",
            ["check", "from", "to"],
            registry=registry,
        )
        self.check_failing = Gauge(
            "adapter_check_failing",
            "1 while a check fails (its condition held for its `for` duration).",
            ["check", "group", "severity"],
            registry=registry,
        )
        self.rule_reloads = Counter(
            "adapter_rule_reloads", "Rules file reloads by result (ok, rejected).", ["result"], registry=registry
        )
        self.rules = Gauge("adapter_rules", "Rules in force.", registry=registry)
        self.evaluation_errors = Counter(
            "adapter_rule_evaluation_errors", "Rule evaluations that raised an error.", ["check"], registry=registry
        )
        self._known: dict[str, tuple[str, str]] = {}

    def set_check(self, name: str, group: str, severity: str, state: str, failing: bool) -> None:
        previous = self._known.get(name)
        if previous is not None and previous != (group, severity):
            self.check_failing.remove(name, *previous)
        self._known[name] = (group, severity)
        for s in CHECK_STATES:
            self.check_state.labels(check=name, state=s).set(1 if s == state else 0)
        self.check_failing.labels(check=name, group=group, severity=severity).set(1 if failing else 0)

    def forget_checks(self, keep: set[str]) -> None:
        """Removes the series of checks no longer defined, so the label set stays bounded."""
        for name in [n for n in self._known if n not in keep]:
            group, severity = self._known.pop(name)
            self.check_failing.remove(name, group, severity)
            for s in CHECK_STATES:
                self.check_state.remove(name, s)
                for t in CHECK_STATES:
                    with contextlib.suppress(KeyError):
                        self.state_changes.remove(name, s, t)
