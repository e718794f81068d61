"""The runtime: one process, one task group, supervision and the shutdown sequence.

Start-up: admin server up (`/livez` 200, `/startupz` 503), the plugin's `lifespan()` entered,
`run(ready)` started under supervision; `ready()` turns `/startupz` and `/readyz` 200.

Shutdown, on SIGTERM/SIGINT, when `run` returns, or when a task crashes past the restart budget:
`/readyz` turns 503, `drain()` runs within what is left of the budget, supervised tasks are cancelled,
the lifespan exits (releasing resources in reverse order), the admin server stops. A second signal
exits at once; if the whole sequence overruns the budget the process exits anyway: a watchdog armed
when shutdown begins ends the process `shutdown_timeout_secs` + 1 s later, from a thread of its own,
so neither a blocked event loop nor a worker thread that never finishes (asyncio waits for its
executor's threads on the way out) can keep it alive. It stays armed until the process exits.

Exit codes: 0 clean stop, 1 fatal (start-up failed, restart budget spent), 2 bad configuration
(from the CLI), 3 the shutdown watchdog ended the process (the shutdown sequence overran its budget),
128+N on a second signal N; 142 (SIGALRM) when even the watchdog thread could not run (a thread
holding the interpreter lock for good): the kernel's alarm is the last resort.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from sidecars.core import limits
from sidecars.core.admin import AdminServer
from sidecars.core.backoff import EQUAL_JITTER, jittered_backoff
from sidecars.core.health import Health, Lifecycle
from sidecars.core.metrics import SidecarMetrics
from sidecars.core.plugin import Sidecar
from sidecars.core.settings import SidecarSettings
from sidecars.core.telemetry import Telemetry
from sidecars.core.watch import MountedFileError

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2
EXIT_WATCHDOG = 3
# After the watchdog's deadline: the kernel's SIGALRM ends a process whose threads cannot run at all.
ALARM_AFTER_WATCHDOG_SECS = 2
BACKOFF_CAP_SECS = 30.0
# Start-up failures of the environment, not of the code: a port taken, a file missing or refused. Their
# message says it all (one log line, no traceback) and a restart in this process would not change them.
ENVIRONMENT_ERRORS = (OSError, MountedFileError)


class _Context:
    """The `Context` handed to the plugin."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def log(self) -> FilteringBoundLogger:
        return self._runtime.log

    @property
    def metrics(self) -> SidecarMetrics:
        return self._runtime.metrics

    @property
    def telemetry(self) -> Telemetry:
        return self._runtime.telemetry

    @property
    def draining(self) -> bool:
        return self._runtime.lifecycle.draining

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]], *, restart: bool = True) -> None:
        self._runtime.spawn(name, factory, restart=restart)


class RestartBudget:
    """At most `max_restarts` crashes within `window_secs`; backoff doubles per recent crash."""

    def __init__(self, max_restarts: int, window_secs: float, base_secs: float) -> None:
        self.max_restarts = max_restarts
        self.window_secs = window_secs
        self.base_secs = base_secs
        self._crashes: collections.deque[float] = collections.deque()

    def record_crash(self, now: float) -> bool:
        """Counts a crash; False once the budget is spent."""
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.window_secs:
            self._crashes.popleft()
        return len(self._crashes) <= self.max_restarts

    def backoff(self) -> float:
        """Exponential in the recent crash count, with equal jitter so restarts do not align."""
        return jittered_backoff(len(self._crashes) - 1, self.base_secs, BACKOFF_CAP_SECS, floor=EQUAL_JITTER)


