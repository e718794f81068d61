"""The Grafana dashboards of monitoring/dashboards/, one per sidecar, from a compact description.

Each dashboard has a namespace and a pod variable and the same first row (state, restarts, errors,
work in and out, from the `sidecar_*` series every sidecar exports), then the sidecar's own panels.
Queries use Grafana's `$__rate_interval`; tests parse each with the adapter's PromQL parser and
find every metric it names on a real sidecar's /metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (expr, legend)
    unit: str = "short"
    description: str = ""


def quantiles(histogram: str, selector: str, by: str = "") -> tuple[tuple[str, str], ...]:
    """p50 and p99 of a histogram over the selected series, one line per value of the label `by`."""
    rate = f"sum by (le{', ' + by if by else ''}) (rate({histogram}_bucket{{{selector}}}[{RATE}]))"
    legend = f" {{{{{by}}}}}" if by else ""
    return ((f"histogram_quantile(0.5, {rate})", f"p50{legend}"), (f"histogram_quantile(0.99, {rate})", f"p99{legend}"))


def base_panels(c: str) -> list[Panel]:
    sel = f'namespace="$namespace", pod=~"$pod", container="{c}"'
    return [
        Panel(
            "Ready",
            ((f'max by (pod) (sidecar_state{{{sel}, state="ready"}})', "{{pod}}"),),
            "bool",
            "1 once the sidecar called ready(), 0 while starting or draining.",
        ),
        Panel(
            "Task restarts",
            ((f"sum by (pod, task) (increase(sidecar_task_restarts_total{{{sel}}}[{RATE}]))", "{{pod}} {{task}}"),),
        ),
        Panel("Errors by type", ((f"sum by (type) (rate(sidecar_errors_total{{{sel}}}[{RATE}]))", "{{type}}"),), "ops"),
        Panel(
            "Work in, out and dropped",
            (
                (f"sum(rate(sidecar_events_in_total{{{sel}}}[{RATE}]))", "in"),
                (f"sum(rate(sidecar_events_out_total{{{sel}}}[{RATE}]))", "out"),
                (f"sum by (reason) (rate(sidecar_events_dropped_total{{{sel}}}[{RATE}]))", "dropped {{reason}}"),
            ),
            "ops",
        ),
        Panel(
            "Version",
            ((f"count by (version, python) (sidecar_build_info{{{sel}}})", "{{version}} (Python {{python}})"),),
        ),
        Panel("Uptime", ((f"time() - max by (pod) (sidecar_start_time_seconds{{{sel}}})", "{{pod}}"),), "s"),
    ]


def tailer() -> list[Panel]:
    s = 'namespace="$namespace", pod=~"$pod"'
    return [
        Panel(
            "Lines read and records delivered",
            (
                (f"sum(rate(tailer_lines_read_total{{{s}}}[{RATE}]))", "read"),
                (f"sum(rate(tailer_records_sent_total{{{s}}}[{RATE}]))", "delivered"),
            ),
            "ops",
        ),
        Panel(
            "Lag: bytes written, not yet acknowledged",
            ((f"max by (pod) (tailer_bytes_behind{{{s}}})", "{{pod}}"),),
            "bytes",
            "Alert SidecarsTailerLagging above 64 MiB for 15 minutes.",
        ),
        Panel("Buffered bytes", ((f"max by (pod) (tailer_buffered_bytes{{{s}}})", "{{pod}}"),), "bytes"),
        Panel(
            "Dropped records by reason",
            ((f"sum by (reason) (rate(tailer_dropped_records_total{{{s}}}[{RATE}]))", "{{reason}}"),),
            "ops",
        ),
        Panel(
            "Dropped bytes by reason",
            ((f"sum by (reason) (rate(tailer_dropped_bytes_total{{{s}}}[{RATE}]))", "{{reason}}"),),
            "Bps",
        ),
        Panel(
            "Records altered by reason",
            ((f"sum by (reason) (rate(tailer_records_altered_total{{{s}}}[{RATE}]))", "{{reason}}"),),
            "ops",
        ),
        Panel(
            "Sink requests by outcome",
            ((f"sum by (sink, outcome) (rate(tailer_sink_requests_total{{{s}}}[{RATE}]))", "{{sink}} {{outcome}}"),),
            "reqps",
        ),
        Panel(
            "Sink latency p50 / p99",
            quantiles("tailer_sink_request_duration_seconds", s),
            "s",
        ),
        Panel("Receiver failing for", ((f"max by (pod) (tailer_sink_failing_seconds{{{s}}})", "{{pod}}"),), "s"),
        Panel(
            "Lines rejected by the receiver",
            ((f"sum by (sink) (rate(tailer_sink_rejected_lines_total{{{s}}}[{RATE}]))", "{{sink}}"),),
            "ops",
        ),
        Panel(
            "Retries and batch splits",
            (
                (f"sum(rate(tailer_retries_total{{{s}}}[{RATE}]))", "retries"),
                (f"sum(rate(tailer_batch_splits_total{{{s}}}[{RATE}]))", "splits (413)"),
            ),
            "ops",
        ),
        Panel(
            "Bytes sent to the receiver",
            ((f"sum by (sink) (rate(tailer_sink_sent_bytes_total{{{s}}}[{RATE}]))", "{{sink}}"),),
            "Bps",
        ),
        Panel(
            "Checkpoint age and writes",
            (
                (f"max by (pod) (tailer_checkpoint_age_seconds{{{s}}})", "age {{pod}}"),
                (f"sum(rate(tailer_checkpoint_writes_total{{{s}}}[{RATE}]))", "writes/s"),
            ),
            "s",
        ),
        Panel("Rotations by kind", ((f"sum by (kind) (increase(tailer_rotations_total{{{s}}}[{RATE}]))", "{{kind}}"),)),
        Panel(
            "Files watched, open and waiting for a handle",
            (
                (f"sum(tailer_files_watched{{{s}}})", "watched"),
                (f"sum(tailer_open_files{{{s}}})", "open"),
                (f"sum(tailer_files_waiting{{{s}}})", "waiting (max_open_files reached)"),
            ),
        ),
    ]


def ambassador() -> list[Panel]:
    s = 'namespace="$namespace", pod=~"$pod"'
    return [
        Panel(
            "Requests by status class",
            ((f"sum by (code_class) (rate(ambassador_requests_total{{{s}}}[{RATE}]))", "{{code_class}}"),),
            "reqps",
        ),
        Panel(
            "Error ratio by reason",
            (
                (
                    f"sum by (listener, reason) (rate(ambassador_errors_total{{{s}}}[{RATE}]))"
                    " / ignoring (reason) group_left "
                    f"sum by (listener) (rate(ambassador_requests_total{{{s}}}[{RATE}]))",
                    "{{listener}} {{reason}}",
                ),
            ),
            "percentunit",
            "Alert SidecarsAmbassadorErrorRatio above 5 % for 10 minutes.",
        ),
        Panel(
            "Latency p50 / p99 by status class",
            quantiles("ambassador_request_duration_seconds", s, by="code_class"),
            "s",
            "One line per status class: a burst of fast 503s does not make the 2xx look fast.",
        ),
        Panel(
            "Retries by reason, and refused by the budget",
            (
                (f"sum by (reason) (rate(ambassador_retries_total{{{s}}}[{RATE}]))", "{{reason}}"),
                (f"sum by (cluster) (rate(ambassador_retry_budget_denied_total{{{s}}}[{RATE}]))", "denied {{cluster}}"),
            ),
            "ops",
        ),
        Panel(
            "Endpoints by state",
            ((f"sum by (cluster, state) (ambassador_cluster_endpoints{{{s}}})", "{{cluster}} {{state}}"),),
        ),
        Panel(
            "Ejections and panic",
            (
                (
                    f"sum by (cluster) (increase(ambassador_endpoint_ejections_total{{{s}}}[{RATE}]))",
                    "ejections {{cluster}}",
                ),
                (
                    f"sum by (cluster) (increase(ambassador_ejections_capped_total{{{s}}}[{RATE}]))",
                    "capped {{cluster}}",
                ),
                (f"max by (cluster) (ambassador_cluster_panic{{{s}}})", "panic {{cluster}}"),
            ),
        ),
        Panel(
            "Circuit breaker: in use and overflows",
            (
                (f"sum by (cluster, limit) (ambassador_circuit_breaker_in_use{{{s}}})", "{{cluster}} {{limit}}"),
                (
                    f"sum by (cluster, limit) (rate(ambassador_circuit_breaker_overflows_total{{{s}}}[{RATE}]))",
                    "overflow {{cluster}} {{limit}}",
                ),
            ),
        ),
        Panel(
            "Tries by endpoint and outcome",
            (
                (
                    f"sum by (endpoint, outcome) (rate(ambassador_endpoint_outcomes_total{{{s}}}[{RATE}]))",
                    "{{endpoint}} {{outcome}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Requests in flight and balancer latency score by endpoint",
            (
                (f"sum by (endpoint) (ambassador_endpoint_active_requests{{{s}}})", "active {{endpoint}}"),
                (f"max by (endpoint) (ambassador_endpoint_latency_score_seconds{{{s}}})", "score {{endpoint}}"),
            ),
        ),
        Panel(
            "Health checks by result",
            (
                (
                    f"sum by (endpoint, result) (rate(ambassador_health_checks_total{{{s}}}[{RATE}]))",
                    "{{endpoint}} {{result}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Connections",
            (
                (f"sum by (listener) (ambassador_client_connections{{{s}}})", "clients {{listener}}"),
                (f"sum by (endpoint) (ambassador_upstream_connections{{{s}}})", "upstream {{endpoint}}"),
            ),
        ),
        Panel(
            "Discovery updates and refusals",
            (
                (
                    f"sum by (cluster, source) (increase(ambassador_discovery_updates_total{{{s}}}[{RATE}]))",
                    "{{cluster}} {{source}}",
                ),
                (
                    f"sum by (cluster, source) (increase(ambassador_discovery_errors_total{{{s}}}[{RATE}]))",
                    "refused {{cluster}} {{source}}",
                ),
            ),
        ),
        Panel("Cluster ready", ((f"min by (cluster) (ambassador_cluster_ready{{{s}}})", "{{cluster}}"),), "bool"),
        Panel(
            "TCP mode: bytes and sessions",
            (
                (f"sum by (direction) (rate(ambassador_tcp_bytes_total{{{s}}}[{RATE}]))", "to {{direction}}"),
                (f"sum(rate(ambassador_tcp_sessions_total{{{s}}}[{RATE}]))", "sessions/s"),
            ),
            "Bps",
        ),
        Panel("Request path build", ((f"count by (engine) (ambassador_http_engine_info{{{s}}})", "{{engine}}"),)),
    ]


def adapter() -> list[Panel]:
    s = 'namespace="$namespace", pod=~"$pod"'
    return [
        Panel(
            "Scrapes and failures by reason",
            (
                (f"sum(rate(adapter_scrapes_total{{{s}}}[{RATE}]))", "scrapes"),
                (f"sum by (reason) (rate(adapter_scrape_failures_total{{{s}}}[{RATE}]))", "failed {{reason}}"),
            ),
            "ops",
            "Alert SidecarsAdapterScrapeFailing when more than half fail for 10 minutes.",
        ),
        Panel(
            "Scrape duration p50 / p99",
            quantiles("adapter_scrape_duration_seconds", s),
            "s",
        ),
        Panel(
            "Page size and series kept",
            (
                (f"max by (pod) (adapter_scrape_bytes{{{s}}})", "bytes {{pod}}"),
                (f"max by (pod) (adapter_scrape_series{{{s}}})", "series {{pod}}"),
            ),
        ),
        Panel(
            "Checks failing",
            ((f"max by (check, severity) (adapter_check_failing{{{s}}})", "{{check}} ({{severity}})"),),
            "bool",
        ),
        Panel("Checks by state", ((f"sum by (state) (adapter_check_state{{{s}}})", "{{state}}"),)),
        Panel(
            "Rule evaluation errors",
            ((f"sum by (check) (rate(adapter_rule_evaluation_errors_total{{{s}}}[{RATE}]))", "{{check}}"),),
            "ops",
        ),
        Panel(
            "Rules in force and reloads",
            (
                (f"max by (pod) (adapter_rules{{{s}}})", "rules {{pod}}"),
                (f"sum by (result) (increase(adapter_rule_reloads_total{{{s}}}[{RATE}]))", "reloads {{result}}"),
            ),
        ),
        Panel(
            "Pages rejected and duplicate series",
            (
                (f"sum(rate(adapter_parse_errors_total{{{s}}}[{RATE}]))", "parse errors"),
                (f"sum(rate(adapter_duplicate_series_total{{{s}}}[{RATE}]))", "duplicates"),
            ),
            "ops",
        ),
    ]


def injector() -> list[Panel]:
    s = 'namespace="$namespace", pod=~"$pod"'
    return [
        Panel(
            "Reviews by outcome",
            (
                (
                    f"sum by (outcome, dry_run) (rate(injector_reviews_total{{{s}}}[{RATE}]))",
                    "{{outcome}} (dry run: {{dry_run}})",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Refused reviews by reason",
            ((f"sum by (reason) (rate(injector_refused_reviews_total{{{s}}}[{RATE}]))", "{{reason}}"),),
            "reqps",
            "Pods admitted without the sidecars they asked for (the webhook fails open).",
        ),
        Panel(
            "Certificate reloads",
            ((f"sum by (result) (increase(injector_certificate_reloads_total{{{s}}}[{RATE}]))", "{{result}}"),),
        ),
        Panel(
            "Certificate in use since",
            ((f"time() - max by (pod) (injector_certificate_loaded_timestamp_seconds{{{s}}})", "{{pod}}"),),
            "s",
        ),
    ]


SIDECARS = {"tailer": tailer, "ambassador": ambassador, "adapter": adapter, "injector": injector}


def dashboard(name: str) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0

    def row(title: str) -> None:
        nonlocal y
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "id": len(panels) + 1,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1

    def grid(items: list[Panel]) -> None:
        nonlocal y
        for i, p in enumerate(items):
            panels.append(
                {
                    "type": "timeseries",
                    "title": p.title,
                    "description": p.description,
                    "id": len(panels) + 1,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                    "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
                    "targets": [
                        {
                            "refId": chr(ord("A") + j),
                            "expr": expr,
                            "legendFormat": legend,
                            "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        }
                        for j, (expr, legend) in enumerate(p.queries)
                    ],
                }
            )
        y += ((len(items) + 2) // 3) * 8

    row("Sidecar")
    grid(base_panels(name))
    row(name.capitalize())
    grid(SIDECARS[name]())
    info = f'sidecar_build_info{{sidecar="{name}"}}'
    return {
        "title": f"Sidecars / {name.capitalize()}",
        "uid": f"sidecars-{name}",
        "description": f"The {name}'s own metrics, from its admin port (see monitoring/podmonitor.yaml).",
        "tags": ["sidecars", name],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "graphTooltip": 1,
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                {
                    "name": "namespace",
                    "type": "query",
                    "label": "Namespace",
                    "refresh": 2,
                    "sort": 1,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": f"label_values({info}, namespace)", "refId": "namespace"},
                    "definition": f"label_values({info}, namespace)",
                },
                {
                    "name": "pod",
                    "type": "query",
                    "label": "Pod",
                    "refresh": 2,
                    "sort": 1,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".+",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": f'label_values(sidecar_build_info{{sidecar="{name}", namespace="$namespace"}}, pod)',
                        "refId": "pod",
                    },
                    "definition": f'label_values(sidecar_build_info{{sidecar="{name}", namespace="$namespace"}}, pod)',
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }
