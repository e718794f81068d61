"""What the benchmarks share: peers started in the run's temp dir, load generators read into figures,
and the side-by-side comparison of proxies in front of one upstream.

- Processes: `process` starts a command pinned to a core (`taskset`), yields once its port answers
  and `stop`s it afterwards; `stop_group` stops a process group (nginx's master and workers).
- Peers: `nginx`, `haproxy` and `ambassador` write their config and start it with `process`.
- Load: `load` runs a generator on LOAD_CORE and measures how busy each core was meanwhile; `wrk` and
  `h2load` turn its output into figures.
- Comparisons: `compare_proxies` drives every proxy in alternating rounds, best round counting, and
  adds a row per proxy; `probe_adapter` measures the adapter's /healthz while it scrapes a
  `metrics_page`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import Report
from sidecars.testing import free_port
from tests.support import nginx as support_nginx

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"
PROXY_CORE = "0"
LOAD_CORE = "1"

# keepalive_requests: nginx otherwise reconnects every 1000 requests; the others never do.
NGINX_UPSTREAM = "upstream app {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 10000000; }}"

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4000
defaults
  mode {mode}
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  {options}
frontend fe
  bind 127.0.0.1:{port}{bind}
  default_backend be
backend be
  server s1 127.0.0.1:{upstream}{server}
"""
HAPROXY_OPTIONS = {
    "http": "option http-keep-alive\n  http-reuse always",
    # tcp: kernel splicing where HAProxy finds it worthwhile, its fastest way to move bytes
    "tcp": "option splice-auto",
}

AMBASSADOR_CONF = """
admin_host: 127.0.0.1
admin_port: {admin}
{settings}log_format: json
log_level: warning
listeners:
{listeners}"""

# One listener in front of one upstream, access log off and no health checks: only the proxying costs.
BENCH_LISTENER = """\
  - name: bench
    port: {port}
    mode: {mode}
    access_log: "off"
    cluster:
      endpoints: ["127.0.0.1:{upstream}"]
      health_check: {{kind: none}}
{cluster}"""


# -- processes ------------------------------------------------------------------------------------


def wait_port(port: int, timeout_secs: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_http(url: str, timeout_secs: float = 30) -> None:
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def process(cmd: list[str], core: str, port: int, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["taskset", "-c", core, *cmd], **kwargs)  # type: ignore[call-overload]
    try:
        wait_port(port)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout_secs: float = 10) -> None:
    """SIGTERM, and SIGKILL if `proc` is still there after `timeout_secs`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_secs)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group `proc` leads, then SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmRSS")


def peak_rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmHWM")


MEMORY = {"rss_mib": rss_mib, "peak_rss_mib": peak_rss_mib}  # a row's memory figure, by its name


def _status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- peers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def nginx(
    tmp: Path, name: str, server: str, port: int, core: str, *, http: str = "", listen: str = "backlog=4096"
) -> Iterator[None]:
    """The tests' nginx config (`server` its one server block, `http` added at the http level) on `core`."""
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    support_nginx.write_config(d, server, port, http=http, listen=listen, worker_connections=4096)
    with process(support_nginx.command(d), core, port, stderr=subprocess.DEVNULL):
        yield


def nginx_upstream(port: int) -> str:
    """The http-level `upstream app` block of an nginx proxy in front of `port`."""
    return NGINX_UPSTREAM.format(upstream=port)


@contextlib.contextmanager
def haproxy(
    conf: Path, port: int, upstream: int, core: str, *, mode: str = "http", bind: str = "", server: str = ""
) -> Iterator[None]:
    """HAProxy, one thread, from 127.0.0.1:`port` to `upstream`; `bind` and `server` add to those lines."""
    options = HAPROXY_OPTIONS[mode]
    text = HAPROXY_CONF.format(port=port, upstream=upstream, mode=mode, options=options, bind=bind, server=server)
    conf.write_text(text)
    with process([HAPROXY, "-f", str(conf), "-db"], core, port, stderr=subprocess.DEVNULL):
        yield


def bench_listener(port: int, upstream: int, *, mode: str = "http", cluster: str = "") -> str:
    """The YAML of one listener in front of `upstream`; `cluster` adds lines to its cluster."""
    return BENCH_LISTENER.format(port=port, upstream=upstream, mode=mode, cluster=cluster)


