"""Health: the sidecar's own checks, and the one renderer of every health endpoint.

Evaluation (`Health`): the lifecycle checks plus the plugin's named checks, for `/startupz`,
`/readyz` and `/livez`. Liveness only ever looks at the process itself, never at the app or an
upstream.

Rendering (`render_text`, `render_json`, `respond`), shared by the admin server and the adapter's
health output, the way kube-apiserver answers (`/readyz?verbose`):

- `ok` when every check passes; with `?verbose`, or when one fails, one line per check
  (`[+]name ok`, `[+]name warn: reason`, `[-]name failed: reason`), `[+]name excluded: ok` for each
  `?exclude=name`, then `<path> check passed` or `<path> check failed`;
- `Accept: application/health+json`: the draft RFC's format (status pass, warn or fail; one entry per
  check, failing ones first);
- bodies stay under 10 KiB, which is all the kubelet reads: reasons are cut and the list is
  truncated, saying how many checks were left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from sidecars.core.plugin import Check
from sidecars.core.redact import redact_text

HEALTH_JSON = "application/health+json"
# The kubelet reads the first 10 KiB of a probe's body; the margin keeps the cut line inside it.
MAX_BODY = 10 * 1024 - 256
MAX_REASON_CHARS = 1024


@dataclass(frozen=True)
class Result:
    """One check's outcome as the endpoints show it."""

    name: str
    reason: str | None  # None when the check passed
    warn: bool = False  # a failing warn check is shown, not counted
    key: str | None = None  # its key among the health+json checks (default: the name)
    details: Mapping[str, object] = field(default_factory=dict)  # more fields of its health+json entry
    note: str | None = None  # said of a passing check instead of `ok` (`pending since 12s: ...`)

    @property
    def ok(self) -> bool:
        return self.reason is None or self.warn

    @property
    def status(self) -> str:
        """pass, warn or fail, as application/health+json names them."""
        return "pass" if self.reason is None else "warn" if self.warn else "fail"

    def line(self) -> str:
        if self.reason is None:
            return f"[+]{self.name} {self.note[:MAX_REASON_CHARS]}" if self.note else f"[+]{self.name} ok"
        reason = self.reason[:MAX_REASON_CHARS]
        return f"[+]{self.name} warn: {reason}" if self.warn else f"[-]{self.name} failed: {reason}"


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


def render_text(title: str, results: Sequence[Result], verbose: bool, excluded: Sequence[str] = ()) -> str:
    """The body in kube-apiserver's text format; a failure always lists the checks."""
    healthy = all(r.ok for r in results)
    if healthy and not verbose:
        return "ok"
    summary = f"{title} check passed" if healthy else f"{title} check failed"
    lines = [r.line() for r in results] + [f"[+]{name} excluded: ok" for name in excluded]
    body, size = [], len(summary) + 1
    for i, text in enumerate(lines):
        if size + len(text) + 1 > MAX_BODY - 64:
            body.append(f"... {len(lines) - i} more checks not shown")
            break
        body.append(text)
        size += len(text) + 1
    return "\n".join([*body, summary]) + "\n"


def render_json(title: str, results: Sequence[Result], at: float | None = None) -> bytes:
    """The body as application/health+json: failing checks first, then warnings, then the rest."""
    status = "fail" if any(not r.ok for r in results) else "warn" if any(r.reason for r in results) else "pass"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))
    entries: dict[str, list[dict[str, object]]] = {}
    doc: dict[str, object] = {"status": status, "description": title, "checks": entries}
    size = len(orjson.dumps(doc)) + 200  # room for the note below
    ordered = sorted(results, key=lambda r: {"fail": 0, "warn": 1}.get(r.status, 2))
    for shown, result in enumerate(ordered):
        entry: dict[str, object] = {"componentId": result.name, "status": result.status, "time": when}
        if result.reason or result.note:
            entry["output"] = (result.reason or result.note or "")[:MAX_REASON_CHARS]
        entry.update(result.details)
        key = result.key or result.name
        cost = len(orjson.dumps({key: [entry]}))
        if size + cost > MAX_BODY:
            doc["notes"] = [f"{len(ordered) - shown} checks left out to keep the body under 10 KiB"]
            break
        entries[key] = [entry]
        size += cost
    return orjson.dumps(doc)


def respond(
    request: web.Request,
    title: str,
    results: Sequence[Result],
    *,
    excluded: Sequence[str] = (),
    failure_status: int = 503,
    at: float | None = None,
) -> web.Response:
    """The answer to a health request: text or health+json as asked, 200 or `failure_status`.

    `results` are the checks left after `?exclude`; `excluded` the names it left out that exist.
    """
    status = 200 if all(r.ok for r in results) else failure_status
    headers = {"Cache-Control": "no-store"}
    if HEALTH_JSON in request.headers.get("Accept", ""):
        body = render_json(title, results, at)
        return web.Response(body=body, status=status, content_type=HEALTH_JSON, headers=headers)
    text = render_text(title, results, "verbose" in request.query, excluded)
    return web.Response(text=text, status=status, content_type="text/plain", headers=headers)
