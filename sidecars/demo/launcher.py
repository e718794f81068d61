"""`sidecars demo`: the demo app and the three sidecars on localhost, no cluster and no Docker.

Starts, as child processes of this one: two upstream servers, a log receiver (standing in for remote
log storage), the demo app, and the tailer, ambassador and adapter exactly as their images would run
them (`python -m sidecars.<name> --config FILE`). Prints where to look, then waits for Ctrl-C or
SIGTERM and stops like a Pod with native sidecars: the app first, then the sidecars (each drains),
then the stand-ins. Exits 0 when every process stopped cleanly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

# Preferred ports (the examples' ports); a busy one is replaced by a free one.
PORTS = {
    "app": 8080,
    "upstream-a": 8081,
    "upstream-b": 8082,
    "receiver": 9880,
    "ambassador-listener": 15000,
    "tailer-admin": 9801,
    "ambassador-admin": 9802,
    "adapter-admin": 9803,
    "adapter-listener": 8086,
}

# Health rules over the demo app's metrics (the adapter's rules file, a ConfigMap in a Pod).
RULES = {
    "scrape": {"for": "5s"},
    "rules": [
        {
            "name": "queue-backed-up",
            "expr": "demo_queue_depth > 100",
            "severity": "fail",
            "description": "More than 100 work items wait: the app cannot keep up.",
        },
        {
            "name": "errors",
            "expr": "rate(demo_errors_total[10s]) > 1",
            "severity": "warn",
            "description": "More than one error a second (reported, does not fail the probe).",
        },
    ],
}


def pick_port(host: str, preferred: int) -> int:
    """`preferred` if it can be bound now, else a free port chosen by the kernel."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


