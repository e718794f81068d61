"""The docs' options tables are what the settings models say, and every option is in one.

`sidecars docs-options --write docs/*.md` regenerates them; these tests fail when a model changes
and the docs were not regenerated, when a model's field is in no table, and when a doc names an env
var that no option reads (a doc once listed `AMBASSADOR_ADMIN_PORT`, which nothing read).
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from sidecars.core import options_doc
from sidecars.core.config import CONFIG_ENV, options
from sidecars.core.plugins import SIDECARS
from sidecars.core.settings import SidecarSettings

ROOT = Path(__file__).resolve().parents[3]
DOCS = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTED = ("tailer", "ambassador", "adapter", "injector")  # the sidecars of this package
# Named in the docs as examples, not as options: what Kubernetes injects for a Service called
# `tailer`, and a misspelt option the warning names.
EXAMPLES = {"TAILER_PORT", "TAILER_BATCH_MAX_BYTE"}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_the_tables_are_what_the_models_give(path: Path) -> None:
    text = path.read_text()
    fresh = options_doc.rewrite(text)
    diff = "".join(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True), "docs", "models", n=0))
    assert not diff, f"run `sidecars docs-options --write docs/*.md`:\n{diff}"


def test_the_check_command_fails_on_a_stale_table(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    fresh = options_doc.rewrite((ROOT / "docs" / "ambassador.md").read_text())
    doc.write_text(fresh.replace("`SIDECAR_ADMIN_PORT`", "`AMBASSADOR_ADMIN_PORT`", 1))
    command = [sys.executable, "-m", "sidecars", "docs-options"]
    stale = subprocess.run([*command, "--check", str(doc)], capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1 and "tables differ from the models" in stale.stderr
    write = subprocess.run([*command, "--write", str(doc)], capture_output=True, text=True, timeout=60, check=False)
    assert write.returncode == 0, write.stderr
    assert doc.read_text() == fresh


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[type[BaseModel]]:
    """`model` and every model reachable from its fields (list items and chosen sinks included)."""
    if model in seen:
        return
    seen.add(model)
    yield model
    nested = [m for _, models in getattr(model, "nested_settings", dict)().values() for m in models.values()]
    for info in model.model_fields.values():
        stack = [info.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                nested.append(annotation)
            stack.extend(typing.get_args(annotation))
    for sub in nested:
        yield from _models(sub, seen)


def test_every_option_is_in_a_table() -> None:
    tabled = {options_doc.model_for(key.partition(" ")[0]) for p in DOCS for key in options_doc.keys(p.read_text())}
    tabled.add(SidecarSettings)  # the shared options: README
    missing = []
    seen: set[type[BaseModel]] = set()
    for name in DOCUMENTED:
        for model in _models(SIDECARS.load(name).Settings, seen):
            for field in model.model_fields:
                owner = next(c for c in model.__mro__ if field in c.__dict__.get("__annotations__", {}))
                if owner not in tabled:
                    missing.append(f"{owner.__module__}:{owner.__qualname__}.{field}")
    assert missing == [], "give each model a table: <!-- options: module:Class path -->"


def test_the_coverage_check_sees_a_model_without_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = options_doc.keys
    monkeypatch.setattr(options_doc, "keys", lambda text: (k for k in keys(text) if "OutlierConfig" not in k))
    with pytest.raises(AssertionError):
        test_every_option_is_in_a_table()


def _env_vars() -> set[str]:
    known = {CONFIG_ENV}
    for name in SIDECARS.names():
        for opt in options(SIDECARS.load(name).Settings):
            known |= {opt.env, opt.env + "_FILE"} if opt.secret else {opt.env}
    return known


def test_every_env_var_the_docs_name_is_read_by_an_option() -> None:
    known = _env_vars()
    prefixes = {p for name in SIDECARS.names() for p in (SIDECARS.load(name).Settings.env_prefix, "SIDECAR_")}
    named = re.compile(rf"\b(?:{'|'.join(sorted(prefixes))})[A-Z0-9_]+\b")
    unknown = []
    files = [ROOT / "README.md", *DOCS, *sorted(p for p in (ROOT / "k8s-examples").rglob("*") if p.is_file())]
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for var in named.findall(line):
                if var not in known and var not in EXAMPLES:
                    unknown.append(f"{path.relative_to(ROOT)}:{number}: {var}")
    assert unknown == []
    assert "AMBASSADOR_ADMIN_PORT" not in known and "SIDECAR_ADMIN_PORT" in known


def test_a_marker_naming_no_model_is_an_error_naming_the_file(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- options: sidecars.core.tls:NoSuchSettings -->\n<!-- end options -->\n")
    command = [sys.executable, "-m", "sidecars", "docs-options", "--check", str(doc)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr == f"sidecars docs-options: {doc}: sidecars.core.tls:NoSuchSettings: not a settings model\n"
