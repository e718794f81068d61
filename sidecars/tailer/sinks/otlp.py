"""`otlp`: OTLP/HTTP logs in JSON (`POST /v1/logs`), with partial success honoured.

Streams with the same labels share one `resourceLogs` entry; labels become resource attributes,
renamed to OpenTelemetry's semantic conventions where one is known (`pod` -> `k8s.pod.name`), the
file path becomes the record attribute `log.file.path`. Following the OTLP specification only
429, 502, 503 and 504 are retried; a partial success (`rejectedLogRecords`) counts the lines rejected.
A 2xx answer must be an `ExportLogsServiceResponse` (empty, or a JSON object whose `partialSuccess`
is readable): anything else acknowledges nothing and the batch is sent again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from pydantic import Field, field_validator
from structlog.typing import FilteringBoundLogger

from sidecars import __version__
from sidecars.core.redact import redact_text, redact_url
from sidecars.tailer.sinks.base import Batch, RetryableError, SendResult
from sidecars.tailer.sinks.http_base import HttpSink, HttpSinkSettings

# Label names the tailer and Downward API set-ups commonly use, and their semantic convention.
DEFAULT_ATTRIBUTE_NAMES = {
    "pod": "k8s.pod.name",
    "pod_name": "k8s.pod.name",
    "namespace": "k8s.namespace.name",
    "pod_namespace": "k8s.namespace.name",
    "node": "k8s.node.name",
    "node_name": "k8s.node.name",
    "container": "k8s.container.name",
    "container_name": "k8s.container.name",
    "pod_uid": "k8s.pod.uid",
    "pod_ip": "k8s.pod.ip",
    "service": "service.name",
}


# A JSON line's level field, as the common loggers name it, and OpenTelemetry's severity numbers.
_LEVEL_KEYS = ("level", "severity", "lvl", "log.level", "levelname")
SEVERITY_NUMBERS = {
    "trace": 1, "debug": 5, "info": 9, "information": 9, "notice": 10, "warn": 13, "warning": 13,
    "error": 17, "err": 17, "critical": 21, "crit": 21, "fatal": 21, "panic": 21, "alert": 22, "emerg": 23,
}  # fmt: skip


class OtlpSettings(HttpSinkSettings):
    url: str = Field(description="The collector's logs endpoint, e.g. http://otel-collector:4318/v1/logs.")
    attribute_names: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ATTRIBUTE_NAMES),
        description="Label name -> resource attribute name; labels not listed keep their name.",
        json_schema_extra={"doc_default": "the names above"},
    )
    scope_name: str = Field("sidecars.tailer", description="instrumentationScope name of the log records.")

    @field_validator("url")
    @classmethod
    def _logs_path(cls, value: str) -> str:
        if not value.rstrip("/").endswith("/v1/logs"):
            raise ValueError(f"must end with /v1/logs, got {value!r}")
        return value


def _count(value: object) -> int | None:
    """A non-negative int64 as the JSON mapping writes it (a number or a decimal string; absent is 0)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def any_value(value: Any) -> dict[str, Any]:
    """A JSON value as an OTLP AnyValue (int64 as a string, as the JSON mapping requires)."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": str(k), "value": any_value(v)} for k, v in value.items()]}}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


class OtlpSink(HttpSink[OtlpSettings]):
    name = "otlp"
    description = "Send OTLP/HTTP logs (JSON) to an OpenTelemetry collector; partial success honoured."
    Settings = OtlpSettings
    retryable_statuses = frozenset({429, 502, 503, 504})

    def __init__(self, settings: OtlpSettings, log: FilteringBoundLogger, registry: CollectorRegistry) -> None:
        super().__init__(settings, log, registry)
        self._scope = {"name": settings.scope_name, "version": __version__}

    def _resource(self, labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        names = self.settings.attribute_names
        return tuple(sorted((names.get(k, k), str(v)) for k, v in labels.items() if k != "path"))

    def encode(self, batch: Batch) -> bytes:
        by_resource: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
        for s in batch.streams:
            if not s.lines:
                continue
            records = by_resource.setdefault(self._resource(s.labels), [])
            attrs = [{"key": "log.file.path", "value": {"stringValue": s.path}}]
            if s.fields is None:
                records.extend(
                    {
                        "timeUnixNano": str(ts),
                        "observedTimeUnixNano": str(ts),
                        "body": {"stringValue": line},
                        "attributes": attrs,
                    }
                    for line, ts in zip(s.lines, s.timestamps_ns, strict=True)
                )
                continue
            for line, ts, fields in zip(s.lines, s.timestamps_ns, s.fields, strict=True):
                record: dict[str, Any] = {"timeUnixNano": str(ts), "observedTimeUnixNano": str(ts), "attributes": attrs}
                if fields:
                    record["body"] = any_value(fields)
                    level = next((fields[k] for k in _LEVEL_KEYS if isinstance(fields.get(k), str)), None)
                    if level is not None:
                        record["severityText"] = level
                        number = SEVERITY_NUMBERS.get(level.lower())
                        if number:
                            record["severityNumber"] = number
                else:
                    record["body"] = {"stringValue": line}
                records.append(record)
        resource_logs = [
            {
                "resource": {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in resource]},
                "scopeLogs": [{"scope": self._scope, "logRecords": records}],
            }
            for resource, records in by_resource.items()
        ]
        return orjson.dumps({"resourceLogs": resource_logs})

    async def send(self, batch: Batch) -> SendResult:
        with self.metrics.request() as req:
            _, payload = await self.post(self.encode(batch), "application/json")
            req.result = self._partial(payload, len(batch))
            return req.result

    def _partial(self, payload: bytes, sent: int) -> SendResult:
        if not payload.strip():
            return SendResult()  # an empty ExportLogsServiceResponse: everything accepted
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            answer = None
        partial = answer.get("partialSuccess", {}) if isinstance(answer, dict) else None
        rejected = _count(partial.get("rejectedLogRecords")) if isinstance(partial, dict) else None
        if partial is None or rejected is None or rejected > sent:
            # The answer may quote the request back, its credentials included.
            excerpt = redact_text(payload[:100].decode("utf-8", "replace"))
            url = redact_url(self.settings.url)
            raise RetryableError(f"{url}: a 2xx answer that is not an OTLP logs response: {excerpt!r}")
        if rejected:
            assert isinstance(partial, dict)
            message = str(partial.get("errorMessage") or "")[:300]
            self.warn_limited("otlp_partial_success", rejected=rejected, error=message)
            return SendResult(rejected=rejected, reason="otlp_rejected")
        return SendResult()
