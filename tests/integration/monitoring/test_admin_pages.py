"""Every built-in sidecar's admin server, as Prometheus and a person see it.

/metrics: `promtool check metrics` finds nothing to say, the `process_*` series are there and no
`_created` series is. `/`: the status page names the sidecar, its state and checks, and every page
it lists answers; the ambassador's `/clusters` shows each endpoint, the tailer's `/files` each file.
"""

from __future__ import annotations

import json
import re
import subprocess

from sidecars.testing import RunningSidecar, http_get

PROCESS_SERIES = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


def promtool_check(page: str) -> str:
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=60, check=False
    )
    return (proc.stdout + proc.stderr).strip() if proc.returncode or proc.stdout or proc.stderr else ""


async def test_metrics_pages_are_promtool_clean_with_process_series_and_no_created(pages: dict[str, str]) -> None:
    assert set(pages) == {"tailer", "ambassador", "adapter", "injector"}
    for name, page in pages.items():
        assert promtool_check(page) == "", f"{name}: promtool check metrics: {promtool_check(page)}"
        for series in PROCESS_SERIES:
            assert re.search(rf"^{series} \S+$", page, re.M), f"{name}: {series} missing"
        created = re.findall(r"^\w+_created(?:\{.*\})? ", page, re.M)
        assert created == [], f"{name}: {created[:5]}"


async def test_the_ambassador_latency_histogram_has_a_status_class(pages: dict[str, str]) -> None:
    count = "ambassador_request_duration_seconds_count"
    lines = [ln for ln in pages["ambassador"].splitlines() if ln.startswith(count)]
    assert lines == ['ambassador_request_duration_seconds_count{cluster="web",code_class="2xx",listener="web"} 1.0']


async def test_every_status_page_lists_pages_that_answer(running: dict[str, RunningSidecar]) -> None:
    for name, sc in running.items():
        status, body = await http_get(sc.admin_url + "/", headers={"Accept": "application/json"})
        assert status == 200, name
        doc = json.loads(body)
        assert (doc["sidecar"], doc["state"]) == (name, "ready")
        assert {c["name"] for c in doc["checks"]["livez"]} >= {"ping"}
        for page in doc["pages"]:
            code, _ = await http_get(sc.admin_url + page["path"])
            assert code in (200, 503), f"{name}: {page}"
        status, text = await http_get(sc.admin_url + "/config")
        assert status == 200 and "admin_port:" in text, name
        status, html = await http_get(sc.admin_url + "/")
        assert status == 200 and f"<h1>{name} " in html, name


async def test_ambassador_clusters_and_tailer_files(running: dict[str, RunningSidecar]) -> None:
    ambassador, tailer = running["ambassador"], running["tailer"]
    _, body = await http_get(ambassador.admin_url + "/clusters")
    (listener,) = json.loads(body)["clusters"]
    assert listener["listener"] == "web" and listener["cluster"]["ready"] is True
    (endpoint,) = listener["cluster"]["endpoints"]
    assert endpoint["state"] == "healthy" and endpoint["outcomes"]["ok"] == 1
    _, body = await http_get(ambassador.admin_url + "/", headers={"Accept": "application/json"})
    doc = json.loads(body)
    assert doc["figures"]["endpoints healthy"] == "1 of 1" and doc["figures"]["requests"] == 1
    assert [row["endpoint"] for row in doc["tables"]["endpoints"]["rows"]] == [endpoint["endpoint"]]
    assert "/clusters" in {p["path"] for p in doc["pages"]}

    _, body = await http_get(tailer.admin_url + "/files")
    (followed,) = json.loads(body)["files"]
    assert followed["path"].endswith("app.log")
    _, body = await http_get(tailer.admin_url + "/", headers={"Accept": "application/json"})
    doc = json.loads(body)
    assert doc["figures"]["files followed"] == 1
    assert [row["path"] for row in doc["tables"]["files"]["rows"]] == [followed["path"]]
    assert "/files" in {p["path"] for p in doc["pages"]}
