"""Checks every injected Pod template must pass, beyond the schema: what the API server only warns about."""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate.utils

from sidecars.injector.workloads import TEMPLATE_PATHS

VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
# The oldest Kubernetes with native sidecars, and the newest schema kubernetes-validate ships.
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def validate(paths: list[Path], version: str) -> None:
    """`kubernetes-validate --strict` over the files: a misspelt field fails, as it would in the cluster."""
    proc = subprocess.run(
        [str(VALIDATE), "--strict", "-k", version, *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("passed") >= len(paths), out


def templates(doc: Any) -> Iterator[tuple[Mapping[str, Any], set[str]]]:
    """Every Pod template of a document (Lists included), with the names of its volume claims."""
    if not isinstance(doc, Mapping):
        return
    kind = doc.get("kind", "")
    if kind.endswith("List"):
        for item in doc.get("items") or []:
            yield from templates(item)
        return
    if kind in TEMPLATE_PATHS:
        node: Any = doc
        for key in TEMPLATE_PATHS[kind]:
            node = node[key]
        claims = {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates") or []}
        yield node, claims


def duplicates(template: Mapping[str, Any], claims: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Names that must be unique and are not (the API server accepts some with a warning only)."""
    spec = template["spec"]
    containers = list(spec.get("initContainers") or []) + list(spec["containers"])
    found = []

    def check(what: str, names: list[Any]) -> None:
        found.extend(f"{what} {n!r}" for n, count in collections.Counter(names).items() if count > 1)

    check("container", [c["name"] for c in containers])
    check("volume", [v["name"] for v in spec.get("volumes") or []])
    ports = [p for c in containers for p in c.get("ports") or []]
    check("port name", [p["name"] for p in ports if "name" in p])
    check("containerPort", [p["containerPort"] for p in ports])
    for c in containers:
        check(f"{c['name']}: env", [e["name"] for e in c.get("env") or []])
        check(f"{c['name']}: mountPath", [m["mountPath"] for m in c.get("volumeMounts") or []])
        volumes = {v["name"] for v in spec.get("volumes") or []}
        found.extend(
            f"{c['name']}: mount of unknown volume {m['name']!r}"
            for m in c.get("volumeMounts") or []
            if m["name"] not in volumes | claims
        )
    return found
