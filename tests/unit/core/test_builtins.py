"""The three built-in sidecars as the framework sees them: installed, distinct, documented."""

from __future__ import annotations

import pytest

from sidecars.core import config
from sidecars.core.cli import build_parser
from sidecars.core.plugins import discover, load

BUILTINS = ("tailer", "ambassador", "adapter")


def test_builtins_are_registered_and_fit_in_one_pod() -> None:
    assert set(BUILTINS) <= set(discover())
    admin_ports = {name: load(name).Settings.model_fields["admin_port"].default for name in BUILTINS}
    assert len(set(admin_ports.values())) == 3, admin_ports


@pytest.mark.parametrize("name", BUILTINS)
def test_every_option_has_a_flag_an_env_var_and_a_description(name: str) -> None:
    plugin = load(name)
    assert plugin.description and "not implemented" not in plugin.description
    help_text = build_parser(plugin, name).format_help()
    prefix = name.upper() + "_"
    for opt in config.options(plugin.Settings):
        assert opt.info.description, f"{name}: {opt.name} has no description"
        assert opt.flag in help_text and opt.env in help_text
        shared = opt.name in config.SidecarSettings.model_fields
        assert opt.env.startswith("SIDECAR_" if shared else prefix)


@pytest.mark.parametrize("name", BUILTINS)
def test_each_sidecar_documents_every_option_of_its_own(name: str) -> None:
    # The shared options are documented once, in the README.
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    doc = (root / "docs" / f"{name}.md").read_text()
    readme = (root / "README.md").read_text()
    for opt in config.options(load(name).Settings):
        shared = opt.name in config.SidecarSettings.model_fields
        assert opt.flag in (readme if shared else doc) or opt.name in doc, f"{opt.name} undocumented"
    if name == "ambassador":
        from sidecars.ambassador.cluster.config import ClusterConfig
        from sidecars.ambassador.settings import ListenerConfig

        nested = [*ListenerConfig.model_fields, *ClusterConfig.model_fields]
        assert [f for f in nested if f not in doc] == []
