"""The sidecars' alerts: valid for Prometheus, each one shown to fire and not to fire by promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "monitoring" / "rules" / "sidecars.rules.yaml"
TESTS = ROOT / "monitoring" / "tests" / "sidecars.test.yaml"
PROMETHEUS_RULE = ROOT / "monitoring" / "prometheusrule.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def alerts() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in proc.stdout


def test_the_prometheus_rule_holds_the_same_groups(tmp_path: Path) -> None:
    doc = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    assert doc["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    extracted = tmp_path / "groups.yaml"
    extracted.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    proc = promtool("check", "rules", str(extracted))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules() -> None:
    proc = subprocess.run(
        ["promtool", "test", "rules", TESTS.name], capture_output=True, text=True, timeout=120, cwd=TESTS.parent
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"][0]["alert_rule_test"]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']}: no case where it stays quiet"


def test_every_alert_has_a_duration_a_severity_and_a_runbook() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    groups = {g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]}
    assert {"sidecars-tailer", "sidecars-ambassador", "sidecars-adapter", "sidecars-injector", "sidecars"} <= groups
    for alert in alerts():
        assert alert.get("for"), alert["alert"]
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]  # type: ignore[index]
        assert {"summary", "description", "runbook"} <= set(alert["annotations"]), alert["alert"]  # type: ignore[arg-type]
