"""The plugin contract: what a sidecar declares and what the runtime hands it.

A sidecar subclasses `Sidecar`, names itself, declares a typed `Settings` model and implements
`run(ready)`. Construction does no I/O; resources are acquired in `lifespan()` and released in reverse
order when it exits, also when start-up fails halfway. The runtime owns the loop, signals, the task
group, supervision and the shutdown sequence (see `sidecars.core.runtime`).

A `Command` is the other kind of plugin: a one-shot program of the `sidecars` command line
(`sidecars demo`, `sidecars inject`), found the same way, through its own entry-point group.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from sidecars.core.settings import SidecarSettings

if TYPE_CHECKING:
    from aiohttp import web
    from structlog.typing import FilteringBoundLogger

    from sidecars.core.metrics import SidecarMetrics
    from sidecars.core.telemetry import Telemetry

S = TypeVar("S", bound=SidecarSettings)


@dataclass(frozen=True)
class Check:
    """A named, cheap, synchronous health check.

    `probe` returns None when healthy or a short reason when not; an exception counts as a failure
    with the exception's text. Readiness checks gate `/readyz`, liveness checks gate `/livez`: a
    liveness check must never depend on the app or an upstream, or one slow peer restarts the Pod.
    A `warn` check is listed (`[+]name warn: reason`) but never turns its endpoint 503: for what an
    operator should see without the kubelet acting on it, such as a rejected config reload.
    """

    name: str
    probe: Callable[[], str | None]
    readiness: bool = True
    liveness: bool = False
    warn: bool = False


# A value shown on the admin status page: a number or a short text.
Figure = str | int | float | bool | None


@dataclass(frozen=True)
class Figures:
    """What a sidecar shows on the admin status page (`/`) beside its checks.

    `values`: a few key figures by name (records sent, endpoints up); `tables`: rows by title (one
    row per followed file, per endpoint). Like checks, cheap and synchronous; the page escapes every
    text and cuts long tables, so names and paths from the outside world are shown as they are.
    """

    values: Mapping[str, Figure] = field(default_factory=dict)
    tables: Mapping[str, Sequence[Mapping[str, Figure]]] = field(default_factory=dict)


class Context(Protocol):
    """What the runtime gives a sidecar: its logger, its metrics and supervised tasks."""

    @property
    def log(self) -> FilteringBoundLogger: ...

    @property
    def metrics(self) -> SidecarMetrics: ...

    @property
    def telemetry(self) -> Telemetry:
        """Book what was dropped and what failed: the base series and the rate-limited log line."""
        ...

    @property
    def draining(self) -> bool:
        """True once shutdown has begun (readiness already answers 503)."""
        ...

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]], *, restart: bool = True) -> None:
        """Run `factory()` as a supervised task in the process's task group.

        With `restart`, a crash restarts it after a jittered backoff, counted against the restart
        budget; past the budget the process exits non-zero. The task is cancelled at shutdown after
        `drain()` has returned.
        """
        ...


class Sidecar(abc.ABC, Generic[S]):
    """Base class of every sidecar; see the module docstring for the lifecycle."""

    name: ClassVar[str]
    description: ClassVar[str]
    Settings: ClassVar[type[SidecarSettings]]

    def __init__(self, settings: S, context: Context) -> None:
        self.settings = settings
        self.context = context

    @property
    def log(self) -> FilteringBoundLogger:
        return self.context.log

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Acquire resources before `run`, release them after; override with an async context manager.

        Use `contextlib.AsyncExitStack` inside so a failure halfway releases what was acquired.
        """
        yield

    @abc.abstractmethod
    async def run(self, ready: Callable[[], None]) -> None:
        """The long-running work. Call `ready()` once able to serve; return only when done.

        Supervised: a crash restarts it with backoff under the restart budget.
        """

    async def drain(self) -> None:
        """On SIGTERM: stop taking new work, finish or persist what is in flight, within the budget."""

    def checks(self) -> Sequence[Check]:
        """Named health checks of the sidecar itself, shown on /readyz and /livez with ?verbose."""
        return ()

    @classmethod
    def commands(cls) -> Mapping[str, Callable[[list[str]], int]]:
        """One-shot subcommands beside running the sidecar (`python -m sidecars.X NAME args...`).

        Each takes the remaining arguments and returns an exit code; names must not start with `-`.
        """
        return {}

    @classmethod
    def file_schemas(cls) -> Mapping[str, Mapping[str, Any]]:
        """JSON Schemas of the files the sidecar reads besides its config file, by a short name.

        `sidecars schema <sidecar>-<name>` prints one (the adapter's `rules`).
        """
        return {}

    @classmethod
    def config_warnings(cls, settings: S) -> Sequence[str]:
        """What is valid but almost surely a mistake (an ambassador with nothing to proxy).

        The sidecar still starts with such settings; `--check-config` fails on each, so a fleet's
        config is caught before it is rolled out.
        """
        return ()

    def admin_routes(self) -> Sequence[web.RouteDef]:
        """Extra routes served by the admin server, collected once before it starts.

        The index page (`/`) lists each GET route with the first line of its handler's docstring.
        """
        return ()

    def figures(self) -> Figures:
        """Key figures and tables for the admin status page (`/`); asked for on each view of it."""
        return Figures()


class Command(abc.ABC):
    """A one-shot program run as `sidecars NAME args...`, registered in the group `sidecars.commands`.

    Unlike a sidecar it has no lifecycle: `main` gets the remaining arguments and returns the exit code.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    @staticmethod
    @abc.abstractmethod
    def main(argv: list[str]) -> int: ...
