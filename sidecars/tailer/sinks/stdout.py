"""`stdout`: every line to the sidecar's own stdout (or stderr), the Kubernetes streaming-sidecar pattern.

The container runtime then collects the lines like any container's output (`kubectl logs`). The
tailer's own log also goes to stdout; choose `stream: stderr` or the raw format to tell them apart.
"""

from __future__ import annotations

import asyncio
import os
from typing import Literal

from pydantic import Field

from sidecars.tailer.sinks.base import Batch, RetryableError, SendResult, Sink, SinkSettings
from sidecars.tailer.sinks.encode import ndjson, raw_lines


class StdoutSettings(SinkSettings):
    format: Literal["json", "raw"] = Field(
        "json", description="json: one JSON document per line (timestamp, message, labels); raw: lines as read."
    )
    stream: Literal["stdout", "stderr"] = Field("stdout", description="Which standard stream to write to.")


def write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked to a pipe; loop until all of it is out."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class StdoutSink(Sink[StdoutSettings]):
    name = "stdout"
    description = "Write every line to stdout (or stderr) for the container runtime to collect."
    Settings = StdoutSettings

    async def send(self, batch: Batch) -> SendResult:
        with self.metrics.request() as req:
            data = ndjson(batch) if self.settings.format == "json" else raw_lines(batch)
            fd = 1 if self.settings.stream == "stdout" else 2
            try:
                # A slow reader of the pipe blocks the write: keep it off the event loop.
                await asyncio.to_thread(write_all, fd, data)
            except OSError as e:
                raise RetryableError(f"{self.settings.stream}: {e}") from e
            self.metrics.add_bytes(len(data))
            req.result = SendResult()
            return req.result
