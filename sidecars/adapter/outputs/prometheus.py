"""The `prometheus` output: the app's metrics re-exported at /metrics, filtered and relabelled.

Configured by the rules file's `export` section (reloaded with it): `keep` lists metric-name
regexes (RE2, fully anchored; empty keeps everything), `drop` lists series selectors
(`http_requests_total{path="/healthz"}`, `{__name__=~"go_.*"}`), `rename` rewrites names with the
first matching regex (`{match: 'http_(.*)', replace: 'acme_web_\\1'}`). A family is kept, dropped
and renamed as a whole, so `_bucket`, `_sum` and `_count` stay together; drop selectors apply to
each series by its sample name.
"""

from __future__ import annotations

import math

from aiohttp import web

from sidecars.adapter.exposition import TEXT_CONTENT_TYPE, Labels, ParseResult
from sidecars.adapter.outputs.base import Output
from sidecars.adapter.outputs.json import family_of
from sidecars.adapter.promql.nodes import VectorSelector
from sidecars.adapter.rules import ExportConfig


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _selected(selector: VectorSelector, name: str, labels: Labels) -> bool:
    if selector.name is not None and selector.name != name:
        return False
    values = dict(labels)
    for matcher in selector.matchers:
        value = name if matcher.name == "__name__" else values.get(matcher.name, "")
        if not matcher.matches(value):
            return False
    return True


def relabel(result: ParseResult, config: ExportConfig) -> str:
    """The exposition text of `result` after keep, drop and rename."""
    out: list[str] = []
    decided: dict[str, str | None] = {}  # family -> new family name, None when not kept
    described: set[str] = set()
    for name, labels, value, ts in result.samples:
        family = family_of(name, result.types)
        if family not in decided:
            new_family: str | None = family
            if config.keep and not any(p.matches(family) for p in config.keep):
                new_family = None
            if new_family is not None:
                for rename in config.rename:
                    renamed = rename.apply(family)
                    if renamed is not None:
                        new_family = renamed
                        break
            decided[family] = new_family
        new_family = decided[family]
        if new_family is None or any(_selected(s, name, labels) for s in config.drop):
            continue
        if new_family not in described:
            described.add(new_family)
            if family in result.help:
                help_text = result.help[family].replace("\\", "\\\\").replace("\n", "\\n")
                out.append(f"# HELP {new_family} {help_text}")
            if family in result.types:
                kind = result.types[family]
                kind = kind if kind in ("counter", "gauge", "histogram", "summary") else "untyped"
                out.append(f"# TYPE {new_family} {kind}")
        new_name = new_family + name[len(family) :]
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        series = f"{new_name}{{{label_text}}}" if label_text else new_name
        out.append(f"{series} {format_value(value)}" + (f" {ts}" if ts is not None else ""))
    return "\n".join(out) + "\n" if out else ""


class PrometheusOutput(Output):
    name = "prometheus"
    _body: bytes | None = None
    _key: tuple[int, int] | None = None

    def families(self) -> frozenset[str] | None:
        return None

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        scrape = self.state.last_good
        if scrape is None or scrape.result is None:
            return web.Response(text="# no successful scrape yet\n", status=503)
        export = self.state.rules.export
        # Computed once per page and export config (a rules reload may change the latter).
        key = (id(scrape), id(export))
        body = self._body
        if body is None or self._key != key:
            body = (await self.compute_off_loop(scrape, relabel, scrape.result, export)).encode()
            self._body, self._key = body, key
        return web.Response(body=body, headers={"Content-Type": TEXT_CONTENT_TYPE + "; charset=utf-8"})
