"""One AdmissionReview (admission.k8s.io/v1) in, its answer out: pure, no I/O.

The webhook fails open: whatever goes wrong, the Pod is admitted unchanged (`allowed: true`, no
patch) with a warning the user sees in `kubectl`, and the review is counted as refused with a
reason. Only a body that is not an AdmissionReview at all (no uid to answer to) gets HTTP 400, which
the API server also treats as "ignore" under `failurePolicy: Ignore`. A Pod that carries the
injector's marker is never mutated again. `dryRun` reviews get the same patch (the webhook has no
side effects, so `kubectl apply --dry-run=server` shows what would be injected) and are counted apart.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecars.injector.errors import InjectionError
from sidecars.injector.inject import Options, has_marker, inject_template
from sidecars.injector.jsonpatch import diff

API_VERSION = "admission.k8s.io/v1"
MAX_WARNINGS = 8
MAX_WARNING_CHARS = 256
REASONS = ("malformed", "invalid", "error")  # why a review was refused: bounded label values
OUTCOMES = ("injected", "unchanged", "skipped", "refused")


@dataclass(kw_only=True)
class Answer:
    status: int  # HTTP status of the answer
    body: dict[str, Any]
    outcome: str  # one of OUTCOMES
    reason: str | None = None  # one of REASONS when refused
    dry_run: bool = False
    detail: str = ""  # for the log line: what was injected, or why not
    warnings: list[str] = field(default_factory=list)


def _response(uid: str, warnings: list[str], patch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
    if warnings:
        response["warnings"] = [w[:MAX_WARNING_CHARS] for w in warnings[:MAX_WARNINGS]]
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _malformed(why: str) -> Answer:
    body = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "error": why}
    return Answer(status=400, body=body, outcome="refused", reason="malformed", detail=why)


def answer(raw: bytes, options: Options) -> Answer:
    try:
        review = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        return _malformed(f"not JSON: {type(exc).__name__}")
    request = review.get("request") if isinstance(review, Mapping) else None
    uid = request.get("uid") if isinstance(request, Mapping) else None
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        return _malformed("not an AdmissionReview: no request.uid")
    assert isinstance(request, Mapping)
    dry_run = request.get("dryRun") is True

    def refused(reason: str, why: str) -> Answer:
        warning = f"sidecars: not injected: {why}"
        return Answer(
            status=200,
            body=_response(uid, [warning]),
            outcome="refused",
            reason=reason,
            dry_run=dry_run,
            detail=why,
            warnings=[warning],
        )

    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        return refused("malformed", f"expected an {API_VERSION} AdmissionReview")
    kind = request.get("kind")
    if not (isinstance(kind, Mapping) and kind.get("kind") == "Pod" and request.get("operation") == "CREATE"):
        return Answer(
            status=200, body=_response(uid, []), outcome="skipped", dry_run=dry_run, detail="not a Pod being created"
        )
    pod = request.get("object")
    if not isinstance(pod, Mapping):
        return refused("malformed", "request.object is not a Pod")
    where = _describe(pod, request.get("namespace"))
    if has_marker(pod):
        return Answer(
            status=200, body=_response(uid, []), outcome="unchanged", dry_run=dry_run, detail="already injected"
        )
    try:
        outcome = inject_template(pod, options, where=where)
    except InjectionError as exc:
        return refused("invalid", "; ".join(str(p) for p in exc.problems))
    except Exception as exc:  # a bug must not block Pods: admitted unchanged, counted, logged
        return refused("error", f"{type(exc).__name__} while injecting {where}")
    if not outcome.changed:
        return Answer(
            status=200, body=_response(uid, []), outcome="skipped", dry_run=dry_run, detail="no sidecars asked for"
        )
    warnings = [f"sidecars: {n}" for n in outcome.notes]
    patch = diff(pod, outcome.template)
    detail = f"{', '.join(outcome.injected)} injected into {where}"
    return Answer(
        status=200,
        body=_response(uid, warnings, patch),
        outcome="injected",
        dry_run=dry_run,
        detail=detail,
        warnings=warnings,
    )


def _describe(pod: Mapping[str, Any], namespace: object) -> str:
    metadata = pod.get("metadata")
    name = None
    if isinstance(metadata, Mapping):
        name = metadata.get("name") or (f"{metadata['generateName']}*" if metadata.get("generateName") else None)
    ns = namespace if isinstance(namespace, str) else "?"
    return f"Pod {ns}/{name if isinstance(name, str) else '?'}"[:300]
