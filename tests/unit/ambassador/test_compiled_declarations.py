"""The .pxd files of the compiled twins against their sources, read as text (no build needed).

A class declared in a .pxd is an extension type in the compiled build: it has exactly the attributes
the .pxd lists. One set in the source but not declared raises AttributeError only in the compiled
build, on whatever path first sets it; one declared but not set in `__init__` exists there with a
default while the pure Python build has no such attribute. Both drifts show here, before any build.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import sidecars.ambassador

PACKAGE = Path(sidecars.ambassador.__file__).parent
PXD_FILES = sorted(PACKAGE.rglob("*.pxd"))

_CLASS = re.compile(r"^cdef class (\w+)\b.*:\s*$")
# `cdef [public|readonly] <type> a, b, c` inside a class; method declarations have a parenthesis.
_ATTRIBUTES = re.compile(r"^\s+cdef\s+(?:public\s+|readonly\s+)?[\w.]+\s+([\w\s,]+)$")


def declared_attributes(pxd: Path) -> dict[str, set[str]]:
    """Class name -> the attributes its `cdef class` block declares."""
    classes: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in pxd.read_text().splitlines():
        code = line.split("#", 1)[0].rstrip()
        if not code:
            continue
        if match := _CLASS.match(code):
            current = classes.setdefault(match.group(1), set())
        elif not code[0].isspace():
            current = None  # a decorator, a module-level declaration: the class block is over
        elif current is not None and (match := _ATTRIBUTES.match(code)):
            current.update(name.strip() for name in match.group(1).split(","))
    return classes


def _self_targets(node: ast.AST) -> set[str]:
    """Names of `self.<name>` assigned anywhere in `node`: plain, annotated, augmented, tuple targets."""
    found: set[str] = set()
    for sub in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(sub, ast.Assign):
            targets = list(sub.targets)
        elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
            targets = [sub.target]
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    found.add(leaf.attr)
    return found


def set_attributes(source: Path) -> dict[str, tuple[set[str], set[str]]]:
    """Class name -> (attributes its `__init__` sets, attributes any of its methods sets)."""
    classes: dict[str, tuple[set[str], set[str]]] = {}
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.ClassDef):
            methods = [m for m in node.body if isinstance(m, ast.FunctionDef)]
            init = next((m for m in methods if m.name == "__init__"), None)
            in_init = _self_targets(init) if init is not None else set()
            anywhere = set().union(*(_self_targets(m) for m in methods)) if methods else set()
            classes[node.name] = (in_init, anywhere)
    return classes


def test_every_compiled_source_has_its_declarations_checked() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in PXD_FILES}
    assert {"proxy/http_proxy.pxd", "proxy/resp.pxd", "cluster/hashing.pxd"} <= names
    for pxd in PXD_FILES:
        assert pxd.with_suffix(".py").is_file(), f"{pxd.name} declares a module that does not exist"


def test_the_parsers_read_what_they_should() -> None:
    # The checks below are only as good as these two readers: pin them on known lines.
    declared = declared_attributes(PACKAGE / "proxy" / "http_proxy.pxd")
    assert {"HttpProxy", "ClientConnection", "Exchange", "UpstreamConnection"} <= set(declared)
    assert {"draining", "max_header_bytes", "_deadline_timer"} <= declared["HttpProxy"]
    assert not any("(" in name or name.startswith("_refuse") for names in declared.values() for name in names)
    in_init, anywhere = set_attributes(PACKAGE / "proxy" / "http_proxy.py")["UpstreamConnection"]
    assert {"p", "endpoint", "tunnel", "body_mode"} <= in_init
    assert {"parser", "discard", "finished"} <= anywhere


@pytest.mark.parametrize("pxd", PXD_FILES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_each_extension_type_declares_exactly_what_its_init_sets(pxd: Path) -> None:
    sources = set_attributes(pxd.with_suffix(".py"))
    for name, declared in declared_attributes(pxd).items():
        assert name in sources, f"{pxd.name} declares class {name}, which {pxd.stem}.py does not define"
        in_init, anywhere = sources[name]
        assert not in_init - declared, f"{name}.__init__ sets {sorted(in_init - declared)}, not in {pxd.name}"
        assert not declared - in_init, f"{pxd.name} declares {sorted(declared - in_init)}, never set in __init__"
        assert not anywhere - in_init, f"{name} sets {sorted(anywhere - in_init)} outside __init__ only"
