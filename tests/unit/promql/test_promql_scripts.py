"""The engine runs the PromQL test scripts in tests/data/promql (Prometheus' engine-test format)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.promql_script import almost_equal, run_script, split_series

SCRIPTS = sorted((Path(__file__).parents[2] / "data" / "promql").glob("*.test"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(script: Path) -> None:
    outcomes = run_script(script.read_text())
    assert outcomes, "the script holds no evaluation"
    failed = [f"line {o.line}: {o.expr}: {o.problem}" for o in outcomes if o.problem]
    assert not failed, "\n".join(failed)


def test_the_runner_notices_a_wrong_order_a_wrong_value_and_a_missing_error() -> None:
    script = """
load 1m
  m{i="a"} 1
  m{i="b"} 2

eval_ordered instant at 0m sort_desc(m)
  m{i="a"} 1
  m{i="b"} 2

eval instant at 0m m
  m{i="a"} 1
  m{i="b"} 2.001

eval_fail instant at 0m m
"""
    problems = [o.problem for o in run_script(script)]
    assert len(problems) == 3 and all(problems), problems
    assert "position" in str(problems[0]) and "2.001" in str(problems[1]) and "expected an error" in str(problems[2])


def test_descriptors_and_values() -> None:
    assert split_series('m{a="x} y", b="2"}\t1+1x3 _') == ('m{a="x} y", b="2"}', "1+1x3 _")
    assert split_series("plain 5") == ("plain", "5")
    assert almost_equal(1.0, 1.0000001) and not almost_equal(1.0, 1.00001)
