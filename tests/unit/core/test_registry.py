"""The plugin registry: built-ins and installed entry points under one rule, one error type."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sidecars.core.registry import PluginError, Registry
from tests.support.distributions import install

GROUP = "sidecars.test.widgets"


class Widget:
    pass


class Gear(Widget):
    pass


class Sprocket(Widget):
    pass


class NotAWidget:
    pass


def widgets(**builtins: str | type[Widget]) -> Registry[Widget]:
    return Registry(GROUP, Widget, builtins, kind="widget")


def test_builtins_by_class_or_import_path_and_installed_ones_by_entry_point(tmp_path: Path, monkeypatch) -> None:
    install(tmp_path, monkeypatch, "acme-widgets", {GROUP: {"sprocket": f"{__name__}:Sprocket"}})
    registry = widgets(gear=Gear, lazy=f"{__name__}:Gear")
    assert registry.names() == ["gear", "lazy", "sprocket"]
    assert registry.load("gear") is Gear and registry.load("lazy") is Gear
    assert registry.load("sprocket") is Sprocket
    assert registry.providers()["sprocket"][0].origin == "acme-widgets 1.0"


def test_a_builtin_given_by_path_is_imported_only_when_chosen(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "heavy_widget.py").write_text(f"from {__name__} import Widget\nclass Heavy(Widget): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "heavy_widget", raising=False)
    registry = widgets(gear=Gear, heavy="heavy_widget:Heavy")
    assert registry.load("gear") is Gear and "heavy" in registry.names()
    assert "heavy_widget" not in sys.modules
    assert registry.load("heavy").__name__ == "Heavy"


def test_an_unknown_name_lists_what_is_installed(tmp_path: Path, monkeypatch) -> None:
    install(tmp_path, monkeypatch, "acme-widgets", {GROUP: {"sprocket": f"{__name__}:Sprocket"}})
    with pytest.raises(PluginError, match=r"^unknown widget 'nope'; installed: gear, sprocket$") as err:
        widgets(gear=Gear).load("nope")
    # Both: a lookup that failed, and a value a settings validator reports as its field's error.
    assert isinstance(err.value, LookupError) and isinstance(err.value, ValueError)
    with pytest.raises(PluginError, match="installed: none"):
        Registry("sidecars.test.nothing", Widget).load("x")


def test_an_entry_point_cannot_take_a_builtins_name(tmp_path: Path, monkeypatch) -> None:
    install(tmp_path, monkeypatch, "acme-widgets", {GROUP: {"gear": f"{__name__}:Sprocket"}})
    registry = widgets(gear=Gear, other=Sprocket)
    with pytest.raises(PluginError) as err:
        registry.load("gear")
    message = str(err.value)
    assert f"built in ({__name__}:Gear)" in message and f"acme-widgets 1.0 ({__name__}:Sprocket)" in message
    assert "a name of its own" in message and GROUP in message
    assert registry.names() == ["gear", "other"]  # listed once
    assert registry.load("other") is Sprocket  # the other names keep working


def test_two_packages_cannot_claim_one_name(tmp_path: Path, monkeypatch) -> None:
    install(tmp_path / "a", monkeypatch, "acme-widgets", {GROUP: {"sprocket": f"{__name__}:Sprocket"}})
    install(tmp_path / "b", monkeypatch, "other-widgets", {GROUP: {"sprocket": f"{__name__}:Gear"}})
    with pytest.raises(PluginError, match=r"'sprocket' is provided more than once: ") as err:
        widgets().load("sprocket")
    assert "acme-widgets 1.0" in str(err.value) and "other-widgets 1.0" in str(err.value)


def test_one_target_found_twice_is_one_provider(tmp_path: Path, monkeypatch) -> None:
    install(tmp_path / "a", monkeypatch, "acme-widgets", {GROUP: {"sprocket": f"{__name__}:Sprocket"}})
    install(tmp_path / "b", monkeypatch, "acme-widgets-copy", {GROUP: {"sprocket": f"{__name__}:Sprocket"}})
    assert widgets().load("sprocket") is Sprocket


def test_import_failures_and_wrong_types_are_plugin_errors(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "raising_widget.py").write_text("raise RuntimeError('no licence file at https://u:pw-1234@h/')\n")
    entries = {
        "missing": "acme_missing_module:Widget",
        "raising": "raising_widget:Widget",
        "wrong": f"{__name__}:NotAWidget",
        "function": f"{__name__}:widgets",
    }
    install(tmp_path, monkeypatch, "acme-widgets", {GROUP: entries})
    registry = widgets(broken="acme_missing_module:Widget")
    with pytest.raises(PluginError, match=r"widget 'missing' \(acme-widgets 1.0 .*cannot be loaded: ModuleNotFound"):
        registry.load("missing")
    with pytest.raises(PluginError, match="RuntimeError: no licence file") as err:
        registry.load("raising")
    assert "pw-1234" not in str(err.value)  # the message is shown: redacted like any error text
    for name in ("wrong", "function"):
        with pytest.raises(PluginError, match=rf"'{name}' .* is not a subclass of {__name__}.Widget"):
            registry.load(name)
    with pytest.raises(PluginError, match=r"widget 'broken' \(built in .*cannot be loaded: ModuleNotFoundError"):
        registry.load("broken")