@contextlib.contextmanager
def ambassador(conf: Path, port: int, core: str, listeners: str, *, settings: str = "") -> Iterator[int]:
    """The ambassador with `listeners` (YAML items) and `settings` (top-level lines), ready when
    `port` answers; yields its pid."""
    conf.write_text(AMBASSADOR_CONF.format(admin=free_port(), settings=settings, listeners=listeners))
    cmd = [sys.executable, "-m", "sidecars.ambassador", "--config", str(conf)]
    with process(cmd, core, port, stdout=subprocess.DEVNULL) as proc:
        yield proc.pid  # taskset execs the command: same pid


# -- load -----------------------------------------------------------------------------------------


def core_busy() -> dict[str, tuple[int, int]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat."""
    cores = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(f) for f in fields]
            cores[name[3:]] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))  # idle and iowait are not busy
    return cores


def load(cmd: list[str], timeout: float | None = None) -> tuple[str, dict[str, float]]:
    """`cmd` run on LOAD_CORE: its output, and per core how busy it was meanwhile (0 to 1)."""
    before = core_busy()
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, *cmd], capture_output=True, text=True, check=True, timeout=timeout
    ).stdout
    after = core_busy()
    return out, {c: (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]) for c in after}


def wrk(url: str, connections: int, secs: int) -> dict[str, float]:
    out, busy = load([WRK, "-t1", f"-c{connections}", f"-d{secs}s", "--latency", url])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": wrk_latency_ms(out, "50%"),
        "p99_ms": wrk_latency_ms(out, "99%"),
        "errors": float(errors.group(1)) if errors else (1.0 if socket_errors else 0.0),
        **_core_pcts(busy),
    }


def wrk_latency_ms(out: str, pct: str) -> float:
    """One percentile of `wrk --latency`'s distribution (`pct` as it prints it: "99%"), in ms."""
    m = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    return _ms(m.group(1), m.group(2)) if m else float("nan")


def h2load(url: str, connections: int, streams: int, secs: int) -> dict[str, float]:
    out, busy = load([H2LOAD, "-t1", f"-c{connections}", f"-m{streams}", f"-D{secs}", url])
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50_ms": _median_request_ms(out),
        "errors": float(int(done.group(3)) + int(done.group(4))) if done else 1.0,
        **_core_pcts(busy),
    }


def _median_request_ms(out: str) -> float:
    """h2load prints min/max/mean/sd of request times, no percentiles: at one stream the mean is close
    to the median, and it is what h2load gives for every proxy alike."""
    m = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
    return _ms(m.group(1), m.group(2)) if m else float("nan")


def _ms(text: str, unit: str) -> float:
    value = float(text)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _core_pcts(busy: dict[str, float]) -> dict[str, float]:
    return {
        "proxy_core_pct": 100 * busy.get(PROXY_CORE, float("nan")),
        "load_core_pct": 100 * busy.get(LOAD_CORE, float("nan")),
    }


# -- comparisons ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Durations:
    """How long each load runs: `secs` for throughput, `light_secs` at one connection; `rounds`."""

    secs: int
    light_secs: int
    rounds: int

    @classmethod
    def of(cls, quick: bool) -> Durations:
        return cls(secs=3, light_secs=2, rounds=1) if quick else cls(secs=10, light_secs=5, rounds=3)


Start = Callable[[int], contextlib.AbstractContextManager[object]]
Load = Callable[[str, int], dict[str, float]]


