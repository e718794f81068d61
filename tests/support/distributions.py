"""Installed distributions made by a test: the metadata `pip install` writes, with entry points."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest


def write(root: Path, name: str, entry_points: Mapping[str, Mapping[str, str]]) -> Path:
    """The metadata of `name` 1.0 in `root`, with `{group: {entry: "module:attr"}}`; put `root` on
    the path (sys.path, PYTHONPATH) to have it installed."""
    root.mkdir(parents=True, exist_ok=True)
    dist = root / f"{name.replace('-', '_')}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    text = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) for group, entries in entry_points.items()
    )
    (dist / "entry_points.txt").write_text(text)
    return root


def install(
    root: Path, monkeypatch: pytest.MonkeyPatch, name: str, entry_points: Mapping[str, Mapping[str, str]]
) -> None:
    """Make `name` 1.0 installed in this process, as `pip install name` would."""
    monkeypatch.syspath_prepend(str(write(root, name, entry_points)))
