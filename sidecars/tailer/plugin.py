"""The tailer sidecar: follows the log files an app writes to a shared volume and forwards every line.

Delivery is at least once: a file's checkpoint moves only after the sink acknowledged the records
before it, so a crash, a restart or a sink outage costs duplicates of in-flight batches, never lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

from aiohttp import web

from sidecars.core import Sidecar
from sidecars.core.plugin import Check, Context, Figure, Figures
from sidecars.tailer.checkpoint import CheckpointStore
from sidecars.tailer.metrics import TailerMetrics
from sidecars.tailer.pipeline import Pipeline
from sidecars.tailer.settings import TailerSettings
from sidecars.tailer.sinks.base import Sink, load_sink

__all__ = ["Tailer", "TailerSettings"]

# Part of the shutdown budget kept back for cancelling tasks and releasing resources after the drain.
_RELEASE_MARGIN_SECS = 1.0


class Tailer(Sidecar[TailerSettings]):
    name = "tailer"
    description = "Follows log files in a shared volume and forwards every line to remote storage, none lost."
    Settings = TailerSettings

    def __init__(self, settings: TailerSettings, context: Context) -> None:
        super().__init__(settings, context)
        # Built here, opened by lifespan(): neither constructor does I/O.
        self.metrics = TailerMetrics(context.metrics, context.telemetry)
        self.store = CheckpointStore(settings.checkpoint_dir)
        self.sink: Sink[Any] = load_sink(settings.sink)(settings.sink_settings(), self.log, context.metrics.registry)
        self.pipeline: Pipeline | None = None  # the current run's; none before the first

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            self.store.open()
            stack.callback(self.store.close)
            if self.store.problem:
                self.log.error(self.store.problem)
                self.context.metrics.errors.labels(type="checkpoint_corrupt").inc()
            stack.push_async_callback(self.sink.close)
            await self.sink.open()
            yield

    async def run(self, ready: Callable[[], None]) -> None:
        # A fresh pipeline per run: after a crash the supervisor restarts from the checkpoints.
        self.pipeline = Pipeline(self.settings, self.sink, self.store, self.metrics, self.log)
        await self.pipeline.run(ready)

    async def drain(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.drain(max(self.settings.shutdown_timeout_secs - _RELEASE_MARGIN_SECS, 0.5))

    def admin_routes(self) -> Sequence[web.RouteDef]:
        async def files(_: web.Request) -> web.Response:
            """every followed file: state, size, offsets read and acknowledged (JSON)"""
            body = self.pipeline.files.status() if self.pipeline is not None else []
            return web.json_response({"files": body}, headers={"Cache-Control": "no-store"})

        return [web.get("/files", files)]

    def figures(self) -> Figures:
        if self.pipeline is None:
            return Figures()
        files = self.pipeline.files.status()
        columns = ("path", "state", "size", "acknowledged_offset", "bytes_behind", "idle_secs")
        rows = [{k: cast(Figure, f[k]) for k in columns} for f in files]
        dead_lettered = self.context.metrics.registry.get_sample_value("tailer_dead_lettered_records_total")
        values: dict[str, Figure] = {
            "files followed": len(files),
            "bytes behind": sum(cast(int, f["bytes_behind"]) for f in files),
            "sink": self.settings.sink,
            "records dead-lettered": int(dead_lettered or 0),
        }
        return Figures(values=values, tables={"files": rows})

    def checks(self) -> Sequence[Check]:
        return [
            Check("sink", lambda: self.pipeline.checks_sink() if self.pipeline else None),
            Check("checkpoint", lambda: self.pipeline.checks_checkpoint() if self.pipeline else None),
            # Shown, not failing: every file is still read, only later.
            Check("files", lambda: self.pipeline.files.waiting_check() if self.pipeline else None, warn=True),
        ]
