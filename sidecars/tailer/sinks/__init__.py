"""Where the tailer delivers: a small sink base class and the built-in sinks.

`load_sink(name)` returns a sink class by name; built-in sinks are imported only when chosen.
"""

from sidecars.tailer.sinks.base import (
    ENTRY_POINT_GROUP,
    Batch,
    PermanentError,
    RetryableError,
    SendResult,
    Sink,
    SinkSettings,
    Stream,
    TooLargeError,
    known_sinks,
    load_sink,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Batch",
    "PermanentError",
    "RetryableError",
    "SendResult",
    "Sink",
    "SinkSettings",
    "Stream",
    "TooLargeError",
    "known_sinks",
    "load_sink",
]
