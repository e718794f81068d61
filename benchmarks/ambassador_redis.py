"""Redis and memcached sharding: the ambassador next to nutcracker (twemproxy) in front of the same shards.

Three redis-servers and three memcacheds (ketama, fnv1a_64) run on core 1 with the load generators;
each proxy is one process pinned to core 0 (`taskset`), with one connection per shard as both
default to. For each proxy: `redis-benchmark` GET and SET with 50 clients at pipeline 1 and 16
(ops/s), then one client at pipeline 1 (the p50 the proxy adds over talking to a shard directly);
`memcaslap` (libmemcached) with 50 connections, 90% get / 10% set, one request in flight per
connection (so its ops/s measure the round trip, as pipeline 1 does). Rounds alternate between the two
proxies and the best round counts. Peak RSS (VmHWM) of each proxy after all the load.
Target: ops/s at least 0.6x nutcracker's at pipeline 16.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.harness import LOAD_CORE, PROXY_CORE, ambassador, load, peak_rss_mib, process
from benchmarks.report import Report
from sidecars.ambassador.cluster.sharding import HASHING
from sidecars.ambassador.proxy.redis_proxy import RESP
from sidecars.testing import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_BENCHMARK = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
MEMCASLAP = shutil.which("memcaslap") or "/usr/bin/memcaslap"
NUTCRACKER = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
SHARDS = 3
CLIENTS = 50

NUTCRACKER_CONF = """
redis:
  listen: 127.0.0.1:{redis_port}
  redis: true
  hash: fnv1a_64
  distribution: ketama
  servers:
{redis_servers}
memcached:
  listen: 127.0.0.1:{mc_port}
  hash: fnv1a_64
  distribution: ketama
  servers:
{mc_servers}
"""

AMBASSADOR_LISTENERS = """\
  - name: redis
    port: {redis_port}
    mode: redis
    cluster:
      endpoints: [{redis_endpoints}]
  - name: memcached
    port: {mc_port}
    mode: memcached
    cluster:
      endpoints: [{mc_endpoints}]
"""


@contextlib.contextmanager
def shards(tmp: Path) -> Iterator[tuple[list[int], list[int]]]:
    redis_ports = [free_port() for _ in range(SHARDS)]
    mc_ports = [free_port() for _ in range(SHARDS)]
    with contextlib.ExitStack() as stack:
        for port in redis_ports:
            cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            cmd += ["--dir", str(tmp), "--dbfilename", f"{port}.rdb", "--loglevel", "warning"]
            stack.enter_context(process(cmd, LOAD_CORE, port, stdout=subprocess.DEVNULL))
        for port in mc_ports:
            cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1", "-m", "256", "-u", "root"]
            stack.enter_context(process(cmd, LOAD_CORE, port, stdout=subprocess.DEVNULL))
        yield redis_ports, mc_ports


@contextlib.contextmanager
def nutcracker(tmp: Path, ports: tuple[int, int], redis_ports: list[int], mc_ports: list[int]) -> Iterator[int]:
    conf = tmp / "nutcracker.yml"
    conf.write_text(
        NUTCRACKER_CONF.format(
            redis_port=ports[0],
            mc_port=ports[1],
            redis_servers="\n".join(f"    - 127.0.0.1:{p}:1" for p in redis_ports),
            mc_servers="\n".join(f"    - 127.0.0.1:{p}:1" for p in mc_ports),
        )
    )
    cmd = [NUTCRACKER, "-c", str(conf), "-s", str(free_port()), "-a", "127.0.0.1", "-o", str(tmp / "nc.log")]
    cmd += ["-p", str(tmp / "nc.pid")]
    with process(cmd, PROXY_CORE, ports[0], stdout=subprocess.DEVNULL) as proc:
        yield proc.pid


def sidecars(
    tmp: Path, ports: tuple[int, int], redis_ports: list[int], mc_ports: list[int]
) -> contextlib.AbstractContextManager[int]:
    listeners = AMBASSADOR_LISTENERS.format(
        redis_port=ports[0],
        mc_port=ports[1],
        redis_endpoints=", ".join(f"127.0.0.1:{p}" for p in redis_ports),
        mc_endpoints=", ".join(f"127.0.0.1:{p}" for p in mc_ports),
    )
    return ambassador(tmp / "ambassador.yaml", ports[0], PROXY_CORE, listeners)


def redis_benchmark(port: int, clients: int, pipeline: int, requests: int) -> dict[str, dict[str, float]]:
    """{"GET": {"rps", "p50_ms"}, "SET": ...} and how busy each core was."""
    args = ["-c", str(clients), "-n", str(requests), "-P", str(pipeline), "-r", "100000", "-d", "64", "--csv"]
    out, busy = load([REDIS_BENCHMARK, "-p", str(port), "-t", "get,set", *args], timeout=600)
    rows = {row["test"]: row for row in csv.DictReader(io.StringIO(out))}
    if set(rows) != {"GET", "SET"}:
        raise RuntimeError(f"redis-benchmark failed: {out[-500:]}")
    result = {name: {"rps": float(r["rps"]), "p50_ms": float(r["p50_latency_ms"])} for name, r in rows.items()}
    result["cores"] = {"proxy": 100 * busy.get(PROXY_CORE, float("nan")), "load": 100 * busy.get(LOAD_CORE, 0.0)}
    return result


def memcaslap(port: int, secs: int) -> tuple[float, float]:
    """Operations per second, and how busy the proxy's core was meanwhile (percent)."""
    args = ["-T", "1", "-c", str(CLIENTS), "-t", f"{secs}s", "-X", "64"]
    out, busy = load([MEMCASLAP, "-s", f"127.0.0.1:{port}", *args], timeout=secs + 60)
    match = re.search(r"TPS: (\d+)", out)
    if not match:
        raise RuntimeError(f"memcaslap failed: {out[-500:]}")
    return float(match.group(1)), 100 * busy[PROXY_CORE]


