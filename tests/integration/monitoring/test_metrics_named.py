"""The dashboards and alerts name only metrics the sidecars export, in queries the PromQL parser accepts.

Every panel query and variable of monitoring/dashboards/*.json is parsed by the adapter's PromQL
parser (after Grafana's variables are replaced the way Grafana does), and every metric a query or an
alert names is looked up on the /metrics page of the real sidecar, started in-process with the
settings that make it export every family (a listener and a cluster, a sink, a target, a certificate).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
import yaml
from aiohttp import web

from sidecars.adapter.plugin import Adapter
from sidecars.adapter.promql import parse_expr, referenced_metric_names
from sidecars.ambassador.plugin import Ambassador
from sidecars.core.http import start_server
from sidecars.injector.plugin import Injector
from sidecars.tailer.plugin import Tailer
from sidecars.testing import http_get, run_sidecar
from tests.integration.injector.conftest import SERVICE, SecretVolume

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "monitoring" / "dashboards"
RULES = ROOT / "monitoring" / "rules" / "sidecars.rules.yaml"
# What Grafana puts in place of its variables: a namespace, the "All" value of a multi-value pod
# variable, and an interval for $__rate_interval.
GRAFANA = {"$namespace": "shop", "$pod": ".+", "$__rate_interval": "1m", "$__interval": "30s", "${datasource}": "x"}
GENERATED = {"up"}  # made by Prometheus for every target, on no /metrics page
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", re.M)


def grafana(expr: str) -> str:
    for var, value in GRAFANA.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"a Grafana variable left unreplaced in {expr!r}"
    return expr


def queries(dashboard: dict) -> list[str]:  # type: ignore[type-arg]
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*), *[a-z_]+\)", var["query"]["query"])
            assert m, var["query"]
            found.append(m.group(1))
    return found


def exported(page: str) -> set[str]:
    """Series names a query can select on this page: sample names, and those of families with no sample yet."""
    names = set(_SAMPLE.findall(page))
    for family, kind in _TYPE.findall(page):
        base = family.removesuffix("_total")
        names |= {family, base}
        if kind == "counter":
            names.add(base + "_total")
        elif kind == "histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        elif kind == "info":
            names.add(base + "_info")
    return names


@pytest.fixture
async def pages(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Each sidecar's /metrics page, from real sidecars doing their work on 127.0.0.1."""

    async def text(body: str, _: web.Request) -> web.Response:
        return web.Response(text=body)

    app = web.Application()
    app.router.add_get("/metrics", functools.partial(text, "demo_queue_depth 3\n"))
    app.router.add_post("/ingest", functools.partial(text, "ok"))
    app.router.add_get("/", functools.partial(text, "hello"))
    server = await start_server(app, "127.0.0.1", 0)
    port = server.port
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("one\ntwo\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: queue\n    expr: demo_queue_depth > 100\n    severity: fail\n")
    ca = trustme.CA()
    volume = SecretVolume(tmp_path / "tls")
    volume.install(ca.issue_cert(SERVICE))
    listener = {
        "name": "web",
        "port": 0,
        "cluster": {"endpoints": [f"127.0.0.1:{port}"], "health_check": {"kind": "none"}},
    }
    out: dict[str, str] = {}
    try:
        async with (
            run_sidecar(Tailer, include=[f"{logs}/*.log"], checkpoint_dir=str(tmp_path / "cp"), sink="http",
                        sink_config={"url": f"http://127.0.0.1:{port}/ingest"}, batch_wait_secs=0.05) as tailer,
            run_sidecar(Ambassador, listeners=[listener]) as ambassador,
            run_sidecar(Adapter, target_url=f"http://127.0.0.1:{port}/metrics", rules_file=str(rules),
                        listen_host="127.0.0.1", listen_port=0, scrape_interval_secs=0.2,
                        scrape_timeout_secs=0.2) as adapter,
            run_sidecar(Injector, listen_host="127.0.0.1", listen_port=0, tls_cert_file=str(volume.cert),
                        tls_key_file=str(volume.key)) as injector,
        ):  # fmt: skip
            status, _ = await http_get(f"http://127.0.0.1:{ambassador.plugin.listeners[0].port}/")
            assert status == 200
            for name, sc in (
                ("tailer", tailer),
                ("ambassador", ambassador),
                ("adapter", adapter),
                ("injector", injector),
            ):
                status, page = await http_get(sc.admin_url + "/metrics")
                assert status == 200
                out[name] = page
            yield out
    finally:
        await server.close()


def test_every_sidecar_has_a_dashboard() -> None:
    assert sorted(p.stem for p in DASHBOARDS.glob("*.json")) == ["adapter", "ambassador", "injector", "tailer"]


async def test_dashboard_queries_parse_and_name_exported_metrics(pages: dict[str, str]) -> None:
    for path in sorted(DASHBOARDS.glob("*.json")):
        names = exported(pages[path.stem])
        dashboard = json.loads(path.read_text())
        found = queries(dashboard)
        assert len(found) >= 10, path.name
        for expr in found:
            metrics = referenced_metric_names(parse_expr(grafana(expr)))
            assert metrics, expr
            missing = set(metrics) - names
            assert not missing, f"{path.name}: {expr} names {sorted(missing)}, not on the {path.stem}'s /metrics"


async def test_alert_expressions_name_exported_metrics(pages: dict[str, str]) -> None:
    every = set().union(*(exported(p) for p in pages.values()))
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for group in groups:
        owner = group["name"].removeprefix("sidecars-")
        for rule in group["rules"]:
            metrics = referenced_metric_names(parse_expr(rule["expr"]))
            assert metrics, rule["alert"]
            names = exported(pages[owner]) if owner in pages else every
            missing = set(metrics) - names - GENERATED
            assert not missing, f"{rule['alert']} names {sorted(missing)}, exported by no sidecar"
