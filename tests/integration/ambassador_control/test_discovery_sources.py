"""DNS and file discovery against real sockets and files: updates, draining, bad updates kept out."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sidecars.ambassador.cluster import discovery
from sidecars.ambassador.cluster.cluster import Cluster, ClusterConfig
from sidecars.ambassador.cluster.discovery import Apply, ReportError, Source
from sidecars.ambassador.cluster.endpoint import Endpoint, Outcome
from tests.integration.ambassador_control.support import MakeCluster, MakeUpstreams, events, eventually
from tests.support.distributions import install

NO_CHECKS = {"kind": "none"}


class Resolver:
    """An injected resolver whose answer the test changes; an exception instance is raised instead."""

    def __init__(self, answer: list[str] | Exception) -> None:
        self.answer = answer
        self.calls = 0

    async def __call__(self, name: str, port: int) -> list[str]:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return list(self.answer)


def keys(cluster: Cluster) -> set[str]:
    return {ep.key for ep in cluster.endpoints if not ep.draining}


async def test_dns_re_resolution_adds_and_drains_endpoints(clusters: MakeCluster) -> None:
    resolver = Resolver(["10.1.0.1", "10.1.0.2"])
    cluster = clusters(resolver=resolver, dns="users.default.svc:8080", dns_refresh_secs=0.05, health_check=NO_CHECKS)
    removed: list[Endpoint] = []
    cluster.on_removed(removed.append)
    await cluster.start()
    assert keys(cluster) == {"10.1.0.1:8080", "10.1.0.2:8080"}

    leaving = next(ep for ep in cluster.endpoints if ep.host == "10.1.0.1")
    leaving.start_request()  # a request in flight when the pod goes away
    resolver.answer = ["10.1.0.2", "10.1.0.3"]
    await eventually(lambda: keys(cluster) == {"10.1.0.2:8080", "10.1.0.3:8080"}, "new DNS answer applied")
    assert removed == [leaving] and leaving.draining
    assert leaving in cluster.endpoints  # still there: its request finishes
    assert leaving not in {cluster.pick() for _ in range(100)}
    leaving.end_request(Outcome.OK, 0.01)
    assert leaving not in cluster.endpoints  # drained, then dropped
    assert events(cluster, "endpoint drained and dropped")[0]["endpoint"] == "10.1.0.1:8080"


async def test_dns_failure_or_empty_answer_keeps_the_last_good_set(clusters: MakeCluster) -> None:
    resolver = Resolver(["10.1.0.1"])
    cluster = clusters(resolver=resolver, dns="users:80", dns_refresh_secs=0.02, health_check=NO_CHECKS)
    await cluster.start()
    resolver.answer = OSError(-2, "Name or service not known")
    calls = resolver.calls
    await eventually(lambda: resolver.calls > calls + 3, "several failed resolutions")
    assert keys(cluster) == {"10.1.0.1:80"} and cluster.pick() is not None
    refused = events(cluster, "discovery update refused")
    assert len(refused) == 1  # the same reason is logged once, counted every time
    assert "users" in refused[0]["reason"] and refused[0]["kept_endpoints"] == 1
    errors = cluster._registry.get_sample_value("ambassador_discovery_errors_total", {"cluster": "it", "source": "dns"})
    assert errors is not None and errors >= 3
    resolver.answer = []
    await eventually(lambda: "no addresses" in str(cluster._last_error.get("dns")), "empty answer refused")
    assert keys(cluster) == {"10.1.0.1:80"}
    resolver.answer = ["10.1.0.9"]
    await eventually(lambda: keys(cluster) == {"10.1.0.9:80"}, "recovered")


async def test_dns_start_waits_for_a_first_answer(clusters: MakeCluster) -> None:
    resolver = Resolver(LookupError("SERVFAIL"))
    cluster = clusters(resolver=resolver, dns="users:80", dns_refresh_secs=0.05, health_check=NO_CHECKS)
    start = asyncio.create_task(cluster.start())
    await eventually(lambda: resolver.calls >= 1, "first resolution tried")
    await asyncio.sleep(0.1)
    assert not start.done() and not cluster.ready
    assert "SERVFAIL" in (cluster.status() or "")
    resolver.answer = ["10.1.0.1"]
    await asyncio.wait_for(start, 10)
    assert cluster.ready and cluster.status() is None


async def test_dns_with_the_system_resolver_and_a_real_server(upstreams: MakeUpstreams, clusters: MakeCluster) -> None:
    (server,) = await upstreams(1)
    cluster = clusters(dns=f"localhost:{server.port}", dns_family="ipv4", health_check={"kind": "tcp"})
    await cluster.start()
    assert keys(cluster) == {f"127.0.0.1:{server.port}"}
    assert cluster.endpoints[0].healthy


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_file_reload_applies_good_updates_and_keeps_out_bad_ones(tmp_path: Path, clusters: MakeCluster) -> None:
    path = tmp_path / "endpoints"
    path.write_text("10.2.0.1:80\n10.2.0.2:80\n")
    cluster = clusters(endpoints_file=str(path), endpoints_file_poll_secs=30, health_check=NO_CHECKS)
    await cluster.start()
    assert keys(cluster) == {"10.2.0.1:80", "10.2.0.2:80"}

    write_atomically(path, "- 10.2.0.1:80\n- 10.2.0.3:80\n")
    await eventually(lambda: keys(cluster) == {"10.2.0.1:80", "10.2.0.3:80"}, "YAML update applied (inotify)")

    write_atomically(path, "10.2.0.1:80\n10.2.0.4\n10.2.0.5:80\n")  # line 2 lacks its port
    await eventually(lambda: bool(events(cluster, "discovery update refused")), "bad update refused")
    refused = events(cluster, "discovery update refused")[-1]
    assert str(path) in refused["reason"] and "line 2" in refused["reason"]
    assert keys(cluster) == {"10.2.0.1:80", "10.2.0.3:80"}  # the last good set stays whole

    path.write_text("")  # truncated by a non-atomic writer: also refused
    await eventually(lambda: "no endpoints listed" in str(cluster._last_error.get("file")), "empty refused")
    assert keys(cluster) == {"10.2.0.1:80", "10.2.0.3:80"}

    write_atomically(path, '["10.2.0.6:80"]')
    await eventually(lambda: keys(cluster) == {"10.2.0.6:80"}, "JSON update applied")
    assert (
        cluster._registry.get_sample_value("ambassador_discovery_updates_total", {"cluster": "it", "source": "file"})
        == 3
    )


async def test_an_oversized_file_is_refused_unread(tmp_path: Path, clusters: MakeCluster) -> None:
    path = tmp_path / "endpoints"
    path.write_text("10.2.1.1:80\n")
    cluster = clusters(endpoints_file=str(path), endpoints_file_poll_secs=0.1, health_check=NO_CHECKS)
    await cluster.start()
    line = "10.2.1.2:80\n"
    write_atomically(path, line * (discovery.MAX_ENDPOINTS_FILE_BYTES // len(line) + 1))  # valid, but past 1 MiB
    await eventually(lambda: "larger than" in str(cluster._last_error.get("file")), "oversized update refused")
    assert str(path) in str(cluster._last_error.get("file"))
    assert keys(cluster) == {"10.2.1.1:80"}


async def test_file_follows_a_configmap_symlink_swap(tmp_path: Path, clusters: MakeCluster) -> None:
    # The kubelet's layout: endpoints -> ..data/endpoints, ..data -> ..<timestamp>, swapped by rename.
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "endpoints").write_text("10.3.0.1:80\n")
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/endpoints", tmp_path / "endpoints")
    cluster = clusters(endpoints_file=str(tmp_path / "endpoints"), endpoints_file_poll_secs=30, health_check=NO_CHECKS)
    await cluster.start()
    assert keys(cluster) == {"10.3.0.1:80"}
    (tmp_path / "..v2").mkdir()
    (tmp_path / "..v2" / "endpoints").write_text("10.3.0.2:80\n")
    os.symlink("..v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    await eventually(lambda: keys(cluster) == {"10.3.0.2:80"}, "symlink swap noticed")


async def test_file_polling_works_without_change_notifications(
    tmp_path: Path, clusters: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watchfiles

    def no_inotify(*args: object, **kwargs: object) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(watchfiles, "awatch", no_inotify)
    path = tmp_path / "endpoints"
    path.write_text("10.4.0.1:80\n")
    cluster = clusters(endpoints_file=str(path), endpoints_file_poll_secs=0.1, health_check=NO_CHECKS)
    await cluster.start()
    write_atomically(path, "10.4.0.2:80\n")
    await eventually(lambda: keys(cluster) == {"10.4.0.2:80"}, "change found by polling")
    assert any("polling every" in e["reason"] for e in events(cluster, "discovery update refused"))


async def test_missing_file_holds_start_until_it_appears(tmp_path: Path, clusters: MakeCluster) -> None:
    path = tmp_path / "endpoints"
    cluster = clusters(endpoints_file=str(path), endpoints_file_poll_secs=0.1, health_check=NO_CHECKS)
    start = asyncio.create_task(cluster.start())
    await eventually(lambda: "No such file" in (cluster.status() or ""), "status names the missing file")
    write_atomically(path, "10.5.0.1:80\n")
    await asyncio.wait_for(start, 10)
    assert keys(cluster) == {"10.5.0.1:80"}


async def test_new_endpoints_from_discovery_start_slowly_and_are_checked_first(
    tmp_path: Path, upstreams: MakeUpstreams, clusters: MakeCluster
) -> None:
    a, b = await upstreams(2)
    path = tmp_path / "endpoints"
    path.write_text(f"{a.address}\n")
    cluster = clusters(
        endpoints_file=str(path),
        slow_start_secs=60,
        health_check={"kind": "http", "interval_secs": 30, "timeout_secs": 1},
    )
    await cluster.start()
    first = cluster.endpoints[0]
    registry = cluster._registry
    assert registry.get_sample_value("ambassador_endpoint_weight", {"cluster": "it", "endpoint": a.address}) == 1
    write_atomically(path, f"{a.address}\n{b.address}\n")
    await eventually(lambda: len(cluster.candidates) == 2, "new endpoint checked and admitted")
    new = next(ep for ep in cluster.endpoints if ep is not first)
    assert new.hc_passes == 1  # admitted on its first check, not on discovery alone
    weight = registry.get_sample_value("ambassador_endpoint_weight", {"cluster": "it", "endpoint": b.address})
    assert weight is not None and 0.0 < weight < 0.5


async def test_static_and_file_sources_are_merged(tmp_path: Path, clusters: MakeCluster) -> None:
    path = tmp_path / "endpoints"
    path.write_text("10.6.0.2:80\n")
    cluster = clusters(endpoints=["10.6.0.1:80"], endpoints_file=str(path), health_check=NO_CHECKS)
    await cluster.start()
    assert keys(cluster) == {"10.6.0.1:80", "10.6.0.2:80"}


async def test_a_crashing_source_is_restarted_and_the_set_kept(clusters: MakeCluster) -> None:
    class Flaky(Resolver):
        async def __call__(self, name: str, port: int) -> list[str]:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("a bug in a resolver plugin")
            return ["10.7.0.1"] if self.calls == 1 else ["10.7.0.2"]

    resolver = Flaky([])
    cluster = clusters(resolver=resolver, dns="users:80", dns_refresh_secs=0.02, health_check=NO_CHECKS)
    await cluster.start()
    assert keys(cluster) == {"10.7.0.1:80"}
    await eventually(lambda: bool(events(cluster, "discovery source crashed; restarting it")), "crash logged")
    assert keys(cluster) == {"10.7.0.1:80"}  # the last good set stays while the source restarts
    await eventually(lambda: keys(cluster) == {"10.7.0.2:80"}, "restarted source applies again")


class RegistrySource(Source):
    """A discovery plugin as a separate package would ship it: endpoints pushed by a registry client."""

    updates: asyncio.Queue[frozenset[tuple[str, int]]]

    def __init__(self, service: str, port: int = 80) -> None:
        self.service = service
        self.port = port

    async def run(self, apply: Apply, error: ReportError) -> None:
        while True:
            hosts = await RegistrySource.updates.get()
            if not hosts:
                error(self.name, f"registry has no instances of {self.service}")
            else:
                apply(self.name, frozenset((h, self.port) for h, _ in hosts))


async def test_discovery_plugins_from_installed_packages(
    tmp_path: Path, clusters: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = {"registry": f"{__name__}:RegistrySource", "broken": "acme_missing_module:Source"}
    install(tmp_path, monkeypatch, "acme-discovery", {discovery.ENTRY_POINT_GROUP: entries})
    RegistrySource.updates = asyncio.Queue()
    RegistrySource.updates.put_nowait(frozenset({("10.8.0.1", 0)}))
    cluster = clusters(
        endpoints=["10.8.0.9:80"],
        discovery_plugin="registry",
        discovery_options={"service": "users", "port": 8080},
        health_check=NO_CHECKS,
    )
    await cluster.start()
    assert keys(cluster) == {"10.8.0.9:80", "10.8.0.1:8080"}
    RegistrySource.updates.put_nowait(frozenset())
    await eventually(lambda: bool(events(cluster, "discovery update refused")), "empty registry answer refused")
    assert keys(cluster) == {"10.8.0.9:80", "10.8.0.1:8080"}
    RegistrySource.updates.put_nowait(frozenset({("10.8.0.2", 0)}))
    await eventually(lambda: keys(cluster) == {"10.8.0.9:80", "10.8.0.2:8080"}, "plugin update applied")

    with pytest.raises(ValueError, match="unknown discovery plugin 'consul'; installed: broken, registry"):
        ClusterConfig(discovery_plugin="consul")
    # An import failure is an error naming the plugin, its package and the cause, not a traceback.
    with pytest.raises(ValueError, match=r"'broken' \(acme-discovery 1.0 .*cannot be loaded: ModuleNotFoundError"):
        ClusterConfig(discovery_plugin="broken")
    with pytest.raises(ValueError, match=r"discovery_plugin registry: .*unexpected keyword"):
        clusters(discovery_plugin="registry", discovery_options={"servise": "users"})
