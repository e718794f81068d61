"""The injector's description of each sidecar agrees with the sidecar itself."""

from __future__ import annotations

import re

import pytest

from sidecars.core.plugins import load
from sidecars.injector.catalog import CATALOG

PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


@pytest.mark.parametrize("name", list(CATALOG))
def test_ports_are_the_sidecars_defaults(name: str) -> None:
    settings = load(name).Settings()
    desc = CATALOG[name]
    assert desc.admin.number == settings.admin_port
    if name == "adapter":
        assert [p.number for p in desc.ports] == [settings.listen_port]


def test_port_names_are_valid_and_unique() -> None:
    names = [p.name for d in CATALOG.values() for p in d.all_ports]
    assert len(names) == len(set(names))
    for n in names:  # IANA_SVC_NAME: at most 15 characters, a letter among them
        assert len(n) <= 15 and PORT_NAME.fullmatch(n) and re.search("[a-z]", n), n
