"""The output-plugin registry and the re-export's relabelling."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecars.adapter.exposition import parse
from sidecars.adapter.outputs import Output, load_output
from sidecars.adapter.outputs import base as outputs_base
from sidecars.adapter.outputs.prometheus import relabel
from sidecars.adapter.rules import parse_rules
from sidecars.core.registry import PluginError
from tests.support.distributions import install


class CompanyOutput(Output):
    name = "company"

    def routes(self) -> list:
        return []


def test_builtin_outputs_load_by_name() -> None:
    assert {load_output(n).name for n in ("health", "json", "prometheus")} == {"health", "json", "prometheus"}


def test_unknown_output_names_the_available_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown output 'statsd'; installed: health, json, prometheus"):
        load_output("statsd")


def test_an_installed_output_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = {
        "company": f"{__name__}:CompanyOutput",
        "broken": f"{__name__}:test_builtin_outputs_load_by_name",
        "health": f"{__name__}:CompanyOutput",
    }
    install(tmp_path, monkeypatch, "acme-outputs", {outputs_base.ENTRY_POINT_GROUP: entries})
    assert load_output("company") is CompanyOutput
    with pytest.raises(PluginError, match=r"is not a subclass of sidecars\.adapter\.outputs\.base\.Output"):
        load_output("broken")
    # A built-in's name cannot be taken by an installed package: asking for it says who claims it.
    with pytest.raises(PluginError, match=r"output 'health' is provided more than once: built in .*acme-outputs"):
        load_output("health")
    assert load_output("json").name == "json"


def test_relabel_keeps_drops_and_renames_whole_families() -> None:
    page = parse(
        "# HELP http_requests_total Requests\\nserved.\n# TYPE http_requests_total counter\n"
        'http_requests_total{code="200",path="/a\\"b"} 1\n'
        'http_requests_total{code="500",path="/healthz"} 2\n'
        "# TYPE http_seconds summary\n"
        'http_seconds{quantile="0.5"} 0.25\nhttp_seconds_sum 1e-3\nhttp_seconds_count 4\n'
        "go_threads 8\nmem_bytes 1.5e+20 1700000000000\n"
    )
    export = parse_rules(
        r"""
export:
  keep: ['http_.*', 'mem_bytes']
  drop: ['{path="/healthz"}', 'http_seconds_count']
  rename: [{match: 'http_(.*)', replace: 'acme_\1'}, {match: 'http_seconds', replace: 'never'}]
""",
        "x",
    ).export
    assert relabel(page, export).splitlines() == [
        "# HELP acme_requests_total Requests\\nserved.",
        "# TYPE acme_requests_total counter",
        'acme_requests_total{code="200",path="/a\\"b"} 1',
        "# TYPE acme_seconds summary",
        'acme_seconds{quantile="0.5"} 0.25',
        "acme_seconds_sum 0.001",
        "mem_bytes 1.5e+20 1700000000000",
    ]
    # What the re-export writes parses back to the same samples.
    again = parse(relabel(page, export)).samples
    assert ("acme_requests_total", (("code", "200"), ("path", '/a"b')), 1.0, None) in again
