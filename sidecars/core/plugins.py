"""Finding sidecars: the entry-point group `sidecars.plugins`, so installing a package adds one.

The core ships no sidecar of its own: the package's tailer, ambassador, adapter and injector are
entry points of this group like any company's (see `sidecars.core.registry` for the one-provider rule).
"""

from __future__ import annotations

from typing import Any

from sidecars.core.plugin import Sidecar
from sidecars.core.registry import PluginError, Provider, Registry

__all__ = ["GROUP", "SIDECARS", "PluginError", "discover", "load"]

GROUP = "sidecars.plugins"
SIDECARS: Registry[Sidecar[Any]] = Registry(GROUP, Sidecar, kind="sidecar")


def discover() -> dict[str, list[Provider]]:
    """Every installed sidecar name with what provides it (more than one provider is an error on load)."""
    return SIDECARS.providers()


def load(name: str) -> type[Sidecar[Any]]:
    return SIDECARS.load(name)
