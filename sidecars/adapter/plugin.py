"""The adapter sidecar: scrapes the app's /metrics and serves /healthz (and more) decided by rules.

The scrape loop runs in the background; after each scrape the evaluator computes a verdict that the
listener serves until the next one, so a probe never waits for a scrape. Big pages are decoded and
parsed in a worker thread; while one runs, the interpreter's switch interval is lowered so the event
loop thread gets the GIL back within a fraction of a millisecond and probes stay fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sidecars.adapter.evaluator import Evaluator, ScrapeReport, StateChange, Verdict
from sidecars.adapter.exposition import SampleTuple, family_names
from sidecars.adapter.metrics import AdapterMetrics
from sidecars.adapter.outputs import Output, load_output
from sidecars.adapter.rules import RulesError, RuleSet, rules_watcher
from sidecars.adapter.scraper import Scrape, Scraper, new_session
from sidecars.adapter.settings import AdapterSettings
from sidecars.adapter.state import State
from sidecars.core import Check, Context, Sidecar, heap
from sidecars.core.http import start_server
from sidecars.core.redact import redact_url, register_secrets
from sidecars.core.registry import PluginError
from sidecars.core.telemetry import LogLimiter
from sidecars.core.watch import MountedFiles

# While a parse thread runs, the loop thread waits at most this long for the GIL (default 5 ms).
SWITCH_INTERVAL_SECS = 0.0005


@dataclass(frozen=True)
class Serving:
    """What `lifespan()` built and opened, for the scrapes, the reloads and the listener."""

    evaluator: Evaluator
    scraper: Scraper
    outputs: tuple[Output, ...]
    listen_port: int


class Adapter(Sidecar[AdapterSettings]):
    name = "adapter"
    description = "scrapes the app's Prometheus /metrics and serves /healthz (and more) decided by rules"
    Settings = AdapterSettings

    @classmethod
    def commands(cls) -> Mapping[str, Callable[[list[str]], int]]:
        from sidecars.adapter.check import main as check
        from sidecars.adapter.ruletest import main as test

        return {"check": check, "test": test}

    @classmethod
    def file_schemas(cls) -> Mapping[str, Mapping[str, Any]]:
        from sidecars.adapter.rules_schema import RULES_SCHEMA

        return {"rules": RULES_SCHEMA}

    def __init__(self, settings: AdapterSettings, context: Context) -> None:
        super().__init__(settings, context)
        self.state = State()
        self.metrics = AdapterMetrics(context.metrics.registry)
        self.rules: MountedFiles[RuleSet] | None = None
        self.scrape_attempted = False
        self.last_loop_at = time.monotonic()
        self._serving: Serving | None = None
        self._stopping = False
        # A failing scrape or rule is logged when it starts, then at most every ten minutes while it
        # lasts (the metrics count every one); a good scrape resets the scrape's lines.
        self._lines = LogLimiter(self.log, 600.0)
        # One line per state change; a check flapping on every scrape is held to 20 a minute.
        self._changes = LogLimiter(self.log, 60.0, burst=20)
        self._outages = 0
        # Pages an output was still reading when they were replaced: released once it is done, never by
        # dropping the last reference on the loop (one C call freeing 100k samples).
        self._retired: list[Scrape] = []

    @property
    def serving(self) -> Serving:
        """What `lifespan()` opened: `run()`, its scrapes and the rules reloads happen only within it."""
        if self._serving is None:
            raise RuntimeError("the adapter's lifespan() has not been entered")
        return self._serving

    @property
    def listen_port(self) -> int:
        """The port the listener is bound to (the one chosen when `listen_port` is 0)."""
        return self.serving.listen_port

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        settings = self.settings
        rules = RuleSet()
        if settings.rules_file is not None:
            self.rules = rules_watcher(
                settings.rules_file,
                poll_secs=settings.rules_poll_secs,
                log=self.log,
                on_rules=self.set_rules,
                on_error=self.reject_rules,
            )
            rules = self.rules.load()  # a bad file at start-up stops the sidecar
        self.state.rules = rules
        self.metrics.rules.set(len(rules.rules))
        evaluator = Evaluator(
            rules, flap_window_ms=round(settings.flap_window_secs * 1000), flap_changes=settings.flap_changes
        )
        self.state.evaluator = evaluator
        try:
            outputs = tuple(load_output(name)(self.state, settings) for name in settings.outputs)
        except PluginError as exc:
            raise ValueError(f"outputs: {exc}") from exc
        for output in outputs:
            output.start(self.context)
        previous_interval = sys.getswitchinterval()
        async with contextlib.AsyncExitStack() as stack:
            session = new_session()
            stack.push_async_callback(session.close)
            authorization = settings.target_authorization()
            if authorization is not None:
                # The header holds the secret in another form (base64 of user:password): masked too,
                # wherever text is shown, should a library ever quote it.
                register_secrets((authorization, authorization.partition(" ")[2]))
            scraper = Scraper(
                session,
                settings.target_url,
                settings.scrape_timeout_secs,
                settings.max_body_bytes,
                max_series=settings.max_series,
                authorization=authorization,
            )
            for push_authorization in (settings.push_authorization(), settings.otlp_authorization()):
                if push_authorization is not None:
                    register_secrets((push_authorization, push_authorization.partition(" ")[2]))
            del authorization, push_authorization  # not left in this frame, which lives as long as the process
            stack.callback(scraper.close)
            app = web.Application()
            for output in outputs:
                app.add_routes(output.routes())
            server = await start_server(app, settings.listen_host, settings.listen_port)
            stack.push_async_callback(server.close)
            listen_port = server.port
            self._serving = Serving(evaluator, scraper, outputs, listen_port)
            sys.setswitchinterval(min(previous_interval, SWITCH_INTERVAL_SECS))
            stack.callback(sys.setswitchinterval, previous_interval)
            self.log.info(
                "adapter listening",
                port=listen_port,
                target=redact_url(settings.target_url),
                rules=len(rules.rules),
                outputs=settings.outputs,
            )
            yield

    def wanted_families(self) -> tuple[frozenset[str] | None, frozenset[str] | None]:
        """The metric names to parse (the rules' and the outputs'), and the rules' alone; None: all."""
        names = self.state.rules.metric_names()
        if names is None:
            return None, None
        rule_families = family_names(names)
        wanted = set(rule_families)
        for output in self.serving.outputs:
            extra = output.families()
            if extra is None:
                return None, rule_families
            wanted |= extra
        return frozenset(wanted), rule_families

    async def run(self, ready: Callable[[], None]) -> None:
        if self.rules is not None:
            self.context.spawn("rules-watcher", self.rules.run)
        interval = self.settings.scrape_interval_secs
        next_at = time.monotonic()
        while not self._stopping:
            self.last_loop_at = time.monotonic()
            await self.scrape_once()
            if not self.scrape_attempted:
                self.scrape_attempted = True
                ready()
            # Fixed-rate schedule; a scrape that overran skips ahead instead of bunching up.
            next_at += interval
            now = time.monotonic()
            if next_at < now:
                next_at = now + interval - (now - next_at) % interval
            await asyncio.sleep(next_at - now)

    async def scrape_once(self) -> Scrape:
        serving, metrics = self.serving, self.metrics
        scrape = await serving.scraper.scrape(*self.wanted_families())
        metrics.scrapes.inc()
        self.context.metrics.events_in.inc()
        metrics.scrape_duration.observe(scrape.duration_secs)
        if scrape.result is not None:
            metrics.series.set(len(scrape.result.samples))
            metrics.page_bytes.set(scrape.bytes)
            metrics.unchecked_lines.set(scrape.result.unchecked_lines)
            if scrape.result.duplicates:
                metrics.duplicate_series.inc(scrape.result.duplicates)
            report = ScrapeReport(
                t_ms=scrape.t_ms,
                ok=True,
                samples=scrape.rule_samples,
                duration_secs=scrape.duration_secs,
                samples_scraped=len(scrape.result.samples),
            )
        else:
            failure = scrape.error
            assert failure is not None  # a scrape has a result or an error
            self._log_failure(failure.reason, failure.detail)
            report = ScrapeReport(t_ms=scrape.t_ms, ok=False, duration_secs=scrape.duration_secs, reason=str(failure))
            for output in serving.outputs:
                output.on_scrape_failed(scrape)
        # In a thread: a rule over a big family appends and reads many series; pure Python, so the
        # loop gets the GIL back every switch interval and keeps answering probes meanwhile.
        verdict = await asyncio.to_thread(serving.evaluator.observe, report)
        self.state.last_scrape = scrape
        if scrape.ok:
            previous, self.state.last_good = self.state.last_good, scrape
            for output in serving.outputs:
                output.on_scrape(scrape)
            if previous is not None and previous.result is not None:
                self._retired.append(previous)
                previous = None
        garbage: list[list[SampleTuple]] = []
        for old in [r for r in self._retired if not any(o.reading(r) for o in serving.outputs)]:
            self._retired.remove(old)
            assert old.result is not None
            garbage += [old.result.samples, old.rule_samples]
        metrics.retained_pages.set(len(self._retired))
        self.state.verdict = verdict
        if scrape.error is not None:
            # Counted once its verdict is in force: whoever sees the count sees the check that follows.
            metrics.scrape_failures.labels(reason=scrape.error.reason).inc()
            if scrape.error.reason == "parse_error":
                metrics.parse_errors.inc()
        for check in verdict.checks:
            metrics.set_check(check.name, check.group, check.severity, check.state, check.failing)
        for change in verdict.changes:
            self._state_changed(change, verdict)
        for name, error in serving.evaluator.errors.items():
            metrics.evaluation_errors.labels(check=name).inc()
            self._lines.warning("rule evaluation failed", key=f"rule:{name}:{error}", check=name, error=error)
        self.context.metrics.events_out.inc()
        if garbage:
            # Freeing a big page's samples is one long C call; done piecewise in a thread.
            await asyncio.to_thread(heap.release, garbage)
        return scrape

    def _state_changed(self, change: StateChange, verdict: Verdict) -> None:
        self.metrics.state_changes.labels(check=change.check, **{"from": change.old, "to": change.new}).inc()
        check = verdict.by_name[change.check]
        self._changes.write(
            "warning" if check.failing else "info",
            "check state changed",
            key=f"change:{change.check}",
            check=change.check,
            group=change.group,
            old=change.old,
            new=change.new,
            value=change.value,
            series=list(change.series),
            reason=change.reason,
        )

    def _log_failure(self, reason: str, detail: str) -> None:
        last = self.state.last_scrape
        if last is not None and last.error is None:
            self._outages += 1  # a new outage: its lines are keyed afresh, so said at once
        key = f"scrape:{self._outages}:{reason}"
        self._lines.warning("scrape failed", key=key, reason=reason, detail=detail)

    def set_rules(self, rules: RuleSet) -> None:
        self.serving.evaluator.set_rules(rules)
        self.state.rules = rules
        self.metrics.rules.set(len(rules.rules))
        self.metrics.rule_reloads.labels(result="ok").inc()
        self.metrics.forget_checks({r.name for r in rules.rules} | {"scrape"})
        self.log.info("rules reloaded", source=rules.source, rules=len(rules.rules))

    def reject_rules(self, error: Exception) -> None:
        problems = error.problems if isinstance(error, RulesError) else [str(error)]
        self.metrics.rule_reloads.labels(result="rejected").inc()
        self.log.error(
            "rules rejected; the last good rules stay in force", source=str(self.settings.rules_file), problems=problems
        )

    async def drain(self) -> None:
        # Nothing is in flight that must be kept; the listener answers until the process exits.
        self._stopping = True

    def _loop_alive(self) -> str | None:
        # Only the process itself: a slow or dead app makes scrapes fail, it never stalls the loop.
        # Generous: parsing a page of many megabytes may take seconds beyond the scrape timeout.
        budget = max(60.0, 3 * self.settings.scrape_interval_secs + self.settings.scrape_timeout_secs + 30)
        idle = time.monotonic() - self.last_loop_at
        return None if idle < budget else f"scrape loop idle for {idle:.0f} s"

    def checks(self) -> Sequence[Check]:
        # Readiness never depends on the app being healthy: the first scrape only has to be attempted.
        # A rejected rules reload keeps the last good rules (logged, counted): shown, it does not flip readiness.
        return [
            Check("first-scrape", lambda: None if self.scrape_attempted else "no scrape attempted yet"),
            Check("scrape-loop", self._loop_alive, readiness=False, liveness=True),
            Check("rules-reload", self._rules_reload, warn=True),
            Check("rules-flapping", self._flapping, warn=True),
        ]

    def _flapping(self) -> str | None:
        verdict = self.state.verdict
        if verdict is None or not verdict.flapping:
            return None
        window = f"{self.settings.flap_window_secs:g} s"
        named = ", ".join(f"{name} ({flips} flips)" for name, flips in verdict.flapping[:10])
        more = f" and {len(verdict.flapping) - 10} more" if len(verdict.flapping) > 10 else ""
        return f"flapping within {window}: {named}{more}; keep_firing_for or recover would calm them"

    def _rules_reload(self) -> str | None:
        error = self.rules.error if self.rules is not None else None
        return None if error is None else f"last reload rejected, previous rules in force: {error}"
