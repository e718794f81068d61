"""The public test kit, for our sidecars and for anyone's built on `sidecars.core.Sidecar`.

- `run_sidecar(Plugin, **settings)`: runs a sidecar in-process (`async with`), admin server on a
  free 127.0.0.1 port, a fresh metrics registry, its log events captured; stops it with the real
  shutdown sequence on exit.
- `free_port()`, `http_get()`: small helpers for tests that talk to real sockets.
- `ConformanceSuite`: subclass it in a pytest module (`plugin = MySidecar`, `settings = {...}`) to
  check the contract every sidecar must keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import yaml
from prometheus_client import CollectorRegistry
from structlog.typing import EventDict

from sidecars.core.logs import Capture
from sidecars.core.plugin import Sidecar
from sidecars.core.runtime import Runtime
from sidecars.core.schema import config_schema
from sidecars.core.settings import SidecarSettings

PluginClass = type[Sidecar[Any]]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on `host` (the usual race applies: bind soon). On IPv4 loopback the
    port is also free on `::1` where the machine has it, as listeners bind both by default."""
    for _ in range(16):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
            if host != "127.0.0.1" or _free_on_ipv6_loopback(port):
                return port
    raise OSError("no port free on both 127.0.0.1 and ::1 after 16 picks")


def _free_on_ipv6_loopback(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::1", port))
    except OSError as exc:
        return exc.errno != errno.EADDRINUSE  # no IPv6 on this machine: nothing to clash with
    return True


async def http_get(url: str, timeout_secs: float = 5.0, **kwargs: Any) -> tuple[int, str]:
    """(status, body) of one GET; a connection error raises."""
    timeout = aiohttp.ClientTimeout(total=timeout_secs)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, **kwargs) as response:
        return response.status, await response.text()


@dataclass
class RunningSidecar:
    """A sidecar running in this process."""

    runtime: Runtime
    task: asyncio.Task[int]
    capture: Capture
    exit_code: int | None = None
    stop_secs: float | None = None

    @property
    def plugin(self) -> Any:
        return self.runtime.plugin

    @property
    def settings(self) -> Any:
        return self.runtime.settings

    @property
    def metrics(self) -> CollectorRegistry:
        return self.runtime.metrics.registry

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.runtime.admin.port}"

    @property
    def logs(self) -> list[EventDict]:
        return self.capture.events

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The current value of one series of the sidecar's registry."""
        return self.metrics.get_sample_value(name, dict(labels or {}))

    def events(self, event: str) -> list[EventDict]:
        return [e for e in self.logs if e.get("event") == event]

    async def stop(self) -> int:
        """The shutdown sequence, as on SIGTERM; returns the exit code."""
        if self.exit_code is None:
            started = time.monotonic()
            self.runtime.request_stop()
            self.exit_code = await self.task
            self.stop_secs = time.monotonic() - started
        return self.exit_code


@contextlib.asynccontextmanager
async def run_sidecar(
    plugin: PluginClass, *, ready_timeout_secs: float | None = None, **settings: object
) -> AsyncIterator[RunningSidecar]:
    """Start `plugin` in-process and wait until it is ready; stop it on exit (also on failure)."""
    values = {"admin_host": "127.0.0.1", "admin_port": 0, **settings}
    model: type[SidecarSettings] = plugin.Settings
    capture = Capture()
    runtime = Runtime(
        plugin,
        model.model_validate(values),
        registry=CollectorRegistry(auto_describe=True),
        log=capture.logger(sidecar=plugin.name),
        handle_signals=False,
    )
    task = asyncio.create_task(runtime.serve(), name=f"test:{plugin.name}")
    running = RunningSidecar(runtime, task, capture)
    timeout = ready_timeout_secs or runtime.settings.startup_timeout_secs
    ready = asyncio.create_task(runtime.wait_ready())
    done, _ = await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task.done():
            code = task.result()
            errors = [e for e in capture.events if e.get("log_level") in ("error", "critical")]
            raise RuntimeError(f"{plugin.name} exited with {code} before it was ready: {errors}")
        await running.stop()
        raise TimeoutError(f"{plugin.name} not ready within {timeout} s")
    try:
        yield running
    finally:
        await running.stop()


