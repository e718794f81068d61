"""`elasticsearch`: the `_bulk` API of Elasticsearch and OpenSearch, one request per batch.

A 200 may still hold per-item failures (`"errors": true`): items failing with 429 or 5xx are handed
back in `SendResult.retry` to be sent again, any other failing item (a mapping error, say) is
rejected for good and counted with the error type as the reason. A 2xx whose body is not a `_bulk`
answer (not JSON, no boolean `errors`, not one item per document) acknowledges nothing: the batch
is sent again, as the proxy or stand-in that answered it did not index it.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Literal

import orjson
from prometheus_client import CollectorRegistry
from pydantic import Field, field_validator
from structlog.typing import FilteringBoundLogger

from sidecars.core.redact import redact_text, redact_url
from sidecars.tailer.sinks.base import Batch, RetryableError, SendResult, Stream
from sidecars.tailer.sinks.encode import encoded_documents, joined_documents
from sidecars.tailer.sinks.http_base import DEFAULT_ANSWER_BYTES, HttpSink, HttpSinkSettings

_DAY_NS = 86_400 * 1_000_000_000
# Index names change at most once a day: one name per day is computed and cached.
_DAY_DIRECTIVES = frozenset("YymdjGVUW%")
# Only what the per-item check needs comes back: big batches otherwise get big answers.
_FILTER_PATH = "errors,items.*.status,items.*.error.type,items.*.error.reason"
# Room per document in that answer: a status, an error type and a reason (cut at 300 characters).
_ANSWER_BYTES_PER_ITEM = 512


class ElasticsearchSettings(HttpSinkSettings):
    url: str = Field(description="Base URL of the cluster, e.g. https://es:9200 (the sink posts to /_bulk).")
    index: str = Field(
        "logs-%Y.%m.%d",
        description="Index (or data stream) to write to; strftime patterns are filled from each line's UTC date.",
    )
    action: Literal["create", "index"] = Field(
        "create", description="Bulk action: create (required by data streams) or index."
    )
    pipeline: str | None = Field(None, description="Ingest pipeline to run on every document.")
    timestamp_key: str = Field("@timestamp", description="Document key of the line's timestamp.")

    @field_validator("index")
    @classmethod
    def _valid_index(cls, value: str) -> str:
        directives = set(re.findall(r"%(.)", value))
        if directives - _DAY_DIRECTIVES:
            raise ValueError(f"only date patterns are allowed ({' '.join('%' + d for d in sorted(_DAY_DIRECTIVES))})")
        name = time.strftime(value, time.gmtime(0))
        if not name or name != name.lower() or any(c in name for c in ' "*\\<|,>/?#:') or name[0] in "-_+":
            raise ValueError(f'not a valid index name (lower case, none of space \\/*?"<>|,#:): {value!r}')
        return value


class ElasticsearchSink(HttpSink[ElasticsearchSettings]):
    name = "elasticsearch"
    description = "Index into Elasticsearch or OpenSearch with _bulk; per-item failures retried or rejected."
    Settings = ElasticsearchSettings

    def __init__(self, settings: ElasticsearchSettings, log: FilteringBoundLogger, registry: CollectorRegistry) -> None:
        super().__init__(settings, log, registry)
        base = settings.url.rstrip("/")
        self._bulk_url = base if base.endswith("/_bulk") else base + "/_bulk"
        self._params = {"filter_path": _FILTER_PATH}
        if settings.pipeline:
            self._params["pipeline"] = settings.pipeline
        self._dated = "%" in settings.index
        self._actions: dict[int, bytes] = {}  # day number -> encoded action line

    def _action(self, ts_ns: int) -> bytes:
        day = ts_ns // _DAY_NS if self._dated else 0
        line = self._actions.get(day)
        if line is None:
            if len(self._actions) > 64:
                self._actions.clear()
            index = (
                time.strftime(self.settings.index, time.gmtime(day * 86_400)) if self._dated else self.settings.index
            )
            line = self._actions[day] = orjson.dumps({self.settings.action: {"_index": index}})
        return line

    def encode(self, batch: Batch) -> bytes:
        action, key = self._action, self.settings.timestamp_key
        parts: list[bytes] = []
        for s in batch.streams:
            stamps = s.timestamps_ns
            if not stamps:
                continue
            if not self._dated or min(stamps) // _DAY_NS == max(stamps) // _DAY_NS:
                # One index for the whole stream: every document follows the same action line.
                line = action(stamps[0]) + b"\n"
                parts.append(line + joined_documents(s, b"\n" + line, key))
                continue
            for ts, doc in zip(stamps, encoded_documents(s, key), strict=True):
                parts.append(action(ts) + b"\n" + doc)
        parts.append(b"")
        return b"\n".join(parts)

    async def send(self, batch: Batch) -> SendResult:
        with self.metrics.request() as req:
            room = DEFAULT_ANSWER_BYTES + _ANSWER_BYTES_PER_ITEM * len(batch)
            _, payload = await self.post(self.encode(batch), "application/x-ndjson", url=self._bulk_url,
                                         params=self._params, answer_bytes=room)  # fmt: skip
            req.result = self._items(batch, payload)
            return req.result

    def _items(self, batch: Batch, payload: bytes) -> SendResult:
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("errors"), bool):
            # The answer may quote the request back, its credentials included.
            excerpt = redact_text(payload[:100].decode("utf-8", "replace"))
            raise RetryableError(f"{redact_url(self._bulk_url)}: a 2xx answer that is not a _bulk answer: {excerpt!r}")
        items = answer.get("items")
        if not answer["errors"]:
            if items is None or (isinstance(items, list) and len(items) == len(batch)):
                return SendResult()
            count = len(items) if isinstance(items, list) else 0
            raise RetryableError(f"_bulk answered {count} items for {len(batch)} documents")
        if not isinstance(items, list) or len(items) != len(batch):
            # Without one answer per document we cannot tell which failed: send the batch again.
            count = len(items) if isinstance(items, list) else 0
            raise RetryableError(f"_bulk answered {count} items for {len(batch)} documents")
        retry: list[Stream] = []
        rejected: Counter[str] = Counter()
        first_reason = ""
        position = 0
        for s in batch.streams:
            keep: list[int] = []
            for i in range(len(s.lines)):
                item = items[position]
                position += 1
                result = next(iter(item.values()), None) if isinstance(item, dict) else None
                if not isinstance(result, dict) or not isinstance(result.get("status"), int):
                    keep.append(i)  # an item we cannot read: sending it again is safe
                    continue
                status: int = result["status"]
                if status < 300:
                    continue
                if status == 429 or status >= 500:
                    keep.append(i)
                    continue
                error = result.get("error") or {}
                kind = str(error.get("type") or f"http_{status}") if isinstance(error, dict) else f"http_{status}"
                rejected[kind] += 1
                if not first_reason and isinstance(error, dict):
                    first_reason = str(error.get("reason") or "")[:300]
            if keep:
                retry.append(_subset(s, keep))
        if not rejected and not retry:
            return SendResult()
        reason = rejected.most_common(1)[0][0] if rejected else None
        if rejected:
            self.warn_limited("bulk_items_rejected", rejected=dict(rejected), example=first_reason)
        return SendResult(rejected=sum(rejected.values()), reason=reason, retry=Batch(retry) if retry else None)


def _subset(stream: Stream, keep: list[int]) -> Stream:
    return Stream(
        path=stream.path,
        labels=stream.labels,
        lines=[stream.lines[i] for i in keep],
        timestamps_ns=[stream.timestamps_ns[i] for i in keep],
        fields=[stream.fields[i] for i in keep] if stream.fields is not None else None,
    )