def compare_proxies(
    report: Report,
    upstream: int,
    path: str,
    proxies: Mapping[str, Start],
    *,
    heavy: Load,
    light: Load,
    durations: Durations,
    heavy_figures: tuple[str, ...],
    memory: str = "rss_mib",
) -> None:
    """Rows "direct" (`light` straight at the upstream) and one per proxy in front of it (started with a
    free port each): `heavy_figures` of its best `heavy` round, errors, core use, and the p50 of `light`
    with what it adds over direct. A proxy that yields a pid gets the `memory` figure (a name in MEMORY)
    after all the load."""
    direct = light(f"http://127.0.0.1:{upstream}{path}", durations.light_secs)
    report.add("direct", light_p50_ms=direct["p50_ms"])
    ports = {name: free_port() for name in proxies}
    with contextlib.ExitStack() as stack:
        pids = {name: stack.enter_context(start(ports[name])) for name, start in proxies.items()}
        urls = {name: f"http://127.0.0.1:{port}{path}" for name, port in ports.items()}
        for url in urls.values():
            heavy(url, 1)  # warm-up: connections pooled, caches hot
        # Rounds alternate between the proxies and the best round counts, so a burst of other work on
        # the machine does not land on one proxy's figures only.
        best: dict[str, dict[str, float]] = {}
        for _ in range(durations.rounds):
            for name, url in urls.items():
                figures = heavy(url, durations.secs)
                if name not in best or figures["rps"] > best[name]["rps"]:
                    best[name] = figures
        for name, url in urls.items():
            quiet = light(url, durations.light_secs)
            loud = best[name]
            pid = pids[name]
            if isinstance(pid, int):  # the ambassador's memory after all the load (one process)
                report.add(name, **{memory: MEMORY[memory](pid)})
            report.add(
                name,
                **{figure: loud[figure] for figure in heavy_figures},
                errors=loud["errors"] + quiet["errors"],
                proxy_core_pct=loud["proxy_core_pct"],
                load_core_pct=loud["load_core_pct"],
                light_p50_ms=quiet["p50_ms"],
                added_p50_ms=quiet["p50_ms"] - direct["p50_ms"],
            )


# -- the adapter ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsPage:
    """A page of `series` series and `size` bytes for the adapter to scrape: nginx on `port` serves it
    as /metrics from `dir`/www, next to the adapter's rules file `rules`."""

    dir: Path
    port: int
    series: int
    size: int
    rules: Path


@contextlib.contextmanager
def metrics_page(server: str, page: str, series: int, rules: str) -> Iterator[MetricsPage]:
    """`page` served by nginx (`server` its server block) from a temp dir, ready once /healthz answers.
    nginx runs in its own process group, so its workers go with it whatever happens to the master."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "www").mkdir()
        (root / "www" / "metrics").write_text(page)
        for path in [root, root / "www", root / "www" / "metrics"]:
            os.chmod(path, 0o755)
        (root / "rules.yaml").write_text(rules)
        port = free_port()
        support_nginx.write_config(root, server, port)
        proc = subprocess.Popen(support_nginx.command(root), start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            yield MetricsPage(root, port, series, len(page), root / "rules.yaml")
        finally:
            stop_group(proc)


def probe_adapter(
    module: str,
    page: MetricsPage,
    outputs: str,
    *,
    secs: int,
    connections: int,
    extra: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    before_load: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> tuple[dict[str, float], str]:
    """`python -m module` (the adapter, or it with a probe beside it; `extra` added to its arguments)
    scraping `page` every 2 s; once it is ready and a scrape is under way, `wrk_probe` on its /healthz.
    Returns wrk's figures and the adapter's /metrics page afterwards."""
    listen, admin = free_port(), free_port()
    command = [
        sys.executable, "-m", module,
        "--target-url", f"http://127.0.0.1:{page.port}/metrics",
        "--rules-file", str(page.rules),
        "--listen-host", "127.0.0.1", "--listen-port", str(listen),
        "--admin-host", "127.0.0.1", "--admin-port", str(admin),
        "--scrape-interval-secs", "2", "--scrape-timeout-secs", "2",
        "--outputs", outputs, "--log-format", "json",
        # Past the defaults: the page is that big on purpose.
        "--max-series", str(page.series + 1000), "--max-body-bytes", str(2 * page.size),
        *extra,
    ]  # fmt: skip
    adapter = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        wait_http(f"http://127.0.0.1:{admin}/readyz", 120)  # ready: the first verdict exists
        time.sleep(2.5)  # a scrape cycle under way
        if before_load is not None:
            before_load(adapter)
        figures = wrk_probe(f"http://127.0.0.1:{listen}/healthz", secs, connections)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
            return figures, response.read().decode()
    finally:
        stop_group(adapter)


def wrk_probe(url: str, secs: int, connections: int) -> dict[str, float]:
    """wrk on `url` unpinned: p50/p90/p99 (those it printed), req/s and the non-2xx answers."""
    out = subprocess.run(
        [WRK, "-t1", f"-c{connections}", f"-d{secs}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=secs + 30,
        check=True,
    ).stdout
    figures: dict[str, float] = {}
    for pct in ("50", "90", "99"):
        value = wrk_latency_ms(out, f"{pct}%")
        if value == value:  # not nan: printed
            figures[f"p{pct}_ms"] = value
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["req_per_s"] = float(m.group(1)) if m else 0.0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["non_2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return figures