class Runtime:
    def __init__(
        self,
        plugin_cls: type[Sidecar[Any]],
        settings: SidecarSettings,
        *,
        registry: CollectorRegistry | None = None,
        log: FilteringBoundLogger | None = None,
        handle_signals: bool = True,
        config_sources: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = SidecarMetrics(plugin_cls.name, registry)
        self.log: FilteringBoundLogger = log or structlog.get_logger("sidecars")
        self.telemetry = Telemetry(self.metrics, self.log)
        self.lifecycle = Lifecycle()
        self.plugin = plugin_cls(settings, _Context(self))
        self.admin = AdminServer(
            settings.admin_host,
            settings.admin_port,
            Health(self.lifecycle, self.plugin.checks),
            self.metrics,
            self.plugin.admin_routes(),
            name=plugin_cls.name,
            description=plugin_cls.description,
            settings=settings,
            config_sources=config_sources,
            figures=self.plugin.figures,
        )
        self._handle_signals = handle_signals
        self._budget = RestartBudget(settings.max_restarts, settings.restart_window_secs, settings.restart_backoff_secs)
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._exit_code = EXIT_OK
        self._group: asyncio.TaskGroup | None = None
        self._pending: list[tuple[str, Callable[[], Awaitable[None]], bool]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._signals = 0
        self._watchdog: Watchdog | None = None

    # ------------------------------------------------------------------------------------ public

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def request_stop(self, exit_code: int = EXIT_OK) -> None:
        """Begin the shutdown sequence (idempotent); a non-zero code wins over zero."""
        self._exit_code = max(self._exit_code, exit_code)
        self._stop.set()

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]], *, restart: bool = True) -> None:
        if self._group is None:
            self._pending.append((name, factory, restart))
            return
        task = self._group.create_task(self._supervise(name, factory, restart), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self) -> int:
        """Run the sidecar until it stops; returns the exit code."""
        loop = asyncio.get_running_loop()
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            return await self._serve()
        finally:
            self.metrics.set_state("stopped")
            if self._handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    # ------------------------------------------------------------------------------------ sequence

    async def _serve(self) -> int:
        name = self.plugin.name
        limits.raise_open_file_limit(self.log)
        try:
            await self.admin.start()
        except OSError as exc:  # port taken, address not local: the reason says it all, no traceback
            self.log.error(
                "start-up failed: the admin server cannot listen",
                host=self.settings.admin_host,
                port=self.settings.admin_port,
                error=str(exc),
            )
            self.metrics.errors.labels(type="startup").inc()
            await self.admin.stop()
            return EXIT_FATAL
        for address, why in self.admin.skipped:
            self.log.warning("admin server: address left out, the node lacks its IP version", address=address, why=why)
        self.log.info("admin server listening", addresses=self.admin.addresses, port=self.admin.port)
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    async with asyncio.timeout(self.settings.startup_timeout_secs):
                        await stack.enter_async_context(self.plugin.lifespan())
                except Exception as exc:
                    # The plugin's own exit stack has released what it had acquired by now.
                    self._startup_failed(exc)
                    return EXIT_FATAL
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    self.spawn(f"{name}.run", self._run_plugin)
                    for task_name, factory, restart in self._pending:
                        self.spawn(task_name, factory, restart=restart)
                    self._pending.clear()
                    deadline = group.create_task(self._startup_deadline())
                    self._tasks.add(deadline)
                    await self._stop.wait()
                    await self._shutdown()
                self._group = None
                self.log.info("releasing resources")
        except Exception as exc:
            # Releasing failed (or a bug escaped supervision): still a controlled, logged exit.
            self.log.error("shutdown failed", error=str(exc), exc_info=True)
            self.metrics.errors.labels(type="release").inc()
            self._exit_code = EXIT_FATAL
        finally:
            await self.admin.stop()
        self.log.info("stopped", exit_code=self._exit_code)
        return self._exit_code

    def _startup_failed(self, exc: Exception) -> None:
        """One line; a traceback only for what is not the environment's doing (a bug)."""
        self.log.error("start-up failed", error=str(exc), exc_info=not isinstance(exc, ENVIRONMENT_ERRORS))
        self.metrics.errors.labels(type="startup").inc()

    async def _run_plugin(self) -> None:
        await self.plugin.run(self._mark_ready)
        if not self.lifecycle.draining:
            self.log.info("run() returned: stopping")
            self.request_stop()

    def _mark_ready(self) -> None:
        if self._ready.is_set():
            return
        self.lifecycle.started = True
        self._ready.set()
        self.metrics.set_state("ready")
        self.log.info("ready")

    async def _startup_deadline(self) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), self.settings.startup_timeout_secs)
        except TimeoutError:
            self.log.error("not ready within start-up timeout", timeout_secs=self.settings.startup_timeout_secs)
            self.metrics.errors.labels(type="startup_timeout").inc()
            self.request_stop(EXIT_FATAL)

    async def _shutdown(self) -> None:
        budget = self.settings.shutdown_timeout_secs
        deadline = time.monotonic() + budget
        if self._handle_signals and self._watchdog is None:
            # A hard stop in case anything up to the process's exit overruns (the kubelet would
            # SIGKILL us anyway, with no log line saying why); in-process runs (tests) must not take
            # their host process down.
            self._watchdog = Watchdog(budget + 1.0, self.log)
            self._watchdog.start()
        self.lifecycle.draining = True
        self.metrics.set_state("draining")
        self.log.info("draining", budget_secs=budget)
        try:
            await asyncio.wait_for(self.plugin.drain(), max(deadline - time.monotonic(), 0))
        except TimeoutError:
            self.log.warning("drain did not finish within the shutdown budget", budget_secs=budget)
            self.metrics.errors.labels(type="drain_timeout").inc()
        except Exception as exc:
            self.log.error("drain failed", error=str(exc), exc_info=True)
            self.metrics.errors.labels(type="drain").inc()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.1))

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            self.log.warning("second signal: exiting at once", signal=sig.name)
            _hard_exit(128 + sig.value)
        self.log.info("signal received: shutting down", signal=sig.name)
        self.request_stop()

    # ------------------------------------------------------------------------------------ supervision

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]], restart: bool) -> None:
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ENVIRONMENT_ERRORS) and not self._ready.is_set():
                    # A port taken or a file missing before the sidecar was ever ready: the environment,
                    # which a restart in this process will not change (the kubelet's restart may).
                    self._startup_failed(exc)
                    self.request_stop(EXIT_FATAL)
                    return
                self.metrics.errors.labels(type="task_crash").inc()
                if self.lifecycle.draining:
                    self.log.error("task crashed during shutdown", task=name, error=str(exc), exc_info=True)
                    return
                within_budget = self._budget.record_crash(time.monotonic())
                if not restart or not within_budget:
                    why = "restart budget spent" if restart else "task is not restartable"
                    self.log.error(f"task crashed, {why}: exiting", task=name, error=str(exc), exc_info=True)
                    self.request_stop(EXIT_FATAL)
                    return
                delay = self._budget.backoff()
                self.log.error(
                    "task crashed: restarting", task=name, error=str(exc), backoff_secs=round(delay, 3), exc_info=True
                )
                self.metrics.restarts.labels(task=name).inc()
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return  # shutting down meanwhile: do not restart
                except TimeoutError:
                    pass


class Watchdog:
    """Ends the process `secs` after `start()`, independently of the event loop.

    A daemon thread waits out the budget, logs and exits with EXIT_WATCHDOG; it needs only a slice of
    the interpreter lock, which Python hands around every few milliseconds even while another thread
    spins. `signal.alarm` is armed a little later as the backstop for a thread that never lets go of
    the lock (a C extension looping): SIGALRM's default action ends the process with no Python code.
    """

    def __init__(self, secs: float, log: FilteringBoundLogger) -> None:
        self.secs = secs
        self.log = log

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(self.secs) + 1 + ALARM_AFTER_WATCHDOG_SECS)
        threading.Thread(target=self._wait, name="shutdown-watchdog", daemon=True).start()

    def _wait(self) -> None:
        time.sleep(self.secs)
        with contextlib.suppress(Exception):
            self.log.error("shutdown overran its budget: the watchdog ends the process", budget_secs=self.secs)
        _hard_exit(EXIT_WATCHDOG)


def _hard_exit(code: int) -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run(runtime: Runtime) -> int:
    """Run on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(runtime.serve())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(runtime.serve())
