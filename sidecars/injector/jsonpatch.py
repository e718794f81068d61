"""RFC 6902 JSON Patch from an object to its injected copy: what a mutating webhook answers.

Mappings are compared key by key; a changed list (containers, volumes) is replaced whole, which is
unambiguous whatever else changed the list's order before this webhook ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def pointer(parts: list[str]) -> str:
    """RFC 6901: `~` and `/` inside a key are escaped (`sidecars.io/inject` -> `sidecars.io~1inject`)."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def diff(old: Any, new: Any, path: list[str] | None = None) -> list[dict[str, Any]]:
    path = path or []
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        ops: list[dict[str, Any]] = []
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": pointer([*path, str(key)])})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": pointer([*path, str(key)]), "value": value})
            elif old[key] != value:
                ops += diff(old[key], value, [*path, str(key)])
        return ops
    if old == new:
        return []
    return [{"op": "replace", "path": pointer(path), "value": new}]
