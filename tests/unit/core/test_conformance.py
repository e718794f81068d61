"""The conformance suite run against the runtime's test plugin and the third-party example."""

from __future__ import annotations

import sys

import pytest
from portwatch import PortWatch

from sidecars.testing import ConformanceSuite
from tests.support.core_plugins import Probe


class TestPortWatch(ConformanceSuite):
    plugin = PortWatch
    settings = {"interval_secs": 0.2}


class TestProbe(ConformanceSuite):
    plugin = Probe
    settings = {"drain_secs": 0.1}
    command = [sys.executable, "-m", "tests.support.core_plugins"]


def test_the_suite_flags_test_settings_the_schema_does_not_know() -> None:
    class Misspelt(ConformanceSuite):
        plugin = PortWatch
        settings = {"interval_sec": 0.2}

    with pytest.raises(AssertionError, match="settings the schema does not know"):
        Misspelt().test_config_schema_names_every_option()
