"""TLS origination: the ambassador next to nginx (`proxy_ssl_*`, session reuse) and HAProxy (`ssl
verify required`), all speaking plain HTTP to wrk and verified TLS to the same upstream.

The upstream is nginx with a certificate of a CA made here, on core 1 with wrk; each proxy in turn is
pinned to core 0 with one worker/thread, verifying the upstream's certificate and name. Two upstream
ports: one keeping connections alive (the steady state: TLS costs only record encryption), one
closing after every response (`keepalive_timeout 0`: every request opens a new TLS connection, which
measures handshakes). For each proxy: wrk -c50 on the keep-alive port (req/s, p50/p99), wrk -c1
(the p50 it adds over wrk speaking TLS to the upstream directly), and wrk -c50 on the closing port
(req/s with a handshake per request, and the full handshakes per second the upstream logged:
`$ssl_session_reused`, so resumption shows as fewer full ones). Target: req/s at least 0.6x nginx's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import trustme

from benchmarks.ambassador_http import HAPROXY, LOAD_CORE, PROXY_CORE, process, rss_mib, wrk
from benchmarks.report import Report
from sidecars.testing import free_port
from tests.support import nginx as support_nginx

UPSTREAM = """
        ssl_certificate {dir}/server.pem;
        ssl_certificate_key {dir}/server.key;
        ssl_session_cache shared:TLS:10m;
        location = /hello {{ default_type text/plain; return 200 "hello world\\n"; }}
"""
# The closing port, at the http level (not formatted: single braces), logging whether each
# connection's handshake was resumed ("r") or full (".").
UPSTREAM_CLOSING = """
    log_format reuse '$ssl_session_reused';
    server {
        listen 127.0.0.1:%(port)d ssl backlog=4096;
        ssl_certificate %(dir)s/server.pem;
        ssl_certificate_key %(dir)s/server.key;
        ssl_session_cache shared:TLS:10m;
        keepalive_timeout 0;
        access_log %(dir)s/closing.log reuse;
        location = /hello { default_type text/plain; return 200 "hello world\\n"; }
    }
