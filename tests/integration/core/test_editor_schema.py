"""The schemas `sidecars schema` prints, as an editor uses them: yaml-language-server, the checker of
VS Code's YAML extension (and of Neovim's, Helix's), reads the `# yaml-language-server: $schema=`
line of a real file and reports what it finds. A valid example gets no diagnostic; a typo, a wrong
type and a misspelt key of the chosen sink each get one, on their line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.lsp import diagnostics

ROOT = Path(__file__).resolve().parents[3]


def _config_map_file(manifest: str, key: str) -> Any:
    for doc in yaml.safe_load_all((ROOT / manifest).read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" and key in doc.get("data", {}):
            return yaml.safe_load(doc["data"][key])
    raise LookupError(f"{manifest}: no ConfigMap key {key}")


def _reported(tmp_path: Path, name: str, body: str) -> list[tuple[int, str]]:
    """(line, message) of each diagnostic for a file of `body` that names the schema of `name`."""
    schema = subprocess.run(
        [sys.executable, "-m", "sidecars", "schema", name], capture_output=True, text=True, timeout=60, check=True
    )
    (tmp_path / f"{name}.schema.json").write_text(schema.stdout)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"# yaml-language-server: $schema=./{name}.schema.json\n{body}")
    return sorted((d["range"]["start"]["line"], d["message"]) for d in diagnostics(path))


def test_the_tailer_example_is_clean_and_mistakes_are_shown_on_their_line(tmp_path: Path) -> None:
    example = _config_map_file("k8s-examples/03-tailer/pod.yaml", "tailer.yaml")
    assert _reported(tmp_path, "tailer", yaml.safe_dump(example, sort_keys=False)) == []
    mistakes = (
        "log_level: WARN\n"  # any case, an alias: the tailer takes it
        "batch_max_byte: 1048576\n"
        "batch_max_lines: lots\n"
        "sink: http\n"
        "sink_config:\n"
        "  url: http://127.0.0.1:8080/ingest\n"
        "  pasword: x\n"
    )
    assert _reported(tmp_path, "tailer", mistakes) == [
        (2, "Property batch_max_byte is not allowed."),
        (3, 'Incorrect type. Expected "integer".'),
        (7, "Property pasword is not allowed."),
    ]


def test_the_ambassador_example_is_clean_and_a_wrong_mode_is_shown(tmp_path: Path) -> None:
    example = _config_map_file("k8s-examples/04-ambassador/pod.yaml", "ambassador.yaml")
    assert _reported(tmp_path, "ambassador", yaml.safe_dump(example, sort_keys=False)) == []
    body = yaml.safe_dump({"listeners": [{**example["listeners"][0], "mode": "htttp"}]}, sort_keys=False)
    line = 1 + next(i for i, text in enumerate(body.splitlines()) if text.endswith("mode: htttp"))
    assert [at for at, _ in _reported(tmp_path, "ambassador", body)] == [line]


def test_the_rules_file_example_is_clean_and_a_wrong_severity_is_shown(tmp_path: Path) -> None:
    rules = (ROOT / "examples" / "adapter-rules" / "rules.yaml").read_text()
    assert _reported(tmp_path, "adapter-rules", rules) == []
    wrong = "rules:\n  - name: up\n    expr: up == 0\n    severity: fatal\n"
    assert [line for line, _ in _reported(tmp_path, "adapter-rules", wrong)] == [4]
