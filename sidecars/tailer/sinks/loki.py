"""`loki`: the Loki push API (`POST /loki/api/v1/push`, JSON), one stream per file.

Each stream carries the file's labels, sanitised to Loki's label-name rules, and its lines in the
order they were read with their nanosecond timestamps as strings. Loki answers 204 on success.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson
from prometheus_client import CollectorRegistry
from pydantic import Field, SecretStr, field_validator
from structlog.typing import FilteringBoundLogger

from sidecars.tailer.sinks.base import Batch, SendResult, Stream
from sidecars.tailer.sinks.http_base import HttpSink, HttpSinkSettings

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_label_name(name: str) -> str:
    """Loki's (Prometheus') rule: `[a-zA-Z_][a-zA-Z0-9_]*`; other characters become `_`."""
    clean = _INVALID.sub("_", name)
    if not clean or clean[0].isdigit():
        clean = "_" + clean
    return clean


def _values(stream: Stream) -> list[list[str]]:
    """`[ts, line]` pairs with strictly increasing timestamps.

    Loki keeps one of several entries of a stream with the same timestamp and the same line, and
    lines read together share their read time: two equal lines (a repeated "retrying...") would
    collapse into one. Each line gets at least 1 ns more than the one before it. The result
    depends on the batch alone, so a batch sent again gets the same timestamps and Loki drops
    that duplicate instead.
    """
    values, last = [], -1
    for ts, line in zip(stream.timestamps_ns, stream.lines, strict=True):
        last = ts if ts > last else last + 1
        values.append([str(last), line])
    return values


class LokiSettings(HttpSinkSettings):
    url: str = Field(description="Loki's push endpoint, e.g. http://loki:3100/loki/api/v1/push (the path is required).")
    tenant_id: str | None = Field(None, description="Sent as X-Scope-OrgID for multi-tenant Loki.")
    tenant_id_secret: SecretStr | None = Field(
        None, description="Like tenant_id when the tenant must not be shown by --print-config."
    )
    rename_labels: dict[str, str] = Field(
        default_factory=dict,
        description='Label renames applied before sanitising, e.g. {"path": "filename"} as Promtail names it.',
    )
    drop_labels: list[str] = Field(
        default_factory=list,
        description="Label names (before sanitising) not sent as Loki labels, e.g. high-cardinality ones.",
    )

    @field_validator("url")
    @classmethod
    def _push_path(cls, value: str) -> str:
        if not value.rstrip("/").endswith("/loki/api/v1/push"):
            raise ValueError(f"must end with /loki/api/v1/push, got {value!r}")
        return value


class LokiSink(HttpSink[LokiSettings]):
    name = "loki"
    description = "Push to Grafana Loki (push API, JSON), one stream per file with its labels."
    Settings = LokiSettings
    answer_bytes = 0  # the status is the acknowledgement (Loki answers 204, no body)

    def __init__(self, settings: LokiSettings, log: FilteringBoundLogger, registry: CollectorRegistry) -> None:
        super().__init__(settings, log, registry)
        self._drop = frozenset(settings.drop_labels)
        self._label_cache: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        tenant = settings.tenant_id_secret.get_secret_value() if settings.tenant_id_secret else settings.tenant_id
        self._extra = {"X-Scope-OrgID": tenant} if tenant else None

    def _labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        key = tuple(labels.items())
        cached = self._label_cache.get(key)
        if cached is None:
            if len(self._label_cache) > 10_000:
                self._label_cache.clear()
            cached = {}
            rename = self.settings.rename_labels
            for name, value in key:
                if name not in self._drop:
                    cached[sanitize_label_name(rename.get(name, name))] = str(value)
            self._label_cache[key] = cached
        return cached

    def encode(self, batch: Batch) -> bytes:
        streams = [{"stream": self._labels(s.labels), "values": _values(s)} for s in batch.streams if s.lines]
        return orjson.dumps({"streams": streams})

    async def send(self, batch: Batch) -> SendResult:
        with self.metrics.request() as req:
            await self.post(self.encode(batch), "application/json", headers=self._extra)
            req.result = SendResult()
            return req.result
