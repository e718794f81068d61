"""The adapter as a real process against a target that attacks it: pages that make regexes and the
parser run long, pages that inflate past every limit, and a target that wants a password.

Probes are timed the way the kubelet makes them (a new connection each, the default 1 s timeout far
away) on both listeners while scrapes and evaluations go on; the bound of 100 ms is the requirement:
a probe must never wait for a scrape.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecars.adapter.plugin import Adapter
from sidecars.core.redact import forget_secrets, redact_text
from sidecars.testing import Process, free_port, run_sidecar, start_process

from .conftest import MetricsApp

ADAPTER = [sys.executable, "-m", "sidecars.adapter"]
PROBE_BOUND_SECS = 0.1


@asynccontextmanager
async def adapter_process(
    app: MetricsApp, rules_file: Path, env: dict[str, str] | None = None, **settings: Any
) -> AsyncIterator[tuple[Process, str]]:
    """The adapter scraping `app` every 0.2 s; yields the process and its health listener's URL."""
    listen_port = free_port()
    values: dict[str, Any] = {
        "target_url": app.url,
        "rules_file": str(rules_file),
        "listen_host": "127.0.0.1",
        "listen_port": listen_port,
        "scrape_interval_secs": 0.2,
        "scrape_timeout_secs": 0.2,
        **settings,
    }
    async with start_process("adapter", values, env=env, command=ADAPTER) as proc:
        yield proc, f"http://127.0.0.1:{listen_port}"


