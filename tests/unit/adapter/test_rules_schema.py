"""The rules file's JSON Schema agrees with the parser: what one accepts the other accepts.

The cases are files a person writes, right and slightly wrong; only what the schema leaves to the
parser (PromQL, RE2, a name used twice) is outside them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from sidecars.adapter.rules import RulesError, parse_rules
from sidecars.adapter.rules_schema import RULES_SCHEMA

ROOT = Path(__file__).resolve().parents[3]
VALIDATOR = Draft202012Validator(RULES_SCHEMA)

CASES = {
    "empty": "",
    "one rule": "rules:\n- {name: up, expr: up == 0}\n",
    "every rule key": (
        "rules:\n- {name: a.b-c_1, expr: up == 0, for: 1h30m, severity: warn, group: liveness,"
        " no_data: fail, description: text}\n"
    ),
    "for in seconds": "rules:\n- {name: up, expr: up == 0, for: 30}\n",
    "hysteresis": "rules:\n- {name: up, expr: up == 0, keep_firing_for: 1m, recover: up == 1}\n",
    "bad keep_firing_for": "rules:\n- {name: up, expr: up == 0, keep_firing_for: later}\n",
    "recover null": "rules:\n- {name: up, expr: up == 0, recover: null}\n",
    "blank recover": "rules:\n- {name: up, expr: up == 0, recover: ' '}\n",
    "scrape and export": (
        "scrape: {group: startup, for: 10s, severity: warn}\n"
        "export: {keep: ['http_.*'], drop: ['go_gc_duration_seconds'], rename: [{match: 'x_(.*)', replace: 'y_$1'}]}\n"
    ),
    "custom group": "rules:\n- {name: up, expr: up == 0, group: deps}\n",
    "unknown top-level key": "rule:\n- {name: up, expr: up == 0}\n",
    "unknown rule key": "rules:\n- {name: up, exp: up == 0}\n",
    "missing expr": "rules:\n- {name: up}\n",
    "blank expr": "rules:\n- {name: up, expr: '  '}\n",
    "bad severity": "rules:\n- {name: up, expr: up == 0, severity: fatal}\n",
    "bad no_data": "rules:\n- {name: up, expr: up == 0, no_data: maybe}\n",
    "bad name": "rules:\n- {name: 'has space', expr: up == 0}\n",
    "reserved name": "rules:\n- {name: scrape, expr: up == 0}\n",
    "reserved group": "rules:\n- {name: up, expr: up == 0, group: health}\n",
    "group in capitals": "rules:\n- {name: up, expr: up == 0, group: Readiness}\n",
    "bad duration": "rules:\n- {name: up, expr: up == 0, for: soon}\n",
    "rules not a list": "rules: {name: up, expr: up == 0}\n",
    "unknown scrape key": "scrape: {grop: startup}\n",
    "rename without replace": "export: {rename: [{match: 'x'}]}\n",
    "not a mapping": "- up\n",
}


def _parser_accepts(text: str) -> bool:
    try:
        parse_rules(text, "rules.yaml")
    except RulesError:
        return False
    return True


@pytest.mark.parametrize("case", CASES)
def test_the_schema_and_the_parser_agree(case: str) -> None:
    text = CASES[case]
    schema_accepts = VALIDATOR.is_valid(yaml.safe_load(text))
    assert schema_accepts == _parser_accepts(text), case


def test_the_cases_cover_both_verdicts() -> None:
    verdicts = [_parser_accepts(text) for text in CASES.values()]
    assert verdicts.count(True) >= 5 and verdicts.count(False) >= 10


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*/rules.yaml")), ids=str)
def test_the_example_rules_validate(path: Path) -> None:
    assert list(VALIDATOR.iter_errors(yaml.safe_load(path.read_text()))) == []
