"""Real processes, real signals: the runtime and CLI as the kubelet and an operator see them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from sidecars.testing import http_get, start_process

PROBE = [sys.executable, "-m", "tests.support.core_plugins"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, check=False
    )


async def test_sigterm_turns_readiness_503_during_drain_then_exits_zero() -> None:
    async with start_process("probe", {"drain_secs": 1.5, "shutdown_timeout_secs": 10}, command=PROBE) as proc:
        await proc.wait_http("/startupz", 200)
        assert (await http_get(proc.admin_url + "/readyz"))[0] == 200
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        statuses: list[int] = []
        while proc.proc.poll() is None and time.monotonic() - started < 1.2:
            try:
                statuses.append((await http_get(proc.admin_url + "/readyz", timeout_secs=0.5))[0])
            except Exception:
                break
            await asyncio.sleep(0.05)
        code = await proc.wait_exit(10)
        elapsed = time.monotonic() - started
    # A loaded machine may answer one probe before the process has run its signal handler; from the
    # first 503 on, readiness never comes back during the drain.
    assert 503 in statuses, statuses
    assert set(statuses[statuses.index(503) :]) == {503}, statuses
    assert code == 0
    assert 1.5 <= elapsed < 10


async def test_crash_loop_restarts_with_backoff_then_exits_non_zero() -> None:
    settings = {"crash_every_secs": 0.05, "max_restarts": 3, "restart_backoff_secs": 0.05}
    async with start_process("probe", settings, command=PROBE) as proc:
        code = await proc.wait_exit(30)
        output = proc.read_output()
    assert code == 1
    assert output.count('"task crashed: restarting"') == 3
    assert "restart budget spent" in output


async def test_second_signal_exits_at_once() -> None:
    async with start_process("probe", {"drain_secs": 30, "shutdown_timeout_secs": 60}, command=PROBE) as proc:
        await proc.wait_http("/startupz", 200)
        proc.proc.send_signal(signal.SIGTERM)
        await proc.wait_http("/readyz", 503)
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        code = await proc.wait_exit(5)
    assert code == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5


def test_bad_config_lists_every_problem_with_its_source_and_no_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "strict.yaml"
    cfg.write_text("retries: many\nretires: 2\n")
    result = cli(*PROBE, "strict", "--config", str(cfg), "--admin-port", "http", "--bogus",
                 env={"STRICT_RETRIES": "-1"})  # fmt: skip
    assert result.returncode == 2
    err = result.stderr
    assert "Traceback" not in err
    assert "invalid configuration (5 problems)" in err
    assert "--bogus: unknown option" in err
    assert "target_url: required, but not set (give --target-url, env STRICT_TARGET_URL" in err
    assert "retires: unknown option 'retires' (did you mean 'retries'?)" in err
    assert "env STRICT_RETRIES: Input should be greater than or equal to 0" in err  # env wins over the file
    assert "--admin-port: Input should be a valid integer" in err


def test_print_config_redacts_secrets_and_help_lists_env_vars(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-very-secret\n")
    result = cli(*PROBE, "strict", "--target-url", "http://x", "--api-token-file", str(token), "--print-config")
    assert result.returncode == 0, result.stderr
    assert "tok-very-secret" not in result.stdout
    assert "api_token: '**********'  # from --api-token-file" in result.stdout
    assert "target_url: http://x  # from --target-url" in result.stdout
    help_text = cli(*PROBE, "strict", "--help").stdout
    for env in ("SIDECAR_ADMIN_PORT", "STRICT_TARGET_URL", "STRICT_API_TOKEN", "SIDECAR_CONFIG"):
        assert env in help_text
    check = cli(*PROBE, "strict", "--check-config", env={"STRICT_TARGET_URL": "http://y"})
    assert check.returncode == 0 and "configuration is valid" in check.stdout


def test_sidecars_list_and_run_use_installed_plugins() -> None:
    listed = cli(sys.executable, "-m", "sidecars", "list")
    assert listed.returncode == 0
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    assert {"tailer", "ambassador", "adapter", "portwatch"} <= names
    assert "exports whether the app's TCP port accepts connections" in listed.stdout
    missing = cli(sys.executable, "-m", "sidecars", "run", "no-such-sidecar")
    assert missing.returncode == 2
    assert "unknown sidecar 'no-such-sidecar'; installed: adapter, ambassador" in missing.stderr


async def test_third_party_plugin_runs_through_its_entry_point() -> None:
    # portwatch is installed from examples/ like any company package.
    async with start_process("portwatch", {"interval_secs": 0.1}) as proc:
        await proc.wait_http("/readyz", 200)
        status, body = await http_get(proc.admin_url + "/metrics")
        assert status == 200 and "portwatch_target_up" in body
        proc.proc.send_signal(signal.SIGINT)
        assert await proc.wait_exit(10) == 0


def test_plugin_subcommands_run_instead_of_the_sidecar() -> None:
    result = cli(*PROBE, "echo", "a", "--b")
    assert (result.returncode, result.stdout) == (7, "echo: a --b\n")
    usage = cli(*PROBE, "--help").stdout
    assert "{echo}" in usage.splitlines()[0]


def test_commands_are_plugins_found_through_their_entry_point(tmp_path: Path) -> None:
    import os

    from tests.support.distributions import write

    (tmp_path / "acme_hello.py").write_text(
        "from sidecars.core import Command\n\n"
        "class Hello(Command):\n"
        "    name = 'hello'\n"
        "    description = 'says hello to whoever is named'\n\n"
        "    @staticmethod\n"
        "    def main(argv):\n"
        "        print('hello', *argv)\n"
        "        return 3\n"
    )
    write(tmp_path, "acme-hello", {"sidecars.commands": {"hello": "acme_hello:Hello"}})
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = cli(sys.executable, "-m", "sidecars", "hello", "world", env=env)
    assert (result.returncode, result.stdout) == (3, "hello world\n")
    usage = cli(sys.executable, "-m", "sidecars", "--help", env=env).stdout
    assert "says hello to whoever is named" in usage
    assert "start a demo app and the three sidecars on localhost" in usage and "inject" in usage
    demo = cli(sys.executable, "-m", "sidecars", "demo", "--help")
    assert demo.returncode == 0 and "Run the demo app and the three sidecars" in demo.stdout
    unknown = cli(sys.executable, "-m", "sidecars", "nope", env=env)
    assert unknown.returncode == 2 and "unknown command 'nope'; installed: demo, hello, inject" in unknown.stderr
