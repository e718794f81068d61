"""TCP mode throughput: the ambassador next to HAProxy (`mode tcp`), both in front of the same nginx.

nginx (core 1) serves one large file from tmpfs with sendfile; `curl` (core 1) downloads it through
each proxy in turn (core 0, `taskset`), alternating, best of the rounds. The figure is MiB/s of one
stream, the case of a sidecar carrying a database or cache connection. Target: at least 0.8x HAProxy.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from benchmarks.harness import LOAD_CORE, PROXY_CORE, ambassador, bench_listener, haproxy, load, nginx
from benchmarks.report import Report
from sidecars.testing import free_port


def download(url: str) -> float:
    """MiB/s of one download through `url`, as curl measured it."""
    out, _ = load(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url], timeout=120)
    return float(out.split()[0]) / (1 << 20)


def run(quick: bool) -> Report:
    size_mib = 256 if quick else 1024
    rounds = 1 if quick else 3
    report = Report("ambassador_tcp", peer="haproxy")
    report.notes.append(
        f"one {size_mib} MiB download per proxy and round (best of {rounds}), nginx sendfile from tmpfs; "
        f"proxies on core {PROXY_CORE}, nginx and curl on core {LOAD_CORE}; cpus={os.cpu_count()}"
    )
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory() as tmp_name, tempfile.TemporaryDirectory(dir=shm) as www_name:
        tmp, www = Path(tmp_name), Path(www_name)
        with (www / "big.bin").open("wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(size_mib):
                f.write(block)
        os.chmod(www, 0o755)
        upstream = free_port()
        with nginx(tmp, "files", f"root {www};", upstream, LOAD_CORE, http="sendfile on;"):
            direct = max(download(f"http://127.0.0.1:{upstream}/big.bin") for _ in range(rounds))
            report.add("direct", mib_per_s=direct)
            ports = {"haproxy": free_port(), "sidecars": free_port()}
            with contextlib.ExitStack() as stack:
                conf, port = tmp / "haproxy-tcp.cfg", ports["haproxy"]
                stack.enter_context(haproxy(conf, port, upstream, PROXY_CORE, mode="tcp"))
                conf, port = tmp / "ambassador-tcp.yaml", ports["sidecars"]
                stack.enter_context(ambassador(conf, port, PROXY_CORE, bench_listener(port, upstream, mode="tcp")))
                best = dict.fromkeys(ports, 0.0)
                for _ in range(rounds):
                    for name, port in ports.items():
                        best[name] = max(best[name], download(f"http://127.0.0.1:{port}/big.bin"))
            for name, value in best.items():
                report.add(name, mib_per_s=value)
    report.compare("throughput vs haproxy (target >= 0.8)", "mib_per_s", "haproxy")
    return report
