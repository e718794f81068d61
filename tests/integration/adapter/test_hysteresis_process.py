"""Hysteresis through the real process: `python -m sidecars run adapter` against an app whose page the
test drives; states, the times they began, /healthz?verbose, health+json, /explain, the state-change
counter and log lines, and the flapping warn check.

Each step waits for the state it expects (polling /explain), never for a fixed time. Durations are
asserted from the times the adapter itself gives (`since`, to the millisecond, from its scrape
times): a state lasts at least its `for:` or `keep_firing_for:`, and at most that plus a generous
number of scrape intervals, so a loaded machine cannot break it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from sidecars.testing import Process, free_port, start_process

from .conftest import MetricsApp

RULES = """
rules:
  - name: kept
    expr: queue_depth > 1000
    for: 2s
    keep_firing_for: 2s
  - name: band
    expr: queue_depth > 1000
    recover: queue_depth < 200
    group: liveness
  - name: missing
    expr: not_on_the_page{job="app"} > 1
    no_data: warn
"""
INTERVAL_SECS = 0.2
SLACK_MS = 4000  # scrapes late on a loaded machine: far more than a few intervals


def page(depth: float) -> str:
    return f'# TYPE queue_depth gauge\nqueue_depth{{job="app"}} {depth}\n'


def millis(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def get(url: str, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def until(probe: Callable[[], Any], predicate: Callable[[Any], bool], timeout_secs: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_secs
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if predicate(last):
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached within {timeout_secs} s; last: {last}")


async def test_keep_firing_for_recover_and_flapping_through_the_real_process(app: MetricsApp, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    app.page = page(10)
    port = free_port()
    settings = {
        "target_url": app.url,
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "scrape_interval_secs": INTERVAL_SECS,
        "rules_file": str(rules),
        "flap_changes": 4,
    }
    base = f"http://127.0.0.1:{port}"

    async def explain(name: str) -> dict[str, Any]:
        status, body = await get(f"{base}/explain/{name}")
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def state(name: str) -> Callable[[], Any]:
        return lambda: explain(name)

    async with start_process("adapter", settings) as proc:
        await proc.wait_http("/readyz")
        await until(state("kept"), lambda d: "evaluated_at" in d and d["state"] == "ok")

        # -- keep_firing_for: ok -> pending -> firing -> recovering -> ok -----------------------------
        app.page = page(5000)
        pending = await until(state("kept"), lambda d: d["state"] == "pending")
        status, text = await get(f"{base}/readyz?verbose")
        assert status == 200, text  # pending fails nothing (band, in liveness, fails at once)
        line = next(x for x in text.splitlines() if x.startswith("[+]kept "))
        assert line.startswith("[+]kept pending since ") and "(for: 2s): queue_depth > 1000 = 5000" in line, line
        _, body = await get(f"{base}/readyz", Accept="application/health+json")
        entry = json.loads(body)["checks"]["kept:readiness"][0]
        assert entry["state"] == "pending" and entry["status"] == "pass" and entry["output"].startswith("pending since")

        firing = await until(state("kept"), lambda d: d["state"] == "firing")
        held = millis(firing["since"]) - millis(pending["since"])
        assert 2000 <= held < 2000 + SLACK_MS, held
        series = firing["condition"]["result"]["series"]
        assert series == [{"labels": {"__name__": "queue_depth", "job": "app"}, "value": 5000}]
        assert firing["condition"]["matched_nothing"] == []
        assert (await get(f"{base}/readyz"))[0] == 503

        app.page = page(10)
        recovering = await until(state("kept"), lambda d: d["state"] == "recovering")
        status, text = await get(f"{base}/readyz?verbose")
        assert status == 503  # still failing while it recovers
        assert "[-]kept failed: recovering since " in text and "(keep_firing_for: 2s)" in text, text
        ok = await until(state("kept"), lambda d: d["state"] == "ok")
        kept_for = millis(ok["since"]) - millis(recovering["since"])
        assert 2000 <= kept_for < 2000 + SLACK_MS, kept_for
        assert (await get(f"{base}/readyz"))[0] == 200

        # -- recover: failing stays failing in the band, leaves it below the recovery threshold ----
        app.page = page(5000)
        await until(state("band"), lambda d: d["state"] == "firing")
        app.page = page(500)
        band = await until(state("band"), lambda d: d["condition"]["result"]["series_total"] == 0)  # page read
        assert band["state"] == "firing" and "failing until queue_depth < 200" in band["reason"]
        assert band["recover"]["result"] == {"type": "vector", "series_total": 0, "series": []}
        assert (await get(f"{base}/livez"))[0] == 503
        app.page = page(150)
        band = await until(state("band"), lambda d: d["state"] == "ok")
        assert (await get(f"{base}/livez"))[0] == 200

        # -- no data: the selector that matched nothing is named ------------------------------------
        missing = await explain("missing")
        assert missing["state"] == "no_data" and missing["warning"] is True
        assert missing["condition"]["matched_nothing"] == ['not_on_the_page{job="app"}']
        assert missing["condition"]["selectors"] == [
            {"selector": 'not_on_the_page{job="app"}', "series_known": 0, "series_matched": 0}
        ]
        assert (await get(f"{base}/explain/nosuch"))[0] == 404

        # -- flapping: band has flipped 4 times (firing, ok, firing, ok); twice more -> named ----------
        for depth, wanted in ((5000, "firing"), (150, "ok")):
            app.page = page(depth)
            await until(state("band"), lambda d, w=wanted: d["state"] == w)  # type: ignore[misc]
        status, text = await until(
            lambda: get(proc.admin_url + "/readyz?verbose"), lambda r: "rules-flapping warn" in r[1]
        )
        assert status == 200  # a warning only
        assert "band (6 flips)" in text and "kept" not in text.split("rules-flapping")[1].splitlines()[0]

        _, metrics = await get(proc.admin_url + "/metrics")
        changes = {
            (labels["from"], labels["to"]): value
            for labels, value in _samples(metrics, "adapter_check_state_changes_total")
            if labels["check"] == "kept"
        }
        logs = await _stop(proc)
    lines = [e for e in logs if e.get("event") == "check state changed" and e.get("check") == "kept"]
    assert changes == collections.Counter((e["old"], e["new"]) for e in lines)  # each change counted and logged
    assert [(e["old"], e["new"]) for e in lines[:4]] == [
        ("ok", "pending"),
        ("pending", "firing"),
        ("firing", "recovering"),
        ("recovering", "ok"),
    ]
    first = lines[0]
    assert first["group"] == "readiness" and first["value"] == 5000
    assert first["series"] == ['{__name__="queue_depth",job="app"}']
    assert lines[1]["level"] == "warning" and lines[0]["level"] == "info"  # failing is a warning


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


async def _stop(proc: Process) -> list[dict[str, Any]]:
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait_exit(30) == 0
    return [json.loads(line) for line in proc.read_output().splitlines() if line.startswith("{")]
