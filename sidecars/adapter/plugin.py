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

from aiohttp import web

from sidecars.adapter.evaluator import Evaluator, ScrapeReport
from sidecars.adapter.exposition import SampleTuple, family_names
from sidecars.adapter.metrics import AdapterMetrics
from sidecars.adapter.outputs import Output, OutputLoadError, load_output
from sidecars.adapter.rules import RulesError, RuleSet, RulesWatcher, load_rules
from sidecars.adapter.scraper import Scrape, Scraper, new_session
from sidecars.adapter.settings import AdapterSettings
from sidecars.adapter.state import State
from sidecars.core import Check, Context, Sidecar
from sidecars.core.redact import redact_url, register_secrets

# While a parse thread runs, the loop thread waits at most this long for the GIL (default 5 ms).
SWITCH_INTERVAL_SECS = 0.0005


def _release(lists: list[list[SampleTuple]]) -> None:
    for items in lists:
        while items:
            del items[-20_000:]


class Adapter(Sidecar[AdapterSettings]):
    name = "adapter"
    description = "scrapes the app's Prometheus /metrics and serves /healthz (and more) decided by rules"
    Settings = AdapterSettings

    @classmethod
    def commands(cls) -> Mapping[str, Callable[[list[str]], int]]:
        from sidecars.adapter.check import main as check
        from sidecars.adapter.ruletest import main as test

        return {"check": check, "test": test}

    def __init__(self, settings: AdapterSettings, context: Context) -> None:
        super().__init__(settings, context)
        self.state = State()
        self.outputs: list[Output] = []
        self.evaluator: Evaluator | None = None
        self.scraper: Scraper | None = None
        self.listen_port: int | None = None
        self.rules_error: str | None = None
        self.scrape_attempted = False
        self.last_loop_at = time.monotonic()
        self._metrics: AdapterMetrics | None = None
        self._stopping = False
        self._logged_errors: dict[str, str] = {}

    @property
    def metrics(self) -> AdapterMetrics:
        assert self._metrics is not None, "lifespan not entered"
        return self._metrics

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        settings = self.settings
        self._metrics = AdapterMetrics(self.context.metrics.registry)
        rules = RuleSet()
        if settings.rules_file is not None:
            rules = load_rules(settings.rules_file)  # a bad file at start-up stops the sidecar
        self.state.rules = rules
        self.metrics.rules.set(len(rules.rules))
        self.evaluator = Evaluator(rules)
        try:
            self.outputs = [load_output(name)(self.state, settings) for name in settings.outputs]
        except OutputLoadError as exc:
            raise ValueError(f"outputs: {exc}") from exc
        for output in self.outputs:
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
            self.scraper = Scraper(
                session,
                settings.target_url,
                settings.scrape_timeout_secs,
                settings.max_body_bytes,
                max_series=settings.max_series,
                authorization=authorization,
            )
            push_authorization = settings.push_authorization()
            if push_authorization is not None:
                register_secrets((push_authorization, push_authorization.partition(" ")[2]))
            del authorization, push_authorization  # not left in this frame, which lives as long as the process
            stack.callback(self.scraper.close)
            app = web.Application()
            for output in self.outputs:
                app.add_routes(output.routes())
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, settings.listen_host, settings.listen_port, reuse_address=True)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.listen_port = sockets[0].getsockname()[1] if sockets else settings.listen_port
            sys.setswitchinterval(min(previous_interval, SWITCH_INTERVAL_SECS))
            stack.callback(sys.setswitchinterval, previous_interval)
            self.log.info(
                "adapter listening",
                port=self.listen_port,
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
        for output in self.outputs:
            extra = output.families()
            if extra is None:
                return None, rule_families
            wanted |= extra
        return frozenset(wanted), rule_families

    async def run(self, ready: Callable[[], None]) -> None:
        if self.settings.rules_file is not None:
            watcher = RulesWatcher(
                self.settings.rules_file, self.set_rules, self.reject_rules, self.settings.rules_poll_secs
            )
            self.context.spawn("rules-watcher", watcher.run)
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
        assert self.scraper is not None and self.evaluator is not None
        metrics = self.metrics
        scrape = await self.scraper.scrape(*self.wanted_families())
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
                scrape.t_ms, True, scrape.rule_samples, scrape.duration_secs,
                samples_scraped=len(scrape.result.samples),
            )  # fmt: skip
        else:
            assert scrape.error is not None
            metrics.scrape_failures.labels(reason=scrape.error.reason).inc()
            if scrape.error.reason == "parse_error":
                metrics.parse_errors.inc()
            self._log_failure(scrape)
            report = ScrapeReport(scrape.t_ms, False, (), scrape.duration_secs, str(scrape.error))
            for output in self.outputs:
                output.on_scrape_failed(scrape)
        # In a thread: a rule over a big family appends and reads many series; pure Python, so the
        # loop gets the GIL back every switch interval and keeps answering probes meanwhile.
        verdict = await asyncio.to_thread(self.evaluator.observe, report)
        self.state.last_scrape = scrape
        garbage: list[list[SampleTuple]] = []
        if scrape.ok:
            previous, self.state.last_good = self.state.last_good, scrape
            for output in self.outputs:
                output.on_scrape(scrape)
            in_use = previous is not None and any(o.reading(previous) for o in self.outputs)
            if previous is not None and previous.result is not None and not in_use:
                # Freeing a big page's samples is one long C call; done piecewise in a thread below.
                garbage = [previous.result.samples, previous.rule_samples]
                previous = None
        self.state.verdict = verdict
        for check in verdict.checks:
            metrics.set_check(check.name, check.group, check.severity, check.state, check.failing)
        for name, error in self.evaluator.errors.items():
            metrics.evaluation_errors.labels(check=name).inc()
            if self._logged_errors.get(name) != error:  # logged once, not every interval
                self.log.warning("rule evaluation failed", check=name, error=error)
        self._logged_errors = dict(self.evaluator.errors)
        self.context.metrics.events_out.inc()
        if garbage:
            await asyncio.to_thread(_release, garbage)
        return scrape

    def _log_failure(self, scrape: Scrape) -> None:
        # Logged when the reason changes, not on every interval of a long outage.
        assert scrape.error is not None
        last = self.state.last_scrape
        if last is None or last.error is None or last.error.reason != scrape.error.reason:
            self.log.warning("scrape failed", reason=scrape.error.reason, detail=scrape.error.detail)

    def set_rules(self, rules: RuleSet) -> None:
        assert self.evaluator is not None
        self.evaluator.set_rules(rules)
        self.state.rules = rules
        self.rules_error = None
        self.metrics.rules.set(len(rules.rules))
        self.metrics.rule_reloads.labels(result="ok").inc()
        self.metrics.forget_checks({r.name for r in rules.rules} | {"scrape"})
        self.log.info("rules reloaded", source=rules.source, rules=len(rules.rules))

    def reject_rules(self, error: RulesError) -> None:
        self.rules_error = "; ".join(error.problems)[:500]
        self.metrics.rule_reloads.labels(result="rejected").inc()
        self.log.error(
            "rules rejected; the last good rules stay in force", source=error.source, problems=error.problems
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
        ]

    def _rules_reload(self) -> str | None:
        if self.rules_error is None:
            return None
        return f"last reload rejected, previous rules in force: {self.rules_error}"
