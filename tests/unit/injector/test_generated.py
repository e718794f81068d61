"""Every generated file in the repository is what tools/generate.py writes: nothing drifts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import generate

OUTPUTS = generate.outputs()


def test_the_examples_components_rules_and_dashboards_are_generated() -> None:
    examples = {p for p in OUTPUTS if p.parent.parent == generate.EXAMPLES}
    assert len(examples) == 8  # 03-06, native and classic
    components = {p.parent.name for p in OUTPUTS if p.parent.parent == generate.COMPONENTS}
    assert components == {f"{n}{s}" for n in ("tailer", "ambassador", "adapter") for s in ("", "-classic")}
    assert generate.MONITORING / "prometheusrule.yaml" in OUTPUTS
    assert len([p for p in OUTPUTS if p.suffix == ".json"]) == 4


@pytest.mark.parametrize("path", sorted(OUTPUTS), ids=lambda p: str(p.relative_to(generate.ROOT)))
def test_committed_file_is_what_the_generator_writes(path: Path) -> None:
    assert path.read_text() == OUTPUTS[path](), f"{path} drifted: run `python -m tools.generate`"


def test_check_mode_reports_a_drifted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "pod.yaml"
    target.write_text("stale\n")
    monkeypatch.setattr(generate, "outputs", lambda: {target: lambda: "fresh\n"})
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    assert generate.main(["--check"]) == 1
    assert target.read_text() == "stale\n"
    assert generate.main([]) == 0
    assert target.read_text() == "fresh\n"
