"""The output-plugin interface and its registry."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import ClassVar, TypeVar, TypeVarTuple

from aiohttp import web

from sidecars.adapter.scraper import Scrape
from sidecars.adapter.settings import AdapterSettings
from sidecars.adapter.state import State
from sidecars.core import Context
from sidecars.core.registry import Registry

ENTRY_POINT_GROUP = "sidecars.adapter.outputs"
T = TypeVar("T")
Args = TypeVarTuple("Args")


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

    async def compute_off_loop(self, scrape: Scrape, fn: Callable[[*Args], T], *args: *Args) -> T:
        """`fn(*args)` in a thread, `scrape` marked as being read meanwhile.

        A page of many megabytes must not hold the loop (and the probes) while it is encoded.
        """
        self._reading.add(id(scrape))
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self._reading.discard(id(scrape))


# Imported only when chosen: an output's dependencies never load with another's.
BUILTIN_OUTPUTS = {
    "health": "sidecars.adapter.outputs.health:HealthOutput",
    "json": "sidecars.adapter.outputs.json:JsonOutput",
    "prometheus": "sidecars.adapter.outputs.prometheus:PrometheusOutput",
    "remote_write": "sidecars.adapter.outputs.remote_write:RemoteWriteOutput",
    "otlp": "sidecars.adapter.outputs.otlp:OtlpOutput",
}
OUTPUTS: Registry[Output] = Registry(ENTRY_POINT_GROUP, Output, BUILTIN_OUTPUTS, kind="output")


def load_output(name: str) -> type[Output]:
    """A built-in output by name, else one installed under the entry-point group; PluginError if none."""
    return OUTPUTS.load(name)
