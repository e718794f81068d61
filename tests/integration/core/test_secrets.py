"""Secrets never reach any output: every start-up failure of every sidecar, as a real process, both log formats.

Each case starts `python -m sidecars.<name>` with secrets given in the config file, in env vars and in
secret files, drives it into one failure (a missing or bad CA file, an unreachable receiver, target
or upstream, a busy port, a missing file), and then searches everything the process wrote (stdout
and stderr) and the pages it serves for each secret. Where a URL holding a secret is part of the
failure, the redacted URL must be shown instead, so the test also proves the reason is still there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from sidecars.testing import free_port, http_get

MARKER = "**********"
FORMATS = ["json", "console"]
HTTP_SINKS = ["http", "loki", "elasticsearch", "otlp"]


def secret(tag: str) -> str:
    return f"s3cr3t-{tag}-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


@dataclass
class Run:
    """One sidecar process; stdout and stderr kept apart, both searched."""

    name: str
    tmp: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)  # bodies of admin pages fetched meanwhile
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.config = {"admin_host": "127.0.0.1", "admin_port": free_port(), **self.config}
        self.config_path = self.tmp / f"{self.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.stdout_path = self.tmp / "stdout"
        self.stderr_path = self.tmp / "stderr"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.config['admin_port']}"

    def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"sidecars.{self.name}", "--config", str(self.config_path), *self.args],
                stdout=out,
                stderr=err,
                env={**os.environ, **self.env},
            )

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    async def wait_for(self, predicate: Callable[[], bool], what: str, timeout_secs: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_secs
        while not predicate():
            assert self.proc is not None
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(f"exited ({self.proc.returncode}) before {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout_secs} s:\n{self.output()}")
            await asyncio.sleep(0.05)

    async def fetch(self, url: str) -> str:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            _, body = await http_get(url, timeout_secs=5.0)
            self.pages.append(body)
            return body
        return ""

    async def exit_code(self, timeout_secs: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return await asyncio.to_thread(self.proc.wait, timeout_secs)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"still running {timeout_secs} s later:\n{self.output()}") from None

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.exit_code()

    def assert_no_secret(self, secrets: list[str]) -> str:
        shown = self.output() + "\n".join(self.pages)
        for value in secrets:
            assert value not in shown, f"secret {value!r} shown:\n{shown}"
        return shown

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


# ---------------------------------------------------------------------------------------------- tailer


@dataclass
class SinkCase:
    """A sink configured with secrets from all three sources."""

    config: dict[str, Any]  # sink_config in the config file
    env: dict[str, str]
    secrets: list[str]
    url_shown: str  # how the failing URL must appear


def sink_case(sink: str, tmp: Path, scheme: str, port: int) -> SinkCase:
    base = f"{scheme}://127.0.0.1:{port}"
    in_file, in_env, in_url = secret("file"), secret("env"), secret("url")
    token_file = tmp / "token"
    token_file.write_text(in_file + "\n")
    env: dict[str, str] = {}
    if sink == "http":  # bearer token from a file, key in the URL, a secret header from the env
        config: dict[str, Any] = {"url": f"{base}/ingest?api_key={in_url}&team=a", "bearer_token_file": str(token_file)}
        env["TAILER_SINK_CONFIG"] = json.dumps({**config, "secret_headers": {"X-Api-Key": in_env}})
        shown = f"{base}/ingest?api_key={MARKER}&team=a"
    elif sink == "loki":  # tenant secret inline, basic auth password from a file (Loki takes no query)
        config = {
            "url": f"{base}/loki/api/v1/push",
            "tenant_id_secret": in_env,
            "basic_auth_username": "shipper",
            "basic_auth_password_file": str(token_file),
        }
        shown = f"{base}/loki/api/v1/push"
        return SinkCase(config, env, [in_file, in_env], shown)
    elif sink == "elasticsearch":  # the whole sink config from the env, password from a file
        config = {
            "url": base,
            "basic_auth_username": "elastic",
            "basic_auth_password_file": str(token_file),
            "secret_headers": {"X-Tenant-Key": in_env},
        }
        env["TAILER_SINK_CONFIG"] = json.dumps(config)
        config = {"url": "http://127.0.0.1:1", "gzip": True}  # the env wins over the file
        return SinkCase(config, env, [in_file, in_env], f"{base}/_bulk")
    else:  # otlp (which takes no query either): secret header inline, bearer token from a file
        config = {
            "url": f"{base}/v1/logs",
            "secret_headers": {"X-Api-Key": in_env},
            "bearer_token_file": str(token_file),
        }
        return SinkCase(config, env, [in_file, in_env], f"{base}/v1/logs")
    return SinkCase(config, env, [in_file, in_env, in_url], shown)


def tailer_run(tmp: Path, fmt: str, sink: str, case: SinkCase, **extra: Any) -> Run:
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "app.log").write_text("a line to deliver\n")
    config = {
        "include": [str(logs / "*.log")],
        "checkpoint_dir": str(tmp / "checkpoints"),
        "log_format": fmt,
        "shutdown_timeout_secs": 1.5,
        "unhealthy_after_secs": 0.1,
        "retry_max_secs": 0.5,
        "sink": sink,
        "sink_config": case.config,
        **extra,
    }
    return Run("tailer", tmp, config, env=case.env)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("sink", HTTP_SINKS)
@pytest.mark.parametrize("ca", ["missing", "bad"])
async def test_tailer_tls_ca_failure_shows_no_secret(
    tmp_path: Path, runs: list[Run], sink: str, fmt: str, ca: str
) -> None:
    case = sink_case(sink, tmp_path, "https", free_port())
    ca_file = tmp_path / "ca.pem"
    if ca == "bad":
        ca_file.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    case.config["tls_ca_file"] = str(ca_file)
    if "TAILER_SINK_CONFIG" in case.env:
        from_env = json.loads(case.env["TAILER_SINK_CONFIG"])
        case.env["TAILER_SINK_CONFIG"] = json.dumps({**from_env, "tls_ca_file": str(ca_file)})
    run = tailer_run(tmp_path, fmt, sink, case)
    runs.append(run)
    run.start()
    assert await run.exit_code() == 1
    shown = run.assert_no_secret(case.secrets)
    assert "start-up failed" in shown
    assert ("FileNotFoundError" if ca == "missing" else "SSLError") in shown  # the traceback is still there


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("sink", HTTP_SINKS)
async def test_tailer_unreachable_receiver_shows_the_url_redacted(
    tmp_path: Path, runs: list[Run], sink: str, fmt: str
) -> None:
    case = sink_case(sink, tmp_path, "http", free_port())  # nothing listens there
    run = tailer_run(tmp_path, fmt, sink, case)
    runs.append(run)
    run.start()
    await run.wait_for(lambda: "sink failing" in run.output(), "failed delivery logged")
    body = ""
    deadline = time.monotonic() + 30
    while "sink failing" not in body and time.monotonic() < deadline:
        body = await run.fetch(run.admin_url + "/readyz?verbose")
        await asyncio.sleep(0.05)
    assert "[-]sink failed: sink failing" in body
    await run.stop()
    shown = run.assert_no_secret(case.secrets)
    assert case.url_shown in shown
    assert case.url_shown in body  # the check's reason names the receiver, redacted


@pytest.mark.parametrize("fmt", FORMATS)
async def test_tailer_busy_admin_port_shows_no_secret(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    case = sink_case("http", tmp_path, "https", free_port())
    with busy_port() as port:
        run = tailer_run(tmp_path, fmt, "http", case, admin_port=port)
        runs.append(run)
        run.start()
        assert await run.exit_code() == 1
    shown = run.assert_no_secret(case.secrets)
    assert "the admin server cannot listen" in shown and "address already in use" in shown
    assert "Traceback" not in shown  # one line saying why, not the interpreter's traceback


def test_tailer_url_refused_by_validation_is_shown_redacted(tmp_path: Path) -> None:
    key = secret("url")
    result = subprocess.run(
        [sys.executable, "-m", "sidecars.tailer", "--sink", "http", "--checkpoint-dir", str(tmp_path),
         "--sink-config", json.dumps({"url": f"ftp://127.0.0.1/ingest?apikey={key}"})],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert key not in result.stdout + result.stderr
    assert f"got ftp://127.0.0.1/ingest?apikey={MARKER}" in result.stderr


# ---------------------------------------------------------------------------------------------- ambassador


def ambassador_run(tmp: Path, fmt: str, token: str, listener: dict[str, Any], **extra: Any) -> Run:
    """The listeners come from the env (AMBASSADOR_LISTENERS), the rest from the config file."""
    health = {"kind": "http", "path": f"/healthz?access_token={token}", "interval_secs": 0.5, "timeout_secs": 0.5}
    cluster = {"endpoints": [f"127.0.0.1:{free_port()}"], "health_check": health, **listener.pop("cluster", {})}
    listeners = [{"name": "web", "host": "127.0.0.1", "port": free_port(), **listener, "cluster": cluster}]
    config = {"log_format": fmt, "shutdown_timeout_secs": 3, "max_restarts": 1, "restart_backoff_secs": 0.05, **extra}
    return Run("ambassador", tmp, config, env={"AMBASSADOR_LISTENERS": json.dumps(listeners)})


@pytest.mark.parametrize("fmt", FORMATS)
async def test_ambassador_busy_listener_port_shows_no_secret(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    token = secret("hc")
    with busy_port() as port:
        run = ambassador_run(tmp_path, fmt, token, {"port": port})
        runs.append(run)
        run.start()
        assert await run.exit_code() == 1
    shown = run.assert_no_secret([token])
    # once, not restarted
    assert f"listener web: cannot listen on 127.0.0.1:{port}" in shown and "start-up failed" in shown


@pytest.mark.parametrize("fmt", FORMATS)
async def test_ambassador_busy_admin_port_shows_no_secret(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    token = secret("hc")
    with busy_port() as port:
        run = ambassador_run(tmp_path, fmt, token, {}, admin_port=port)
        runs.append(run)
        run.start()
        assert await run.exit_code() == 1
    shown = run.assert_no_secret([token])
    assert "the admin server cannot listen" in shown


@pytest.mark.parametrize("fmt", FORMATS)
async def test_ambassador_unreachable_upstream_shows_no_secret(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    token = secret("hc")
    run = ambassador_run(tmp_path, fmt, token, {})
    runs.append(run)
    run.start()
    await run.wait_for(lambda: "endpoint unhealthy" in run.output(), "failed health check logged")
    await run.fetch(run.admin_url + "/readyz?verbose")
    await run.stop()
    shown = run.assert_no_secret([token])
    assert "connect: " in shown  # the reason is there, naming no path


@pytest.mark.parametrize("fmt", FORMATS)
async def test_ambassador_missing_endpoints_file_shows_no_secret(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    token = secret("hc")
    missing = tmp_path / "endpoints.txt"
    run = ambassador_run(
        tmp_path, fmt, token, {"cluster": {"endpoints": [], "endpoints_file": str(missing)}}, startup_timeout_secs=2
    )
    runs.append(run)
    run.start()
    assert await run.exit_code() == 1
    shown = run.assert_no_secret([token])
    assert str(missing) in shown and "not ready within start-up timeout" in shown


# ---------------------------------------------------------------------------------------------- adapter


@dataclass
class AdapterSecrets:
    """A token in the target URL's query (from the env) and a basic-auth password from a secret file."""

    tmp: Path
    token: str = field(default_factory=lambda: secret("target"))
    password: str = field(default_factory=lambda: secret("password"))

    def __post_init__(self) -> None:
        self.password_file = self.tmp / "target-password"
        self.password_file.write_text(self.password + "\n")

    @property
    def all(self) -> list[str]:
        """Both, and the password as the Authorization header carries it."""
        return [self.token, self.password, base64.b64encode(f"scraper:{self.password}".encode()).decode()]


