"""The health endpoints, kube-apiserver style, computed from the cached verdict.

- `/healthz` every check, `/<group>z` the checks of one group (`/livez`, `/readyz`, ...),
  `/healthz/<check>` one check; 200 when nothing fails, else the configured failure status;
  `/explain/<check>` why a check is in its state (`sidecars.adapter.explain`).
- `?verbose`, `?exclude=name` and `Accept: application/health+json` as every health endpoint of the
  sidecars answers them: rendered by `sidecars.core.health` (bodies under 10 KiB included).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable

import orjson
from aiohttp import web

from sidecars.adapter.evaluator import CheckResult
from sidecars.adapter.explain import explain
from sidecars.adapter.rules import GROUP_PATHS
from sidecars.adapter.state import State
from sidecars.core.health import HEALTH_JSON, Result, respond

_PATH_GROUPS = {path: group for group, path in GROUP_PATHS.items()}


def group_for_path(segment: str, groups: Iterable[str]) -> str | None:
    """`livez` -> liveness, `<group>z` -> group, when that group exists."""
    known = set(groups)
    if segment in _PATH_GROUPS and _PATH_GROUPS[segment] in known:
        return _PATH_GROUPS[segment]
    if segment.endswith("z") and segment[:-1] in known:
        return segment[:-1]
    return None


def _age(ms: int) -> str:
    secs = max(0, ms) // 1000
    return f"{secs}s" if secs < 120 else f"{secs // 60}m{secs % 60:02d}s" if secs < 7200 else f"{secs // 3600}h"


def _since(check: CheckResult, now_ms: int) -> str | None:
    """`pending since 12s (for: 30s): ...`: a waiting state, its age as the request sees it."""
    if check.since_ms is None or check.state not in ("pending", "recovering"):
        return None
    field = "for" if check.state == "pending" else "keep_firing_for"
    wait = _age(check.wait_ms)
    return f"{check.state} since {_age(now_ms - check.since_ms)} ({field}: {wait}): {check.condition}"


def result(check: CheckResult, now_ms: int | None = None) -> Result:
    """A check as the core's renderer shows it; its health+json entry keeps the rule's state."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    details: dict[str, object] = {
        "componentType": "scrape" if check.name == "scrape" else "rule",
        "group": check.group,
        "severity": check.severity,
        "state": check.state,
    }
    if check.since_ms is not None:
        details["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(check.since_ms / 1000))
    if check.value is not None and math.isfinite(check.value):
        details["observedValue"] = check.value
    shown = check.failing or check.warning
    waiting = _since(check, now_ms)
    if check.reason and not shown and waiting is None:
        details["output"] = check.reason
    return Result(
        check.name,
        (waiting or check.reason or check.state) if shown else None,
        warn=check.warning and not check.failing,
        key=f"{check.name}:{check.group}",
        details=details,
        note=None if shown else waiting,
    )


class HealthEndpoints:
    """aiohttp handlers; they only read `state.verdict`, so a probe costs microseconds."""

    def __init__(self, state: State, failure_status: int) -> None:
        self.state = state
        self.failure_status = failure_status

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.all_checks),
            web.get("/healthz/{check}", self.one_check),
            web.get("/explain/{check}", self.explain),
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
        return self._respond(request, [check], verdict.at_ms, f"healthz/{name}")

    async def explain(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["check"]
        evaluator = self.state.evaluator
        if evaluator is None:
            raise web.HTTPServiceUnavailable(text="no evaluator yet\n")
        # In a thread: it evaluates the rule again over the history, which a probe must not wait for.
        doc = await asyncio.to_thread(explain, evaluator, name)
        if doc is None:
            raise web.HTTPNotFound(text=f"no such check: {name}\n")
        body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})

    def _answer(self, request: web.Request, group: str | None, title: str) -> web.StreamResponse:
        verdict = self.state.verdict
        if verdict is None:
            return self._not_yet(request)
        excluded = request.query.getall("exclude", [])
        checks = [c for c in verdict.checks if (group is None or c.group == group) and c.name not in excluded]
        shown_excluded = [n for n in excluded if n in verdict.by_name]
        return self._respond(request, checks, verdict.at_ms, title, shown_excluded)

    def _respond(
        self,
        request: web.Request,
        checks: Iterable[CheckResult],
        at_ms: int,
        title: str,
        excluded: Iterable[str] = (),
    ) -> web.StreamResponse:
        results = [result(c) for c in checks]
        return respond(
            request, title, results, excluded=list(excluded), failure_status=self.failure_status, at=at_ms / 1000
        )

    def _not_yet(self, request: web.Request) -> web.StreamResponse:
        reason = "no verdict yet: the first scrape has not finished"
        if HEALTH_JSON in request.headers.get("Accept", ""):
            body = orjson.dumps({"status": "fail", "output": reason})
            return web.Response(body=body, status=self.failure_status, content_type=HEALTH_JSON)
        return web.Response(text=f"[-]scrape failed: {reason}\n", status=self.failure_status)
