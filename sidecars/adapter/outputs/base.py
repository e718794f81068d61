"""The output-plugin interface and its registry."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar

from aiohttp import web

from sidecars.adapter.scraper import Scrape
from sidecars.adapter.settings import AdapterSettings
from sidecars.adapter.state import State
from sidecars.core import Context

ENTRY_POINT_GROUP = "sidecars.adapter.outputs"
T = TypeVar("T")


class OutputLoadError(LookupError):
    pass


class Output(abc.ABC):
    """One output: its routes on the listener and the metric families it needs from each scrape.

    `on_scrape` runs on the event loop after every successful scrape: precompute what the routes
    serve there, so requests only copy bytes. Keep it cheap or hand heavy work to a thread.
    """

    name: ClassVar[str]

    def __init__(self, state: State, settings: AdapterSettings) -> None:
        self.state = state
        self.settings = settings
        self._reading: set[int] = set()  # ids of scrapes a request is computing from

    @abc.abstractmethod
    def routes(self) -> list[web.RouteDef]: ...

    def families(self) -> frozenset[str] | None:
        """Metric names this output needs parsed; None for every family (disables the parse filter)."""
        return frozenset()

    def on_scrape(self, scrape: Scrape) -> None:  # noqa: B027 - optional hook
        """Called after each successful scrape."""

    def on_scrape_failed(self, scrape: Scrape) -> None:  # noqa: B027 - optional hook
        """Called after each failed scrape (a push output sends its series as stale)."""

    def start(self, context: Context) -> None:  # noqa: B027 - optional hook
        """Called once as the sidecar starts: an output that works in the background spawns it here."""

    def reading(self, scrape: Scrape) -> bool:
        """True while a request is still computing from `scrape` (its samples must not be released)."""
        return id(scrape) in self._reading

    async def compute_off_loop(self, scrape: Scrape, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread, `scrape` marked as being read meanwhile.

        A page of many megabytes must not hold the loop (and the probes) while it is encoded.
        """
        self._reading.add(id(scrape))
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self._reading.discard(id(scrape))


def builtin_outputs() -> dict[str, type[Output]]:
    from sidecars.adapter.outputs.health import HealthOutput
    from sidecars.adapter.outputs.json import JsonOutput
    from sidecars.adapter.outputs.prometheus import PrometheusOutput
    from sidecars.adapter.outputs.remote_write import RemoteWriteOutput

    return {cls.name: cls for cls in (HealthOutput, JsonOutput, PrometheusOutput, RemoteWriteOutput)}


def load_output(name: str) -> type[Output]:
    """A built-in output by name, else one installed under the entry-point group."""
    builtin = builtin_outputs()
    if name in builtin:
        return builtin[name]
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = sorted({*builtin, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
        raise OutputLoadError(f"unknown output {name!r} (available: {', '.join(known)})")
    try:
        cls = found[0].load()
    except Exception as exc:
        raise OutputLoadError(f"output {name!r} cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Output)):
        raise OutputLoadError(f"output {name!r} ({found[0].value}) is not an Output subclass")
    return cls
