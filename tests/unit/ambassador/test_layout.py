"""The ambassador's layers, read from its imports: the control plane never reaches into the data plane.

`cluster/` (discovery, health, balancing, sharding) is what `proxy/` asks for an endpoint; a cluster
module importing a proxy module, even for a type, would make the two one tangle again. Nothing in the
ambassador imports another sidecar.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import sidecars.ambassador

PACKAGE = Path(sidecars.ambassador.__file__).parent
OTHER_SIDECARS = ("sidecars.tailer", "sidecars.adapter", "sidecars.injector", "sidecars.demo")


def imported(path: Path) -> Iterator[str]:
    """Every module `path` imports, at the top, under TYPE_CHECKING or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _reaching(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for name in imported(path)
        if name.startswith(forbidden)
    ]


def test_the_reader_sees_every_kind_of_import() -> None:
    names = set(imported(PACKAGE / "proxy" / "listener.py"))
    assert {"asyncio", "sidecars.ambassador.cluster.cluster", "sidecars.ambassador.cluster.health"} <= names
    assert "sidecars.ambassador.proxy.http_proxy" in set(imported(PACKAGE / "engine.py"))  # inside a function


def test_the_control_plane_imports_nothing_of_the_data_plane_or_the_plugin() -> None:
    top = ("sidecars.ambassador.proxy", "sidecars.ambassador.plugin", "sidecars.ambassador.settings")
    assert _reaching("cluster", top) == []


def test_no_module_imports_another_sidecar() -> None:
    assert _reaching(".", OTHER_SIDECARS) == []