"""

NGINX_PROXY = """
        location / {{
            proxy_pass https://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {dir}/../ca.pem;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }}
"""
NGINX_PROXY_UPSTREAM = "upstream app {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 10000000; }}"

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{upstream} ssl verify required ca-file {ca} sni str(localhost) verifyhost localhost
"""

AMBASSADOR_CONF = """
admin_host: 127.0.0.1
admin_port: {admin}
log_format: json
log_level: warning
listeners:
  - name: bench
    port: {port}
    access_log: "off"
    cluster:
      endpoints: ["127.0.0.1:{upstream}"]
      health_check: {{kind: none}}
      tls: {{ca_file: "{ca}", server_name: localhost}}
"""


@contextlib.contextmanager
def upstream(tmp: Path, port: int, closing_port: int) -> Iterator[Path]:
    """The TLS upstream on LOAD_CORE; yields the closing port's log."""
    d = tmp / "upstream"
    d.mkdir()
    cert = trustme.CA()
    cert.cert_pem.write_to_path(str(tmp / "ca.pem"))
    leaf = cert.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    leaf.private_key_pem.write_to_path(str(d / "server.key"))
    closing = UPSTREAM_CLOSING % {"port": closing_port, "dir": d}
    support_nginx.write_config(d, UPSTREAM, port, http=closing, listen="ssl backlog=4096", worker_connections=4096)
    with process(support_nginx.command(d), LOAD_CORE, port, stderr=subprocess.DEVNULL):
        yield d / "closing.log"


@contextlib.contextmanager
def nginx_proxy(tmp: Path, port: int, upstream_port: int) -> Iterator[None]:
    d = tmp / f"proxy-{upstream_port}"
    d.mkdir(parents=True, exist_ok=True)
    http = NGINX_PROXY_UPSTREAM.format(upstream=upstream_port)
    support_nginx.write_config(d, NGINX_PROXY, port, http=http, listen="backlog=4096", worker_connections=4096)
    with process(support_nginx.command(d), PROXY_CORE, port, stderr=subprocess.DEVNULL):
        yield


@contextlib.contextmanager
def haproxy(tmp: Path, port: int, upstream_port: int) -> Iterator[None]:
    conf = tmp / f"haproxy-{upstream_port}.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, upstream=upstream_port, ca=tmp / "ca.pem"))
    with process([HAPROXY, "-f", str(conf), "-db"], PROXY_CORE, port, stderr=subprocess.DEVNULL):
        yield


@contextlib.contextmanager
def ambassador(tmp: Path, port: int, upstream_port: int) -> Iterator[int]:
    conf = tmp / f"ambassador-{upstream_port}.yaml"
    conf.write_text(AMBASSADOR_CONF.format(admin=free_port(), port=port, upstream=upstream_port, ca=tmp / "ca.pem"))
    cmd = [sys.executable, "-m", "sidecars.ambassador", "--config", str(conf)]
    with process(cmd, PROXY_CORE, port, stdout=subprocess.DEVNULL) as proc:
        yield proc.pid


def full_handshakes(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.strip() == ".")


def run(quick: bool) -> Report:
    secs = 3 if quick else 10
    light_secs = 2 if quick else 5
    report = Report("ambassador_tls", peer="nginx, haproxy")
    report.notes.append(
        f"proxies pinned to core {PROXY_CORE}, TLS upstream nginx and wrk on core {LOAD_CORE}; wrk -c50 "
        f"{secs:g}s (keep-alive upstream, then one closing after every response), -c1 {light_secs:g}s for "
        f"added latency; every proxy verifies the upstream's certificate and name; cpus={os.cpu_count()}"
    )
    report.notes.append(
        "closing_*: every request opens a new upstream TLS connection; full_handshakes_per_s counts the "
        "handshakes the upstream did not resume (session reuse lowers it)"
    )
    Start = Callable[[Path, int, int], contextlib.AbstractContextManager[object]]
    proxies: dict[str, Start] = {"nginx": nginx_proxy, "haproxy": haproxy, "sidecars": ambassador}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port, closing_port = free_port(), free_port()
        with upstream(tmp, port, closing_port) as closing_log:
            direct = wrk(f"https://127.0.0.1:{port}/hello", 1, light_secs)
            report.add("direct (wrk over TLS)", light_p50_ms=direct["p50_ms"])
            for name, start in proxies.items():
                keep, close = free_port(), free_port()
                with start(tmp, keep, port) as pid, start(tmp, close, closing_port):
                    wrk(f"http://127.0.0.1:{keep}/hello", 50, 1)  # warm-up: connections pooled
                    heavy = wrk(f"http://127.0.0.1:{keep}/hello", 50, secs)
                    light = wrk(f"http://127.0.0.1:{keep}/hello", 1, light_secs)
                    before = full_handshakes(closing_log)
                    closing = wrk(f"http://127.0.0.1:{close}/hello", 50, secs)
                    full = full_handshakes(closing_log) - before
                    if isinstance(pid, int):
                        report.add(name, rss_mib=rss_mib(pid))
                    report.add(
                        name,
                        rps=heavy["rps"],
                        p50_ms=heavy["p50_ms"],
                        p99_ms=heavy["p99_ms"],
                        errors=heavy["errors"] + light["errors"] + closing["errors"],
                        proxy_core_pct=heavy["proxy_core_pct"],
                        light_p50_ms=light["p50_ms"],
                        added_p50_ms=light["p50_ms"] - direct["p50_ms"],
                        closing_rps=closing["rps"],
                        full_handshakes_per_s=full / secs,
                        resumed_pct=100.0 * (1 - full / max(1.0, closing["rps"] * secs)),
                    )
    rows = report.rows
    report.ratio("rps vs nginx (target >= 0.6)", rows["sidecars"]["rps"], rows["nginx"]["rps"])
    report.ratio("rps vs haproxy", rows["sidecars"]["rps"], rows["haproxy"]["rps"])
    report.ratio("closing rps vs nginx", rows["sidecars"]["closing_rps"], rows["nginx"]["closing_rps"])
    report.ratio("added p50 vs nginx's", rows["sidecars"]["added_p50_ms"], rows["nginx"]["added_p50_ms"])
    return report
