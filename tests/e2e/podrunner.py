"""Runs a Kubernetes Pod spec from `k8s-examples/` in a plain Docker engine, the way a kubelet would.

A Pod here is: an infra container (`--network none`, sleeping) that holds the network namespace,
every other container joined to it with `--network container:<infra>` (they share 127.0.0.1), a
docker volume per `emptyDir`, ConfigMaps written to files and bind-mounted read-only, env
with the Downward API values, the securityContext and resource limits applied. Init containers run
in order to completion; native sidecars (`initContainers` with `restartPolicy: Always`) start in
order, each probed (startupProbe) before the next one and before the app. The probes are the ones in
the manifest, executed from inside the Pod's network namespace. Probes are sampled more often than
`periodSeconds` (tests should not wait 10 s per step), but each keeps the manifest's overall budget
of `initialDelaySeconds + failureThreshold * periodSeconds`.

Shutdown follows Kubernetes 1.29: app containers get SIGTERM first and are waited for; native
sidecars are then stopped one by one in the reverse order of their start. The whole Pod has one
`terminationGracePeriodSeconds`, as the kubelet gives it: each container stopped gets what is left
of it (at least the kubelet's 2 s minimum), so a sidecar that takes its whole shutdown budget after
a slow app is killed here as it would be on a node. Classic Pods (sidecars as ordinary containers)
stop every container at once.

The test process reaches the Pod's loopback by running its requests in threads that have entered
the infra container's network namespace with setns(2); this needs root, as Docker itself does.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LABEL = "sidecars-e2e"
EXAMPLES = Path(__file__).resolve().parents[2] / "k8s-examples"
CLONE_NEWNET = 0x40000000
# The kubelet never gives a container less than this to stop (minimumGracePeriodInSeconds).
MIN_GRACE_SECS = 2
# Runs as the infra container's only process: sleeps until SIGTERM, needs no shell.
PAUSE = "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()"


class PodError(RuntimeError):
    """The Pod could not be started as specified (bad spec, failed init container, probe never passed)."""


@dataclass
class Manifest:
    """The documents of one YAML file: the Pod and the ConfigMaps it refers to."""

    path: Path
    pod: dict[str, Any]
    configmaps: dict[str, dict[str, str]]

    @classmethod
    def load(cls, path: Path) -> Manifest:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        pods = [d for d in docs if d.get("kind") == "Pod"]
        if len(pods) != 1:
            raise PodError(f"{path}: expected exactly one Pod, found {len(pods)}")
        configmaps = {
            d["metadata"]["name"]: {k: str(v) for k, v in (d.get("data") or {}).items()}
            for d in docs
            if d.get("kind") == "ConfigMap"
        }
        return cls(path, pods[0], configmaps)


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise PodError(f"docker {' '.join(args[:3])}... failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def quantity_bytes(q: str | int) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(q))
    if not m or (m.group(2) and m.group(2) not in units):
        raise PodError(f"unsupported memory quantity {q!r}")
    return int(m.group(1)) * units.get(m.group(2), 1)


def quantity_cpus(q: str | int | float) -> float:
    s = str(q)
    return int(s[:-1]) / 1000 if s.endswith("m") else float(s)


@dataclass
class TerminationBudget:
    """The Pod's one grace period, shared by every container stopped in turn, as the kubelet does."""

    grace_secs: int
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def remaining(self) -> int:
        """Whole seconds the next container gets: what is left, never below the kubelet's minimum."""
        left = self.grace_secs - (self.clock() - self.started)
        return max(MIN_GRACE_SECS, int(left))


@dataclass
class Container:
    spec: dict[str, Any]
    kind: str  # "init", "sidecar" (native) or "app"
    docker_name: str = ""
    started_at: float = 0.0

    @property
    def name(self) -> str:
        return str(self.spec["name"])


