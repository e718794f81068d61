"""The conformance suite run against the runtime's test plugin and the third-party example."""

from __future__ import annotations

import sys

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
