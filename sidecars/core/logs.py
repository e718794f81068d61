"""structlog set-up: JSON lines in a container, readable console output on a terminal.

Every line carries the sidecar's name and the Pod metadata the Downward API puts in the environment,
so lines from three sidecars of many Pods can be told apart in one log store. Records of the stdlib
`logging` module (aiohttp, asyncio) go through the same renderer.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

# Downward API env var -> field on every line. Pod specs set these with `fieldRef`.
POD_FIELDS = {
    "POD_NAME": "pod",
    "POD_NAMESPACE": "namespace",
    "NODE_NAME": "node",
    "POD_IP": "pod_ip",
}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def pod_metadata(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {key: environ[var] for var, key in POD_FIELDS.items() if environ.get(var)}


def _orjson_dumps(event: EventDict, **_: Any) -> bytes:
    return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS)


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging through it; call once per process."""
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if console:
        processors: list[Processor] = [*shared, structlog.dev.ConsoleRenderer()]
        factory: Any = structlog.PrintLoggerFactory(file=stream)
    else:
        processors = [
            *shared,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
        factory = structlog.BytesLoggerFactory(file=stream.buffer if hasattr(stream, "buffer") else None)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [_StructlogHandler()]
    root.setLevel(LEVELS[level])


def bind_process_context(sidecar: str, environ: Mapping[str, str] | None = None) -> None:
    """Fields on every line of this process: the sidecar's name and the Pod metadata."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(sidecar=sidecar, **pod_metadata(environ))


class _StructlogHandler(logging.Handler):
    """Hands stdlib records to structlog so there is one format on stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger(record.name)
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[0] is not None:
                fields["exc_info"] = record.exc_info
            log.log(record.levelno, record.getMessage(), **fields)
        except Exception:  # a logging failure must never take the process down
            self.handleError(record)


class Capture:
    """Collects events of one in-process sidecar (the test kit's `logs`), without global set-up."""

    def __init__(self) -> None:
        self.events: list[EventDict] = []

    def _append(self, _: WrappedLogger, method: str, event: EventDict) -> EventDict:
        event.setdefault("log_level", method)
        self.events.append(dict(event))
        raise structlog.DropEvent

    def logger(self, **context: Any) -> FilteringBoundLogger:
        log: FilteringBoundLogger = structlog.wrap_logger(
            None,
            processors=[structlog.contextvars.merge_contextvars, self._append],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            context_class=dict,
        )
        return log.bind(**context)
