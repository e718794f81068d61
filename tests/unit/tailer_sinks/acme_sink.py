"""A company's own sink, as a third-party package would ship it (registered by the tests)."""

from __future__ import annotations

from pydantic import Field

from sidecars.tailer.sinks import Batch, SendResult, Sink, SinkSettings


class AcmeSettings(SinkSettings):
    prefix: str = Field(">", description="Put before every line.")


class AcmeSink(Sink[AcmeSettings]):
    name = "acme"
    description = "Keeps lines in memory, prefixed."
    Settings = AcmeSettings

    def __init__(self, settings: AcmeSettings, log: object, registry: object) -> None:
        super().__init__(settings, log, registry)  # type: ignore[arg-type]
        self.received: list[str] = []

    async def send(self, batch: Batch) -> SendResult:
        with self.metrics.request() as req:
            self.received += [self.settings.prefix + line for s in batch.streams for line in s.lines]
            req.result = SendResult()
            return req.result


class NotASink:
    pass