def run(quick: bool) -> Report:
    rounds = 1 if quick else 3
    requests = {1: 100_000 if quick else 1_000_000, 16: 400_000 if quick else 4_000_000}
    mc_secs = 3 if quick else 10
    report = Report("ambassador_redis", peer="nutcracker")
    report.notes.append(
        f"proxies pinned to core {PROXY_CORE}; {SHARDS} redis-servers, {SHARDS} memcacheds, redis-benchmark and "
        f"memcaslap on core {LOAD_CORE}; best of {rounds} alternating rounds; ketama + fnv1a_64; "
        f"redis-benchmark -c {CLIENTS} -d 64 -r 100000 (GET, SET), memcaslap -c {CLIENTS} -X 64 (90% get); "
        f"cpus={os.cpu_count()}"
    )
    report.notes.append(f"sidecars: RESP parser {RESP.name} ({RESP.reason}), key hashes {HASHING.name}")
    report.notes.append(
        "*_core_pct: how busy each core was in the counted pipeline-16 GET/SET round; a load core near 100% "
        "means redis-benchmark and the shards, not the proxy, set the pace (the ratio is then a lower bound)"
    )
    with tempfile.TemporaryDirectory() as tmp_name, shards(Path(tmp_name)) as (redis_ports, mc_ports):
        tmp = Path(tmp_name)
        direct = redis_benchmark(redis_ports[0], 1, 1, requests[1] // 10)
        report.add("direct", light_p50_ms=direct["GET"]["p50_ms"])
        ports = {name: (free_port(), free_port()) for name in ("nutcracker", "sidecars")}
        with contextlib.ExitStack() as stack:
            pids = {
                "nutcracker": stack.enter_context(nutcracker(tmp, ports["nutcracker"], redis_ports, mc_ports)),
                "sidecars": stack.enter_context(sidecars(tmp, ports["sidecars"], redis_ports, mc_ports)),
            }
            for name in ports:
                redis_benchmark(ports[name][0], CLIENTS, 16, 50_000)  # warm-up: connections to every shard
            best: dict[str, dict[str, float]] = {name: {} for name in ports}
            for _ in range(rounds):
                for name, (redis_port, mc_port) in ports.items():
                    figures = best[name]
                    for pipeline in (1, 16):
                        got = redis_benchmark(redis_port, CLIENTS, pipeline, requests[pipeline])
                        for test in ("GET", "SET"):
                            key = f"{test.lower()}_p{pipeline}_ops"
                            if got[test]["rps"] > figures.get(key, 0.0):
                                figures[key] = got[test]["rps"]
                                if pipeline == 16:
                                    figures[f"{test.lower()}_p16_p50_ms"] = got[test]["p50_ms"]
                                    figures["proxy_core_pct"] = got["cores"]["proxy"]
                                    figures["load_core_pct"] = got["cores"]["load"]
                    mc_ops, mc_busy = memcaslap(mc_port, mc_secs)
                    if mc_ops > figures.get("mc_ops", 0.0):
                        figures["mc_ops"], figures["mc_proxy_core_pct"] = mc_ops, mc_busy
            for name, (redis_port, _) in ports.items():
                light = redis_benchmark(redis_port, 1, 1, requests[1] // 10)
                report.add(
                    name,
                    **best[name],
                    light_p50_ms=light["GET"]["p50_ms"],
                    added_p50_ms=light["GET"]["p50_ms"] - direct["GET"]["p50_ms"],
                    peak_rss_mib=peak_rss_mib(pids[name]),
                )
    for key, label in (("get_p16_ops", "GET pipeline 16"), ("set_p16_ops", "SET pipeline 16")):
        report.compare(f"{label} ops/s vs nutcracker (target >= 0.6)", key, "nutcracker")
    for key, label in (("get_p1_ops", "GET pipeline 1"), ("set_p1_ops", "SET pipeline 1"), ("mc_ops", "memcached")):
        report.compare(f"{label} ops/s vs nutcracker", key, "nutcracker")
    report.compare("added p50 vs nutcracker's", "added_p50_ms", "nutcracker")
    report.compare("peak RSS vs nutcracker's", "peak_rss_mib", "nutcracker")
    return report
