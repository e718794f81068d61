"""An ambassador started with its defaults (no listeners) says so instead of silently idling."""

from __future__ import annotations

import os
import subprocess
import sys

from sidecars.ambassador.plugin import Ambassador
from sidecars.core.runtime import EXIT_CONFIG
from sidecars.testing import http_get, run_sidecar


async def test_no_listeners_is_a_visible_warning_not_a_failure() -> None:
    async with run_sidecar(Ambassador) as sc:
        status, body = await http_get(sc.admin_url + "/readyz?verbose")
        assert status == 200
        assert "[+]configured warn: no listeners configured" in body
        assert sc.events("no listeners configured: nothing to proxy")


def _check_config(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMBASSADOR_", "SIDECAR_"))}
    return subprocess.run(
        [sys.executable, "-m", "sidecars.ambassador", "--check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_check_config_calls_no_listeners_a_configuration_error() -> None:
    bad_value = _check_config("--admin-port", "x")  # what every configuration error exits with
    assert bad_value.returncode == EXIT_CONFIG
    result = _check_config()
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.splitlines() == [
        "invalid configuration (1 problem):",
        "  - ambassador: no listeners configured: set --listen-port and --upstreams, or listeners in --config",
    ]
    assert result.stdout == ""
    fixed = _check_config("--listen-port", "7001", "--upstreams", "127.0.0.1:80")
    assert (fixed.returncode, fixed.stdout) == (0, "ambassador: configuration is valid\n"), fixed.stderr