def open_fds() -> set[str]:
    """What this process has open (fd -> target), to show nothing leaks across start/stop."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
    return fds


@dataclass
class Process:
    """A sidecar running as a real process (`python -m sidecars run NAME`)."""

    proc: subprocess.Popen[bytes]
    admin_url: str
    output: list[str] = field(default_factory=list)

    async def wait_http(self, path: str, status: int = 200, timeout_secs: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_secs
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"process exited with {self.proc.returncode}: {self.read_output()}")
            try:
                got, _ = await http_get(self.admin_url + path, timeout_secs=1.0)
                if got == status:
                    return
                last = got
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{path} did not answer {status} within {timeout_secs} s (last: {last})")

    def read_output(self) -> str:
        if self.proc.stdout is not None and self.proc.poll() is not None:
            self.output.append(self.proc.stdout.read().decode(errors="replace"))
        return "".join(self.output)

    async def wait_exit(self, timeout_secs: float) -> int:
        try:
            return await asyncio.to_thread(self.proc.wait, timeout_secs)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise TimeoutError(f"process still running {timeout_secs} s later") from None


@contextlib.asynccontextmanager
async def start_process(
    name: str,
    settings: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    command: list[str] | None = None,
) -> AsyncIterator[Process]:
    """Start `sidecars run NAME` (or `command`) with `settings` in a YAML config file.

    The process is killed on exit if it is still running.
    """
    port = free_port()
    values = {"admin_host": "127.0.0.1", "admin_port": port, "log_format": "json", **(settings or {})}
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml.safe_dump(values))
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting a process does not block; waiting is threaded
            [*(command or [sys.executable, "-m", "sidecars", "run", name]), "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        try:
            yield Process(proc, f"http://127.0.0.1:{port}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


class ConformanceSuite:
    """The contract every sidecar keeps. Subclass in a test module:

        class TestMySidecar(ConformanceSuite):
            plugin = MySidecar
            settings = {"target_port": 8080}   # what a test environment needs beyond the defaults

    `settings` is passed both in-process and to the real process (as a YAML config file). The real
    process test needs the plugin installed under `entry_point` in the `sidecars.plugins` group, or a
    `command` that starts it and accepts `--config PATH`.
    """

    plugin: ClassVar[PluginClass]
    settings: ClassVar[dict[str, Any]] = {}
    entry_point: ClassVar[str | None] = None  # defaults to plugin.name
    command: ClassVar[list[str] | None] = None  # run instead of `sidecars run NAME` when set

    def test_default_settings_valid(self) -> None:
        settings = self.plugin.Settings()
        assert isinstance(settings, SidecarSettings)
        undocumented = [n for n, f in type(settings).model_fields.items() if not f.description]
        assert not undocumented, f"options without a description: {undocumented}"

    def test_config_schema_names_every_option(self) -> None:
        """`sidecars schema NAME` builds, and a config file of the test's settings uses only keys it knows."""
        schema = config_schema(self.plugin.name, self.plugin.Settings)
        properties = schema["properties"]
        assert set(self.plugin.Settings.model_fields) <= set(properties)
        assert set(self.settings) <= set(properties), "settings the schema does not know"
        assert schema.get("additionalProperties") is False, "a typo'd key must be flagged, as at start-up"
        for name, file_schema in self.plugin.file_schemas().items():
            assert str(file_schema.get("$schema", "")).startswith("https://json-schema.org/"), name

    async def test_ready_and_probes(self) -> None:
        async with run_sidecar(self.plugin, **self.settings) as sc:
            for path in ("/startupz", "/readyz", "/livez"):
                status, body = await http_get(sc.admin_url + path + "?verbose")
                assert status == 200, f"{path}: {body}"
                assert "[+]ping ok" in body

    async def test_start_stop_twice_releases_everything(self) -> None:
        async def once() -> int:
            async with run_sidecar(self.plugin, **self.settings) as sc:
                port = sc.runtime.admin.port
            assert sc.exit_code == 0
            with socket.socket() as sock:  # the admin port is free again
                sock.bind(("127.0.0.1", port or 0))
            return port or 0

        await once()
        await asyncio.sleep(0.05)  # let closed transports finish their callbacks
        before = open_fds()
        await once()
        await asyncio.sleep(0.05)
        leaked = open_fds() - before
        assert not leaked, f"left open after a start/stop: {sorted(leaked)}"

    async def test_drain_within_budget(self) -> None:
        async with run_sidecar(self.plugin, **self.settings) as sc:
            code = await sc.stop()
        assert code == 0
        assert sc.stop_secs is not None and sc.stop_secs <= sc.settings.shutdown_timeout_secs

    async def test_base_metrics_present(self) -> None:
        async with run_sidecar(self.plugin, **self.settings) as sc:
            status, body = await http_get(sc.admin_url + "/metrics")
        assert status == 200
        for series in ("sidecar_build_info", "sidecar_state", "sidecar_task_restarts_total",
                       "sidecar_events_in_total", "sidecar_events_out_total", "sidecar_errors_total"):  # fmt: skip
            assert f"# TYPE {series.removesuffix('_total')}" in body, f"{series} missing from /metrics"
        assert 'sidecar_state{state="ready"} 1.0' in body

    async def test_sigterm_to_a_real_process_exits_zero(self) -> None:
        name = self.entry_point or self.plugin.name
        async with start_process(name, self.settings, command=self.command) as proc:
            await proc.wait_http("/startupz", 200)
            proc.proc.send_signal(signal.SIGTERM)
            budget = float(self.settings.get("shutdown_timeout_secs", 20.0))
            code = await proc.wait_exit(budget + 5.0)
            assert code == 0, proc.read_output()