@dataclass
class Pod:
    manifest: Manifest
    node_name: str = "e2e-node"
    pod_ip: str = "127.0.0.1"
    startup_budget_secs: float = 90.0
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    containers: dict[str, Container] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)
    infra: str = ""
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _netns: ThreadPoolExecutor | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest.pod["spec"]  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return str(self.manifest.pod["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.manifest.pod["metadata"].get("namespace", "default"))

    # ---- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the sandbox, run init containers, start sidecars then the app, wait until ready."""
        self._tmp = tempfile.TemporaryDirectory(prefix=f"pod-{self.name}-")
        os.chmod(self._tmp.name, 0o755)
        self.infra = f"e2e-{self.name}-{self.suffix}-infra"
        image = self._first_image()
        docker(
            "run", "-d", "--name", self.infra, "--label", LABEL, "--network", "none",
            "--hostname", self.name, "--entrypoint", "python", image, "-c", PAUSE,
        )  # fmt: skip
        pid = docker("inspect", "-f", "{{.State.Pid}}", self.infra)
        self._netns = ThreadPoolExecutor(max_workers=8, initializer=_enter_netns, initargs=(f"/proc/{pid}/ns/net",))
        self._make_volumes()
        for spec in self.spec.get("initContainers") or []:
            if spec.get("restartPolicy") == "Always":
                c = self._run(Container(spec, "sidecar"))
                self._wait_probe(c, "startupProbe")
            else:
                self._run_to_completion(Container(spec, "init"))
        apps = [self._run(Container(spec, "app")) for spec in self.spec["containers"]]
        for c in apps:
            self._wait_probe(c, "startupProbe")
        for c in self.containers.values():
            if c.kind != "init":
                self._wait_probe(c, "readinessProbe")

    def _first_image(self) -> str:
        for spec in (self.spec.get("initContainers") or []) + self.spec["containers"]:
            return str(spec["image"])
        raise PodError("Pod has no containers")

    def _make_volumes(self) -> None:
        assert self._tmp is not None
        for vol in self.spec.get("volumes") or []:
            name = vol["name"]
            if "emptyDir" in vol:
                # Mode 1777 like the kubelet's emptyDir: writable by any non-root user. Disk-backed,
                # as a tmpfs docker volume is unmounted (emptied) whenever no container uses it.
                dv = f"e2e-{self.name}-{self.suffix}-{name}"
                docker("volume", "create", "--label", LABEL, dv)
                os.chmod(docker("volume", "inspect", "-f", "{{.Mountpoint}}", dv), 0o1777)
                self.volumes[name] = dv
            elif "configMap" in vol:
                cm_name = vol["configMap"]["name"]
                if cm_name not in self.manifest.configmaps:
                    raise PodError(f"volume {name}: ConfigMap {cm_name!r} is not in {self.manifest.path}")
                data = self.manifest.configmaps[cm_name]
                items = vol["configMap"].get("items") or [{"key": k, "path": k} for k in data]
                d = Path(self._tmp.name) / f"cm-{name}"
                d.mkdir(mode=0o755)
                for item in items:
                    target = d / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                    target.write_text(data[item["key"]])
                    target.chmod(0o644)
                self.volumes[name] = str(d)
            else:
                raise PodError(f"volume {name}: only emptyDir and configMap volumes are supported")

    def _docker_args(self, c: Container) -> list[str]:
        spec = c.spec
        args = ["--name", c.docker_name, "--label", LABEL, "--network", f"container:{self.infra}"]
        args += self._security_args(spec)
        for key, value in self._env(spec).items():
            args += ["--env", f"{key}={value}"]
        for vm in spec.get("volumeMounts") or []:
            source = self.volumes.get(vm["name"])
            if source is None:
                raise PodError(f"container {c.name}: volumeMount {vm['name']!r} names no volume")
            if vm.get("subPath"):
                if not source.startswith("/"):
                    raise PodError(f"container {c.name}: subPath is supported on configMap volumes only")
                source = f"{source}/{vm['subPath']}"
            ro = vm.get("readOnly", False) or source.startswith("/")  # ConfigMaps are always read-only
            args += ["--volume", f"{source}:{vm['mountPath']}{':ro' if ro else ''}"]
        limits = (spec.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            args += ["--memory", str(quantity_bytes(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", f"{quantity_cpus(limits['cpu']):.3f}"]
        if spec.get("workingDir"):
            args += ["--workdir", spec["workingDir"]]
        command, cmd_args = spec.get("command"), spec.get("args")
        if command:
            args += ["--entrypoint", command[0], spec["image"], *command[1:], *(cmd_args or [])]
        else:
            args += [spec["image"], *(cmd_args or [])]
        return args

    def _security_args(self, spec: dict[str, Any]) -> list[str]:
        pod_sc = self.spec.get("securityContext") or {}
        sc = {**pod_sc, **(spec.get("securityContext") or {})}
        args: list[str] = []
        user = sc.get("runAsUser")
        if user is None:
            image_user = docker("image", "inspect", "-f", "{{.Config.User}}", spec["image"])
            user_part = image_user.split(":")[0]
            if sc.get("runAsNonRoot") and not (user_part.isdigit() and int(user_part) != 0):
                # The kubelet refuses what it cannot verify as non-root: a name or uid 0.
                raise PodError(f"container {spec['name']}: runAsNonRoot but image user is {image_user!r}")
        else:
            if sc.get("runAsNonRoot") and int(user) == 0:
                raise PodError(f"container {spec['name']}: runAsNonRoot with runAsUser 0")
            group = sc.get("runAsGroup", user)
            args += ["--user", f"{user}:{group}"]
        if "fsGroup" in pod_sc:
            args += ["--group-add", str(pod_sc["fsGroup"])]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        caps = sc.get("capabilities") or {}
        for cap in caps.get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in caps.get("add") or []:
            args += ["--cap-add", cap]
        seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        if seccomp not in ("RuntimeDefault",):
            raise PodError(f"container {spec['name']}: seccompProfile {seccomp} is not supported here")
        return args

    def _env(self, spec: dict[str, Any]) -> dict[str, str]:
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "spec.nodeName": self.node_name,
            "status.podIP": self.pod_ip,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
        }
        env: dict[str, str] = {}
        for src in spec.get("envFrom") or []:
            cm = (src.get("configMapRef") or {}).get("name")
            if cm is None or cm not in self.manifest.configmaps:
                raise PodError(f"container {spec['name']}: envFrom supports known configMapRef only")
            env.update({(src.get("prefix") or "") + k: v for k, v in self.manifest.configmaps[cm].items()})
        for e in spec.get("env") or []:
            if "value" in e:
                env[e["name"]] = _expand(str(e["value"]), env)
                continue
            ref = e.get("valueFrom") or {}
            if "fieldRef" in ref:
                env[e["name"]] = fields[ref["fieldRef"]["fieldPath"]]
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                env[e["name"]] = self.manifest.configmaps[r["name"]][r["key"]]
            elif "resourceFieldRef" in ref:
                r = ref["resourceFieldRef"]
                kind, res = r["resource"].split(".", 1)
                value = ((spec.get("resources") or {}).get(kind) or {}).get(res, "0")
                divisor = r.get("divisor", "1")
                if res == "memory":
                    env[e["name"]] = str(quantity_bytes(value) // quantity_bytes(divisor))
                else:
                    env[e["name"]] = str(max(1, int(quantity_cpus(value) / quantity_cpus(divisor) + 0.999)))
            else:
                raise PodError(f"container {spec['name']}: env {e['name']} uses an unsupported source")
        return env

    def _run(self, c: Container) -> Container:
        c.docker_name = f"e2e-{self.name}-{self.suffix}-{c.name}"
        self.containers[c.name] = c
        docker("create", *self._docker_args(c))
        docker("start", c.docker_name)
        c.started_at = time.monotonic()
        self.started.append(c.name)
        return c

    def _run_to_completion(self, c: Container) -> None:
        self._run(c)
        code = int(docker("wait", c.docker_name, timeout=self.startup_budget_secs))
        if code != 0:
            raise PodError(f"init container {c.name} exited {code}: {self.logs(c.name)[-2000:]}")

    # ---- probes ------------------------------------------------------------------------------

    def probe_once(self, name: str, probe: dict[str, Any]) -> str | None:
        """Run one probe of container `name`; None on success, else the reason."""
        c = self.containers[name]
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            hg = probe["httpGet"]
            port = self._port(c, hg["port"])
            try:
                status, _ = self.request(port, hg.get("path", "/"), timeout=timeout)
            except OSError as exc:
                return f"{type(exc).__name__}: {exc}"
            return None if 200 <= status < 400 else f"HTTP {status}"
        if "tcpSocket" in probe:
            port = self._port(c, probe["tcpSocket"]["port"])
            try:
                self.in_netns(_tcp_connect, port, timeout)
            except OSError as exc:
                return f"{type(exc).__name__}: {exc}"
            return None
        if "exec" in probe:
            proc = subprocess.run(
                ["docker", "exec", c.docker_name, *probe["exec"]["command"]], capture_output=True, timeout=30
            )
            return None if proc.returncode == 0 else f"exit {proc.returncode}"
        raise PodError(f"container {name}: unsupported probe {probe}")

    def _port(self, c: Container, port: int | str) -> int:
        if isinstance(port, int):
            return port
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise PodError(f"container {c.name}: probe names port {port!r} that is not declared")

    def _wait_probe(self, c: Container, kind: str) -> None:
        probe = c.spec.get(kind)
        if probe is None:
            return
        budget = probe.get("initialDelaySeconds", 0) + probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10)
        deadline = time.monotonic() + min(budget, self.startup_budget_secs)
        reason: str | None = "not probed"
        while time.monotonic() < deadline:
            if not self.running(c.name):
                raise PodError(f"{c.name} exited while waiting for its {kind}: {self.logs(c.name)[-3000:]}")
            reason = self.probe_once(c.name, probe)
            if reason is None:
                return
            time.sleep(0.2)
        raise PodError(f"{kind} of {c.name} did not pass within {budget}s: {reason}\n{self.logs(c.name)[-3000:]}")

    def check_liveness(self) -> dict[str, str | None]:
        """Each container's livenessProbe, run once: name -> None (ok) or the reason."""
        return {
            c.name: self.probe_once(c.name, c.spec["livenessProbe"])
            for c in self.containers.values()
            if c.kind != "init" and "livenessProbe" in c.spec
        }

    # ---- talking to the Pod ------------------------------------------------------------------

    def in_netns(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._netns is not None, "Pod not started"
        return self._netns.submit(fn, *args).result()

    def request(
        self, port: int, path: str = "/", *, method: str = "GET", body: bytes | None = None, timeout: float = 5
    ) -> tuple[int, str]:
        """An HTTP request to 127.0.0.1:port inside the Pod; (status, body text)."""
        return self.in_netns(_http, port, path, method, body, timeout)  # type: ignore[no-any-return]

    def running(self, name: str) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.containers[name].docker_name) == "true"

    def logs(self, name: str) -> str:
        proc = subprocess.run(
            ["docker", "logs", self.containers[name].docker_name], capture_output=True, text=True, timeout=60
        )
        return proc.stdout + proc.stderr

    def stdout(self, name: str) -> str:
        proc = subprocess.run(
            ["docker", "logs", self.containers[name].docker_name], capture_output=True, text=True, timeout=60
        )
        return proc.stdout

    def stop_container(self, name: str, grace_secs: int = 10) -> int:
        docker("stop", "-t", str(grace_secs), self.containers[name].docker_name, timeout=grace_secs + 30)
        return self.state(name)["ExitCode"]  # type: ignore[no-any-return]

    def crash_and_restart(self, name: str) -> None:
        """SIGKILL a container and start it again, as the kubelet restarts a crashed one (same volumes)."""
        c = self.containers[name]
        docker("kill", "--signal", "KILL", c.docker_name)
        docker("wait", c.docker_name)
        docker("start", c.docker_name)
        self._wait_probe(c, "startupProbe")
        self._wait_probe(c, "readinessProbe")

    def state(self, name: str) -> dict[str, Any]:
        out = docker("inspect", "-f", "{{json .State}}", self.containers[name].docker_name)
        return json.loads(out)  # type: ignore[no-any-return]

    def read_volume_file(self, volume: str, path: str) -> bytes:
        """A file from an emptyDir volume, read by a throwaway container."""
        image = self._first_image()
        proc = subprocess.run(
            ["docker", "run", "--rm", "--label", LABEL, "--network", "none", "-v", f"{self.volumes[volume]}:/v:ro",
             "--entrypoint", "python", image, "-c",
             f"import sys; sys.stdout.buffer.write(open('/v/{path}', 'rb').read())"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        if proc.returncode != 0:
            raise PodError(f"reading {volume}:{path} failed: {proc.stderr.decode()}")
        return proc.stdout

    # ---- stop --------------------------------------------------------------------------------

    def stop(self, clock: Callable[[], float] = time.monotonic) -> dict[str, dict[str, Any]]:
        """Terminate like the kubelet; returns each container's final docker State."""
        budget = TerminationBudget(int(self.spec.get("terminationGracePeriodSeconds", 30)), clock)
        apps = [n for n in self.started if self.containers[n].kind == "app"]
        sidecars = [n for n in self.started if self.containers[n].kind == "sidecar"]
        grace = budget.remaining()  # the apps are stopped together: one figure for all of them
        with ThreadPoolExecutor(max_workers=max(1, len(apps))) as pool:
            list(pool.map(lambda n: self.stop_container(n, grace), apps))
        for n in reversed(sidecars):
            self.stop_container(n, budget.remaining())
        return {n: self.state(n) for n in self.started}

    def stop_all_at_once(self) -> dict[str, dict[str, Any]]:
        """The classic form: every container gets SIGTERM at the same moment."""
        grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        running = [n for n in self.started if self.containers[n].kind != "init"]
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            list(pool.map(lambda n: self.stop_container(n, grace), running))
        return {n: self.state(n) for n in self.started}

    def remove(self) -> None:
        """Remove every container and volume this Pod created; safe to call more than once."""
        if self._netns is not None:
            self._netns.shutdown(wait=False, cancel_futures=True)
            self._netns = None
        names = [c.docker_name for c in self.containers.values() if c.docker_name]
        if self.infra:
            names.append(self.infra)
        if names:
            docker("rm", "-f", "-v", *names, check=False)
        dvs = [v for v in self.volumes.values() if not v.startswith("/")]
        for _ in range(10):  # a container being removed may still hold a volume for a moment
            if not dvs:
                break
            docker("volume", "rm", "-f", *dvs, check=False)
            dvs = [v for v in dvs if _volume_exists(v)]
            if dvs:
                time.sleep(0.5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@contextlib.contextmanager
def running_pod(path: Path, **kwargs: Any) -> Iterator[Pod]:
    pod = Pod(Manifest.load(path), **kwargs)
    try:
        pod.start()
        yield pod
    finally:
        pod.remove()


def _volume_exists(name: str) -> bool:
    return subprocess.run(["docker", "volume", "inspect", name], capture_output=True).returncode == 0


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion from variables defined earlier."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _http(port: int, path: str, method: str, body: bytes | None, timeout: float) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _tcp_connect(port: int, timeout: float) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout):
        pass
