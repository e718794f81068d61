"""Finding sidecars: the entry-point group `sidecars.plugins`, so installing a package adds one."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from sidecars.core.plugin import Sidecar

GROUP = "sidecars.plugins"


class PluginLoadError(Exception):
    pass


def discover() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load(name: str) -> type[Sidecar[Any]]:
    found = discover()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise PluginLoadError(f"no sidecar named {name!r} is installed (installed: {known})")
    try:
        obj = found[name].load()
    except Exception as exc:
        raise PluginLoadError(f"{found[name].value}: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, Sidecar)):
        raise PluginLoadError(f"{found[name].value} is not a Sidecar subclass")
    return obj
