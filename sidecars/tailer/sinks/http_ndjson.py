"""`http`: each batch as one NDJSON POST; any 2xx acknowledges the whole batch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sidecars.tailer.sinks.base import Batch, SendResult
from sidecars.tailer.sinks.encode import ndjson, raw_lines
from sidecars.tailer.sinks.http_base import HttpSink, HttpSinkSettings


class HttpNdjsonSettings(HttpSinkSettings):
    format: Literal["json", "raw"] = Field(
        "json",
        description="json: one JSON document per line (timestamp, message, labels); raw: the lines as read "
        "(Content-Type text/plain).",
    )


class HttpNdjsonSink(HttpSink[HttpNdjsonSettings]):
    name = "http"
    description = "POST each batch as newline-delimited JSON to an HTTP endpoint; 2xx is the acknowledgement."
    Settings = HttpNdjsonSettings
    answer_bytes = 0  # the status is the acknowledgement; whatever the body says is not read

    async def send(self, batch: Batch) -> SendResult:
        with self.metrics.request() as req:
            if self.settings.format == "json":
                await self.post(ndjson(batch), "application/x-ndjson")
            else:
                await self.post(raw_lines(batch), "text/plain; charset=utf-8")
            req.result = SendResult()
            return req.result
