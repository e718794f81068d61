"""The dashboards and alerts name only metrics the sidecars export, in queries the PromQL parser accepts.

Every panel query and variable of monitoring/dashboards/*.json is parsed by the adapter's PromQL
parser (after Grafana's variables are replaced the way Grafana does), and every metric a query or an
alert names is looked up on the /metrics page of the real sidecar, started in-process with the
settings that make it export every family (a listener and a cluster, a sink, a target, a certificate).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from sidecars.adapter.promql import parse_expr, referenced_metric_names

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "monitoring" / "dashboards"
RULES = ROOT / "monitoring" / "rules" / "sidecars.rules.yaml"
# What Grafana puts in place of its variables: a namespace, the "All" value of a multi-value pod
# variable, and an interval for $__rate_interval.
GRAFANA = {"$namespace": "shop", "$pod": ".+", "$__rate_interval": "1m", "$__interval": "30s", "${datasource}": "x"}
GENERATED = {"up"}  # made by Prometheus for every target, on no /metrics page
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", re.M)
_LABELLED = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", re.M)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')
_BY = re.compile(r"\bby \(([^)]*)\)")
# Labels Prometheus adds from the target (a PodMonitor's), on no /metrics page.
TARGET_LABELS = {"namespace", "pod", "container", "instance", "job"}


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


def labels_by_series(page: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, labels in _LABELLED.findall(page):
        out.setdefault(name, set()).update(_LABEL.findall(labels))
    return out


async def test_dashboard_groupings_use_labels_the_series_carry(pages: dict[str, str]) -> None:
    """A `by (label)` the series lack sums everything into one line: a renamed or dropped label
    (the latency histogram's code_class) would silently flatten a panel."""
    checked = 0
    for path in sorted(DASHBOARDS.glob("*.json")):
        carried = labels_by_series(pages[path.stem])
        for expr in queries(json.loads(path.read_text())):
            metrics = list(referenced_metric_names(parse_expr(grafana(expr))))
            if not all(m in carried for m in metrics):
                continue  # a series with no sample yet on the page: its name was checked above
            known = set().union(*(carried[m] for m in metrics)) | TARGET_LABELS
            for group in _BY.findall(expr):
                wanted = {g.strip() for g in group.split(",") if g.strip()}
                assert wanted <= known, f"{path.name}: {expr} groups by {sorted(wanted - known)}, not on {metrics}"
                checked += 1
    assert checked >= 20


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