def adapter_run(tmp: Path, fmt: str, secrets: AdapterSecrets, **extra: Any) -> Run:
    """The target URL, token included, comes from the env; the rest from the config file."""
    config = {
        "log_format": fmt,
        "listen_host": "127.0.0.1",
        "listen_port": free_port(),
        "scrape_interval_secs": 0.5,
        "scrape_timeout_secs": 0.5,
        "target_basic_auth_username": "scraper",
        "target_basic_auth_password_file": str(secrets.password_file),
    }
    target = f"http://127.0.0.1:{extra.pop('target_port', free_port())}/metrics?token={secrets.token}"
    return Run("adapter", tmp, {**config, **extra}, env={"ADAPTER_TARGET_URL": target})


@pytest.mark.parametrize("fmt", FORMATS)
async def test_adapter_unreachable_target_shows_the_url_redacted(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    secrets, port = AdapterSecrets(tmp_path), free_port()
    run = adapter_run(tmp_path, fmt, secrets, target_port=port)
    runs.append(run)
    run.start()
    await run.wait_for(lambda: "scrape failed" in run.output(), "failed scrape logged")
    listener = f"http://127.0.0.1:{run.config['listen_port']}"
    health = await run.fetch(listener + "/healthz?verbose")
    await run.fetch(listener + "/healthz?format=json")
    await run.fetch(listener + "/healthz")  # health+json below
    async with aiohttp.ClientSession() as session:
        headers = {"Accept": "application/health+json"}
        async with session.get(listener + "/healthz", headers=headers) as response:
            run.pages.append(await response.text())
    await run.fetch(run.admin_url + "/readyz?verbose")
    await run.stop()
    shown = run.assert_no_secret(secrets.all)
    url = f"http://127.0.0.1:{port}/metrics?token={MARKER}"
    assert f"cannot connect to {url}" in shown
    assert "scrape" in health


@pytest.mark.parametrize("fmt", FORMATS)
async def test_adapter_busy_listen_port_shows_no_secret(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    secrets = AdapterSecrets(tmp_path)
    with busy_port() as port:
        run = adapter_run(tmp_path, fmt, secrets, listen_port=port)
        runs.append(run)
        run.start()
        assert await run.exit_code() == 1
    shown = run.assert_no_secret(secrets.all)
    assert "start-up failed" in shown and "address already in use" in shown


@pytest.mark.parametrize("fmt", FORMATS)
async def test_adapter_missing_rules_file_shows_no_secret(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    secrets = AdapterSecrets(tmp_path)
    missing = tmp_path / "rules.yaml"
    run = adapter_run(tmp_path, fmt, secrets, rules_file=str(missing))
    runs.append(run)
    run.start()
    assert await run.exit_code() == 2  # found while validating, before anything starts
    shown = run.assert_no_secret(secrets.all)
    assert "invalid configuration" in shown and str(missing) in shown


@pytest.mark.parametrize("fmt", FORMATS)
async def test_adapter_busy_admin_port_shows_no_secret(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    secrets = AdapterSecrets(tmp_path)
    with busy_port() as port:
        run = adapter_run(tmp_path, fmt, secrets, admin_port=port)
        runs.append(run)
        run.start()
        assert await run.exit_code() == 1
    shown = run.assert_no_secret(secrets.all)
    assert "the admin server cannot listen" in shown


# ---------------------------------------------------------------------------------------------- --print-config


def print_config(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", f"sidecars.{name}", *args, "--print-config"],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_print_config_shows_every_sidecars_urls_redacted(tmp_path: Path) -> None:
    key, sig, bearer = secret("key"), secret("sig"), secret("bearer")
    sink = {"url": f"https://logs:8443/ingest?api_key={key}&X-Amz-Signature={sig}&team=a", "bearer_token": bearer}
    shown = print_config("tailer", "--sink", "http", "--sink-config", json.dumps(sink))
    assert key not in shown and sig not in shown and bearer not in shown
    assert f"url: https://logs:8443/ingest?api_key={MARKER}&X-Amz-Signature={MARKER}&team=a" in shown

    token = secret("hc")
    listeners = [{"name": "web", "port": 15001, "cluster": {"endpoints": ["127.0.0.1:8080"],
                  "health_check": {"kind": "http", "path": f"/healthz?access_token={token}&full=1"}}}]  # fmt: skip
    shown = print_config("ambassador", env={"AMBASSADOR_LISTENERS": json.dumps(listeners)})
    assert token not in shown
    assert f"path: /healthz?access_token={MARKER}&full=1" in shown

    token, password = secret("target"), secret("password")
    shown = print_config(
        "adapter", "--target-url", f"http://127.0.0.1:8080/metrics?Token={token}&x=1",
        "--target-basic-auth-username", "scraper", env={"ADAPTER_TARGET_BASIC_AUTH_PASSWORD": password},
    )  # fmt: skip
    assert token not in shown and password not in shown
    assert f"target_url: http://127.0.0.1:8080/metrics?Token={MARKER}&x=1  # from --target-url" in shown
    assert f"target_basic_auth_password: '{MARKER}'" in shown


# ---------------------------------------------------------------------------------------------- /config


@pytest.mark.parametrize("sink", HTTP_SINKS)
async def test_config_page_is_print_config_with_every_secret_redacted(
    tmp_path: Path, runs: list[Run], sink: str
) -> None:
    case = sink_case(sink, tmp_path, "http", free_port())  # nothing listens there: the tailer keeps trying
    run = tailer_run(tmp_path, "json", sink, case)
    runs.append(run)
    run.start()
    await run.wait_for(lambda: "admin server listening" in run.output(), "admin server up")
    page = await run.fetch(run.admin_url + "/config")
    _, body = await http_get(run.admin_url + "/config", headers={"Accept": "application/json"})
    run.pages.append(body)
    as_json = json.loads(body)
    await run.stop()
    run.assert_no_secret(case.secrets)
    printed = print_config("tailer", "--config", str(run.config_path), env=case.env)
    assert page == printed  # the same text, source annotations included: one renderer for both
    assert MARKER in page
    assert as_json["config"]["sink"] == sink and "tailer.yaml" in as_json["sources"]["sink"]
    assert MARKER in json.dumps(as_json["config"]["sink_config"])