@dataclass
class Child:
    """A process of the demo: what to run, where it answers once ready, where its output goes."""

    name: str
    argv: list[str]
    ready_url: str
    log_path: Path

    def start(self, env: dict[str, str]) -> Started:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in Started.stop()
        try:
            # A session of its own: Ctrl-C in the terminal reaches only the launcher, which then
            # stops the children in order instead of all at once.
            proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except BaseException:
            log.close()
            raise
        return Started(self, proc, log)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Started:
    """A child's running process and its open output file, both released by `stop`."""

    child: Child
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def name(self) -> str:
        return self.child.name

    def exited(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout_secs: float) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_secs)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def wait_ready(started: Started, deadline: float) -> None:
    child = started.child
    while time.monotonic() < deadline:
        code = started.exited()
        if code is not None:
            raise RuntimeError(f"{child.name} exited with {code}:\n{child.tail()}")
        try:
            with urllib.request.urlopen(child.ready_url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready at {child.ready_url} in time:\n{child.tail()}")


def write_configs(work: Path, host: str, ports: dict[str, int]) -> dict[str, Path]:
    """The sidecars' config files, as ConfigMaps would mount them in a Pod."""
    logs_dir = work / "app-logs"
    logs_dir.mkdir()
    configs = {
        "tailer": {
            "admin_host": host,
            "admin_port": ports["tailer-admin"],
            "include": [f"{logs_dir}/*.log"],
            "parse_json": True,
            "sink": "http",
            "sink_config": {"url": f"http://{host}:{ports['receiver']}/ingest"},
            "batch_wait_secs": 0.5,
            "checkpoint_dir": str(work / "tailer-state"),
            "shutdown_timeout_secs": 10,
        },
        "ambassador": {
            "admin_host": host,
            "admin_port": ports["ambassador-admin"],
            "listen_port": ports["ambassador-listener"],
            "upstreams": [f"{host}:{ports['upstream-a']}", f"{host}:{ports['upstream-b']}"],
            "shutdown_timeout_secs": 10,
        },
        "adapter": {
            "admin_host": host,
            "admin_port": ports["adapter-admin"],
            "listen_host": host,
            "listen_port": ports["adapter-listener"],
            "target_url": f"http://{host}:{ports['app']}/metrics",
            "rules_file": str(work / "rules.yaml"),
            "scrape_interval_secs": 1,
            "scrape_timeout_secs": 1,
            "shutdown_timeout_secs": 10,
        },
    }
    (work / "rules.yaml").write_text(yaml.safe_dump(RULES, sort_keys=False))
    paths = {}
    for name, cfg in configs.items():
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        paths[name] = path
    return paths


def plan(work: Path, host: str, ports: dict[str, int], configs: dict[str, Path]) -> list[Child]:
    py = [sys.executable, "-m"]
    logs = work / "process-logs"
    logs.mkdir()

    def child(name: str, argv: list[str], ready_url: str) -> Child:
        return Child(name, argv, ready_url, logs / f"{name}.log")

    def admin(name: str) -> str:
        return f"http://{host}:{ports[f'{name}-admin']}/readyz"

    stand_ins = [
        child(
            f"upstream-{n}",
            [*py, "sidecars.demo.upstream", "--host", host, "--port", str(ports[f"upstream-{n}"]), "--name", n],
            f"http://{host}:{ports[f'upstream-{n}']}/healthz",
        )
        for n in ("a", "b")
    ]
    stand_ins.append(
        child(
            "receiver",
            [*py, "sidecars.demo.receiver", "--host", host, "--port", str(ports["receiver"]), "--quiet"],
            f"http://{host}:{ports['receiver']}/healthz",
        )
    )
    # Native sidecars start before the app, in this order, and stop after it in reverse.
    sidecar_children = [
        child(name, [*py, f"sidecars.{name}", "--config", str(configs[name])], admin(name))
        for name in ("tailer", "ambassador", "adapter")
    ]
    app = child(
        "app",
        [
            *py, "sidecars.demo.app", "--host", host, "--port", str(ports["app"]),
            "--log-dir", str(work / "app-logs"),
            "--upstream-url", f"http://{host}:{ports['ambassador-listener']}/hello",
        ],
        f"http://{host}:{ports['app']}/healthz",
    )  # fmt: skip
    return [*stand_ins, *sidecar_children, app]


def banner(host: str, ports: dict[str, int], work: Path) -> str:
    a = f"http://{host}"
    return f"""
sidecars demo is running (Ctrl-C stops it)

  the app, calling its upstreams through the ambassador:
      curl {a}:{ports["app"]}/
  the ambassador directly (balanced over upstream a and b):
      curl {a}:{ports["ambassador-listener"]}/
  health decided by the adapter's rules over the app's metrics:
      curl '{a}:{ports["adapter-listener"]}/healthz?verbose'
  make the app's metrics go bad (and back with bad=0), then ask /healthz again:
      curl -X POST '{a}:{ports["app"]}/toggle?bad=1'
  the app's log lines as the tailer forwarded them to the log receiver:
      curl '{a}:{ports["receiver"]}/lines?last=10'
  each sidecar's own metrics:
      curl {a}:{ports["tailer-admin"]}/metrics   (also :{ports["ambassador-admin"]}, :{ports["adapter-admin"]})
  process output: {work}/process-logs/
"""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="sidecars demo", description="Run the demo app and the three sidecars on localhost until Ctrl-C."
    )
    p.add_argument("--host", default="127.0.0.1", help="Loopback address to listen on.")
    p.add_argument("--duration-secs", type=float, default=0, help="Stop by itself after this long (0: never).")
    p.add_argument("--keep", action="store_true", help="Keep the working directory (logs, configs) at exit.")
    args = p.parse_args(argv)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    work = Path(tempfile.mkdtemp(prefix="sidecars-demo-"))
    started: list[Started] = []
    result = 1
    try:
        ports = {name: pick_port(args.host, preferred) for name, preferred in PORTS.items()}
        configs = write_configs(work, args.host, ports)
        children = plan(work, args.host, ports, configs)
        env = {**os.environ, "POD_NAME": "sidecars-demo", "POD_NAMESPACE": "local", "NODE_NAME": socket.gethostname()}
        env["SIDECAR_LOG_FORMAT"] = "json"
        result = start_all(children, env, stop, started)
        if result == 0:
            print(banner(args.host, ports, work), flush=True)
            result = supervise(started, stop, args.duration_secs)
    finally:
        if shutdown(started) != 0:
            print("sidecars demo: some processes did not stop cleanly", file=sys.stderr)
            result = result or 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def start_all(children: list[Child], env: dict[str, str], stop: threading.Event, started: list[Started]) -> int:
    """Start each child and wait until it answers, in order, adding it to `started` (stopped by the
    caller whatever happens); 0, or 1 if one failed, 130 if interrupted."""
    for child in children:
        if stop.is_set():
            return 130
        c = child.start(env)
        started.append(c)
        try:
            wait_ready(c, time.monotonic() + 30)
        except RuntimeError as exc:
            print(f"sidecars demo: {exc}", file=sys.stderr)
            return 1
    return 0


def supervise(children: list[Started], stop: threading.Event, duration_secs: float) -> int:
    deadline = time.monotonic() + duration_secs if duration_secs > 0 else None
    while not stop.wait(0.5):
        for c in children:
            code = c.exited()
            if code is not None:
                print(f"sidecars demo: {c.name} exited with {code}:\n{c.child.tail()}", file=sys.stderr)
                return 1
        if deadline is not None and time.monotonic() >= deadline:
            break
    print("stopping: the app first, then the sidecars (each drains), then the rest", flush=True)
    return 0


def shutdown(started: list[Started]) -> int:
    """Stop in reverse start order (app, adapter, ambassador, tailer, stand-ins); worst exit code."""
    worst = 0
    for c in reversed(started):
        code = c.stop(timeout_secs=15)
        if code not in (0, -signal.SIGTERM):
            worst = max(worst, 1)
            print(f"  {c.name} exited with {code}:\n{c.child.tail(10)}", file=sys.stderr)
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
