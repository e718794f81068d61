"""The health endpoints, kube-apiserver style, computed from the cached verdict.

- `/healthz` every check, `/<group>z` the checks of one group (`/livez`, `/readyz`, ...),
  `/healthz/<check>` one check; 200 when nothing fails, else the configured failure status.
- `?verbose` lists each check: `[+]name ok`, `[+]name warn: reason`, `[-]name failed: reason`.
- `?exclude=name` (repeatable) leaves checks out.
- `Accept: application/health+json` answers in the draft RFC format (status pass, warn or fail).

Bodies stay under 10 KiB (the kubelet reads no more): reasons are cut and the list is truncated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import orjson
from aiohttp import web

from sidecars.adapter.evaluator import CheckResult, Verdict
from sidecars.adapter.rules import GROUP_PATHS
from sidecars.adapter.state import State

HEALTH_JSON = "application/health+json"
MAX_BODY = 10 * 1024 - 256
_PATH_GROUPS = {path: group for group, path in GROUP_PATHS.items()}


def group_for_path(segment: str, groups: Iterable[str]) -> str | None:
    """`livez` -> liveness, `<group>z` -> group, when that group exists."""
    known = set(groups)
    if segment in _PATH_GROUPS and _PATH_GROUPS[segment] in known:
        return _PATH_GROUPS[segment]
    if segment.endswith("z") and segment[:-1] in known:
        return segment[:-1]
    return None


def line(check: CheckResult) -> str:
    if check.failing:
        return f"[-]{check.name} failed: {check.reason}"
    if check.warning:
        return f"[+]{check.name} warn: {check.reason}"
    return f"[+]{check.name} ok"


def render_text(checks: Sequence[CheckResult], title: str, verbose: bool, excluded: Sequence[str]) -> str:
    failed = [c for c in checks if c.failing]
    summary = f"{title} check failed" if failed else "ok"
    if not verbose:
        if failed:
            return "".join(line(c) + "\n" for c in failed[:20]) + summary + "\n"
        return "ok"
    lines = [line(c) for c in checks]
    lines += [f"[+]{name} excluded: ok" for name in excluded]
    body, size = [], len(summary) + 1
    for i, text in enumerate(lines):
        if size + len(text) + 1 > MAX_BODY - 64:
            body.append(f"... {len(lines) - i} more checks not shown")
            break
        body.append(text)
        size += len(text) + 1
    return "\n".join([*body, summary]) + "\n"


def render_json(checks: Sequence[CheckResult], verdict: Verdict, description: str) -> bytes:
    status = "fail" if any(c.failing for c in checks) else "warn" if any(c.warning for c in checks) else "pass"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(verdict.at_ms / 1000))
    entries: dict[str, list[dict[str, object]]] = {}
    doc: dict[str, object] = {"status": status, "description": description, "checks": entries}
    size = len(orjson.dumps(doc)) + 200  # room for the note below
    # Failing checks first, then warnings, then passing ones, until the body budget is spent.
    ordered = sorted(checks, key=lambda c: 0 if c.failing else 1 if c.warning else 2)
    for shown, check in enumerate(ordered):
        entry: dict[str, object] = {
            "componentId": check.name,
            "componentType": "scrape" if check.name == "scrape" else "rule",
            "status": check.status,
            "time": when,
            "group": check.group,
            "severity": check.severity,
            "state": check.state,
        }
        if check.value is not None and math.isfinite(check.value):
            entry["observedValue"] = check.value
        if check.reason:
            entry["output"] = check.reason
        key = f"{check.name}:{check.group}"
        cost = len(orjson.dumps({key: [entry]}))
        if size + cost > MAX_BODY:
            doc["notes"] = [f"{len(ordered) - shown} checks left out to keep the body under 10 KiB"]
            break
        entries[key] = [entry]
        size += cost
    return orjson.dumps(doc)


class HealthEndpoints:
    """aiohttp handlers; they only read `state.verdict`, so a probe costs microseconds."""

    def __init__(self, state: State, failure_status: int) -> None:
        self.state = state
        self.failure_status = failure_status

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.all_checks),
            web.get("/healthz/{check}", self.one_check),
            web.get(r"/{segment:[a-z][a-z0-9_-]*z}", self.group_checks),
        ]

    async def all_checks(self, request: web.Request) -> web.StreamResponse:
        return self._answer(request, None, "healthz")

    async def group_checks(self, request: web.Request) -> web.StreamResponse:
        verdict = self.state.verdict
        groups = verdict.groups if verdict is not None else self.state.rules.groups
        group = group_for_path(request.match_info["segment"], groups)
        if group is None:
            raise web.HTTPNotFound(text=f"no such health group: /{request.match_info['segment']}\n")
        return self._answer(request, group, request.match_info["segment"])

    async def one_check(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["check"]
        verdict = self.state.verdict
        if verdict is None:
            return self._not_yet(request)
        check = verdict.by_name.get(name)
        if check is None:
            raise web.HTTPNotFound(text=f"no such check: {name}\n")
        return self._respond(request, [check], verdict, f"healthz/{name}", [], force_verbose=False)

    def _answer(self, request: web.Request, group: str | None, title: str) -> web.StreamResponse:
        verdict = self.state.verdict
        if verdict is None:
            return self._not_yet(request)
        excluded = request.query.getall("exclude", [])
        checks = [c for c in verdict.checks if (group is None or c.group == group) and c.name not in excluded]
        shown_excluded = [n for n in excluded if n in verdict.by_name]
        return self._respond(request, checks, verdict, title, shown_excluded)

    def _respond(
        self,
        request: web.Request,
        checks: Sequence[CheckResult],
        verdict: Verdict,
        title: str,
        excluded: Sequence[str],
        force_verbose: bool = False,
    ) -> web.StreamResponse:
        failing = any(c.failing for c in checks)
        status = self.failure_status if failing else 200
        headers = {"Cache-Control": "no-store"}
        if HEALTH_JSON in request.headers.get("Accept", ""):
            body = render_json(checks, verdict, title)
            return web.Response(body=body, status=status, content_type=HEALTH_JSON, headers=headers)
        verbose = force_verbose or "verbose" in request.query
        text = render_text(checks, title, verbose, excluded)
        return web.Response(text=text, status=status, content_type="text/plain", headers=headers)

    def _not_yet(self, request: web.Request) -> web.StreamResponse:
        reason = "no verdict yet: the first scrape has not finished"
        if HEALTH_JSON in request.headers.get("Accept", ""):
            body = orjson.dumps({"status": "fail", "output": reason})
            return web.Response(body=body, status=self.failure_status, content_type=HEALTH_JSON)
        return web.Response(text=f"[-]scrape failed: {reason}\n", status=self.failure_status)
