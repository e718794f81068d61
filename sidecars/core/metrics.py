"""One Prometheus registry per process, with the `sidecar_*` base series every sidecar exports.

Plugins register their own series on `SidecarMetrics.registry`; tests get a fresh registry each time.
Labels stay bounded: reasons and error types are small fixed vocabularies, never paths or messages.

Every registry also carries the `process_*` series (CPU, memory, open file descriptors and their
limit, start time) as Prometheus' own exporters have them. No `_created` series: each counter would
bring a second series holding its creation time, which doubles what is stored for nothing the
`sidecar_start_time_seconds` gauge does not already say.
"""

from __future__ import annotations

import platform
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, ProcessCollector, disable_created_metrics

import sidecars

STATES = ("starting", "ready", "draining", "stopped")

# Process-wide in prometheus_client: it applies to the plugins' own series too.
disable_created_metrics()  # type: ignore[no-untyped-call]


class SidecarMetrics:
    """The base series; `registry` is where the plugin adds its own."""

    def __init__(self, sidecar: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.sidecar = sidecar
        self.started_at = time.time()
        ProcessCollector(registry=self.registry)
        self.build_info = Info(
            "sidecar_build", "Version of the sidecar and of Python it runs on.", registry=self.registry
        )
        self.build_info.info({"sidecar": sidecar, "version": sidecars.__version__, "python": platform.python_version()})
        self.state = Gauge(
            "sidecar_state", "1 for the lifecycle state the sidecar is in.", ["state"], registry=self.registry
        )
        self.start_time = Gauge("sidecar_start_time_seconds", "Unix time the process started.", registry=self.registry)
        self.start_time.set(self.started_at)
        self.restarts = Counter(
            "sidecar_task_restarts", "Restarts of supervised tasks after a crash.", ["task"], registry=self.registry
        )
        self.events_in = Counter(
            "sidecar_events_in", "Units of work taken in (lines, requests, scrapes).", registry=self.registry
        )
        self.events_out = Counter("sidecar_events_out", "Units of work delivered or answered.", registry=self.registry)
        self.events_dropped = Counter(
            "sidecar_events_dropped", "Units of work given up, by reason.", ["reason"], registry=self.registry
        )
        self.errors = Counter("sidecar_errors", "Errors by type.", ["type"], registry=self.registry)
        self.set_state("starting")

    def set_state(self, state: str) -> None:
        for s in STATES:
            self.state.labels(state=s).set(1 if s == state else 0)
