"""The admin server's status page: what a person with `kubectl port-forward` wants to see first.

One document, built by `build()` from the sidecar's identity, its lifecycle, every check of the three
probe endpoints, the core's figures and the plugin's own (`Sidecar.figures()`), and the list of the
admin server's pages; rendered as JSON (`Accept: application/json`) or as one self-contained HTML
page. The page holds no script and loads nothing (the `Content-Security-Policy` it is served with
forbids both), and every text on it is escaped: check reasons, file paths and endpoint names come
from the outside world. Tables are cut at `MAX_ROWS` rows and texts at `MAX_TEXT_CHARS`, so the
page stays small whatever the sidecar follows.
"""

from __future__ import annotations

import html
import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sidecars
from sidecars.core.health import Health, Result
from sidecars.core.metrics import SidecarMetrics
from sidecars.core.plugin import Figure, Figures

MAX_ROWS = 200
MAX_TABLES = 16
MAX_TEXT_CHARS = 512
# The page: nothing but itself and its inline style; no script, frame, form or fetch of any kind.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ENDPOINTS = ("startupz", "readyz", "livez")


@dataclass(frozen=True)
class Page:
    """One page of the admin server, as the index lists it."""

    path: str
    description: str


def build(
    *,
    name: str,
    description: str,
    health: Health,
    metrics: SidecarMetrics,
    figures: Figures,
    pages: Sequence[Page],
    pod: Mapping[str, str],
    now: float,
) -> dict[str, Any]:
    """The status as plain data; the JSON answer as it is, the HTML page's source."""
    lifecycle = health.lifecycle
    state = "draining" if lifecycle.draining else "ready" if lifecycle.started else "starting"
    checks = {endpoint: [_check(r) for r in health.evaluate(endpoint)] for endpoint in ENDPOINTS}
    tables = {}
    for title, rows in list(figures.tables.items())[:MAX_TABLES]:
        shown = [{str(k): _figure(v) for k, v in row.items()} for row in list(rows)[:MAX_ROWS]]
        tables[_text(title)] = {"rows": shown, "total": len(rows)}
    return {
        "sidecar": name,
        "description": description,
        "version": sidecars.__version__,
        "python": platform.python_version(),
        "state": state,
        "uptime_secs": round(max(now - metrics.started_at, 0.0), 1),
        "pod": dict(pod),
        "checks": checks,
        "figures": {**core_figures(metrics), **{_text(k): _figure(v) for k, v in figures.values.items()}},
        "tables": tables,
        "pages": [{"path": p.path, "description": p.description} for p in pages],
    }


def core_figures(metrics: SidecarMetrics) -> dict[str, Figure]:
    """The base series every sidecar has, summed over their labels."""
    return {
        "events in": _total(metrics.events_in),
        "events out": _total(metrics.events_out),
        "events dropped": _total(metrics.events_dropped),
        "errors": _total(metrics.errors),
        "task restarts": _total(metrics.restarts),
    }


def _total(metric: Any) -> int:
    return int(sum(s.value for family in metric.collect() for s in family.samples if s.name.endswith("_total")))


def _check(result: Result) -> dict[str, Figure]:
    return {"name": _text(result.name), "status": result.status, "reason": _text(result.reason)}


def _text(value: object) -> Any:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def _figure(value: object) -> Figure:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no inf or nan
    return _text(value)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- HTML

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
h1{font-size:1.5em;margin:0} h2{font-size:1.1em;margin:1.5em 0 .4em}
.sub{color:#666;margin:.2em 0 1em} table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;font-weight:600}
.pass,.ready{background:#2e7d32} .warn,.starting{background:#b26a00} .fail,.draining{background:#c62828}
code{font-family:ui-monospace,monospace} .more{color:#666;font-style:italic}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_html(doc: Mapping[str, Any]) -> str:
    """The status page: the sidecar and its state, each check, the figures, the tables, the pages."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(doc['sidecar'])}: {_e(doc['state'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<h1>{_e(doc["sidecar"])} <span class="state {_e(doc["state"])}" id="state">{_e(doc["state"])}</span></h1>',
        f'<p class="sub">{_e(doc["description"])}<br>sidecars {_e(doc["version"])}, Python {_e(doc["python"])}, '
        f"up {_e(_duration(doc['uptime_secs']))}"
        + "".join(f", {_e(k)} <code>{_e(v)}</code>" for k, v in doc["pod"].items())
        + "</p>",
        '<h2>Checks</h2><table id="checks"><tr><th>endpoint</th><th>check</th><th>status</th><th>reason</th></tr>',
    ]
    for endpoint, results in doc["checks"].items():
        for r in results:
            out.append(
                f'<tr><td><a href="/{_e(endpoint)}?verbose">/{_e(endpoint)}</a></td><td>{_e(r["name"])}</td>'
                f'<td><span class="state {_e(r["status"])}">{_e(r["status"])}</span></td>'
                f"<td>{_e(r['reason'])}</td></tr>"
            )
    out.append('</table><h2>Figures</h2><table id="figures">')
    out.extend(f'<tr><th>{_e(k)}</th><td class="num">{_e(_shown(v))}</td></tr>' for k, v in doc["figures"].items())
    out.append("</table>")
    for title, table in doc["tables"].items():
        out.extend(_table(title, table["rows"], table["total"]))
    out.append('<h2>Pages</h2><table id="pages"><tr><th>path</th><th>what it shows</th></tr>')
    out.extend(
        f'<tr><td><a href="{_e(p["path"])}"><code>{_e(p["path"])}</code></a></td><td>{_e(p["description"])}</td></tr>'
        for p in doc["pages"]
    )
    out.append("</table></body></html>\n")
    return "\n".join(out)


def _table(title: str, rows: Sequence[Mapping[str, Figure]], total: int) -> Iterable[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    yield f"<h2>{_e(title)}</h2><table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
    for row in rows:
        cells = (row.get(c) for c in columns)
        yield "<tr>" + "".join(_cell(v) for v in cells) + "</tr>"
    yield "</table>"
    if total > len(rows):
        yield f'<p class="more">{total - len(rows)} more rows not shown (the JSON view has the same cut)</p>'


def _cell(value: Figure) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f'<td class="num">{_e(_shown(value))}</td>' if numeric else f"<td>{_e(_shown(value))}</td>"


def _shown(value: Figure) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _duration(secs: float) -> str:
    d, s = divmod(int(secs), 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h {m}m {s}s" if d else f"{h}h {m}m {s}s" if h else f"{m}m {s}s"