def metric(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def admin_metrics(session: aiohttp.ClientSession, proc: Process) -> str:
    async with session.get(proc.admin_url + "/metrics") as response:
        return await response.text()


async def probe_while_evaluating(proc: Process, health_url: str, evaluations: int) -> list[float]:
    """Times probes of /healthz, /readyz (health listener) and /livez (admin) until the adapter has
    evaluated `evaluations` more scrapes; every probe must answer, none may wait."""
    await proc.wait_http("/livez", timeout_secs=30)
    urls = [health_url + "/healthz", health_url + "/readyz", proc.admin_url + "/livez"]
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as stats:
        start = metric(await admin_metrics(stats, proc), "sidecar_events_out_total")
        # force_close: a new connection per probe, as the kubelet makes them.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as probes:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for url in urls:
                    began = time.perf_counter()
                    async with probes.get(url) as response:
                        await response.read()
                        assert response.status in (200, 503), (url, response.status)
                    latencies.append(time.perf_counter() - began)
                done = metric(await admin_metrics(stats, proc), "sidecar_events_out_total") - start
                if done >= evaluations:
                    return latencies
                await asyncio.sleep(0.005)
    raise AssertionError(f"fewer than {evaluations} evaluations within 60 s")


async def verbose(health_url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(health_url + "/healthz?verbose") as response:
        return await response.text()


# --- regex time -------------------------------------------------------------------------------------------

# Exponential for a backtracking engine on a value of \w characters without the `.js` ending.
HOSTILE_PATTERN = r"/static/(\\w+[-.]?)+\\.js"


def hostile_label_page(n: int) -> str:
    # A new 39-character value on every page, so every scrape has a new series to match.
    hostile = "/static/" + "a" * 27 + f"{n:04d}"
    assert len(hostile) == 39
    return (
        "# TYPE http_requests_total counter\n"
        'http_requests_total{path="/static/main.js"} 1\n'
        f'http_requests_total{{path="{hostile}"}} 1\n'
    )


async def test_a_catastrophic_regex_never_stalls_the_probes(app: MetricsApp, rules_file: Path) -> None:
    app.page = hostile_label_page
    rules_file.write_text(
        f"""
rules:
  - name: static
    expr: 'count(http_requests_total{{path=~"{HOSTILE_PATTERN}"}}) > 0'
  - name: assets
    severity: warn
    expr: 'count(label_replace(http_requests_total, "asset", "$1", "path", "{HOSTILE_PATTERN}")) by (asset)'
"""
    )
    async with adapter_process(app, rules_file) as (proc, health):
        latencies = await probe_while_evaluating(proc, health, evaluations=10)
        body = await verbose(health)
    assert max(latencies) < PROBE_BOUND_SECS, f"slowest probe {max(latencies) * 1000:.1f} ms of {len(latencies)}"
    # The rules were evaluated: only /static/main.js matches, and label_replace took its group.
    assert "[-]static failed: count(http_requests_total" in body and "= 1" in body
    assert "[+]assets warn: count(label_replace(" in body and 'asset="main"' in body


async def test_a_page_built_to_make_the_parser_backtrack_never_stalls_the_probes(
    app: MetricsApp, rules_file: Path
) -> None:
    # A label block followed by 200 000 blanks, in a family the rules read (so it is parsed).
    app.page = "# TYPE queue_depth gauge\nqueue_depth 3\n" + 'queue_depth{a="1"' + " " * 200_000 + "\n"
    rules_file.write_text("rules:\n  - {name: queue, expr: queue_depth > 100}\nscrape: {for: 0s}\n")
    async with adapter_process(app, rules_file) as (proc, health):
        latencies = await probe_while_evaluating(proc, health, evaluations=10)
        body = await verbose(health)
        async with aiohttp.ClientSession() as session:
            failures = metric(
                await admin_metrics(session, proc), "adapter_scrape_failures_total", '{reason="parse_error"}'
            )
    assert max(latencies) < PROBE_BOUND_SECS, f"slowest probe {max(latencies) * 1000:.1f} ms of {len(latencies)}"
    assert "[-]scrape failed: scrape failed: parse_error: line 3: invalid label set" in body
    assert failures >= 10


# --- memory bounds ----------------------------------------------------------------------------------------


def peak_rss_bytes(proc: Process) -> int:
    status = Path(f"/proc/{proc.proc.pid}/status").read_text()
    kib = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.M)
    assert kib is not None
    return int(kib.group(1)) * 1024


def gzip_bomb(inflated_bytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\n" * (1 << 20)
    return b"".join([packer.compress(block) for _ in range(inflated_bytes >> 20)] + [packer.flush()])


async def wait_for_failures(proc: Process, reason: str, count: int) -> str:
    await proc.wait_http("/livez", timeout_secs=30)
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            text = await admin_metrics(session, proc)
            if metric(text, "adapter_scrape_failures_total", f'{{reason="{reason}"}}') >= count:
                return text
            await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} {reason} failures")


SMALL_PAGE = "# TYPE queue_depth gauge\nqueue_depth 3\n"


async def test_a_gzip_bomb_is_stopped_at_the_size_limit_while_inflating(app: MetricsApp, rules_file: Path) -> None:
    app.page = SMALL_PAGE
    rules_file.write_text("rules:\n  - {name: queue, expr: queue_depth > 100}\n")
    limit = 20_000_000
    bomb = gzip_bomb(1 << 30)  # about 1 MB that inflates to 1 GiB of blank lines (made before: seconds of CPU)
    # A timeout far above the time inflating the limit takes, so every scrape ends as too_large.
    timing = {"scrape_interval_secs": 1.0, "scrape_timeout_secs": 1.0}
    async with adapter_process(app, rules_file, max_body_bytes=limit, **timing) as (proc, health):
        await wait_for_success(proc)
        baseline = peak_rss_bytes(proc)
        app.raw_body = bomb
        app.headers = {"Content-Encoding": "gzip"}
        # The first network read alone inflates past the limit: the loop must still answer probes.
        latencies = await probe_while_evaluating(proc, health, evaluations=5)
        text = await wait_for_failures(proc, "too_large", 5)
        peak = peak_rss_bytes(proc)
        body = await verbose(health)
    assert f"too_large: page larger than {limit} bytes" in body
    assert metric(text, "adapter_scrape_failures_total", '{reason="timeout"}') == 0
    assert max(latencies) < PROBE_BOUND_SECS, f"slowest probe {max(latencies) * 1000:.1f} ms of {len(latencies)}"
    # The bytes held never pass the limit by more than one piece (plus the allocator's slack), and
    # a failed scrape lets its bytes go at once (not when a full garbage collection comes by).
    grown = peak - baseline
    assert grown < 2.5 * limit, f"peak RSS grew by {grown >> 20} MiB with a limit of {limit / 1e6:.0f} MB"


async def test_a_page_past_the_series_limit_fails_the_scrape_with_its_reason(app: MetricsApp, rules_file: Path) -> None:
    app.page = SMALL_PAGE
    rules_file.write_text("rules:\n  - {name: queue, expr: max(queue_depth) > 1e9}\nscrape: {for: 0s}\n")
    async with adapter_process(app, rules_file, max_series=10_000, scrape_interval_secs=1) as (proc, health):
        await wait_for_success(proc)
        baseline = peak_rss_bytes(proc)
        app.page = "# TYPE queue_depth gauge\n" + "".join(f'queue_depth{{i="{i}"}} {i}\n' for i in range(200_000))
        text = await wait_for_failures(proc, "too_many_series", 3)
        peak = peak_rss_bytes(proc)
        body = await verbose(health)
    assert "[-]scrape failed: scrape failed: too_many_series: more than 10000 series" in body
    assert metric(text, "adapter_scrape_failures_total", '{reason="too_many_series"}') >= 3
    # 200 000 series would take about 400 MiB; the parse stopped within one block past 10 000.
    assert peak - baseline < 100 << 20, f"peak RSS grew by {(peak - baseline) >> 20} MiB"


# --- the target's credentials -----------------------------------------------------------------------------

SECRET = "pa55-Wörd-7f3a9c"
TOKEN = "tok-5e1b0c4d2a"


async def run_to_exit(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *ADAPTER, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_credentials_in_the_target_url_are_refused_without_echoing_them(how: str) -> None:
    import os

    url = f"http://scraper:{SECRET}@127.0.0.1:1/metrics"
    env = dict(os.environ)
    args = ["--check-config"]
    if how == "flag":
        args += ["--target-url", url]
    else:
        env["ADAPTER_TARGET_URL"] = url
    for extra in ([], ["--print-config"]):
        code, out = await run_to_exit([*args, *extra], env)
        assert code != 0, out
        assert "target_url must not hold credentials" in out and "target_basic_auth_username" in out
        assert SECRET not in out and "scraper:" not in out


async def output_after_stop(proc: Process) -> str:
    proc.proc.terminate()
    assert await proc.wait_exit(30) == 0
    return proc.read_output()


async def test_basic_auth_reaches_the_target_and_the_password_is_never_shown(
    app: MetricsApp, rules_file: Path, tmp_path: Path
) -> None:
    app.page = "# TYPE queue_depth gauge\nqueue_depth 500\n"
    app.status = 500  # first a failing target: its error details are logged and served
    rules_file.write_text("rules:\n  - {name: queue, expr: queue_depth > 100}\nscrape: {for: 0s}\n")
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    settings = {"target_basic_auth_username": "scraper", "target_basic_auth_password_file": str(secret_file)}

    code, printed = await run_to_exit(
        ["--config", str(write_config(tmp_path, app, rules_file, settings)), "--print-config"]
    )
    assert code == 0 and "target_basic_auth_password" in printed and SECRET not in printed

    async with adapter_process(app, rules_file, **settings) as (proc, health):
        await wait_for_failures(proc, "http_status", 2)
        shown = await all_outputs(proc, health)
        app.status = 200
        await wait_for_success(proc)
        shown += await all_outputs(proc, health)
        logs = await output_after_stop(proc)
    expected = "Basic " + base64.b64encode(f"scraper:{SECRET}".encode()).decode()
    assert app.authorization and set(app.authorization) == {expected}
    assert "[-]queue failed: queue_depth > 100 = 500" in shown  # the scrapes with the password worked
    for text in (shown, logs):
        assert SECRET not in text and base64.b64encode(f"scraper:{SECRET}".encode()).decode() not in text
    assert "scrape failed" in logs and "HTTP 500" in logs  # the failure was logged, without the password


async def test_the_header_built_from_the_password_is_masked_as_the_password_is(app: MetricsApp) -> None:
    # In-process, to ask the process's redaction directly: base64 of user:password is the password too.
    app.page = SMALL_PAGE
    encoded = base64.b64encode(f"scraper:{SECRET}".encode()).decode()
    settings = {"target_basic_auth_username": "scraper", "target_basic_auth_password": SECRET}
    try:
        assert redact_text(f"sent {encoded}.") == f"sent {encoded}."
        async with run_sidecar(Adapter, target_url=app.url, listen_host="127.0.0.1", listen_port=0, **settings):
            assert redact_text(f"sent {encoded}.") == "sent **********."
            assert redact_text(f"sent Basic {encoded}") == "sent **********"
    finally:
        forget_secrets()


async def test_a_redirect_to_another_origin_gets_no_credentials(
    app: MetricsApp, rules_file: Path, tmp_path: Path
) -> None:
    # The target sends the scraper to another origin (another port of 127.0.0.1): followed, as
    # Prometheus does, but the token stays with the origin it was given for.
    elsewhere = MetricsApp(page="# TYPE queue_depth gauge\nqueue_depth 500\n")
    await elsewhere.start()
    try:
        app.status, app.raw_body, app.headers = 302, b"", {"Location": elsewhere.url}
        rules_file.write_text("rules:\n  - {name: queue, expr: queue_depth > 100}\n")
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        async with adapter_process(app, rules_file, target_bearer_token_file=str(token_file)) as (proc, health):
            await wait_for_success(proc)
            body = await verbose(health)
    finally:
        await elsewhere.stop()
    assert "[-]queue failed: queue_depth > 100 = 500" in body
    assert app.authorization and set(app.authorization) == {f"Bearer {TOKEN}"}
    assert elsewhere.authorization and set(elsewhere.authorization) == {None}


async def test_a_bearer_token_from_a_file_reaches_the_target_and_is_never_shown(
    app: MetricsApp, rules_file: Path, tmp_path: Path
) -> None:
    import os

    app.page = "# TYPE queue_depth gauge\nqueue_depth 3\n"
    rules_file.write_text("rules:\n  - {name: queue, expr: queue_depth > 100}\n")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    env = {"ADAPTER_TARGET_BEARER_TOKEN_FILE": str(token_file)}
    code, printed = await run_to_exit(
        ["--config", str(write_config(tmp_path, app, rules_file, {})), "--print-config"], {**os.environ, **env}
    )
    assert code == 0 and "target_bearer_token: '**********'" in printed and TOKEN not in printed
    async with adapter_process(app, rules_file, env=env) as (proc, health):
        await wait_for_success(proc)
        shown = await all_outputs(proc, health)
        logs = await output_after_stop(proc)
    assert app.authorization and set(app.authorization) == {f"Bearer {TOKEN}"}
    assert TOKEN not in shown and TOKEN not in logs


def write_config(tmp_path: Path, app: MetricsApp, rules_file: Path, settings: dict[str, Any]) -> Path:
    path = tmp_path / "adapter.json"
    path.write_text(json.dumps({"target_url": app.url, "rules_file": str(rules_file), **settings}))
    return path


async def wait_for_success(proc: Process) -> None:
    await proc.wait_http("/livez", timeout_secs=30)
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if metric(await admin_metrics(session, proc), "adapter_scrape_series") > 0:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("no successful scrape")


async def all_outputs(proc: Process, health: str) -> str:
    """Everything the two listeners show about the checks and the target, in every format."""
    out = []
    async with aiohttp.ClientSession() as session:
        for url, headers in (
            (health + "/healthz?verbose", {}),
            (health + "/readyz?verbose", {}),
            (health + "/healthz", {"Accept": "application/health+json"}),
            (health + "/healthz/scrape?verbose", {}),
            (proc.admin_url + "/readyz?verbose", {}),
            (proc.admin_url + "/livez?verbose", {}),
            (proc.admin_url + "/metrics", {}),
        ):
            async with session.get(url, headers=headers) as response:
                out.append(await response.text())
    return "\n".join(out)


pytestmark = pytest.mark.timeout(180)
