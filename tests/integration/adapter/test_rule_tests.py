"""`python -m sidecars.adapter test` as a real subprocess, and promtool on the same files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROMTOOL = "/usr/bin/promtool"

RULES = """
rules:
  - name: queue
    expr: queue_depth > 1000
    for: 2m
  - name: errors
    expr: sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05
    group: liveness
  - name: beat
    expr: changes(heartbeat_total[2m]) == 0
    no_data: fail
"""

SERIES = """
    input_series:
      - series: 'queue_depth{job="app"}'
        values: '0+100x20 _x4 stale 5'
      - series: 'http_requests_total{code="200"}'
        values: '0+100x20'
      - series: 'http_requests_total{code="500"}'
        values: '0+1x10 10+10x10'
      - series: 'heartbeat_total'
        values: '_x10 1+1x4 5x10'
"""

PASSING = f"""
rule_files: [rules.yaml]
evaluation_interval: 30s
tests:
  - name: backlog and errors
    interval: 30s
{SERIES}
    promql_expr_test:
      - expr: queue_depth > 1000
        eval_time: 6m
        exp_samples:
          - labels: 'queue_depth{{job="app"}}'
            value: 1200
      - expr: sum(rate(http_requests_total{{code=~"5.."}}[5m])) / sum(rate(http_requests_total[5m]))
        eval_time: 10m
        exp_samples:
          - labels: '{{}}'
            value: 0.08256880733944955
      - expr: sort_desc(http_requests_total)
        eval_time: 1m
        exp_samples:
          - {{labels: 'http_requests_total{{code="200"}}', value: 200}}
          - {{labels: 'http_requests_total{{code="500"}}', value: 2}}
    check_test:
      - eval_time: 4m30s
        checks:
          - {{name: beat, state: no_data}}
      - eval_time: 5m
        checks:
          - {{name: queue, state: ok}}
      - eval_time: 6m
        checks:
          - {{name: queue, state: pending, value: 1200}}
      - eval_time: 7m30s
        checks:
          - {{name: queue, state: failing, value: 1500}}
          - {{name: beat, state: ok}}
      - eval_time: 10m
        checks:
          - {{name: errors, state: failing}}
      - eval_time: 13m
        checks:
          - {{name: queue, state: ok}}
          - {{name: beat, state: failing}}
"""

# Every expectation wrong: both tools then print what they computed.
EXPRESSIONS = [
    "queue_depth",
    "rate(http_requests_total[5m])",
    "sum(rate(http_requests_total[5m])) by (code)",
    "changes(heartbeat_total[2m])",
    'label_join(http_requests_total, "c", "-", "code")',
    "deriv(queue_depth[3m])",
    "histogram_quantile(0.9, sum by (le) (rate(http_requests_total[5m])))",
    # `> 0`: at 0s both series are 0, a tie Prometheus breaks by its storage's series order (unspecified).
    "topk(1, http_requests_total > 0)",
    "absent(nosuch)",
    "scalar(heartbeat_total) * 3",
]
TIMES = ["0s", "2m", "5m30s", "7m", "10m", "12m30s", "15m"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecars.adapter", "test", *args], capture_output=True, text=True, timeout=120
    )


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    path = tmp_path / "tests.yaml"
    path.write_text(text)
    return path


def test_a_passing_file_exits_zero_and_promtool_passes_it_too(tmp_path: Path) -> None:
    path = write(tmp_path, PASSING)
    done = run(str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  SUCCESS" in done.stdout and done.stdout.rstrip().endswith("11 passed, 0 failed")
    converted = run("--promtool", str(path))
    assert converted.returncode == 0, converted.stderr
    promtool_file = tmp_path / "promtool.yaml"
    promtool_file.write_text(converted.stdout)
    checked = subprocess.run([PROMTOOL, "test", "rules", str(promtool_file)], capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr


def test_a_failing_file_names_each_failure_and_exits_one(tmp_path: Path) -> None:
    text = (
        PASSING.replace("value: 1200", "value: 1300")
        .replace("{name: beat, state: ok}", "{name: beat, state: pending}")
        .replace("{name: queue, state: failing, value: 1500}", "{name: queue, state: failing, value: 1}")
    )
    done = run(str(write(tmp_path, text)))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "FAILED backlog and errors:" in out and out.rstrip().endswith("7 passed, 4 failed")
    assert (
        'exp: {__name__="queue_depth", job="app"} 1.3E+03\n        got: {__name__="queue_depth", job="app"} 1.2E+03'
        in out
    )
    assert (
        'check: "queue", time: 6m,\n        exp: pending 1.3E+03\n        got: pending 1.2E+03 (pending for 30s of 2m'
        in out
    )
    assert 'check: "beat", time: 7m30s,\n        exp: pending\n        got: ok' in out
    got = "got: failing 1.5E+03 (queue_depth > 1000 = 1500"
    assert f'check: "queue", time: 7m30s,\n        exp: failing 1E+00\n        {got}' in out


def test_an_invalid_file_lists_every_problem_and_exits_two(tmp_path: Path) -> None:
    text = """
