"""`python -m sidecars.adapter check` as a real subprocess against a real app."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .conftest import MetricsApp

RULES = """
rules:
  - {name: queue, expr: queue_depth > 100, for: 10m, description: Backlog too deep.}
  - {name: errors, expr: 'rate(http_requests_total{code="500"}[1m]) > 1000', group: liveness}
  - {name: slow, expr: queue_depth > 5, severity: warn}
"""


async def check(app: MetricsApp, rules: Path, *extra: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecars.adapter", "check", "--url", app.url, "--rules", str(rules),
        "--gap-secs", "0.2", *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_healthy_app_prints_the_table_and_exits_zero(app: MetricsApp, rules_file: Path) -> None:
    app.page = 'queue_depth 7\nhttp_requests_total{code="500"} 3\n'
    rules_file.write_text(RULES)
    code, out, err = await check(app, rules_file)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["CHECK", "GROUP", "SEVERITY", "STATE", "VALUE", "REASON"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["scrape"][:4] == ["scrape", "readiness", "fail", "ok"]
    assert rows["queue"][:4] == ["queue", "readiness", "fail", "ok"]
    assert rows["errors"][:4] == ["errors", "liveness", "fail", "ok"]
    assert rows["slow"][:5] == ["slow", "readiness", "warn", "WARNING", "7"]
    assert "healthy (warnings: slow)" in err
    assert app.requests == 2  # a rule reads a range: two scrapes, a short gap apart


async def test_unhealthy_app_exits_non_zero_without_waiting_for_for(app: MetricsApp, rules_file: Path) -> None:
    app.page = 'queue_depth 500\nhttp_requests_total{code="500"} 3\n'
    rules_file.write_text(RULES)
    code, out, err = await check(app, rules_file)
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("queue"))
    assert row.split()[:5] == ["queue", "readiness", "fail", "FAILING", "500"]
    assert "queue_depth > 100 = 500" in row
    assert "unhealthy: queue failing" in err


async def test_unreachable_target_and_invalid_rules(app: MetricsApp, rules_file: Path) -> None:
    rules_file.write_text("rules: [{name: q, expr: 'queue_depth >'}]\n")
    code, _, err = await check(app, rules_file)
    assert code == 2 and "invalid rules in" in err and "rule 'q'.expr" in err
    rules_file.write_text(RULES)
    await app.stop()
    code, out, _ = await check(app, rules_file)
    assert code == 1
    assert "refused" in next(line for line in out.splitlines() if line.startswith("scrape"))


async def test_check_config_reports_rule_problems(rules_file: Path) -> None:
    rules_file.write_text("rules: [{name: q, expr: 'up =='}, {name: q, expr: up}]\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecars.adapter", "--rules-file", str(rules_file), "--check-config",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    assert proc.returncode == 2
    assert "--rules-file" in text and "rule 'q'.expr: 1:6:" in text
