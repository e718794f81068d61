from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import structlog
from prometheus_client import CollectorRegistry

from tests.integration.tailer_sinks.sink_receivers import Receiver


@pytest.fixture
async def start_receiver() -> AsyncIterator[Callable[..., object]]:
    started: list[Receiver] = []

    async def start(validate: object, answer: object, ssl_context: object = None) -> Receiver:
        r = Receiver(validate, answer)  # type: ignore[arg-type]
        await r.start(ssl_context)  # type: ignore[arg-type]
        started.append(r)
        return r

    yield start
    for r in started:
        await r.stop()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def log() -> object:
    return structlog.get_logger("test")
