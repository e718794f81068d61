"""The `remote_write` output: the scraped series pushed to a Prometheus remote-write 1.0 receiver.

A POST of a snappy-compressed protobuf WriteRequest per batch, to `push_url` (Prometheus with
`--web.enable-remote-write-receiver`, Mimir, Thanos Receive, VictoriaMetrics, ...). Counters, gauges
and histograms (their `_bucket`, `_sum` and `_count` series) go out as the series they are; a series
that disappears is sent as the staleness marker, as Prometheus' own remote write does. The queue,
batches and retries are those of `push.py`.
"""

from __future__ import annotations

import asyncio

import aiohttp

from sidecars.adapter.outputs.prompb import encode_labels, encode_write_request
from sidecars.adapter.outputs.push import RETRYABLE, Labels, Point, PushError, PushOutput, retry_after_secs
from sidecars.core.redact import redact_url

USER_AGENT = "sidecars-adapter"
MAX_LABEL_CACHE = 200_000


def _snappy(data: bytes) -> bytes:
    import cramjam  # the `push` extra: only a process that pushes needs it

    return bytes(cramjam.snappy.compress_raw(data))


class RemoteWriteOutput(PushOutput):
    name = "remote_write"

    def __init__(self, state, settings) -> None:  # type: ignore[no-untyped-def]
        super().__init__(state, settings)
        if not settings.push_url:
            raise ValueError("the remote_write output needs push_url")
        self.url: str = settings.push_url
        self.headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "User-Agent": USER_AGENT,
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        }
        authorization = settings.push_authorization()
        if authorization is not None:
            self.headers["Authorization"] = authorization
        self._labels: dict[Labels, bytes] = {}

    def encode(self, batch: list[Point]) -> bytes:
        series: dict[Labels, list[tuple[int, float]]] = {}
        for labels, t, value, _ in batch:
            series.setdefault(labels, []).append((t, value))
        cache = self._labels
        if len(cache) > MAX_LABEL_CACHE:
            cache.clear()
        encoded = []
        for labels, samples in series.items():
            head = cache.get(labels)
            if head is None:
                head = cache[labels] = encode_labels(labels)
            encoded.append((head, samples))
        return _snappy(encode_write_request(encoded))

    async def send(self, session: aiohttp.ClientSession, batch: list[Point]) -> None:
        body = await asyncio.to_thread(self.encode, batch)
        async with session.post(self.url, data=body, headers=self.headers, allow_redirects=False) as resp:
            if 200 <= resp.status < 300:
                return
            text = (await resp.content.read(512)).decode("utf-8", "replace").strip()
            detail = f"{redact_url(self.url)} answered {resp.status}: {text}"
            if resp.status in RETRYABLE:
                wait = retry_after_secs(resp.headers.get("Retry-After"))
                raise PushError(f"http_{resp.status // 100}xx", detail, wait)
            raise PushError("rejected", detail)
