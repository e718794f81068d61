"""The `json` output: the last page as JSON at /metrics.json, one object per family.

```json
{"scraped_at": "2024-01-01T00:00:00Z", "families": {"http_requests": {"type": "counter", "help": "...",
  "samples": [{"name": "http_requests_total", "labels": {"code": "200"}, "value": 10}]}}}
```
Non-finite values are written as the strings "NaN", "+Inf", "-Inf" (JSON has no such numbers).
"""

from __future__ import annotations

import math
import time

import orjson
from aiohttp import web

from sidecars.adapter.exposition import FAMILY_SUFFIXES, ParseResult
from sidecars.adapter.outputs.base import Output
from sidecars.adapter.scraper import Scrape


def family_of(name: str, types: dict[str, str]) -> str:
    if name in types:
        return name
    for suffix in FAMILY_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return name


def _json_value(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"


def to_json(result: ParseResult, t_ms: int) -> bytes:
    families: dict[str, dict[str, object]] = {}
    for name, labels, value, ts in result.samples:
        family = family_of(name, result.types)
        entry = families.get(family)
        if entry is None:
            entry = families[family] = {
                "type": result.types.get(family, "untyped"),
                "help": result.help.get(family, ""),
                "samples": [],
            }
        sample: dict[str, object] = {"name": name, "labels": dict(labels), "value": _json_value(value)}
        if ts is not None:
            sample["timestamp_ms"] = ts
        samples = entry["samples"]
        assert isinstance(samples, list)
        samples.append(sample)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ms / 1000))
    return orjson.dumps({"scraped_at": when, "families": families})


class JsonOutput(Output):
    name = "json"
    _body: bytes | None = None

    def families(self) -> frozenset[str] | None:
        return None

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics.json", self.handle)]

    def on_scrape(self, scrape: Scrape) -> None:
        # Encoded lazily on the first request after a scrape, so unread scrapes cost nothing.
        self._body = None

    async def handle(self, request: web.Request) -> web.Response:
        scrape = self.state.last_good
        if scrape is None or scrape.result is None:
            return web.json_response({"error": "no successful scrape yet"}, status=503)
        body = self._body
        if body is None:
            body = await self.compute_off_loop(scrape, to_json, scrape.result, scrape.t_ms)
            if self.state.last_good is scrape:
                self._body = body
        return web.Response(body=body, content_type="application/json")
