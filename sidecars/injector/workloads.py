"""Where the Pod templates are in Kubernetes documents, and injecting into every one of them.

Pod (the document is its own template); Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and
ReplicationController (`spec.template`); CronJob (`spec.jobTemplate.spec.template`); a `List` (or
any `*List`) holds documents in `items`. Other kinds pass through untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecars.injector.errors import InjectionError, Problem
from sidecars.injector.inject import Options, Outcome, inject_template

TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
MAX_LIST_DEPTH = 4  # Lists inside Lists: real ones are one level deep


@dataclass
class Report:
    """What happened to one template."""

    where: str
    outcome: Outcome


@dataclass(kw_only=True)
class DocumentResult:
    document: Any  # the new document, or the input itself when nothing changed
    changed: bool
    reports: list[Report] = field(default_factory=list)


def describe(doc: object, label: str) -> str:
    if isinstance(doc, Mapping):
        kind = doc.get("kind")
        metadata = doc.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if name is None and isinstance(metadata, Mapping):
            name = metadata.get("generateName")
        if isinstance(kind, str):
            return f"{label} ({kind} {name})" if isinstance(name, str) else f"{label} ({kind})"
    return label


def inject_document(doc: object, options: Options, label: str, depth: int = 0) -> DocumentResult:
    """Inject into every Pod template of one document; raises InjectionError naming each problem."""
    where = describe(doc, label)
    if not isinstance(doc, MutableMapping):
        return DocumentResult(document=doc, changed=False)
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        return _inject_list(doc, options, where, depth)
    if kind not in TEMPLATE_PATHS:
        return DocumentResult(document=doc, changed=False)
    keys = TEMPLATE_PATHS[kind]
    node: Any = doc
    for i, key in enumerate(keys):
        node = node.get(key) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            raise InjectionError([Problem(where, ".".join(keys[: i + 1]), "missing, or not a mapping")])
    path = "".join(f"{k}." for k in keys)
    claims = doc.get("spec", {}).get("volumeClaimTemplates") if kind == "StatefulSet" else None
    claim_names = [
        c["metadata"]["name"]
        for c in claims or []
        if isinstance(c, Mapping)
        and isinstance(c.get("metadata"), Mapping)
        and isinstance(c["metadata"].get("name"), str)
    ]
    outcome = inject_template(node, options, where=where, path=path, claim_names=claim_names)
    report = Report(where, outcome)
    if not outcome.changed:
        return DocumentResult(document=doc, changed=False, reports=[report])
    if not keys:
        return DocumentResult(document=outcome.template, changed=True, reports=[report])
    new = _replace(doc, keys, outcome.template)
    return DocumentResult(document=new, changed=True, reports=[report])


def _inject_list(doc: MutableMapping[str, Any], options: Options, where: str, depth: int) -> DocumentResult:
    items = doc.get("items")
    if not isinstance(items, list):
        raise InjectionError([Problem(where, "items", "must be a list")])
    if depth >= MAX_LIST_DEPTH:
        raise InjectionError([Problem(where, "items", f"Lists nested deeper than {MAX_LIST_DEPTH} levels")])
    problems: list[Problem] = []
    results: list[DocumentResult] = []
    for i, item in enumerate(items):
        try:
            results.append(inject_document(item, options, f"{where}, items[{i}]", depth + 1))
        except InjectionError as exc:
            problems += exc.problems
    if problems:
        raise InjectionError(problems)
    reports = [r for res in results for r in res.reports]
    if not any(r.changed for r in results):
        return DocumentResult(document=doc, changed=False, reports=reports)
    new = copy.deepcopy(doc)
    new["items"][:] = [r.document for r in results]
    return DocumentResult(document=new, changed=True, reports=reports)


def _replace(doc: MutableMapping[str, Any], keys: Sequence[str], value: object) -> Any:
    """A deep copy of `doc` (its comments and key order kept) with the node at `keys` replaced."""
    new = copy.deepcopy(doc)
    node = new
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return new


def inject_documents(docs: Sequence[Any], options: Options) -> list[DocumentResult]:
    """Every document of a stream; all problems of all documents are raised together."""
    problems: list[Problem] = []
    results: list[DocumentResult] = []
    for i, doc in enumerate(docs):
        try:
            results.append(inject_document(doc, options, f"document {i + 1}"))
        except InjectionError as exc:
            problems += exc.problems
    if problems:
        raise InjectionError(problems)
    return results
