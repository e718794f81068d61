"""Health of the sidecar itself: the lifecycle checks plus the plugin's named checks.

Rendered the way kube-apiserver does (`/readyz?verbose`): one `[+]name ok` or `[-]name failed: reason`
line per check, `?exclude=name` to leave one out, `/readyz/<name>` for a single check. Liveness only
ever looks at the process itself, never at the app or an upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sidecars.core.plugin import Check
from sidecars.core.redact import redact_text


@dataclass(frozen=True)
class Result:
    name: str
    reason: str | None  # None when the check passed
    warn: bool = False  # a failing warn check is shown, not counted

    @property
    def ok(self) -> bool:
        return self.reason is None or self.warn

    def line(self) -> str:
        if self.reason is None:
            return f"[+]{self.name} ok"
        return f"[+]{self.name} warn: {self.reason}" if self.warn else f"[-]{self.name} failed: {self.reason}"


class Lifecycle:
    """Where the process is: starting, started (ready() was called), draining."""

    def __init__(self) -> None:
        self.started = False
        self.draining = False


class Health:
    """Evaluates checks for the three endpoints; checks are cheap and synchronous by contract."""

    def __init__(self, lifecycle: Lifecycle, plugin_checks: Callable[[], Sequence[Check]]) -> None:
        self.lifecycle = lifecycle
        self._plugin_checks = plugin_checks

    def _builtin(self, endpoint: str) -> list[Check]:
        ping = Check("ping", lambda: None, readiness=True, liveness=True)
        started = Check("started", lambda: None if self.lifecycle.started else "start-up not finished")
        draining = Check(
            "shutdown", lambda: "draining: the sidecar is shutting down" if self.lifecycle.draining else None
        )
        return {"livez": [ping], "startupz": [ping, started], "readyz": [ping, started, draining]}[endpoint]

    def checks(self, endpoint: str) -> list[Check]:
        checks = self._builtin(endpoint)
        if endpoint == "startupz":
            return checks
        for check in self._plugin_checks():
            if (endpoint == "readyz" and check.readiness) or (endpoint == "livez" and check.liveness):
                checks.append(check)
        return checks

    def evaluate(self, endpoint: str, exclude: Iterable[str] = (), only: str | None = None) -> list[Result]:
        excluded = set(exclude)
        results = []
        for check in self.checks(endpoint):
            if check.name in excluded or (only is not None and check.name != only):
                continue
            results.append(Result(check.name, _run(check), check.warn))
        return results


def _run(check: Check) -> str | None:
    try:
        reason = check.probe()
    except Exception as exc:  # a broken check reports, it does not crash the endpoint
        return redact_text(f"check raised {type(exc).__name__}: {exc}")
    # Reasons quote errors, and errors quote URLs: the page is served on the Pod IP.
    return None if reason is None else redact_text(str(reason))


def render(endpoint: str, results: Sequence[Result], verbose: bool) -> tuple[bool, str]:
    """(healthy, body) in kube-apiserver's text format; failures always list the checks."""
    healthy = all(r.ok for r in results)
    if healthy and not verbose:
        return True, "ok\n"
    lines = [r.line() for r in results]
    lines.append(f"{endpoint} check passed" if healthy else f"{endpoint} check failed")
    return healthy, "\n".join(lines) + "\n"
