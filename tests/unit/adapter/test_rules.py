"""The rules file: defaults, every problem listed with rule and field, export section, reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from sidecars.adapter.rules import RulesError, group_path, load_rules, parse_rules, rules_watcher


def test_a_rule_with_defaults_and_a_full_file() -> None:
    rules = parse_rules(
        """
scrape: {group: liveness, for: 30s, severity: warn}
rules:
  - name: queue-depth
    expr: job_queue_depth > 100
  - name: error-ratio
    expr: sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05
    for: 2m
    severity: warn
    group: readiness
    no_data: fail
    description: More than 5% of requests fail.
""",
        "test.yaml",
    )
    queue, ratio = rules.rules
    assert (queue.for_ms, queue.severity, queue.group, queue.no_data) == (0, "fail", "readiness", "ok")
    assert (ratio.for_ms, ratio.severity, ratio.no_data) == (120_000, "warn", "fail")
    assert ratio.metric_names == {"http_requests_total"}
    assert ratio.range_ms == 300_000
    assert rules.scrape.group == "liveness" and rules.scrape.for_ms == 30_000
    assert rules.groups == {"readiness", "liveness"}
    assert rules.metric_names() == {"job_queue_depth", "http_requests_total"}


def test_every_problem_is_listed_with_rule_field_and_position() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(
            """
rules:
  - name: ok-rule
    expr: up == 0
  - name: broken
    expr: rate(x[5m] > 1
    for: soon
    severity: fatal
    group: Readiness
    colour: red
  - name: ok-rule
    expr: up
  - expr: up
  - name: scrape
    expr: up
extra: 1
""",
            "cm.yaml",
        )
    problems = caught.value.problems
    text = "\n".join(problems)
    assert "rule 'broken'.expr: 1:" in text  # line:column of the expression error
    assert "^" in text  # a caret under the position
    assert "rule 'broken'.for: expected a duration" in text
    assert "rule 'broken'.severity: must be one of fail, warn" in text
    assert "rule 'broken'.group:" in text
    assert "rule 'broken': unknown field 'colour'" in text
    assert "rule 'ok-rule': the name is used more than once" in text
    assert "rules[3].name:" in text
    assert "'scrape' is the built-in scrape check" in text
    assert "unknown top-level field 'extra'" in text
    assert caught.value.render().startswith("invalid rules in cm.yaml:")


def test_string_expressions_and_bad_yaml_are_rejected() -> None:
    with pytest.raises(RulesError, match="must give an instant vector or a scalar"):
        parse_rules("rules: [{name: s, expr: '\"text\"'}]", "x")
    with pytest.raises(RulesError, match="not valid YAML"):
        parse_rules("rules: [", "x")


def test_export_section() -> None:
    rules = parse_rules(
        """
export:
  keep: ['http_.*']
  drop: ['http_requests_total{path="/healthz"}']
  rename: [{match: 'http_(.*)', replace: 'acme_\\1'}]
""",
        "x",
    )
    assert rules.export.keep[0].match("http_requests") and not rules.export.keep[0].match("xhttp_")
    assert rules.export.drop[0].name == "http_requests_total"
    with pytest.raises(RulesError) as caught:
        parse_rules("export: {keep: ['(('], drop: ['sum(x)'], rename: [{match: 'a', replace: '\\9'}]}", "x")
    text = "\n".join(caught.value.problems)
    assert "export.keep[0]: invalid regular expression" in text
    assert "export.drop[0]: expected a series selector" in text
    assert "export.rename[0].replace" in text


def test_export_regexes_are_re2_and_templates_name_their_groups() -> None:
    rules = parse_rules(
        r"""
export:
  keep: ['\pL+_[[:digit:]]+', '(?i)HTTP_.*', '(\w+[-.]?)+\.js']
  rename:
    - {match: '(?P<base>\pL+)_(\d+)', replace: 'x_\g<base>_\2\\'}
    - {match: 'http_(.*)', replace: 'web_\1'}
""",
        "x",
    )
    keep = rules.export.keep
    assert keep[0].matches("é_12") and keep[1].matches("http_requests") and not keep[0].matches("a_12b")
    assert [r.apply("é_12") for r in rules.export.rename] == ["x_é_12\\", None]
    assert rules.export.rename[1].apply("http_x") == "web_x"
    # A backtracking engine takes minutes on the last one: RE2 is linear in the name.
    assert not keep[2].matches("a" * 40) and keep[2].matches("a.b-c.js")
    with pytest.raises(RulesError) as caught:
        parse_rules(
            "export: {keep: ['(?=x)'], rename: [{match: '(a)', replace: '\\2'}, {match: 'a', replace: '\\g<n>'}]}",
            "x",
        )
    text = "\n".join(caught.value.problems)
    assert "export.keep[0]: invalid regular expression: error parsing regexp" in text
    assert "export.rename[0].replace: invalid group reference 2" in text
    assert "export.rename[1].replace: unknown group name 'n'" in text


def test_group_paths() -> None:
    assert group_path("liveness") == "livez"
    assert group_path("readiness") == "readyz"
    assert group_path("deps") == "depsz"


async def test_watcher_reloads_good_files_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [{name: a, expr: up == 0}]\n")
    loaded, rejected = [], []
    watcher = rules_watcher(
        path, poll_secs=0.05, log=structlog.get_logger(), on_rules=loaded.append, on_error=rejected.append
    )
    assert [r.name for r in watcher.load().rules] == ["a"]
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0.2)
        path.write_text("rules: [{name: b, expr: up == 0}, {name: c, expr: up}]\n")
        for _ in range(100):
            if loaded:
                break
            await asyncio.sleep(0.05)
        assert [r.name for r in loaded[-1].rules] == ["b", "c"]
        path.write_text("rules: [{name: d, expr: 'up ==='}]\n")
        for _ in range(100):
            if rejected:
                break
            await asyncio.sleep(0.05)
        assert "rule 'd'.expr" in rejected[-1].problems[0]
        assert len(loaded) == 1  # the bad file did not replace the good set
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_load_rules_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot be read"):
        load_rules(tmp_path / "missing.yaml")
