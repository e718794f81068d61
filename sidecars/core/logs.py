"""structlog set-up: JSON lines in a container, readable console output on a terminal.

Every line carries the sidecar's name and the Pod metadata the Downward API puts in the environment,
so lines from three sidecars of many Pods can be told apart in one log store. Records of the stdlib
`logging` module (aiohttp, asyncio) and `warnings` go through the same renderer.

No line may carry a secret. Tracebacks are rendered without local variables in both formats (a
frame's locals hold headers, tokens and whole settings objects), and every field of every line, the
message, the error text and the traceback included, passes through `sidecars.core.redact` just before
it is rendered: URL credentials, secret query parameters and the registered secret values are masked.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from sidecars.core.redact import MARKER, is_secret_key, redact_text

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


# structlog's defaults show locals: its dict tracebacks always, its console renderer when rich is
# installed. Both renderers get a formatter that cannot.
json_tracebacks = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
# The stdlib's own traceback text, which never includes locals; rendered before `redact` sees the line.
text_tracebacks = structlog.processors.ExceptionRenderer()


# Fields the processors above fill in themselves: nothing a caller passed, nothing to look at.
_OWN_FIELDS = frozenset({"timestamp", "level"})


def redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Masks secrets in every field of a line; the last processor before the renderer."""
    for key, value in event.items():
        if key not in _OWN_FIELDS:
            event[key] = _redacted(key, value)
    return event


def _redacted(key: Any, value: Any) -> Any:
    if isinstance(value, str):  # most fields: checked first, the line's cost is per field
        return MARKER if value and isinstance(key, str) and is_secret_key(key) else redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(key, str) and value and is_secret_key(key):
        return MARKER
    if isinstance(value, dict):
        return {k: _redacted(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(None, v) for v in value]
    # Anything else is shown by its repr (both renderers do so): keep the object unless that hid a secret.
    text = repr(value)
    masked = redact_text(text)
    return value if masked == text else masked


def processors(console: bool) -> list[Processor]:
    """The processor chain of each format, ending in its renderer."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if console:
        renderer: Processor = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        return [*shared, text_tracebacks, redact, renderer]
    return [*shared, json_tracebacks, redact, structlog.processors.JSONRenderer(serializer=_orjson_dumps)]


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging and warnings through it; call once per process."""
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    if console:
        factory: Any = structlog.PrintLoggerFactory(file=stream)
    else:
        factory = structlog.BytesLoggerFactory(file=stream.buffer if hasattr(stream, "buffer") else None)
    structlog.configure(
        processors=processors(console),
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [_StructlogHandler()]
    root.setLevel(LEVELS[level])
    # A warning's text would otherwise go to stderr past the redaction and in neither format.
    logging.captureWarnings(True)


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
