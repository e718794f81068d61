"""The layers as the source states them: read with `ast`, so a violation fails before anything runs.

- the core imports no sidecar, no demo and no command (nor names one in a string for importlib);
- a sidecar (or the demo) imports the core and itself, never another sidecar;
- the umbrella command line and the test kit import the core only.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sidecars"


def plugin_packages() -> set[str]:
    """The packages under sidecars/ that are plugins (sidecars and commands), from pyproject's entry points."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project["entry-points"]
    targets = [*groups["sidecars.plugins"].values(), *groups["sidecars.commands"].values()]
    return {t.split(":")[0].split(".")[1] for t in targets if t.startswith("sidecars.")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            yield node.lineno, module
            for alias in node.names:  # `from sidecars import tailer` imports a package too
                yield node.lineno, f"{module}.{alias.name}"


def layer(module: str) -> str | None:
    """`core`, a plugin package's name, `top` (sidecars/*.py) or None for anything outside sidecars."""
    parts = module.split(".")
    if parts[0] != "sidecars":
        return None
    if len(parts) == 1:
        return "root"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "top"


def violations() -> list[str]:
    plugins = plugin_packages()
    found: dict[str, str] = {}  # one per statement: `path:line` -> what it does
    for path in sorted(PACKAGE.rglob("*.py")):
        here = layer(module_name(path))
        for line, target in imports(path):
            there = layer(target)
            if there is None or there in ("root", here) or there == "core":
                continue
            if there == "top" and target.split(".")[1] not in ("cli", "testing", "__main__"):
                continue  # a name imported from the root package (`from sidecars import __version__`)
            if here == "core" or here in plugins or (here == "top" and there in plugins):
                found.setdefault(f"{path.relative_to(ROOT)}:{line}", f"({here}) imports {target}")
        if here == "core":
            forbidden = re.compile(rf"^sidecars\.({'|'.join(sorted(plugins))})\b")
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and forbidden.match(node.value):
                    found.setdefault(f"{path.relative_to(ROOT)}:{node.lineno}", f"(core) names {node.value!r}")
    return [f"{where} {what}" for where, what in found.items()]


def test_the_plugins_are_the_packages_beside_the_core() -> None:
    assert {"tailer", "ambassador", "adapter", "injector", "demo"} <= plugin_packages()


def test_core_imports_no_plugin_and_no_plugin_imports_another() -> None:
    assert violations() == []


def test_the_check_sees_a_violation(tmp_path: Path, monkeypatch) -> None:
    # The rules above applied to a tree that breaks each of them.
    fake = tmp_path / "sidecars"
    for package in ("core", "tailer", "adapter", "demo"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
    (fake / "core" / "cli.py").write_text("import importlib\nimportlib.import_module('sidecars.demo')\n")
    (fake / "core" / "loader.py").write_text("from sidecars.tailer import plugin\n")
    (fake / "tailer" / "sinks.py").write_text("from ..adapter.scraper import Scraper\nfrom ..core import Sidecar\n")
    (fake / "demo" / "app.py").write_text("from sidecars import adapter\n")
    (fake / "cli.py").write_text("from sidecars.core.plugins import SIDECARS\nfrom sidecars.tailer import x\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "ROOT", tmp_path)
    monkeypatch.setattr(this, "PACKAGE", fake)
    assert sorted(v.split(" ", 1)[0] for v in violations()) == [
        "sidecars/cli.py:2",
        "sidecars/core/cli.py:2",
        "sidecars/core/loader.py:1",
        "sidecars/demo/app.py:1",
        "sidecars/tailer/sinks.py:1",
    ]
