"""Finding sidecars and commands: the entry-point groups `sidecars.plugins` and `sidecars.commands`,
so installing a package adds one.

The core ships neither: the package's tailer, ambassador, adapter and injector, and its `demo` and
`inject` commands, are entry points of these groups like any company's (see `sidecars.core.registry`
for the one-provider rule).
"""

from __future__ import annotations

from typing import Any

from sidecars.core.plugin import Command, Sidecar
from sidecars.core.registry import PluginError, Provider, Registry

__all__ = ["COMMANDS", "COMMAND_GROUP", "GROUP", "SIDECARS", "PluginError", "discover", "load"]

GROUP = "sidecars.plugins"
SIDECARS: Registry[Sidecar[Any]] = Registry(GROUP, Sidecar, kind="sidecar")
COMMAND_GROUP = "sidecars.commands"
COMMANDS: Registry[Command] = Registry(COMMAND_GROUP, Command, kind="command")


def discover() -> dict[str, list[Provider]]:
    """Every installed sidecar name with what provides it (more than one provider is an error on load)."""
    return SIDECARS.providers()


def load(name: str) -> type[Sidecar[Any]]:
    return SIDECARS.load(name)
