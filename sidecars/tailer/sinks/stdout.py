"""`stdout`: every line to the sidecar's own stdout (or stderr), the Kubernetes streaming-sidecar pattern.

The container runtime then collects the lines like any container's output (`kubectl logs`). The
tailer's own log also goes to stdout; choose `stream: stderr` or the raw format to tell them apart.
"""

from __future__ import annotations

import asyncio
import os
import select
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


def write_whole_lines(fd: int, data: bytes) -> None:
    """Write in pieces of whole lines of at most PIPE_BUF bytes where possible.

    The tailer's own log shares stdout. A pipe keeps a write of up to PIPE_BUF bytes in one piece,
    so neither writer can land in the middle of the other's line (a single line longer than that
    cannot be protected and goes as it is).
    """
    limit, start, end = select.PIPE_BUF, 0, len(data)
    while start < end:
        stop = min(start + limit, end)
        if stop < end:
            cut = data.rfind(b"\n", start, stop)
            stop = cut + 1 if cut >= start else data.find(b"\n", stop) + 1 or end
        write_all(fd, data[start:stop])
        start = stop


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
                await asyncio.to_thread(write_whole_lines, fd, data)
            except OSError as e:
                raise RetryableError(f"{self.settings.stream}: {e}") from e
            self.metrics.add_bytes(len(data))
            req.result = SendResult()
            return req.result
