"""Plugins by name: one registry per kind (sidecars, sinks, outputs, discovery sources, balancers).

A `Registry` knows the built-ins a sidecar ships (each a class, or `"module:attr"` imported only when
chosen, so one plugin's dependencies never load another's) and finds the rest through an entry-point
group, so `pip install acme-sinks` adds a sink with no change here.

One rule for every kind: **a name has one provider**. An installed package cannot take a built-in's
name, and two packages cannot both claim one; asking for such a name is an error that names every
provider (the other names keep working). Letting the entry point win would let any installed
dependency change what `sink: http` means in a running fleet, with nothing in the config saying so;
letting the built-in win with a warning would leave the company's plugin silently unused behind one
log line among thousands. Refusing at start-up, before anything runs, with the fix in the message
(register the plugin under a name of its own) costs one rename and surprises no one.

Every failure is a `PluginError` that says what is installed: an unknown name, a name claimed twice,
an entry point whose import fails (`ep.load()` raising anything), an object that is not a subclass of
the registry's base class.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from sidecars.core.redact import redact_text

__all__ = ["PluginError", "Provider", "Registry"]

T = TypeVar("T")


class PluginError(LookupError, ValueError):
    """A plugin that cannot be had: unknown, claimed twice, failing to import, or of the wrong type.

    A LookupError (a name not found) and a ValueError, so a settings validator that loads the named
    plugin reports the message as that field's error.
    """


@dataclass(frozen=True)
class Provider:
    """One thing offering a name: a built-in or an installed entry point."""

    name: str
    target: str  # "module:attr"
    origin: str  # "built in", or the distribution and version that installed it
    builtin: object | None = None  # a built-in given as the object itself
    entry_point: EntryPoint | None = None

    def describe(self) -> str:
        return f"{self.origin} ({self.target})"

    def load(self) -> object:
        if self.builtin is not None:
            return self.builtin
        if self.entry_point is not None:
            return self.entry_point.load()
        module, _, attr = self.target.partition(":")
        obj: object = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


class Registry(Generic[T]):
    """The plugins of one kind: `base` is the class each subclasses, `group` their entry-point group.

    Entry points are read on every call, not cached: what is installed is what the process sees now.
    """

    # `base` is typed loosely because it is usually abstract, which `type[T]` would refuse; annotate
    # the registry instead: `SINKS: Registry[Sink[Any]] = Registry(GROUP, Sink, ...)`.
    def __init__(
        self, group: str, base: type[Any], builtins: Mapping[str, str | type[T]] | None = None, *, kind: str = "plugin"
    ) -> None:
        self.group = group
        self.base = base
        self.kind = kind
        self._builtins = {name: _builtin(name, value) for name, value in (builtins or {}).items()}

    def providers(self) -> dict[str, list[Provider]]:
        """Every name with what offers it: one provider, or several when the name is claimed twice."""
        found: dict[str, list[Provider]] = {name: [p] for name, p in self._builtins.items()}
        for ep in entry_points(group=self.group):
            dist = ep.dist
            origin = f"{dist.name} {dist.version}" if dist is not None else "an installed package"
            claims = found.setdefault(ep.name, [])
            # The same target twice is one provider (a distribution found on two paths), not a clash.
            if all(p.target != ep.value for p in claims):
                claims.append(Provider(ep.name, ep.value, origin, entry_point=ep))
        return found

    def names(self) -> list[str]:
        """Built-ins in their declared order, then the installed ones sorted."""
        installed = sorted(name for name in self.providers() if name not in self._builtins)
        return [*self._builtins, *installed]

    def load(self, name: str) -> type[T]:
        """The class registered under `name`; PluginError saying why not, and what is installed."""
        providers = self.providers()
        claims = providers.get(name)
        if not claims:
            installed = ", ".join(self.names()) or "none"
            raise PluginError(f"unknown {self.kind} {name!r}; installed: {installed}")
        if len(claims) > 1:
            raise PluginError(
                f"{self.kind} {name!r} is provided more than once: {'; '.join(p.describe() for p in claims)}. "
                f"A name has one provider: register the plugin under a name of its own (entry-point group "
                f"{self.group}), or uninstall one of them"
            )
        provider = claims[0]
        try:
            obj = provider.load()
        except Exception as exc:  # whatever the plugin's import raises, named, never a bare traceback
            raise PluginError(
                redact_text(
                    f"{self.kind} {name!r} ({provider.describe()}) cannot be loaded: {type(exc).__name__}: {exc}"
                )
            ) from exc
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise PluginError(
                f"{self.kind} {name!r} ({provider.describe()}) is not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}"
            )
        return obj


def _builtin(name: str, value: str | type[object]) -> Provider:
    if isinstance(value, str):
        return Provider(name, value, "built in")
    return Provider(name, f"{value.__module__}:{value.__qualname__}", "built in", builtin=value)