rule_files: [rules.yaml, missing.yaml]
evaluation_interval: often
tests:
  - interval: 1m
    input_series:
      - {series: 'x{a=~"b"}', values: '1 2'}
      - {series: 'y', values: '1 two'}
    check_test:
      - eval_time: 1m
        checks: [{name: nosuch, state: ok}, {name: queue, state: firing}]
    surprise: 1
"""
    done = run(str(write(tmp_path, text)), str(tmp_path / "absent.yaml"))
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr
    for problem in (
        "rule_files[1]: ",
        "cannot be read",
        "evaluation_interval: expected a duration such as 30s or 5m, got 'often'",
        "tests[0].input_series[0]: not a series",
        "tests[0].input_series[1]: 'two' is not a value",
        "tests[0].check_test[0].checks[1].state: one of ok, pending, failing, recovering, no_data, got 'firing'",
        "tests[0].check_test[0]: no rule named 'nosuch' in rule_files",
        "tests[0]: unknown field 'surprise'",
        "absent.yaml\n  INVALID:",
    ):
        assert problem in err, (problem, err)


def test_the_bounds_on_what_a_file_asks_for(tmp_path: Path) -> None:
    text = """
rule_files: [rules.yaml]
evaluation_interval: 1s
tests:
  - input_series:
      - {series: x, values: '0+1x2000001'}
    check_test:
      - {eval_time: 1000d, checks: [{name: queue, state: ok}]}
"""
    done = run(str(write(tmp_path, text)))
    assert done.returncode == 2
    assert "more than 1000000 values" in done.stderr and "needs more than 100000 evaluations" in done.stderr


@pytest.fixture(scope="module")
def both_tools(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    tmp_path = tmp_path_factory.mktemp("both")
    tests = "\n".join(
        f"      - expr: '{expr}'\n        eval_time: {time}\n"
        "        exp_samples: [{labels: '{never=\"1\"}', value: 0}]"
        for expr in EXPRESSIONS
        for time in TIMES
    )
    path = write(
        tmp_path, f"rule_files: [rules.yaml]\ntests:\n  - interval: 30s\n{SERIES}\n    promql_expr_test:\n{tests}\n"
    )
    ours = run(str(path))
    assert ours.returncode == 1, ours.stdout + ours.stderr
    converted = tmp_path / "promtool.yaml"
    converted.write_text(run("--promtool", str(path)).stdout)
    theirs = subprocess.run([PROMTOOL, "test", "rules", str(converted)], capture_output=True, text=True, timeout=120)
    assert theirs.returncode == 1, theirs.stdout + theirs.stderr
    return ours.stdout, theirs.stdout + theirs.stderr


def failures(text: str) -> dict[tuple[str, str], str]:
    """(expr, time) -> what the tool computed (the `got:` line, or the error)."""
    out = {}
    for m in re.finditer(r'expr: ("(?:[^"\\]|\\.)*"), time: ([^,\n]+),(?: err: (.*)|\n\s+exp: .*\n\s+got: (.*))', text):
        out[(m.group(1), m.group(2))] = m.group(4) or f"error: {m.group(3)}"
    return out


def test_expression_values_equal_promtools_on_the_same_file(both_tools: tuple[str, str]) -> None:
    ours, theirs = (failures(t) for t in both_tools)
    assert len(theirs) == len(EXPRESSIONS) * len(TIMES), both_tools[1][:2000]
    # Printed in promtool's own words, so the two texts must be equal, value for value.
    differ = {k: (theirs[k], ours.get(k)) for k in theirs if ours.get(k) != theirs[k]}
    assert not differ, "\n".join(f"{k}: promtool {t!r}, ours {o!r}" for k, (t, o) in differ.items())
    assert sum(v != "nil" for v in theirs.values()) > len(theirs) * 0.7


def test_the_shipped_examples_pass_and_promtool_agrees_on_their_expressions(tmp_path: Path) -> None:
    example = Path(__file__).parents[3] / "examples" / "adapter-rules" / "tests.yaml"
    done = run(str(example))
    assert done.returncode == 0 and done.stdout.rstrip().endswith("21 passed, 0 failed"), done.stdout + done.stderr
    converted = tmp_path / "promtool.yaml"
    converted.write_text(run("--promtool", str(example)).stdout)
    checked = subprocess.run([PROMTOOL, "test", "rules", str(converted)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The rules there are the ones docs/adapter.md shows.
    docs = (Path(__file__).parents[3] / "docs" / "adapter.md").read_text()
    rules = (example.parent / "rules.yaml").read_text().split("\n", 1)[1]
    assert rules.strip() in docs
