"""`keep_firing_for` against Prometheus 2.42 itself: promtool's alert tests over the same series.

For each scenario (a series wandering around the threshold, `for` and `keep_firing_for` in several
combinations) promtool evaluates an alerting rule at every minute and says when the alert fires; the
adapter's check over the same series must fail (firing or recovering) at exactly those times. With
`for: 0` the expected state at each time follows from promtool's answer alone (firing: `failing`
when the condition holds, else `recovering`; not firing: `ok`), so those scenarios also go through
`python -m sidecars.adapter test` as a check_test file, which must pass.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidecars.adapter.evaluator import Evaluator
from sidecars.adapter.ruletest import build_history, load_test_file, present_at

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"  # Debian's prometheus package: missing, the tests fail
MINUTES = 40
COMBOS = [(0, 0), (0, 2), (0, 5), (1, 2), (2, 3), (3, 1), (1, 0)]  # (for, keep_firing_for) in minutes
_FAILED_AT = re.compile(r"alertname: Q, time: (?:(\d+)m|0s),")  # Go's durations: 0s, 1m, ..., 40m


def scenario(seed: int) -> list[int]:
    rng = random.Random(seed)
    values, high = [], False
    for _ in range(MINUTES + 1):
        if rng.random() < 0.3:
            high = not high
        values.append(rng.choice([1500, 2500]) if high else rng.choice([0, 400, 900]))
    return values


def promtool_firing(tmp: Path, values: list[int], for_m: int, keep_m: int) -> set[int]:
    (tmp / "prom_rules.yaml").write_text(
        json.dumps(
            {
                "groups": [
                    {
                        "name": "g",
                        "rules": [
                            {"alert": "Q", "expr": "x > 1000", "for": f"{for_m}m", "keep_firing_for": f"{keep_m}m"}
                        ],
                    }
                ]
            }
        )
    )
    test = {
        "rule_files": ["prom_rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": 'x{job="a"}', "values": " ".join(map(str, values))}],
                # Expecting no alert at every minute: promtool names each minute where one fires.
                "alert_rule_test": [{"eval_time": f"{m}m", "alertname": "Q", "exp_alerts": []} for m in range(MINUTES)],
            }
        ],
    }
    (tmp / "prom_test.yaml").write_text(json.dumps(test))
    out = subprocess.run([PROMTOOL, "test", "rules", str(tmp / "prom_test.yaml")], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode in (0, 1), text
    assert "SUCCESS" in text or "FAILED" in text, text
    return {int(m or 0) for m in _FAILED_AT.findall(text)}


def adapter_files(tmp: Path, values: list[int], for_m: int, keep_m: int, checks: list[dict[str, object]]) -> Path:
    (tmp / "rules.yaml").write_text(
        json.dumps({"rules": [{"name": "q", "expr": "x > 1000", "for": f"{for_m}m", "keep_firing_for": f"{keep_m}m"}]})
    )
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": f"for {for_m}m, keep_firing_for {keep_m}m",
                "interval": "1m",
                "input_series": [{"series": 'x{job="a"}', "values": " ".join(map(str, values))}],
                "check_test": checks,
            }
        ],
    }
    path = tmp / "adapter_test.yaml"
    path.write_text(json.dumps(test))
    return path


def adapter_states(path: Path) -> dict[int, str]:
    """The check's state at every minute, stepped as `adapter test` steps it."""
    test_file = load_test_file(path)
    group = test_file.groups[0]
    evaluator = Evaluator(test_file.rules)
    evaluator.history = build_history(group)
    states = {}
    for m in range(MINUTES):
        t = m * 60_000
        evaluator.present = present_at(evaluator.history, t)
        (check,) = evaluator.evaluate_rules(t)
        states[m] = check.state
    return states


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize(("for_m", "keep_m"), COMBOS)
def test_the_check_fails_exactly_when_promtool_says_the_alert_fires(
    tmp_path: Path, seed: int, for_m: int, keep_m: int
) -> None:
    values = scenario(seed)
    theirs = promtool_firing(tmp_path, values, for_m, keep_m)
    states = adapter_states(adapter_files(tmp_path, values, for_m, keep_m, []))
    ours = {m for m, s in states.items() if s in ("firing", "recovering")}
    assert ours == theirs, f"values {values}: adapter {sorted(ours)}, promtool {sorted(theirs)}"
    assert theirs, "the scenario never fires: it shows nothing"
    if keep_m:
        assert "recovering" in states.values(), "keep_firing_for never came into play"


@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.parametrize("keep_m", [2, 4])
def test_adapter_test_passes_the_states_promtool_implies(tmp_path: Path, seed: int, keep_m: int) -> None:
    values = scenario(seed)
    firing = promtool_firing(tmp_path, values, 0, keep_m)
    checks = []
    for m in range(MINUTES):
        state = ("failing" if values[m] > 1000 else "recovering") if m in firing else "ok"
        checks.append({"eval_time": f"{m}m", "checks": [{"name": "q", "state": state}]})
    assert any(c["checks"][0]["state"] == "recovering" for c in checks)  # type: ignore[index]
    path = adapter_files(tmp_path, values, 0, keep_m, checks)
    run = subprocess.run([sys.executable, "-m", "sidecars.adapter", "test", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{MINUTES} passed, 0 failed" in run.stdout
    # The same file with one recovering minute expected ok fails, naming the minute and both states.
    minute = next(m for m in range(MINUTES) if checks[m]["checks"][0]["state"] == "recovering")  # type: ignore[index]
    checks[minute]["checks"][0]["state"] = "ok"  # type: ignore[index]
    path = adapter_files(tmp_path, values, 0, keep_m, checks)
    run = subprocess.run([sys.executable, "-m", "sidecars.adapter", "test", str(path)], capture_output=True, text=True)
    assert run.returncode == 1
    assert f'check: "q", time: {minute}m,\n        exp: ok\n        got: recovering' in run.stdout, run.stdout
