"""The ambassador's running state: built in lifespan, released in reverse, also when building fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sidecars.ambassador.cluster import discovery
from sidecars.ambassador.cluster.discovery import Apply, ReportError, Source
from sidecars.ambassador.plugin import Ambassador
from sidecars.ambassador.settings import AmbassadorSettings
from sidecars.core.logs import Capture
from sidecars.core.runtime import EXIT_FATAL, Runtime
from sidecars.testing import run_sidecar
from tests.support.distributions import install


class PickySource(Source):
    """A discovery plugin as a package ships it; it takes one option and refuses any other."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def run(self, apply: Apply, error: ReportError) -> None:
        apply(self.name, frozenset({("127.0.0.1", 9)}))


def _families(registry: CollectorRegistry) -> set[str]:
    """The ambassador's families with samples: what its collectors still report."""
    return {m.name for m in registry.collect() if m.name.startswith("ambassador_") and m.samples}


async def test_a_start_up_failing_halfway_releases_what_it_had_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = {"picky": f"{__name__}:PickySource"}
    install(tmp_path, monkeypatch, "acme-discovery", {discovery.ENTRY_POINT_GROUP: entries})
    no_checks = {"kind": "none"}
    settings = AmbassadorSettings.model_validate(
        {
            "admin_host": "127.0.0.1",
            "admin_port": 0,
            "listeners": [
                {"name": "first", "port": 0, "cluster": {"endpoints": ["127.0.0.1:9"], "health_check": no_checks}},
                # Valid settings (the plugin is installed), but its source refuses the option when built.
                {"name": "second", "port": 0, "cluster": {"discovery_plugin": "picky", "discovery_options": {"x": 1}}},
            ],
        }
    )
    registry = CollectorRegistry()
    capture = Capture()
    runtime = Runtime(Ambassador, settings, registry=registry, log=capture.logger(), handle_signals=False)
    assert await runtime.serve() == EXIT_FATAL
    assert capture.events and any("discovery_plugin picky" in str(e.get("error")) for e in capture.events)
    # The listeners' stats and the first listener's cluster series were registered before the second
    # listener failed: all of it is gone again.
    assert _families(registry) == set()
    with pytest.raises(RuntimeError, match="not running"):
        _ = runtime.plugin.listeners  # type: ignore[attr-defined]


async def test_the_running_state_lives_as_long_as_the_lifespan() -> None:
    listener = {"name": "web", "port": 0, "cluster": {"endpoints": ["127.0.0.1:9"], "health_check": {"kind": "none"}}}
    async with run_sidecar(Ambassador, listeners=[listener]) as sc:
        plugin: Ambassador = sc.plugin  # type: ignore[assignment]
        assert [li.config.name for li in plugin.listeners] == ["web"] and plugin.listeners[0].bound
        registry = sc.runtime.metrics.registry
        assert {"ambassador_client_connections", "ambassador_endpoint_state"} <= _families(registry)
    with pytest.raises(RuntimeError, match="not running"):
        _ = plugin.listeners
    assert _families(registry) == set()
