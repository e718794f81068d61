"""The runtime in-process: readiness, supervision with a budget, halfway start-up failure, drain."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from sidecars.core.runtime import RestartBudget
from sidecars.testing import http_get, run_sidecar
from tests.support.core_plugins import Probe


async def test_probes_and_metrics_follow_the_lifecycle() -> None:
    async with run_sidecar(Probe, drain_secs=0.5) as sc:
        assert (await http_get(sc.admin_url + "/readyz"))[0] == 200
        assert sc.sample("sidecar_state", {"state": "ready"}) == 1.0
        stopping = asyncio.create_task(sc.stop())
        await asyncio.sleep(0.2)
        status, body = await http_get(sc.admin_url + "/readyz?verbose")
        assert status == 503 and "[-]shutdown failed: draining" in body
        assert (await http_get(sc.admin_url + "/livez"))[0] == 200  # liveness holds through the drain
        assert sc.sample("sidecar_state", {"state": "draining"}) == 1.0
        assert await stopping == 0
    assert sc.plugin.drained


async def test_crashing_task_is_restarted_with_backoff_and_counted() -> None:
    async with run_sidecar(
        Probe, crash_every_secs=0.05, max_restarts=20, restart_backoff_secs=0.02, restart_window_secs=60
    ) as sc:
        while sc.plugin.runs < 4:
            await asyncio.sleep(0.02)
        restarts = sc.sample("sidecar_task_restarts_total", {"task": "probe.run"})
        assert restarts is not None and restarts >= 3
        crashes = [e for e in sc.logs if e["event"] == "task crashed: restarting"]
        assert crashes and all(e["backoff_secs"] > 0 for e in crashes)


async def test_past_the_restart_budget_the_sidecar_exits_non_zero() -> None:
    async with run_sidecar(Probe, crash_every_secs=0.02, max_restarts=2, restart_backoff_secs=0.01) as sc:
        code = await sc.task
    assert code == 1
    assert sc.plugin.runs == 3  # the first run and two restarts
    assert any("restart budget spent" in e["event"] for e in sc.logs)


async def test_startup_failing_halfway_releases_what_it_acquired(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with 1 before it was ready"):
        async with run_sidecar(Probe, fail_setup=True, marker_dir=str(tmp_path)):
            pass
    assert list(tmp_path.iterdir()) == []  # the marker file was removed on the way out


async def test_run_returning_stops_cleanly() -> None:
    async with run_sidecar(Probe, return_after_secs=0.05) as sc:
        assert await sc.task == 0


async def test_drain_overrunning_the_budget_is_cut_and_logged() -> None:
    async with run_sidecar(Probe, drain_secs=5, shutdown_timeout_secs=0.3) as sc:
        assert await sc.stop() == 0
    assert sc.stop_secs is not None and sc.stop_secs < 5
    assert sc.events("drain did not finish within the shutdown budget")


async def test_never_ready_exits_after_the_startup_timeout() -> None:
    with pytest.raises(RuntimeError, match="exited with 1"):
        async with run_sidecar(Probe, ready_after_secs=10, startup_timeout_secs=0.2, ready_timeout_secs=5):
            pass


async def test_listener_released_after_stop() -> None:
    async with run_sidecar(Probe) as sc:
        assert sc.plugin.listener is not None
        port = sc.plugin.listener.getsockname()[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_backoff_grows_with_recent_crashes_and_stays_jittered() -> None:
    budget = RestartBudget(max_restarts=10, window_secs=60, base_secs=1.0)
    delays = []
    for i in range(5):
        assert budget.record_crash(float(i))
        delays.append(budget.backoff())
    assert all(2 ** (i - 1) <= d <= 2**i for i, d in enumerate(delays))
    assert len({budget.backoff() for _ in range(10)}) > 1
    assert budget.record_crash(100.0)  # old crashes left the window


async def test_a_failing_release_is_logged_and_exits_non_zero_after_releasing_the_rest(tmp_path: Path) -> None:
    async with run_sidecar(Probe, fail_release=True, marker_dir=str(tmp_path)) as sc:
        assert len(list(tmp_path.iterdir())) == 1
        code = await sc.stop()
    assert code == 1
    assert sc.events("shutdown failed") and list(tmp_path.iterdir()) == []


async def test_the_context_books_drops_and_errors_with_their_log_line() -> None:
    async with run_sidecar(Probe) as sc:
        for _ in range(3):
            sc.plugin.context.telemetry.dropped("too_large", 2, "work dropped: too large")
        sc.plugin.context.telemetry.error("upstream", "upstream failed", error="reset")
        _, metrics = await http_get(sc.admin_url + "/metrics")
    assert 'sidecar_events_dropped_total{reason="too_large"} 6.0' in metrics
    assert 'sidecar_errors_total{type="upstream"} 1.0' in metrics
    assert len(sc.events("work dropped: too large")) == 1 and sc.events("upstream failed")[0]["error"] == "reset"


async def test_admin_probes_list_excluded_checks_and_answer_health_json() -> None:
    async with run_sidecar(Probe) as sc:
        status, body = await http_get(sc.admin_url + "/readyz?verbose&exclude=started&exclude=nope")
        assert status == 200
        lines = body.splitlines()
        assert lines[:2] == ["[+]ping ok", "[+]shutdown ok"] and "[+]started ok" not in lines
        assert lines[-2:] == ["[+]started excluded: ok", "readyz check passed"]
        assert await http_get(sc.admin_url + "/livez") == (200, "ok")
        status, body = await http_get(sc.admin_url + "/readyz", headers={"Accept": "application/health+json"})
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "pass" and {"ping", "started", "shutdown"} <= set(doc["checks"])
